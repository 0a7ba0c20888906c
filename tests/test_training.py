"""The training engine (`rnn_jax.fit`, `evaluate`, losses, metrics, optimizers,
checkpoints) against independent references.

References: Keras 3 on the TensorFlow backend (its loss and metric functions,
its optimizers, its validation split, its `fit` and `evaluate` from the same
initial weights), or facts checked from outside the engine (which samples a
custom loss was handed, what separate runs give). Nothing is compared with
stored numbers or with an earlier `rnn_jax` output, except the checkpoint
round trips, which are round trips by nature.

Tolerances (float32 throughout):
- losses and metrics: `rtol=1e-6`, `atol=1e-6` (the same formulas, rounded
  in a different order; Keras' sparse cross-entropy renormalises after the
  clip, which moves clipped rows by ~1e-7);
- optimizers: `rtol=1e-6`, `atol=1e-7` after each of 10 steps (optax's
  `t = g + mu t; -lr t` and Keras' `m = mu m - lr g` are the same update
  rounded differently);
- `fit` parity: history `rtol=1e-4`, weights `atol=1e-4`; measured
  differences are 1e-7 to 6e-7 after 3 epochs (76 steps).

Known divergence (see `test_keras_tf_adam_squares_sparse_gradient_slices`):
Keras' TF-backend Adam, given an `Embedding`'s `IndexedSlices` gradient,
squares each slice before the duplicate ids are summed, so its second
moment is `sum(g_i^2)` instead of `(sum g_i)^2`. rnn_jax (like Keras' JAX
backend, whose gradients are dense) uses the dense gradient; the
`Embedding` fit parity test densifies the gradient on the Keras side.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rnn_jax
from rnn_jax import checkpoints, losses, metrics, optimizers, training

LOSS_TOL = dict(rtol=1e-6, atol=1e-6)
OPT_TOL = dict(rtol=1e-6, atol=1e-7)
HIST_RTOL = 1e-4
WEIGHT_ATOL = 1e-4
# Seeds of one `num_seeds` run vs separate runs: bitwise equal on CPU; the
# tolerance leaves room for a backend that batches the matmuls differently.
SEEDS_TOL = dict(rtol=1e-6, atol=1e-7)
# XLA options that compile the tiny models of the engine tests ~40% faster on CPU
# (the Keras parity tests compile with the defaults).
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# -- helpers ------------------------------------------------------------------------------------


def small_factory(rngs):
    """The tiny regression model of the multi-seed tests."""
    return rnn_jax.Sequential([rnn_jax.SimpleRNN(2, rngs=rngs), rnn_jax.Dense(1, rngs=rngs)],
                              input_shape=(3, 1))


def regression_data(rng, n=37):
    x = rng.normal(size=(n, 3, 1)).astype("float32")
    return x, (x.sum(axis=1) + 0.1 * rng.normal(size=(n, 1))).astype("float32")


def param_leaves(params):
    return [np.asarray(a) for a in jax.tree.leaves(params)]


def assert_history_close(keras_history, jax_history, rtol=HIST_RTOL):
    assert set(jax_history) == set(keras_history), (set(jax_history), set(keras_history))
    for name, values in keras_history.items():
        np.testing.assert_allclose(np.asarray(jax_history[name]), np.asarray(values),
                                   rtol=rtol, err_msg=name)


def make_engine(model, loss, optimizer, batch_size=8):
    """An `Engine` for a built module, assembled as `fit` does."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    engine = training.Engine(graphdef=graphdef, rest=rest, loss=losses.get(loss), metrics={},
                             optimizer=optimizer, batch_size=batch_size,
                             validation_batch_size=batch_size, shuffle=False,
                             init_params=lambda key: params)
    return engine, params


def recording_loss(record):
    """An MSE loss that appends every `y_true` batch it sees to `record`.

    With `y = sample index`, `record` tells which samples each step and each
    validation batch was given, in order.
    """
    def loss(y_true, y_pred):
        jax.debug.callback(lambda y: record.append(np.asarray(y).reshape(-1).copy()), y_true,
                           ordered=True)
        return jnp.mean(jnp.square(y_pred - y_true), axis=-1)

    return loss


# -- 1. losses ----------------------------------------------------------------------------------


def _probabilities(rng, shape):
    p = rng.uniform(size=shape).astype("float32")
    p.flat[0], p.flat[1], p.flat[-1], p.flat[-2] = 0.0, 1.0, 0.0, 1.0
    return p


def test_mean_squared_error_matches_keras(keras, rng):
    y = rng.normal(size=(6, 3)).astype("float32")
    p = rng.normal(size=(6, 3)).astype("float32")
    want = np.asarray(keras.losses.mean_squared_error(y, p))
    np.testing.assert_allclose(losses.mean_squared_error(y, p), want, **LOSS_TOL)
    np.testing.assert_allclose(losses.get("mse")(y, p), want, **LOSS_TOL)
    assert losses.get("mse") is losses.mean_squared_error


@pytest.mark.parametrize("from_logits", [False, True])
def test_binary_crossentropy_matches_keras(keras, rng, from_logits):
    y = rng.integers(0, 2, (8, 3)).astype("float32")
    y[0, 0], y[1, 1] = 0.3, 0.9  # soft labels too
    if from_logits:
        p = (4 * rng.normal(size=(8, 3))).astype("float32")
        p[2, :] = [30.0, -30.0, 0.0]  # saturated logits
    else:
        p = _probabilities(rng, (8, 3))  # exact 0 and 1 against both labels
        y[-1, -1], y[-1, -2] = 1.0, 1.0
        y[0, 1] = 0.0
    want = np.asarray(keras.losses.binary_crossentropy(y, p, from_logits=from_logits))
    got = losses.get("binary_crossentropy", from_logits=from_logits)(y, p)
    assert got.shape == (8,)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, **LOSS_TOL)


@pytest.mark.parametrize("from_logits", [False, True])
def test_categorical_crossentropy_matches_keras(keras, rng, from_logits):
    k = 4
    y = np.eye(k, dtype="float32")[rng.integers(0, k, 7)]
    if from_logits:
        p = (3 * rng.normal(size=(7, k))).astype("float32")
        p[0] = [40.0, -40.0, 0.0, 1.0]
    else:
        p = (5 * rng.uniform(size=(7, k))).astype("float32")  # rows do not sum to 1
        p[0] = y[0]                      # exactly right: p = 1 on the true class
        p[1] = 1.0 - y[1]                # p = 0 on the true class
        p[2, np.argmax(y[2])] = 0.0      # unnormalised, 0 on the true class
    want = np.asarray(keras.losses.categorical_crossentropy(y, p, from_logits=from_logits))
    got = losses.get("categorical_crossentropy", from_logits=from_logits)(y, p)
    assert got.shape == (7,)
    np.testing.assert_allclose(got, want, **LOSS_TOL)


@pytest.mark.parametrize("label_shape", ["B", "Bx1"])
@pytest.mark.parametrize("from_logits", [False, True])
def test_sparse_categorical_crossentropy_matches_keras(keras, rng, label_shape, from_logits):
    """Keras' sparse cross-entropy on logits or on probability rows (summing to 1)."""
    k = 5
    ids = rng.integers(0, k, 7)
    if from_logits:
        p = (3 * rng.normal(size=(7, k))).astype("float32")
    else:
        p = rng.uniform(size=(7, k)).astype("float32")
        p[0] = np.eye(k)[ids[0]]           # p = 1 on the true class
        p[1] = np.eye(k)[(ids[1] + 1) % k]  # p = 0 on the true class
        p /= p.sum(axis=1, keepdims=True)
    y = ids if label_shape == "B" else ids[:, None]
    want = np.asarray(keras.losses.sparse_categorical_crossentropy(y, p, from_logits=from_logits))
    got = losses.get("sparse_categorical_crossentropy", from_logits=from_logits)(y, p)
    assert got.shape == (7,)
    np.testing.assert_allclose(got, want, **LOSS_TOL)


def test_sparse_categorical_crossentropy_unnormalised_rows(keras, rng):
    """Rows not summing to 1: normalised, then clipped, like Keras' categorical loss.

    This is Keras' JAX-backend sparse formula. Its TF backend clips before
    normalising (`log(clip(p))` fed to a softmax), which differs once an
    entry exceeds 1 - 1e-7, so the reference is `categorical_crossentropy`
    on the one-hot labels, where both backends agree.
    """
    k = 5
    ids = rng.integers(0, k, 7)
    p = (3 * rng.uniform(size=(7, k))).astype("float32")
    p[1, ids[1]] = 0.0
    want = np.asarray(keras.losses.categorical_crossentropy(np.eye(k, dtype="float32")[ids], p))
    got = losses.sparse_categorical_crossentropy(ids, p)
    np.testing.assert_allclose(got, want, **LOSS_TOL)


@pytest.mark.parametrize("name", ["mean_squared_error", "binary_crossentropy"])
def test_loss_labels_b_against_predictions_bx1(keras, rng, name):
    """y `(B,)` against predictions `(B, 1)`, as Keras' `Loss` objects (used by `compile`)."""
    y = rng.integers(0, 2, 9).astype("float32")
    p = rng.uniform(0.01, 0.99, (9, 1)).astype("float32")
    keras_loss = {"mean_squared_error": keras.losses.MeanSquaredError,
                  "binary_crossentropy": keras.losses.BinaryCrossentropy}[name](reduction=None)
    want = np.asarray(keras_loss(y, p)).reshape(9)
    got = losses.get(name)(y, p)
    assert got.shape == (9,)
    np.testing.assert_allclose(got, want, **LOSS_TOL)


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="'hinge_loss'"):
        losses.get("hinge_loss")


# -- 2. metrics ---------------------------------------------------------------------------------


def _per_sample(keras_values, batch):
    """Keras' metric functions return `(B,)` or `(B, K)`; `MeanMetricWrapper` averages all."""
    return np.asarray(keras_values).reshape(batch, -1).mean(axis=-1)


@pytest.mark.parametrize("shapes", ["Bx1", "BxK", "B_vs_Bx1"])
def test_binary_accuracy_matches_keras(keras, rng, shapes):
    k = 3 if shapes == "BxK" else 1
    y = rng.integers(0, 2, (10, k)).astype("float32")
    p = rng.uniform(size=(10, k)).astype("float32")
    p[0, 0], p[1, 0] = 0.5, 0.5000001  # on the threshold, just above
    if shapes == "B_vs_Bx1":
        y = y[:, 0]
    want = _per_sample(keras.metrics.binary_accuracy(y, p), 10)
    got = metrics.binary_accuracy(y, p)
    assert got.shape == (10,)
    np.testing.assert_allclose(got, want, **LOSS_TOL)


def test_categorical_accuracy_matches_keras(keras, rng):
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, 12)]
    p = rng.uniform(size=(12, 4)).astype("float32")
    p[0] = [0.3, 0.3, 0.2, 0.2]  # a tie: both take the first maximum
    p[1] = y[1]
    want = _per_sample(keras.metrics.categorical_accuracy(y, p), 12)
    got = metrics.categorical_accuracy(y, p)
    assert got.shape == (12,)
    np.testing.assert_allclose(got, want, **LOSS_TOL)
    assert 0 < want.sum() < 12


@pytest.mark.parametrize("label_shape", ["B", "Bx1"])
def test_sparse_categorical_accuracy_matches_keras(keras, rng, label_shape):
    ids = rng.integers(0, 4, 12)
    p = rng.uniform(size=(12, 4)).astype("float32")
    p[0] = np.eye(4)[ids[0]]
    y = ids if label_shape == "B" else ids[:, None]
    want = _per_sample(keras.metrics.sparse_categorical_accuracy(y, p), 12)
    got = metrics.sparse_categorical_accuracy(y, p)
    assert got.shape == (12,)
    np.testing.assert_allclose(got, want, **LOSS_TOL)


def _keras_accuracy_class(keras, y, p):
    """The metric class Keras' `compile(metrics=['accuracy'])` uses for these shapes."""
    try:
        from keras.src.trainers.compile_utils import get_metric
    except ImportError:  # another layout: compile a model and read its metric
        inp = keras.Input(p.shape[1:])
        model = keras.Model(inp, keras.layers.Identity()(inp))
        model.compile(loss=lambda y_true, y_pred: keras.ops.mean(y_pred), metrics=["accuracy"])
        model.evaluate(p, y, verbose=0)
        return type(model.metrics[-1].metrics[0]).__name__
    return type(get_metric("accuracy", y, p)).__name__


@pytest.mark.parametrize("y_shape, p_shape", [
    ((6, 1), (6, 1)), ((6, 3), (6, 3)), ((6,), (6, 3)), ((6, 1), (6, 3)), ((6,), (6, 1))])
def test_accuracy_resolves_as_keras_compile(keras, y_shape, p_shape):
    names = {"BinaryAccuracy": metrics.binary_accuracy,
             "CategoricalAccuracy": metrics.categorical_accuracy,
             "SparseCategoricalAccuracy": metrics.sparse_categorical_accuracy}
    keras_name = _keras_accuracy_class(keras, np.zeros(y_shape, "float32"),
                                       np.zeros(p_shape, "float32"))
    assert metrics.resolve_accuracy(y_shape, p_shape) is names[keras_name]
    assert metrics.get("acc", y_shape, p_shape) is names[keras_name]


def test_unknown_metric_name():
    with pytest.raises(ValueError, match="'precision_at_3'"):
        metrics.get("precision_at_3")


# -- 3. optimizers ------------------------------------------------------------------------------


OPTIMIZERS = {
    "adam": (lambda k: k.optimizers.Adam(), lambda: optimizers.adam()),
    "adam_lr_eps": (lambda k: k.optimizers.Adam(learning_rate=0.02, beta_1=0.8, epsilon=1e-3),
                    lambda: optimizers.adam(0.02, beta_1=0.8, epsilon=1e-3)),
    "sgd_momentum": (lambda k: k.optimizers.SGD(0.05, momentum=0.9),
                     lambda: optimizers.sgd(0.05, momentum=0.9)),
    "sgd_nesterov": (lambda k: k.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                     lambda: optimizers.sgd(0.05, momentum=0.9, nesterov=True)),
    "rmsprop": (lambda k: k.optimizers.RMSprop(), lambda: optimizers.rmsprop()),
    "rmsprop_centered": (lambda k: k.optimizers.RMSprop(centered=True, momentum=0.5),
                         lambda: optimizers.rmsprop(centered=True, momentum=0.5)),
}
# Gradients of order 1e-5 make epsilon's place (inside the square root for
# RMSprop, outside the bias correction for Adam) visible.
SMALL_GRADIENTS = ("adam", "rmsprop", "rmsprop_centered")


def _run_both(keras, keras_opt, optax_opt, rng, steps=10, grad_scale=1.0):
    """The same gradients through Keras and optax; yields both variables after each step."""
    init = {"kernel": rng.normal(size=(3, 4)).astype("float32"),
            "bias": rng.normal(size=(4,)).astype("float32")}
    grads = [{k: (grad_scale * rng.normal(size=v.shape)).astype("float32")
              for k, v in init.items()} for _ in range(steps)]
    names = sorted(init)
    kvars = [keras.Variable(init[k]) for k in names]
    params = {k: jnp.asarray(v) for k, v in init.items()}
    state = optax_opt.init(params)
    for g in grads:
        keras_opt.apply_gradients([(g[k], v) for k, v in zip(names, kvars)])
        updates, state = optax_opt.update({k: jnp.asarray(v) for k, v in g.items()}, state, params)
        params = optax.apply_updates(params, updates)
        yield ({k: np.asarray(v) for k, v in zip(names, kvars)},
               {k: np.asarray(v) for k, v in params.items()})


@pytest.mark.parametrize("name, grad_scale", [(name, 1.0) for name in OPTIMIZERS]
                         + [(name, 1e-5) for name in SMALL_GRADIENTS])
def test_optimizer_matches_keras(keras, rng, name, grad_scale):
    make_keras, make_ours = OPTIMIZERS[name]
    steps = 0
    for k_vars, j_vars in _run_both(keras, make_keras(keras), make_ours(), rng,
                                    grad_scale=grad_scale):
        steps += 1
        for k in k_vars:
            assert j_vars[k].dtype == np.float32
            np.testing.assert_allclose(j_vars[k], k_vars[k], **OPT_TOL,
                                       err_msg=f"{k} after step {steps}")
    assert steps == 10


def test_optax_adam_is_not_keras_adam(keras, rng):
    """Keras adds epsilon to sqrt(v), optax to sqrt(v_hat): visible for gradients ~ epsilon.

    With gradients of order 1e-6 the custom `adam` still equals Keras, while
    `optax.adam` with the same epsilon moves the weights measurably differently
    (so the custom transformation is needed).
    """
    kw = dict(grad_scale=1e-6, steps=3)
    keras_after, ours_after = zip(*[
        (k["kernel"].copy(), j["kernel"].copy())
        for k, j in _run_both(keras, keras.optimizers.Adam(), optimizers.adam(),
                              np.random.default_rng(7), **kw)])
    _, optax_after = zip(*[
        (k["kernel"].copy(), j["kernel"].copy())
        for k, j in _run_both(keras, keras.optimizers.Adam(),
                              optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-7),
                              np.random.default_rng(7), **kw)])
    init = np.random.default_rng(7).normal(size=(3, 4)).astype("float32")
    for k_w, o_w, x_w in zip(keras_after, ours_after, optax_after):
        np.testing.assert_allclose(o_w, k_w, **OPT_TOL)
        keras_step, optax_step = k_w - init, x_w - init
        assert np.max(np.abs(optax_step - keras_step)) > 0.1 * np.max(np.abs(keras_step))


def test_unknown_optimizer_name():
    with pytest.raises(ValueError, match="'adagrad'"):
        optimizers.get("adagrad")


# -- 4. validation split ------------------------------------------------------------------------


def _keras_split_at(n, split):
    try:
        from keras.src.trainers.data_adapters.data_adapter_utils import train_validation_split
    except ImportError:
        from keras.src.trainers.data_adapters.array_slicing import train_validation_split
    train, _ = train_validation_split((np.arange(n),), validation_split=split)
    return len(train[0])


@pytest.mark.parametrize("n", [10, 11, 97, 250, 253, 1001])
@pytest.mark.parametrize("split", [0.2, 0.3, 0.25, 0.1, 1 / 3])
def test_train_validation_split_matches_keras(keras, n, split):
    assert training.train_validation_split(n, split) == _keras_split_at(n, split)


def test_train_validation_split_too_few_samples(keras):
    """Where Keras refuses (nothing left to train or validate on), so does rnn_jax."""
    for n, split in ((3, 0.9), (1, 0.5), (1, 1e-17)):
        with pytest.raises(ValueError):
            _keras_split_at(n, split)
        with pytest.raises(ValueError, match=f"{n} samples"):
            training.train_validation_split(n, split)


@pytest.mark.parametrize("split", [-0.1, 1.0, 1.5])
def test_train_validation_split_invalid(split):
    with pytest.raises(ValueError, match="validation_split"):
        training.train_validation_split(100, split)


def test_no_validation_split_keeps_all():
    assert training.train_validation_split(17, 0.0) == 17


# -- 5. fit parity with Keras -------------------------------------------------------------------

N_FIT, BATCH, EPOCHS, SPLIT = 253, 8, 3, 0.2  # 202 training samples: a last batch of 2


def _dense_gradient_adam(keras, learning_rate):
    """Keras Adam given dense gradients (see the module docstring's known divergence)."""
    import tensorflow as tf

    class DenseGradientAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            return super().update_step(tf.convert_to_tensor(gradient), variable, learning_rate)

    return DenseGradientAdam(learning_rate)


def _fit_both(keras, keras_model, x, y, *, loss, keras_optimizer, optimizer, metrics=()):
    jax_model = rnn_jax.from_keras(keras_model)  # identical initial weights
    for a, b in zip(keras_model.get_weights(), jax_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    keras_model.compile(loss=loss, optimizer=keras_optimizer, metrics=list(metrics))
    keras_history = keras_model.fit(x, y, batch_size=BATCH, epochs=EPOCHS,
                                    validation_split=SPLIT, shuffle=False, verbose=0).history
    result = rnn_jax.fit(jax_model, x, y, loss=loss, optimizer=optimizer, metrics=list(metrics),
                         batch_size=BATCH, epochs=EPOCHS, validation_split=SPLIT,
                         shuffle=False, verbose=0)
    assert_history_close(keras_history, result.history)
    # `fit` trains a module in place: its weights are the trained ones.
    for i, (kw, jw) in enumerate(zip(keras_model.get_weights(), jax_model.get_weights(),
                                     strict=True)):
        np.testing.assert_allclose(jw, kw, atol=WEIGHT_ATOL, rtol=0, err_msg=f"weight {i}")
    return keras_history, result


def test_fit_matches_keras_sum_of_digits(keras, rng):
    """Notebook 000: SimpleRNN(1, 'linear') sums 3 digits; mse, Adam."""
    keras.utils.set_random_seed(0)
    ids = rng.integers(0, 10, (N_FIT, 3))
    x, y = ids[..., None].astype("float32"), ids.sum(1, keepdims=True).astype("float32")
    km = keras.Sequential([keras.Input((3, 1)), keras.layers.SimpleRNN(1, activation="linear")])
    w0 = [w.copy() for w in km.get_weights()]
    history, _ = _fit_both(keras, km, x, y, loss="mean_squared_error",
                           keras_optimizer=keras.optimizers.Adam(0.01),
                           optimizer=rnn_jax.optimizers.adam(0.01))
    assert set(history) == {"loss", "val_loss"}
    assert history["loss"][-1] < history["loss"][0]
    assert max(np.max(np.abs(a - b)) for a, b in zip(km.get_weights(), w0)) > 0.01


def test_fit_matches_keras_contains_a_4(keras, rng):
    """Notebook 002: Embedding + SimpleRNN(1, 'linear') + sigmoid; BCE, Adam(0.02), accuracy.

    Keras' TF backend computes this binary cross-entropy from the logits
    behind the `Activation('sigmoid')`, rnn_jax from the clipped
    probabilities: the histories still agree to ~3e-7, because no
    prediction comes near the 1e-7 clip in 3 epochs. The Keras side is given
    dense Embedding gradients (see the module docstring).
    """
    keras.utils.set_random_seed(1)
    L = keras.layers
    ids = rng.integers(0, 10, (N_FIT, 3)).astype("int32")
    y = np.any(ids == 4, axis=1, keepdims=True).astype("float32")
    km = keras.Sequential([keras.Input((3,), dtype="int32"), L.Embedding(10, 4),
                           L.SimpleRNN(1, activation="linear"), L.Activation("sigmoid")])
    history, _ = _fit_both(keras, km, ids, y, loss="binary_crossentropy",
                           keras_optimizer=_dense_gradient_adam(keras, 0.02),
                           optimizer=rnn_jax.optimizers.adam(0.02), metrics=["accuracy"])
    assert set(history) == {"loss", "val_loss", "accuracy", "val_accuracy"}
    assert history["val_accuracy"][-1] > 0.9  # it learned something


def test_fit_matches_keras_lstm_softmax(keras, rng):
    """LSTM(8) + Dense(3, softmax); categorical cross-entropy, RMSprop with momentum."""
    keras.utils.set_random_seed(2)
    L = keras.layers
    x = rng.normal(size=(N_FIT, 5, 2)).astype("float32")
    classes = (x[:, :, 0].sum(1) > 0.5).astype(int) + (x[:, :, 1].sum(1) > 0.5).astype(int)
    y = np.eye(3, dtype="float32")[classes]
    km = keras.Sequential([keras.Input((5, 2)), L.LSTM(8), L.Dense(3, activation="softmax")])
    history, _ = _fit_both(keras, km, x, y, loss="categorical_crossentropy",
                           keras_optimizer=keras.optimizers.RMSprop(0.01, momentum=0.5),
                           optimizer=rnn_jax.optimizers.rmsprop(0.01, momentum=0.5),
                           metrics=["accuracy"])
    assert set(history) == {"loss", "val_loss", "accuracy", "val_accuracy"}


def test_keras_tf_adam_squares_sparse_gradient_slices(keras, rng):
    """The divergence the Embedding parity test works around, pinned down on one step.

    An `Embedding` row looked up `k` times gets `k` gradient slices `g_i`,
    whose sum `G` is the row's gradient. Adam's first step is
    `-lr G / (sqrt(V) + eps / sqrt(1 - b2))`. Dense (rnn_jax, Keras' JAX
    backend, Keras' TF Adam given a dense tensor): `V = G^2`. Keras' TF Adam
    given the `IndexedSlices` squares the slices before their duplicates are
    summed: `V = sum(g_i^2)`.
    """
    import tensorflow as tf

    lr, b2, eps = 0.1, 0.999, 1e-7
    ids = np.array([0, 0, 1, 2, 0])  # row 0 three times, rows 1 and 2 once, row 3 never
    coef = rng.normal(size=(5, 3)).astype("float32")
    one_hot = np.eye(4, dtype="float32")[ids]
    G, S = one_hot.T @ coef, one_hot.T @ coef**2  # per row: sum(g_i), sum(g_i^2)
    c = eps / np.sqrt(1 - b2)
    dense_step = -lr * G / (np.abs(G) + c)
    sliced_step = -lr * G / (np.sqrt(S) + c)

    def keras_step(densify):
        emb = keras.layers.Embedding(4, 3)
        emb.build((None,))
        w0 = emb.get_weights()[0]
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(emb(ids) * coef)
        (grad,) = tape.gradient(loss, emb.trainable_variables)
        assert isinstance(grad, tf.IndexedSlices)
        keras.optimizers.Adam(lr, beta_2=b2, epsilon=eps).apply_gradients(
            [(tf.convert_to_tensor(grad) if densify else grad, emb.embeddings)])
        return emb.get_weights()[0] - w0

    table = jnp.zeros((4, 3))
    grads = jax.grad(lambda t: jnp.sum(t[ids] * coef))(table)
    opt = optimizers.adam(lr, beta_2=b2, epsilon=eps)
    ours, _ = opt.update(grads, opt.init(table))

    np.testing.assert_allclose(ours, dense_step, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(keras_step(densify=True), dense_step, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(keras_step(densify=False), sliced_step, rtol=1e-5, atol=1e-7)
    assert np.max(np.abs(dense_step[0] - sliced_step[0])) > 1e-3  # the repeated row differs
    np.testing.assert_allclose(dense_step[1:], sliced_step[1:], rtol=1e-6)


# -- 6. one training step -----------------------------------------------------------------------


def _classifier():
    return rnn_jax.Sequential([rnn_jax.Embedding(10, 4, rngs=nnx.Rngs(0)),
                               rnn_jax.LSTM(3, rngs=nnx.Rngs(1)),
                               rnn_jax.Dense(2, activation="softmax", rngs=nnx.Rngs(2))],
                              input_shape=(5,))


def _classifier_batch(rng, b=8):
    ids = rng.integers(0, 10, (b, 5))
    ids.flat[:10] = np.arange(10)  # every id occurs, so every embedding row gets a gradient
    return ids.astype("int32"), np.eye(2, dtype="float32")[rng.integers(0, 2, b)]


def test_train_step_changes_every_parameter(rng):
    engine, params = make_engine(_classifier(), "categorical_crossentropy", optimizers.adam(0.01))
    x, y = _classifier_batch(rng)
    opt_state = engine.optimizer.init(params)
    new_params, new_opt_state, sums, finite = jax.jit(engine.train_step, compiler_options=FAST)(
        params, opt_state, x, y, np.ones(8, bool), jax.random.key(0))
    assert bool(finite)
    old = jax.tree_util.tree_leaves_with_path(params)
    new = jax.tree.leaves(new_params)
    assert len(old) == len(new) == 6  # embeddings; kernel, recurrent_kernel, bias; kernel, bias
    for (path, a), b in zip(old, new):
        assert np.all(np.asarray(a) != np.asarray(b)), jax.tree_util.keystr(path)
    assert int(opt_state.count) == 0 and int(new_opt_state.count) == 1
    assert float(sums["count"]) == 8


def test_train_step_ignores_padding(rng):
    """Weight-0 samples (the pad of a last partial batch) change nothing.

    Reference: the same step on the real samples alone (SGD, so the update
    is linear in the gradient).
    """
    engine, params = make_engine(_classifier(), "categorical_crossentropy", optimizers.sgd(0.5))
    x, y = _classifier_batch(rng)
    opt_state = engine.optimizer.init(params)
    step = jax.jit(engine.train_step, compiler_options=FAST)
    w = np.arange(8) < 5
    padded, _, sums, _ = step(params, opt_state, x, y, w, jax.random.key(0))
    alone, _, _, _ = step(params, opt_state, x[:5], y[:5], np.ones(5, bool), jax.random.key(0))
    for a, b in zip(jax.tree.leaves(padded), jax.tree.leaves(alone)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert float(sums["count"]) == 5
    per_sample = -np.log(np.sum(np.asarray(engine.apply(params, x)) * y, axis=1))
    np.testing.assert_allclose(float(sums["loss"]), per_sample[:5].sum(), rtol=1e-5)


# -- 7. one epoch visits every sample once ------------------------------------------------------


@pytest.mark.parametrize("n, batch_size", [(10, 3), (9, 3), (5, 8), (1, 1), (202, 8)])
def test_batches_cover_order_once(rng, n, batch_size):
    order = rng.permutation(n)
    idx, w = training.epoch_batches(n, batch_size, jnp.asarray(order))
    bs = min(batch_size, n)
    assert idx.shape == w.shape == (math.ceil(n / bs), bs)
    idx, w = np.asarray(idx), np.asarray(w)
    np.testing.assert_array_equal(idx[w], order)
    assert np.all(w[:-1])  # only the last batch is padded
    assert np.all((idx >= 0) & (idx < n))


def _dot_batch_dims(jaxpr):
    return [e.params["dimension_numbers"][1] for e in jaxpr.eqns
            if e.primitive.name == "dot_general"]


@pytest.mark.parametrize("num_seeds", [1, 3])
def test_seed_vmap_equals_vmap_and_drops_a_single_seed_axis(num_seeds):
    def f(a, b, key, c):  # a seed-mapped matmul, a key, an unmapped argument
        return {"y": a @ b + c, "r": jax.random.uniform(key, (2,)), "k": key}

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(num_seeds, 3, 4)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(num_seeds, 4, 5)), jnp.float32)
    keys = jax.vmap(jax.random.key)(jnp.arange(num_seeds))
    c = jnp.asarray(rng.normal(size=(5,)), jnp.float32)
    in_axes = (0, 0, 0, None)
    got = training.seed_vmap(f, in_axes=in_axes)(a, b, keys, c)
    want = jax.vmap(f, in_axes=in_axes)(a, b, keys, c)
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6)
    np.testing.assert_array_equal(got["r"], want["r"])
    np.testing.assert_array_equal(jax.random.key_data(got["k"]), jax.random.key_data(want["k"]))
    assert got["y"].shape == (num_seeds, 3, 5) and got["r"].shape == (num_seeds, 2)
    # one seed: the matmul has no batch dimension; more: it is batched over seeds
    batch = _dot_batch_dims(jax.make_jaxpr(training.seed_vmap(f, in_axes=in_axes))(a, b, keys, c))
    assert batch == ([((), ())] if num_seeds == 1 else [((0,), (0,))])
    assert training.seed_vmap(f, in_axes=in_axes).__name__ == "f"


def test_seed_vmap_keeps_vmap_with_a_mesh_axis_name():
    # with spmd_axis_name the seed axis is a mesh axis: always a real vmap
    a = jnp.ones((1, 2, 2))
    jaxpr = jax.make_jaxpr(training.seed_vmap(lambda x: x @ x, spmd_axis_name="seeds"))(a)
    assert _dot_batch_dims(jaxpr) == [((0,), (0,))]


@pytest.mark.parametrize("nb, batch_bytes, chunk_bytes, expected",
                         [(2000, 48, 512, 10), (6, 60, 512, 6), (7, 60, 512, 7), (7, 60, 300, 1),
                          (12, 100, 512, 4), (5, 600, 512, 1), (9, 48, 0, 1)])
def test_chunk_steps_is_the_largest_divisor_that_fits(nb, batch_bytes, chunk_bytes, expected):
    k = training.chunk_steps(nb, batch_bytes, chunk_bytes)
    assert k == expected
    assert nb % k == 0 and (k == 1 or k * batch_bytes <= chunk_bytes)


@pytest.mark.parametrize("chunk_bytes", [0, 96, 512])
def test_epoch_in_chunks_equals_one_minibatch_at_a_time(rng, chunk_bytes):
    """Gathering minibatches k at a time changes nothing: the same steps with
    the same data, in the same order (weights and logs bitwise equal to k = 1;
    with 24 samples of batch 4, 48 bytes each: k = 1, 2 and 6)."""
    x, y = regression_data(rng, n=30)  # 24 training samples: 6 steps
    model = small_factory(nnx.Rngs(3))
    engine, _ = make_engine(model, "mean_squared_error", optimizers.adam(1e-2), batch_size=4)
    engine = dataclasses.replace(engine, shuffle=True)
    xt, yt, xv, yv = map(jnp.asarray, (x[:24], y[:24], x[24:], y[24:]))

    def run(e):
        state = e.init(jax.random.key(1))
        epoch = jax.jit(e.run_epoch)
        logs = []
        for _ in range(2):
            state, log = epoch(state, xt, yt, xv, yv)
            logs.append(log)
        return state, logs

    state0, logs0 = run(engine)
    state, logs = run(dataclasses.replace(engine, chunk_bytes=chunk_bytes))
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state0.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for log, log0 in zip(logs, logs0):
        assert set(log) == {"loss", "val_loss"}
        for name in log:
            np.testing.assert_array_equal(np.asarray(log[name]), np.asarray(log0[name]))
    assert int(state.opt_state.count) == 12


N_REC, BS_REC = 37, 5
N_TRAIN_REC = 29  # Keras' floor(37 * 0.8): 6 steps of 5, the last with 4 real samples


def _recorded_fit(shuffle, seed, epochs, n=N_REC, batch_size=BS_REC):
    """Fit with a loss that records its labels; labels are the sample indices.

    Returns the `FitResult` and, per epoch, the training samples in the order
    the steps saw them and the validation samples in the order evaluated.
    """
    x = np.random.default_rng(0).normal(size=(n, 3, 1)).astype("float32")
    y = np.arange(n, dtype="float32")[:, None]
    record = []
    result = rnn_jax.fit(small_factory(nnx.Rngs(0)), x, y, loss=recording_loss(record),
                         optimizer=optimizers.adam(1e-3), batch_size=batch_size, epochs=epochs,
                         validation_split=0.2, shuffle=shuffle, seed=seed, verbose=0,
                         compiler_options=FAST)
    n_train = training.train_validation_split(n, 0.2)
    steps = math.ceil(n_train / batch_size)
    val_batches = math.ceil((n - n_train) / batch_size)
    assert len(record) == epochs * (steps + val_batches)
    per_epoch = []
    for e in range(epochs):
        calls = record[e * (steps + val_batches):(e + 1) * (steps + val_batches)]
        train = np.concatenate(calls[:steps]).astype(int)
        val = np.concatenate(calls[steps:]).astype(int)
        per_epoch.append((train[:n_train], val[:n - n_train]))
    return result, per_epoch


@pytest.fixture(scope="module")
def shuffled_seed0():
    return _recorded_fit(shuffle=True, seed=0, epochs=2)


def test_epoch_visits_every_training_sample_once(shuffled_seed0):
    result, per_epoch = shuffled_seed0
    for train, val in per_epoch:
        np.testing.assert_array_equal(np.sort(train), np.arange(N_TRAIN_REC))
        np.testing.assert_array_equal(val, np.arange(N_TRAIN_REC, N_REC))  # in order, unshuffled
    steps_per_epoch = math.ceil(N_TRAIN_REC / BS_REC)
    np.testing.assert_array_equal(np.asarray(result.state.opt_state.count), [2 * steps_per_epoch])
    np.testing.assert_array_equal(np.asarray(result.state.epoch), [2])


# -- 10. shuffling ------------------------------------------------------------------------------


def test_epoch_visits_every_sample_once_past_2048():
    # 2,080 training samples take the Feistel path, whose out-of-range values
    # the epoch looks up chunk by chunk (`_order_and_tail`, `_resolve_order`).
    _, per_epoch = _recorded_fit(shuffle=True, seed=0, epochs=2, n=2600, batch_size=80)
    for train, val in per_epoch:
        np.testing.assert_array_equal(np.sort(train), np.arange(2080))
        np.testing.assert_array_equal(val, np.arange(2080, 2600))
    assert not np.array_equal(per_epoch[0][0], per_epoch[1][0])


def test_shuffle_draws_a_new_order_every_epoch(shuffled_seed0):
    _, ((order1, _), (order2, _)) = shuffled_seed0
    assert not np.array_equal(order1, np.arange(N_TRAIN_REC))
    assert not np.array_equal(order1, order2)


def test_no_shuffle_keeps_the_sample_order():
    _, per_epoch = _recorded_fit(shuffle=False, seed=0, epochs=1)
    np.testing.assert_array_equal(per_epoch[0][0], np.arange(N_TRAIN_REC))


def test_shuffle_order_and_result_depend_on_the_seed(shuffled_seed0):
    result0, per_epoch0 = shuffled_seed0
    result1, per_epoch1 = _recorded_fit(shuffle=True, seed=1, epochs=2)
    assert not np.array_equal(per_epoch0[0][0], per_epoch1[0][0])
    # Same initial weights (a built module), different orders: different training.
    assert not np.array_equal(result0.history["loss"], result1.history["loss"])


# -- 8, 9. many seeds at once; determinism ------------------------------------------------------

SEED_FIT = dict(loss="mean_squared_error", optimizer=optimizers.adam(0.05), batch_size=5,
                epochs=3, validation_split=0.2, verbose=0, compiler_options=FAST)


@pytest.fixture(scope="module")
def seed_runs():
    """`fit(seed=5, num_seeds=3)` and the three separate runs with seeds 5, 6, 7."""
    x, y = regression_data(np.random.default_rng(3))
    multi = rnn_jax.fit(small_factory, x, y, seed=5, num_seeds=3, **SEED_FIT)
    singles = [rnn_jax.fit(small_factory, x, y, seed=5 + i, num_seeds=1, **SEED_FIT)
               for i in range(3)]
    return x, y, multi, singles


def test_num_seeds_equals_separate_runs(seed_runs):
    _, _, multi, singles = seed_runs
    assert multi.history["loss"].shape == (3, SEED_FIT["epochs"])
    assert singles[0].history["loss"].shape == (SEED_FIT["epochs"],)
    for i, single in enumerate(singles):
        assert set(multi.history) == set(single.history) == {"loss", "val_loss"}
        for name in single.history:
            np.testing.assert_allclose(multi.history[name][i], single.history[name], **SEEDS_TOL,
                                       err_msg=f"seed {5 + i} {name}")
        for a, b in zip(param_leaves(multi.params(i)), param_leaves(single.params()), strict=True):
            np.testing.assert_allclose(a, b, **SEEDS_TOL, err_msg=f"seed {5 + i}")
    # The seeds really are different runs.
    assert not np.allclose(multi.history["loss"][0], multi.history["loss"][1])


@pytest.mark.parametrize("seed_chunk", [1, 2])
def test_seeds_run_in_chunks_equal_separate_runs(seed_runs, seed_chunk):
    # The seeds one (or two) at a time (`jax.lax.map` over chunks) train what
    # the separate runs train, and say so in the compile line.
    x, y, multi, singles = seed_runs
    lines = []
    chunked = rnn_jax.fit(small_factory, x, y, seed=5, num_seeds=3, seed_chunk=seed_chunk,
                          **{**SEED_FIT, "verbose": 1}, print_fn=lines.append)
    at_a_time = "one at a time" if seed_chunk == 1 else "2 at a time"
    assert lines[0].endswith(f"a device's seeds {at_a_time})"), lines[0]
    for i, single in enumerate(singles):
        for name in single.history:
            np.testing.assert_allclose(chunked.history[name][i], single.history[name],
                                       **SEEDS_TOL, err_msg=f"seed {5 + i} {name}")
        for a, b in zip(param_leaves(chunked.params(i)), param_leaves(single.params()),
                        strict=True):
            np.testing.assert_allclose(a, b, **SEEDS_TOL, err_msg=f"seed {5 + i}")


def test_seed_chunks_default_and_refusals():
    layout = training.SeedLayout(16)
    on_cpu = jax.default_backend() == "cpu"
    # notebook 004's SimpleRNN(50) (~5k parameters, batch 50): one at a time on CPU
    assert training.seed_chunks(4996, 50, layout).seed_chunk == (1 if on_cpu else None)
    assert training.seed_chunks(3, 4, layout).seed_chunk is None  # sum3: all vmapped
    assert training.seed_chunks(4996, 50, training.SeedLayout(1)).seed_chunk is None
    assert training.seed_chunks(3, 4, layout, requested=4).seed_chunk == 4
    assert training.seed_chunks(4996, 50, layout, requested=0).seed_chunk is None
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed_chunk must be a non-negative integer"):
            training.seed_chunks(3, 4, layout, requested=bad)


def test_same_call_is_bitwise_identical(seed_runs):
    x, y, _, singles = seed_runs
    again = rnn_jax.fit(small_factory, x, y, seed=5, num_seeds=1, **SEED_FIT)
    for name, values in singles[0].history.items():
        np.testing.assert_array_equal(again.history[name], values)
    for a, b in zip(param_leaves(again.params()), param_leaves(singles[0].params()), strict=True):
        np.testing.assert_array_equal(a, b)


# -- 10. sweeps: optimizer values vmapped with the seeds -----------------------------------------

SWEEP_FIT = dict(SEED_FIT, optimizer="adam")
SWEEP_LRS = [0.05, 0.02]


@pytest.fixture(scope="module")
def sweep_runs():
    """`fit(learning_rate=[0.05, 0.02], seed=5, num_seeds=2)` and the four separate
    runs of its members (one seed, a scalar learning rate each)."""
    x, y = regression_data(np.random.default_rng(3))
    swept = rnn_jax.fit(small_factory, x, y, seed=5, num_seeds=2, learning_rate=SWEEP_LRS,
                        **SWEEP_FIT)
    separate = {(lr, 5 + i): rnn_jax.fit(small_factory, x, y, seed=5 + i, learning_rate=lr,
                                         **SWEEP_FIT)
                for lr in SWEEP_LRS for i in range(2)}
    return x, y, swept, separate


def test_sweep_members_are_values_times_seeds(sweep_runs):
    _, _, swept, _ = sweep_runs
    assert swept.num_seeds == 2 and swept.num_members == 4
    assert swept.members == [{"seed": 5, "learning_rate": 0.05}, {"seed": 6, "learning_rate": 0.05},
                             {"seed": 5, "learning_rate": 0.02}, {"seed": 6, "learning_rate": 0.02}]
    assert swept.history["loss"].shape == (4, SWEEP_FIT["epochs"])
    assert swept.member_indices(learning_rate=0.02) == [2, 3]
    assert swept.member_indices(seed=6) == [1, 3]
    assert swept.member_indices(learning_rate=0.05, seed=6) == [1]
    with pytest.raises(ValueError, match="no member has"):
        swept.member_indices(learning_rate=0.03)
    with pytest.raises(ValueError, match="no member has beta_1"):
        swept.member_indices(beta_1=0.9)
    with pytest.raises(IndexError, match="out of range for 4 members"):
        swept.params(4)


def test_sweep_member_equals_a_separate_run(sweep_runs):
    """Each member trains what a separate `fit` with its seed and its scalar
    learning rate trains. On CPU bitwise (measured: the learning rate read
    from the optimizer state rounds as the constant does); `SEEDS_TOL` leaves
    room for a backend that batches the matmuls differently."""
    _, _, swept, separate = sweep_runs
    bitwise = jax.default_backend() == "cpu"
    for m, member in enumerate(swept.members):
        single = separate[(member["learning_rate"], member["seed"])]
        for name, values in single.history.items():
            if bitwise:
                np.testing.assert_array_equal(swept.history[name][m], values, err_msg=str(member))
            else:
                np.testing.assert_allclose(swept.history[name][m], values, **SEEDS_TOL)
        for a, b in zip(param_leaves(swept.params(m)), param_leaves(single.params()), strict=True):
            if bitwise:
                np.testing.assert_array_equal(a, b, err_msg=str(member))
            else:
                np.testing.assert_allclose(a, b, **SEEDS_TOL)
    # The values really train differently: same seed, same initial weights, other losses.
    assert not np.allclose(swept.history["loss"][0], swept.history["loss"][2])


def test_sweep_state_holds_each_members_value(sweep_runs):
    _, _, swept, separate = sweep_runs
    hp = swept.state.opt_state.hyperparams
    assert set(hp) == {"learning_rate"}
    np.testing.assert_array_equal(hp["learning_rate"],
                                  np.float32([m["learning_rate"] for m in swept.members]))
    # Without a sweep the optimizer is the plain one, its value in the program.
    single = separate[(0.05, 5)]
    assert isinstance(single.state.opt_state, optimizers.KerasAdamState)


def test_sweep_value_scales_the_first_step(rng):
    """SGD, one full-batch step from the same weights: each member's update is
    `-lr * gradient`, so the updates of two values are in the ratio of the values
    (a member that trained with another member's value would fail this)."""
    x, y = regression_data(rng, n=12)
    lrs = [0.1, 0.025, 0.4]
    result = rnn_jax.fit(small_factory, x, y, loss="mse", optimizer="sgd", learning_rate=lrs,
                         batch_size=12, epochs=1, shuffle=False, seed=2, verbose=0,
                         compiler_options=FAST)
    start = param_leaves(nnx.split(small_factory(nnx.Rngs(jax.random.split(
        jax.random.key(2))[0])), nnx.Param, ...)[1])
    deltas = [[a - s for a, s in zip(param_leaves(result.params(m)), start)] for m in range(3)]
    for m in (1, 2):
        for d, d0 in zip(deltas[m], deltas[0]):
            np.testing.assert_allclose(d, d0 * lrs[m] / lrs[0], rtol=1e-4, atol=1e-7)
    assert any(np.abs(d).max() > 1e-3 for d in deltas[0])


def test_sweep_grid_is_the_cross_product_and_matches_separate_runs():
    """Two names form a grid, the last varying fastest. beta_1 is not bitwise:
    a constant `1 - beta_1` is rounded once from the float64 value, the swept
    one is `1 - float32(beta_1)` in float32 (measured: ~1e-7 relative after 3
    epochs, so `SEEDS_TOL`)."""
    x, y = regression_data(np.random.default_rng(3))
    swept = rnn_jax.fit(small_factory, x, y, seed=5, num_seeds=1, learning_rate=[0.05, 0.02],
                        sweep={"beta_1": [0.8, 0.9]}, **SWEEP_FIT)
    assert [(m["learning_rate"], m["beta_1"]) for m in swept.members] == [
        (0.05, 0.8), (0.05, 0.9), (0.02, 0.8), (0.02, 0.9)]
    assert all(m["seed"] == 5 for m in swept.members)
    single = rnn_jax.fit(small_factory, x, y, seed=5, **dict(
        SWEEP_FIT, optimizer=optimizers.adam(0.02, beta_1=0.8)))
    for name, values in single.history.items():
        np.testing.assert_allclose(swept.history[name][2], values, **SEEDS_TOL)
    for a, b in zip(param_leaves(swept.params(2)), param_leaves(single.params()), strict=True):
        np.testing.assert_allclose(a, b, **SEEDS_TOL)
    assert not np.allclose(swept.history["loss"][2], swept.history["loss"][3])


def scaled_factory(rngs, init_scale=1.0):
    """`small_factory` whose SimpleRNN kernel is Glorot-uniform times `init_scale`
    (Keras' `VarianceScaling(init_scale, 'fan_avg', 'uniform')`)."""
    init = rnn_jax.initializers.variance_scaling(init_scale, "fan_avg", "uniform")
    return rnn_jax.Sequential([rnn_jax.SimpleRNN(2, kernel_initializer=init, rngs=rngs),
                               rnn_jax.Dense(1, rngs=rngs)], input_shape=(3, 1))


def test_sweep_of_a_model_factory_keyword_equals_separate_runs():
    """An initializer scale the factory takes as a keyword is swept like an
    optimizer value (here with an optax transformation as the optimizer, which
    only optimizer sweeps refuse). `SEEDS_TOL`: the traced scale is divided by
    the fan in float32, a constant in float64 first."""
    x, y = regression_data(np.random.default_rng(3))
    scales = [0.7, 3.0]
    swept = rnn_jax.fit(scaled_factory, x, y, seed=5, num_seeds=2, sweep={"init_scale": scales},
                        **SEED_FIT)
    assert [(m["init_scale"], m["seed"]) for m in swept.members] == [
        (0.7, 5), (0.7, 6), (3.0, 5), (3.0, 6)]
    for m, member in enumerate(swept.members):
        single = rnn_jax.fit(functools.partial(scaled_factory, init_scale=member["init_scale"]),
                             x, y, seed=member["seed"], **SEED_FIT)
        for name, values in single.history.items():
            np.testing.assert_allclose(swept.history[name][m], values, **SEEDS_TOL,
                                       err_msg=str(member))
        for a, b in zip(param_leaves(swept.params(m)), param_leaves(single.params()),
                        strict=True):
            np.testing.assert_allclose(a, b, **SEEDS_TOL, err_msg=str(member))
    assert not np.allclose(swept.history["loss"][0], swept.history["loss"][2])


# case -> (fit's sweep arguments, the message)
SWEEP_ERRORS = {
    "empty list": (dict(learning_rate=[]), "'learning_rate': the list of values is empty"),
    "lr = 0": (dict(learning_rate=[0.01, 0.0]), "learning_rate must be > 0, got 0.0"),
    "scalar lr < 0": (dict(learning_rate=-1.0), "learning_rate must be > 0, got -1.0"),
    "duplicate": (dict(learning_rate=[0.01, 0.02, 0.01]), "the value 0.01 is given twice"),
    "unknown name": (dict(sweep={"rho": [0.9]}), "cannot sweep 'rho': adam has no such "
                     r"hyperparameter \(its hyperparameters: learning_rate, beta_1, beta_2, "
                     r"epsilon\) and the model factory takes no such keyword"),
    "init_scale, factory without it": (dict(sweep={"init_scale": [1.0]}),
                                       "cannot sweep 'init_scale'"),
    "flag, not a value": (dict(sweep={"nesterov": [True]}, optimizer="sgd"),
                          "cannot sweep 'nesterov'"),
    "beta_1 = 1": (dict(sweep={"beta_1": [1.0]}), r"beta_1 must be in \[0, 1\), got 1.0"),
    "not a list": (dict(sweep={"beta_1": 0.9}), "give a list of values"),
    "both ways": (dict(learning_rate=0.01, sweep={"learning_rate": [0.1]}),
                  "learning_rate is given both"),
    "empty sweep": (dict(sweep={}), "sweep is empty"),
    "seed": (dict(sweep={"seed": [1.0, 2.0]}), "cannot sweep 'seed'"),
    "optax transformation": (dict(learning_rate=[0.1, 0.2], optimizer=optax.sgd(0.1)),
                             "needs a named optimizer"),
    "built module": (dict(learning_rate=[0.1, 0.2], model="built"), "needs a model factory"),
}


@pytest.mark.parametrize("case", list(SWEEP_ERRORS))
def test_sweep_errors(rng, case):
    changes, message = SWEEP_ERRORS[case]
    changes = dict(changes)
    model = small_factory(nnx.Rngs(0)) if changes.pop("model", None) == "built" else small_factory
    x, y = regression_data(rng, n=10)
    with pytest.raises(ValueError, match=message):
        rnn_jax.fit(model, x, y, loss="mse", verbose=0, **changes)


def test_scalar_learning_rate_is_the_named_optimizer_built_with_it(sweep_runs):
    x, y, _, separate = sweep_runs
    direct = rnn_jax.fit(small_factory, x, y, seed=5, **dict(SWEEP_FIT,
                                                               optimizer=optimizers.adam(0.05)))
    for name, values in direct.history.items():
        np.testing.assert_array_equal(separate[(0.05, 5)].history[name], values)


# -- 11. dropout --------------------------------------------------------------------------------


def dropout_factory(rngs):
    return rnn_jax.Sequential([rnn_jax.SimpleRNN(4, dropout=0.5, recurrent_dropout=0.5, rngs=rngs),
                               rnn_jax.Dense(1, rngs=rngs)], input_shape=(3, 1))


def test_dropout_trains_and_is_deterministic(rng):
    x, y = regression_data(rng)
    kw = dict(loss="mse", optimizer=optimizers.adam(0.02), batch_size=8, epochs=2,
              validation_split=0.2, seed=3, verbose=0, compiler_options=FAST)
    first = rnn_jax.fit(dropout_factory, x, y, **kw)
    second = rnn_jax.fit(dropout_factory, x, y, **kw)
    for name, values in first.history.items():
        assert np.all(np.isfinite(values)), name
        np.testing.assert_array_equal(second.history[name], values)
    for a, b in zip(param_leaves(first.state.params), param_leaves(second.state.params)):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, b)


def test_dropout_is_on_in_training_only(rng):
    """The training loss of a step is taken with dropout: it differs from the same
    step's loss without it; evaluation (`training=False`) has no dropout."""
    model = dropout_factory(nnx.Rngs(0))
    engine, params = make_engine(model, "mse", optimizers.sgd(0.0))
    x, y = regression_data(rng, n=8)
    step = jax.jit(engine.train_step, compiler_options=FAST)
    opt_state = engine.optimizer.init(params)
    w = np.ones(8, bool)
    _, _, sums_a, _ = step(params, opt_state, x, y, w, jax.random.key(0))
    _, _, sums_b, _ = step(params, opt_state, x, y, w, jax.random.key(1))
    no_dropout = np.mean((np.asarray(model(x)) - y) ** 2)
    assert float(sums_a["loss"]) != float(sums_b["loss"])  # the key draws the masks
    assert not np.isclose(float(sums_a["loss"]) / 8, no_dropout)
    np.testing.assert_allclose(float(engine.evaluate_sums(params, x, y)["loss"]) / 8, no_dropout,
                               rtol=1e-6)


# -- 12. errors ---------------------------------------------------------------------------------


def _unbuilt_factory(rngs):
    return rnn_jax.Sequential([rnn_jax.SimpleRNN(2, rngs=rngs)])  # no input_shape


# case -> (model, changes to fit's arguments, the message); model "built" is a built module.
FIT_ERRORS = {
    "batch_size=0": ("built", dict(batch_size=0), "batch_size must be a positive integer"),
    "epochs=0": ("built", dict(epochs=0), "epochs must be a positive integer"),
    "num_seeds=0": (small_factory, dict(num_seeds=0), "num_seeds must be a positive integer"),
    "validation_split=1.0": ("built", dict(validation_split=1.0),
                             r"validation_split must be in \[0, 1\)"),
    "different lengths": ("built", dict(y_len=9), "x has 10 samples but y has 9"),
    "num_seeds=2 with a module": ("built", dict(num_seeds=2),
                                  "num_seeds > 1 needs a model factory"),
    "unknown loss": ("built", dict(loss="hinge_loss"), "unknown loss 'hinge_loss'"),
    "unknown optimizer": ("built", dict(optimizer="adagrad"), "unknown optimizer 'adagrad'"),
    "unknown metric": ("built", dict(metrics=["auc"]), "unknown metric 'auc'"),
    "unbuilt model": ("unbuilt", {}, "Sequential is not built"),
    "unbuilt factory": (_unbuilt_factory, {}, "must build its model"),
}


@pytest.mark.parametrize("case", list(FIT_ERRORS))
def test_fit_errors(rng, case):
    model, changes, message = FIT_ERRORS[case]
    if model == "built":
        model = small_factory(nnx.Rngs(0))
    elif model == "unbuilt":
        model = _unbuilt_factory(nnx.Rngs(0))
    x, y = regression_data(rng, n=10)
    kw = dict(loss="mse", verbose=0)
    kw.update(changes)
    y = y[:kw.pop("y_len", len(y))]
    with pytest.raises(ValueError, match=message):
        rnn_jax.fit(model, x, y, **kw)


@pytest.mark.parametrize("where,message", [
    ("x", r"^x contains 1 NaN and 0 inf values; the first in sample 4 \(index \(4, 2, 0\)\)"),
    ("y", r"^y contains 0 NaN and 2 inf values; the first in sample 1 \(index \(1, 0\)\)"),
    ("x_val", r"^validation_data\[0\] contains 1 NaN and 0 inf values; the first in sample 4"),
    ("y_val", r"^validation_data\[1\] contains 0 NaN and 2 inf values; the first in sample 1"),
])
def test_fit_refuses_non_finite_data(rng, where, message):
    x, y = regression_data(rng, n=10)
    x_val, y_val = x.copy(), y.copy()
    bad = {"x": x, "y": y, "x_val": x_val, "y_val": y_val}[where]
    if where.startswith("x"):
        bad[4, 2, 0] = np.nan
    else:
        bad[1, 0] = np.inf
        bad[7, 0] = -np.inf
    model = small_factory(nnx.Rngs(0))
    with pytest.raises(ValueError, match=message) as info:
        rnn_jax.fit(model, x, y, loss="mse", verbose=0, validation_data=(x_val, y_val))
    assert "check_inputs=False" in str(info.value)


def test_fit_check_inputs_false_skips_the_check(rng):
    # y one sample short: the next check in line, reached without compiling anything.
    x, y = regression_data(rng, n=8)
    x[3, 0, 0] = np.nan
    model = small_factory(nnx.Rngs(0))
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        rnn_jax.fit(model, x, y[:7], loss="mse", verbose=0)
    with pytest.raises(ValueError, match="x has 8 samples but y has 7"):
        rnn_jax.fit(model, x, y[:7], loss="mse", verbose=0, check_inputs=False)


# -- 13. evaluate -------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["softmax_sparse", "sigmoid_binary"])
def test_evaluate_matches_keras(keras, rng, head):
    keras.utils.set_random_seed(4)
    L = keras.layers
    x = rng.normal(size=(70, 4, 2)).astype("float32")  # 70 = 2 * 32 + 6: a partial batch
    if head == "softmax_sparse":
        out, loss, y = L.Dense(3, activation="softmax"), "sparse_categorical_crossentropy", \
            rng.integers(0, 3, 70)
    else:
        out, loss, y = L.Dense(1, activation="sigmoid"), "binary_crossentropy", \
            rng.integers(0, 2, 70).astype("float32")
    km = keras.Sequential([keras.Input((4, 2)), L.GRU(5), out])
    km.compile(loss=loss, metrics=["accuracy"])
    want = km.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    got = rnn_jax.evaluate(rnn_jax.from_keras(km), x, y, loss=loss, metrics=["accuracy"],
                           batch_size=32)
    assert set(got) == set(want) == {"loss", "accuracy"}
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    np.testing.assert_allclose(got["accuracy"], want["accuracy"], rtol=1e-6)
    assert 0.0 < want["accuracy"] < 1.0


# -- 14. checkpoints ----------------------------------------------------------------------------


def test_train_state_checkpoint_round_trip(seed_runs, tmp_path):
    x, _, multi, _ = seed_runs
    path = checkpoints.save_train_state(str(tmp_path / "run"), multi.state)
    for i in (0, 2):
        fresh = small_factory(nnx.Rngs(100 + i))
        assert checkpoints.load_weights(fresh, path, seed_index=i) is fresh
        for a, b in zip(param_leaves(nnx.state(fresh, nnx.Param)), param_leaves(multi.params(i)),
                        strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(fresh(x), multi.model(i)(x))
    with pytest.raises(ValueError, match="holds 3 seeds; pass seed_index"):
        checkpoints.load_weights(small_factory(nnx.Rngs(0)), path)


def test_weights_checkpoint_round_trip(rng, tmp_path):
    x, _ = regression_data(rng)
    source = small_factory(nnx.Rngs(1))
    target = small_factory(nnx.Rngs(2))
    assert not np.array_equal(source(x), target(x))
    path = checkpoints.save_weights(str(tmp_path / "w"), source)
    checkpoints.load_weights(target, path)
    for a, b in zip(target.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(target(x), source(x))


def test_load_weights_into_other_architecture(tmp_path):
    path = checkpoints.save_weights(str(tmp_path / "w"), small_factory(nnx.Rngs(1)))
    wider = rnn_jax.Sequential([rnn_jax.SimpleRNN(3, rngs=nnx.Rngs(0)),
                                rnn_jax.Dense(1, rngs=nnx.Rngs(0))], input_shape=(3, 1))
    deeper = rnn_jax.Sequential([rnn_jax.SimpleRNN(2, rngs=nnx.Rngs(0)),
                                 rnn_jax.Dense(2, rngs=nnx.Rngs(0)),
                                 rnn_jax.Dense(1, rngs=nnx.Rngs(0))], input_shape=(3, 1))
    for other in (wider, deeper):
        with pytest.raises(ValueError, match="different weights|do not match"):
            checkpoints.load_weights(other, path)


def test_load_weights_missing_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        checkpoints.load_weights(small_factory(nnx.Rngs(0)), str(missing))


@pytest.mark.parametrize("n", [1, 2, 3, 8, 1395, 8000, 70000])
def test_shuffled_order_is_a_permutation(n):
    order = np.asarray(training.shuffled_order(jax.random.key(n), n))
    assert order.dtype == np.int32
    np.testing.assert_array_equal(np.sort(order), np.arange(n))


def test_shuffled_order_large_n_has_no_detectable_bias():
    # n > 2048 takes the Feistel path. Over many keys: every sampled item's
    # position is uniform (chi-square over 20 bins), and each pair of
    # neighbouring items (i, i+1), which share all but the lowest bits, comes
    # in either order half the time (z-scores standard normal).
    n, draws = 2500, 4000
    keys = jax.random.split(jax.random.key(11), draws)
    orders = np.asarray(jax.jit(jax.vmap(lambda k: training.shuffled_order(k, n)))(keys))
    positions = np.argsort(orders, axis=1)  # positions[d, item]
    chi2 = []
    for item in range(0, n, n // 25):
        h = np.bincount(positions[:, item] * 20 // n, minlength=20)
        chi2.append(np.sum((h - draws / 20) ** 2 / (draws / 20)) / 19)
    assert 0.6 < np.mean(chi2) < 1.4 and max(chi2) < 3.0, chi2
    before = np.mean(positions[:, :-1] < positions[:, 1:], axis=0)
    z = (before - 0.5) / np.sqrt(0.25 / draws)
    assert abs(np.mean(z)) < 0.2 and 0.85 < np.std(z) < 1.15 and np.max(np.abs(z)) < 5.5


def _feistel_walk_reference(key, n):
    """`shuffled_order`'s Feistel path written out in numpy: each position
    walked on its own until its value falls below n."""
    b = (n - 1).bit_length()
    round_keys = np.asarray(jax.random.bits(key, (8, 2), jnp.uint32)).astype(np.uint64)
    mask32 = np.uint64(0xFFFFFFFF)

    def hash_u32(x, k):
        x = ((x ^ k[0]) * np.uint64(0x7FEB352D)) & mask32
        x ^= x >> np.uint64(15)
        x = ((x + k[1]) * np.uint64(0x846CA68B)) & mask32
        return x ^ (x >> np.uint64(16))

    def permute(v):
        r = b // 2
        for k in round_keys:
            lo, hi = v & np.uint64((1 << r) - 1), v >> np.uint64(r)
            f = hash_u32(lo, k)
            v = (lo << np.uint64(b - r)) | ((hi ^ f) & np.uint64((1 << (b - r)) - 1))
            r = b - r
        return v

    order = []
    for i in range(n):
        v = permute(np.uint64(i))
        while v >= n:
            v = permute(v)
        order.append(int(v))
    return np.array(order)


@pytest.mark.parametrize("n", [2049, 2500, 3000])
def test_shuffled_order_is_the_feistel_cycle_walk(n):
    # n = 2049 leaves 2,047 of the 4,096 Feistel values outside range(n), so
    # some keys have cycles wholly outside it (`_order_and_tail` must stop there).
    for seed in range(3):
        key = jax.random.key(seed)
        np.testing.assert_array_equal(np.asarray(training.shuffled_order(key, n)),
                                      _feistel_walk_reference(key, n))


def test_shuffled_order_is_uniform():
    # All 24 orders of 4 items, each 1/24 likely: counts within 5 sigma of the
    # binomial expectation; and each item lands in each position 1/4 of the time.
    draws = 24000
    keys = jax.random.split(jax.random.key(7), draws)
    orders = np.asarray(jax.jit(jax.vmap(lambda k: training.shuffled_order(k, 4)))(keys))
    counts = collections.Counter(map(tuple, orders.tolist()))
    assert len(counts) == 24
    p = 1 / 24
    sigma = np.sqrt(draws * p * (1 - p))
    assert max(abs(c - draws * p) for c in counts.values()) < 5 * sigma
    freq = np.array([[np.mean(orders[:, i] == j) for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(freq, 0.25, atol=5 * np.sqrt(0.25 * 0.75 / draws))
