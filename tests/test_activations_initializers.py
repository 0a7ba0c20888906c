"""Activations and initializers by Keras name, against Keras itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnn_jax as R
from rnn_jax import activations, initializers


# -- activations ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def act_inputs():
    rng = np.random.default_rng(0)
    x = rng.uniform(-6.0, 6.0, size=(8, 64)).astype("float32")
    # the kinks and special points of the piecewise definitions
    x[0, :9] = [-3.0, 3.0, 0.0, -1.0, 1.0, 6.0, -6.0, 1e-4, -1e-4]
    return x


@pytest.mark.parametrize("name", activations.NAMES)
def test_activation_matches_keras(keras, act_inputs, name):
    ours = np.asarray(activations.get(name)(jnp.asarray(act_inputs)))
    theirs = np.asarray(keras.activations.get(name)(act_inputs))
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6, err_msg=name)


def test_activation_names_round_trip():
    for name in activations.NAMES:
        fn = activations.get(name)
        assert activations.get(activations.serialize(fn)) is fn


def test_activation_none_and_callable():
    x = jnp.linspace(-2, 2, 9)
    np.testing.assert_array_equal(activations.get(None)(x), x)
    fn = lambda v: v * 3.0  # noqa: E731
    assert activations.get(fn) is fn
    with pytest.raises(ValueError, match="custom callable"):
        activations.serialize(fn)


def test_activation_unknown_name():
    with pytest.raises(ValueError) as info:
        activations.get("tanhh")
    msg = str(info.value)
    assert "tanhh" in msg
    for name in ("tanh", "sigmoid", "relu", "linear", "hard_sigmoid"):
        assert name in msg
    with pytest.raises(ValueError, match="activation"):
        activations.get(3)
    with pytest.raises(ValueError, match="tanhh"):
        R.SimpleRNN(2, activation="tanhh", rngs=nnx.Rngs(0))


# -- initializers --------------------------------------------------------------------------

SHAPE = (240, 160)   # fan_in 240, fan_out 160: the laws differ for every scaling mode
DETERMINISTIC = ("zeros", "ones", "identity")


BOUNDED = ("glorot_uniform", "he_uniform", "lecun_uniform", "random_uniform", "uniform",
           "glorot_normal", "he_normal", "lecun_normal", "variance_scaling", "truncated_normal")
QUANTILES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def _keras_draw(keras, name, shape, seed=1234):
    init = keras.initializers.get(name)
    config = init.get_config()
    if "seed" in config:
        init = type(init).from_config({**config, "seed": seed})
    return np.asarray(init(shape))


@pytest.mark.parametrize("name", [n for n in initializers.NAMES if n not in DETERMINISTIC])
def test_initializer_distribution_matches_keras(keras, name):
    ours = np.asarray(initializers.get(name)(jax.random.key(0), SHAPE, jnp.float32))
    theirs = _keras_draw(keras, name, SHAPE)
    assert ours.shape == theirs.shape == SHAPE
    assert ours.dtype == np.float32
    a, b = ours.astype(np.float64).ravel(), theirs.astype(np.float64).ravel()
    n, s = a.size, b.std()
    # means within 5 standard errors of the difference
    assert abs(a.mean() - b.mean()) < 5 * np.sqrt(2.0 / n) * s, (name, a.mean(), b.mean())
    # spreads within 3 % (the sample std's own error is ~0.4 % here)
    assert abs(a.std() / s - 1) < 0.03, (name, a.std(), s)
    # the shape of the law: quantiles within 0.08 std (about 3 standard errors)
    np.testing.assert_allclose(np.quantile(a, QUANTILES), np.quantile(b, QUANTILES),
                               rtol=0, atol=0.08 * s, err_msg=name)
    if name in BOUNDED:  # uniform and truncated laws: the same support
        np.testing.assert_allclose([a.min(), a.max()], [b.min(), b.max()], rtol=0.02,
                                   err_msg=name)


@pytest.mark.parametrize("name,bound", [
    ("glorot_uniform", np.sqrt(6.0 / sum(SHAPE))),
    ("he_uniform", np.sqrt(6.0 / SHAPE[0])),
    ("lecun_uniform", np.sqrt(3.0 / SHAPE[0])),
    ("random_uniform", 0.05),
    ("uniform", 0.05),
])
def test_uniform_bounds(name, bound):
    w = np.asarray(initializers.get(name)(jax.random.key(1), SHAPE, jnp.float32))
    assert w.min() >= -bound and w.max() <= bound
    assert w.min() < -0.99 * bound and w.max() > 0.99 * bound
    np.testing.assert_allclose(w.std(), bound / np.sqrt(3.0), rtol=0.02)


@pytest.mark.parametrize("name,std", [
    ("glorot_normal", np.sqrt(2.0 / sum(SHAPE))),
    ("he_normal", np.sqrt(2.0 / SHAPE[0])),
    ("lecun_normal", np.sqrt(1.0 / SHAPE[0])),
    ("variance_scaling", np.sqrt(1.0 / SHAPE[0])),
    # Keras' TruncatedNormal(stddev=0.05) truncates N(0, 0.05^2) at 2 std
    ("truncated_normal", 0.05 * 0.87962566103423978),
    ("random_normal", 0.05),
    ("normal", 0.05),
])
def test_normal_std(name, std):
    w = np.asarray(initializers.get(name)(jax.random.key(2), SHAPE, jnp.float32))
    np.testing.assert_allclose(w.std(), std, rtol=0.02)
    assert abs(w.mean()) < 4 * std / np.sqrt(w.size)


@pytest.mark.parametrize("name", initializers.NAMES)
def test_initializer_shapes_and_dtypes(name):
    cases = [((5, 3), "float32"), ((5, 3), "float64")]
    if name != "identity":
        cases.append(((2, 3, 4), "float32"))
    if name not in ("orthogonal", "identity"):
        cases.append(((7,), "float32"))
    for shape, dtype in cases:
        with jax.enable_x64(dtype == "float64"):
            w = initializers.get(name)(jax.random.key(3), shape, jnp.dtype(dtype))
            assert w.shape == shape, (name, shape)
            assert w.dtype == jnp.dtype(dtype), (name, w.dtype)
            assert np.all(np.isfinite(np.asarray(w)))


@pytest.mark.parametrize("shape,fan_in,fan_out", [((5000,), 5000, 5000),
                                                  ((20, 30, 40), 600, 800)])
def test_fans_of_vectors_and_3d_shapes(shape, fan_in, fan_out):
    """Keras' compute_fans: a vector is its own fan in and out; for rank >= 3
    both fans are multiplied by the receptive field `prod(shape[:-2])`."""
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    w = np.asarray(initializers.get("glorot_uniform")(jax.random.key(5), shape, jnp.float32))
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound


@pytest.mark.parametrize("shape", [(6, 6), (9, 4), (4, 9), (3, 16), (2, 3, 5)])
def test_orthogonal(shape):
    w = np.asarray(initializers.get("orthogonal")(jax.random.key(4), shape, jnp.float32),
                   np.float64)
    flat = w.reshape(-1, shape[-1])
    rows, cols = flat.shape
    gram = flat.T @ flat if rows >= cols else flat @ flat.T
    np.testing.assert_allclose(gram, np.eye(min(rows, cols)), atol=1e-5)
    if shape == (9, 4):
        gained = np.asarray(initializers.orthogonal(gain=2.0)(jax.random.key(4), shape),
                            np.float64)
        np.testing.assert_allclose(gained, 2.0 * w, atol=1e-5)
    with pytest.raises(ValueError, match="matrix"):
        initializers.get("orthogonal")(jax.random.key(0), (5,), jnp.float32)


@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("shape", [(3, 5), (4, 4), (6, 2)])
def test_deterministic_initializers_equal_keras(keras, name, shape):
    ours = np.asarray(initializers.get(name)(jax.random.key(0), shape, jnp.float32))
    theirs = np.asarray(keras.initializers.get(name)(shape))
    np.testing.assert_array_equal(ours, theirs)


def test_constants():
    for value in (0.5, -2, 3.25, 0):
        w = initializers.get(value)(jax.random.key(0), (2, 3), jnp.float32)
        np.testing.assert_array_equal(w, np.full((2, 3), float(value), np.float32))
    layer = R.SimpleRNN(2, kernel_initializer=0.5, recurrent_initializer="ones",
                        bias_initializer=-1.0, rngs=nnx.Rngs(0), input_shape=(None, 3))
    k, rk, b = layer.get_weights()
    np.testing.assert_array_equal(k, np.full((3, 2), 0.5, np.float32))
    np.testing.assert_array_equal(rk, np.ones((2, 2), np.float32))
    np.testing.assert_array_equal(b, np.full(2, -1.0, np.float32))


def test_callable_initializer():
    init = lambda key, shape, dtype: jnp.full(shape, 7.0, dtype)  # noqa: E731
    assert initializers.get(init) is init
    cell = R.GRUCell(2, kernel_initializer=init, rngs=nnx.Rngs(0), input_shape=(3,))
    np.testing.assert_array_equal(cell.get_weights()[0], np.full((3, 6), 7.0, np.float32))


def test_unknown_initializer():
    with pytest.raises(ValueError) as info:
        initializers.get("glorot_uniformm")
    msg = str(info.value)
    assert "glorot_uniformm" in msg
    for name in ("glorot_uniform", "orthogonal", "zeros"):
        assert name in msg
    for bad in (True, None, [1.0]):
        with pytest.raises(ValueError, match="initializer"):
            initializers.get(bad)
    layer = R.LSTM(2, kernel_initializer="nope", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="nope"):
        layer(np.zeros((1, 2, 3), np.float32))


# -- layer defaults ----------------------------------------------------------------------


@pytest.mark.parametrize("bias_initializer", ["zeros", "ones", "random_normal"])
def test_lstm_unit_forget_bias(keras, bias_initializer):
    units = 5
    cell = R.LSTMCell(units, bias_initializer=bias_initializer, rngs=nnx.Rngs(0),
                      input_shape=(3,))
    bias = cell.get_weights()[2]
    assert bias.shape == (4 * units,)
    np.testing.assert_array_equal(bias[units:2 * units], 1.0)
    others = np.concatenate([bias[:units], bias[2 * units:]])
    if bias_initializer == "zeros":
        np.testing.assert_array_equal(others, 0.0)
    elif bias_initializer == "ones":
        np.testing.assert_array_equal(others, 1.0)
    else:
        assert np.all(others != 0) and np.all(np.abs(others) < 0.05 * 6)
    # the same layout as Keras
    kcell = keras.layers.LSTMCell(units, bias_initializer=bias_initializer)
    kcell.build((None, 3))
    kbias = np.asarray(kcell.get_weights()[2])
    if bias_initializer != "random_normal":
        np.testing.assert_array_equal(bias, kbias)
    np.testing.assert_array_equal(kbias[units:2 * units], 1.0)

    plain = R.LSTMCell(units, unit_forget_bias=False, rngs=nnx.Rngs(0), input_shape=(3,))
    np.testing.assert_array_equal(plain.get_weights()[2], 0.0)


def test_layer_default_initializers():
    """Keras' defaults: glorot_uniform kernel, orthogonal recurrent kernel, zero bias."""
    units, d = 8, 24
    for cls, gates in ((R.SimpleRNN, 1), (R.GRU, 3), (R.LSTM, 4)):
        layer = cls(units, rngs=nnx.Rngs(1), input_shape=(None, d))
        k, rk, b = layer.get_weights()
        bound = np.sqrt(6.0 / (d + gates * units))
        assert k.shape == (d, gates * units)
        assert np.abs(k).max() <= bound and np.abs(k).max() > 0.8 * bound
        np.testing.assert_allclose(rk @ rk.T, np.eye(units), atol=1e-5)
        expected_bias = np.zeros(b.shape, np.float32)
        if cls is R.LSTM:
            expected_bias[units:2 * units] = 1.0
        np.testing.assert_array_equal(b, expected_bias)
    gru = R.GRU(units, rngs=nnx.Rngs(1), input_shape=(None, d))
    assert gru.get_weights()[2].shape == (2, 3 * units)
    gru_before = R.GRU(units, reset_after=False, rngs=nnx.Rngs(1), input_shape=(None, d))
    assert gru_before.get_weights()[2].shape == (3 * units,)
    emb = R.Embedding(50, 40, rngs=nnx.Rngs(0)).get_weights()[0]
    assert emb.shape == (50, 40) and np.abs(emb).max() <= 0.05 and np.abs(emb).max() > 0.045


def test_different_seeds_give_different_weights_same_seed_same():
    a = R.LSTM(4, rngs=nnx.Rngs(0), input_shape=(None, 3)).get_weights()
    b = R.LSTM(4, rngs=nnx.Rngs(0), input_shape=(None, 3)).get_weights()
    c = R.LSTM(4, rngs=nnx.Rngs(1), input_shape=(None, 3)).get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])
