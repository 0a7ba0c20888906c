"""The layers around the recurrent ones (`Dropout`, `Flatten`, `RepeatVector`,
`TimeDistributed`, `Concatenate`, `Add`, `GlobalAveragePooling1D`,
`GlobalMaxPooling1D`) against Keras 3 (TensorFlow backend).

Each test runs the same inputs and weights through Keras and rnn_jax
(`from_keras` / `to_keras`) and compares the outputs (float32 within 1e-5)
and the masks passed on: Keras' are the masks it attaches to an eager
layer's output (`_keras_mask`, what the next layer receives); rnn_jax's are
what `Sequential` passes on (`models.apply_layer`, the layer's
`compute_mask`). Masks come from an upstream `Embedding(mask_zero=True)`.
Nothing is compared against an earlier rnn_jax output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnn_jax as R
from rnn_jax.models import apply_layer

# Keras warns when a layer that does not support masking (Flatten, the max
# pooling) drops a mask: expected here, and tested.
pytestmark = pytest.mark.filterwarnings("ignore:.*does not support masking:UserWarning")

B, T, D = 3, 5, 4  # batch, time steps, features
V = 9  # vocabulary of the Embedding that makes masks
ATOL = 1e-5


# -- helpers ----------------------------------------------------------------------


def keras_mask(tensor):
    """The mask Keras attached to an eager output (None if none)."""
    from keras.src import backend

    mask = backend.get_keras_mask(tensor)
    return None if mask is None else np.asarray(mask)


def assert_same(keras_out, jax_out, atol=ATOL):
    k, j = np.asarray(keras_out), np.asarray(jax_out)
    assert k.shape == j.shape, f"Keras shape {k.shape}, rnn_jax {j.shape}"
    assert k.dtype == j.dtype, f"Keras dtype {k.dtype}, rnn_jax {j.dtype}"
    np.testing.assert_allclose(j, k, atol=atol, rtol=0)


def assert_same_mask(keras_m, jax_m):
    if keras_m is None:
        assert jax_m is None, f"Keras passes no mask, rnn_jax passes {np.asarray(jax_m)}"
        return
    assert jax_m is not None, f"Keras passes the mask {keras_m}, rnn_jax none"
    np.testing.assert_array_equal(np.asarray(jax_m), keras_m)


def ids_with_padding(rng, batch=B, steps=T):
    """Ids in [1, V) with zeros (padding) inside and at the end; no row all zeros."""
    ids = rng.integers(1, V, size=(batch, steps))
    ids[0, -2:] = 0
    ids[1, 1] = 0
    ids[2, [0, 3]] = 0
    return ids


def randomize(keras_obj, rng, scale=0.5):
    """N(0, scale^2) weights, so that every value carries signal."""
    keras_obj.set_weights([rng.normal(0, scale, w.shape).astype(w.dtype)
                           for w in keras_obj.get_weights()])


def masked_embedding(keras, rng, dim=D):
    """A built Keras `Embedding(V, dim, mask_zero=True)` with N(0, 1) weights,
    and its rnn_jax copy."""
    kemb = keras.layers.Embedding(V, dim, mask_zero=True)
    kemb.build((None, T))
    randomize(kemb, rng, 1.0)
    return kemb, R.from_keras(kemb)


def features(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


# -- each layer on its own, and the mask it passes on --------------------------------

# name -> (Keras layer factory, input shape); inputs are N(0, 1) float32
SINGLE = {
    "dropout_inference": (lambda L: L.Dropout(0.4), (B, T, D)),
    "flatten": (lambda L: L.Flatten(), (B, T, D)),
    "flatten_channels_first": (lambda L: L.Flatten("channels_first"), (B, 2, T, D)),
    "flatten_1d": (lambda L: L.Flatten(), (B,)),
    "repeat_vector": (lambda L: L.RepeatVector(3), (B, D)),
    "time_distributed_dense": (lambda L: L.TimeDistributed(L.Dense(5, activation="tanh")),
                               (B, T, D)),
    "time_distributed_flatten": (lambda L: L.TimeDistributed(L.Flatten()), (B, T, 2, 3)),
    "global_average": (lambda L: L.GlobalAveragePooling1D(), (B, T, D)),
    "global_average_keepdims": (lambda L: L.GlobalAveragePooling1D(keepdims=True), (B, T, D)),
    "global_average_channels_first": (
        lambda L: L.GlobalAveragePooling1D("channels_first"), (B, D, T)),
    "global_max": (lambda L: L.GlobalMaxPooling1D(), (B, T, D)),
    "global_max_channels_first_keepdims": (
        lambda L: L.GlobalMaxPooling1D("channels_first", keepdims=True), (B, D, T)),
}


@pytest.mark.parametrize("case", list(SINGLE))
def test_layer_matches_keras(keras, rng, case):
    make, shape = SINGLE[case]
    kl = make(keras.layers)
    x = features(rng, *shape)
    ky = kl(x)
    if kl.weights:
        randomize(kl, rng)
        ky = kl(x)
    jl = R.from_keras(kl)
    assert type(jl).__name__ == type(kl).__name__
    assert_same(ky, jl(x))
    assert_same(ky, jax.jit(lambda x: jl(x))(x))
    assert tuple(jl.compute_output_shape((None, *shape[1:]))) == tuple(
        kl.compute_output_shape((None, *shape[1:])))


@pytest.mark.parametrize("case", ["dropout_inference", "flatten", "time_distributed_dense",
                                  "global_average", "global_average_keepdims", "global_max"])
def test_layer_on_masked_sequences_matches_keras(keras, rng, case):
    """After `Embedding(mask_zero=True)`: the same outputs (the masked mean for
    GlobalAveragePooling1D; GlobalMaxPooling1D ignores the mask, as Keras'
    does) and the same mask passed on (kept by Dropout and TimeDistributed,
    dropped by Flatten and the poolings)."""
    kemb, jemb = masked_embedding(keras, rng)
    kl = SINGLE[case][0](keras.layers)
    ids = ids_with_padding(rng)
    ke = kemb(ids)
    ky = kl(ke)
    if kl.weights:
        randomize(kl, rng)
        ky = kl(ke)
    jl = R.from_keras(kl)
    x, mask = jemb(ids), jemb.compute_mask(ids)
    jy, jmask = apply_layer(jl, x, mask)
    assert_same(ky, jy)
    assert_same_mask(keras_mask(ky), jmask)
    if case == "global_average":  # the mask changes the result
        assert not np.allclose(np.asarray(jy), np.asarray(x).mean(axis=1), atol=1e-3)


def test_global_average_pooling_fully_masked_sample_is_nan_as_in_keras(keras, rng):
    kemb, jemb = masked_embedding(keras, rng)
    ids = ids_with_padding(rng)
    ids[1] = 0
    ky = keras.layers.GlobalAveragePooling1D()(kemb(ids))
    jy = R.GlobalAveragePooling1D()(jemb(ids), mask=jemb.compute_mask(ids))
    assert np.isnan(np.asarray(ky)[1]).all() and np.isnan(np.asarray(jy)[1]).all()
    assert_same(ky, jy)


def test_time_distributed_passes_an_inner_mask_step_by_step(keras, rng):
    """Ids `(B, T, S)`: the Embedding's `(B, T, S)` mask reaches the wrapped
    layer as each step's `(B, S)` mask, as in Keras."""
    kemb, jemb = masked_embedding(keras, rng)
    ids = np.stack([ids_with_padding(rng, B, 4) for _ in range(T)], axis=1)  # (B, T, 4)
    kl = keras.layers.TimeDistributed(keras.layers.GlobalAveragePooling1D())
    ke = kemb(ids)
    ky = kl(ke)
    jy, jmask = apply_layer(R.from_keras(kl), jemb(ids), jemb.compute_mask(ids))
    assert_same(ky, jy)
    assert_same_mask(keras_mask(ky), jmask)


def test_layers_get_config_is_keras(keras):
    L = keras.layers
    pairs = [
        (L.Dropout(0.25, noise_shape=(None, 1, 3), seed=7),
         R.Dropout(0.25, (None, 1, 3), 7)),
        (L.Flatten("channels_first"), R.Flatten("channels_first")),
        (L.RepeatVector(4), R.RepeatVector(4)),
        (L.Concatenate(axis=1), R.Concatenate(1)),
        (L.Add(), R.Add()),
        (L.GlobalAveragePooling1D("channels_first", True),
         R.GlobalAveragePooling1D("channels_first", True)),
        (L.GlobalMaxPooling1D(keepdims=True), R.GlobalMaxPooling1D(keepdims=True)),
    ]
    for kl, jl in pairs:
        config = kl.get_config()
        assert jl.get_config() == {k: config[k] for k in jl.get_config()}, type(kl).__name__
    td = R.TimeDistributed(R.Dense(3, rngs=nnx.Rngs(0)))
    assert td.get_config() == {"layer": {"class_name": "Dense",
                                         "config": td.layer.get_config()}}


# -- merges ---------------------------------------------------------------------------

# name -> (Keras layer factory, shapes of the inputs)
MERGES = {
    "concat_features": (lambda L: L.Concatenate(), [(B, T, D), (B, T, 2)]),
    "concat_time": (lambda L: L.Concatenate(axis=1), [(B, T, D), (B, 2, D)]),
    "concat_three_2d": (lambda L: L.Concatenate(), [(B, 2), (B, 3), (B, 1)]),
    "add": (lambda L: L.Add(), [(B, T, D), (B, T, D)]),
    "add_three": (lambda L: L.Add(), [(B, T, D), (B, T, D), (B, T, D)]),
    "add_broadcast_step": (lambda L: L.Add(), [(B, T, D), (B, 1, D)]),
    "add_lower_rank": (lambda L: L.Add(), [(B, T, D), (B, D)]),
}


@pytest.mark.parametrize("case", list(MERGES))
def test_merge_matches_keras(keras, rng, case):
    make, shapes = MERGES[case]
    kl = make(keras.layers)
    xs = [features(rng, *s) for s in shapes]
    ky = kl(xs)
    jl = R.from_keras(kl)
    assert_same(ky, jl(xs))
    assert_same(ky, jax.jit(lambda xs: jl(xs))(xs))
    none_batch = [(None, *s[1:]) for s in shapes]
    assert tuple(jl.compute_output_shape(none_batch)) == tuple(kl.compute_output_shape(none_batch))


@pytest.mark.parametrize("which", ["concat_features", "concat_time", "add"])
@pytest.mark.parametrize("masked", ["both", "first", "second", "none"])
def test_merge_masks_match_keras(keras, rng, which, masked):
    """Keras' mask rules for merges: Concatenate on features unmasks a step
    that an unmasked input has; along time it joins the time masks; Add is
    masked only when every input is (the masks or-ed)."""
    kemb, jemb = masked_embedding(keras, rng)
    L = keras.layers
    kl = {"concat_features": L.Concatenate(), "concat_time": L.Concatenate(axis=1),
          "add": L.Add()}[which]
    ids_a, ids_b = ids_with_padding(rng), ids_with_padding(rng)[::-1].copy()
    ids_b[:, -1] = 0
    k_in, j_in, j_masks = [], [], []
    for ids, use_mask in ((ids_a, masked in ("both", "first")),
                          (ids_b, masked in ("both", "second"))):
        ke = kemb(ids)
        x = np.asarray(jemb(ids))
        if not use_mask:  # the same values without a mask
            ke = keras.ops.convert_to_tensor(x)
        k_in.append(ke)
        j_in.append(x)
        j_masks.append(jemb.compute_mask(ids) if use_mask else None)
    ky = kl(k_in)
    jl = R.from_keras(kl)
    assert_same(ky, jl(j_in, mask=j_masks))
    assert_same_mask(keras_mask(ky), jl.compute_mask(j_in, j_masks))
    assert_same_mask(keras_mask(ky), jax.jit(jl.compute_mask)(j_in, j_masks))


# -- dropout ----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_dropout_training_keep_rate_and_scaling(rate):
    layer = R.Dropout(rate)
    x = np.random.default_rng(1).normal(size=(64, 32, 8)).astype(np.float32)
    key = jax.random.key(3)
    y = np.asarray(layer(x, training=True, key=key))
    kept = y != 0
    # 16384 draws: the kept fraction is 1 - rate within 4 standard deviations
    assert abs(kept.mean() - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / kept.size)
    np.testing.assert_allclose(y, x * kept / (1 - rate), rtol=1e-6, atol=0)
    np.testing.assert_array_equal(np.asarray(layer.keep_mask(key, x.shape)), kept)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False, key=key)), x)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    other = np.asarray(layer(x, training=True, key=jax.random.key(4))) != 0
    assert (other != kept).any()


def test_dropout_noise_shape_shares_the_mask_along_its_ones():
    layer = R.Dropout(0.5, noise_shape=(None, 1, None))
    x = np.ones((4, 6, 5), np.float32)
    y = np.asarray(layer(x, training=True, key=jax.random.key(0)))
    assert set(np.unique(y)) <= {0.0, 2.0}
    np.testing.assert_array_equal(y, np.broadcast_to(y[:, :1], y.shape))
    assert 0 < (y != 0).mean() < 1


def test_dropout_inference_is_keras_and_rate_zero_needs_no_key(keras, rng):
    x = features(rng, B, T, D)
    assert_same(keras.layers.Dropout(0.3)(x, training=False), R.Dropout(0.3)(x))
    np.testing.assert_array_equal(np.asarray(R.Dropout(0.0)(x, training=True)), x)


def test_dropout_training_under_jit_and_vmap_over_keys():
    layer = R.Dropout(0.5)
    x = np.arange(1.0, 41.0, dtype=np.float32).reshape(2, 4, 5)
    keys = jax.random.split(jax.random.key(0), 3)
    ys = jax.jit(jax.vmap(lambda k: layer(x, training=True, key=k)))(keys)
    for k, y in zip(keys, ys):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(layer(x, training=True, key=k)))
    assert len({np.asarray(y != 0).tobytes() for y in ys}) > 1


def test_sequential_dropout_training_matches_keras_with_the_same_mask(keras, rng, monkeypatch):
    """`Embedding(mask_zero) -> Dropout -> GlobalAveragePooling1D -> Dense` with
    `training=True`: Keras' dropout is made to drop what rnn_jax's draws (the
    Sequential folds the layer index into the key); the mask passes through
    Dropout to the pooling in both."""
    from keras.src.layers.regularization import dropout as keras_dropout

    L = keras.layers
    km = keras.Sequential([keras.Input((T,), dtype="int32"), L.Embedding(V, D, mask_zero=True),
                           L.Dropout(0.4), L.GlobalAveragePooling1D(), L.Dense(2)])
    randomize(km, rng)
    jm = R.from_keras(km)
    ids = ids_with_padding(rng)
    key = jax.random.key(5)
    keep = np.asarray(jm.layers[1].keep_mask(jax.random.fold_in(key, 1), (B, T, D)))

    def dropout(inputs, rate, noise_shape=None, seed=None):
        import tensorflow as tf
        return tf.where(keep, inputs / (1 - rate), tf.zeros_like(inputs))

    monkeypatch.setattr(keras_dropout.backend.random, "dropout", dropout)
    ky = km(ids, training=True)
    assert_same(ky, jm(ids, training=True, key=key))
    assert not np.allclose(np.asarray(ky), np.asarray(km(ids, training=False)), atol=1e-3)
    with pytest.raises(ValueError, match="Dropout 'dropout.*needs a random key"):
        jm(ids, training=True)


# -- Sequentials of Keras' RNN tutorials ---------------------------------------------------


def _tutorial_models(keras):
    """Keras Sequentials as the RNN tutorials build them (inputs, model)."""
    L = keras.layers
    ids = lambda: keras.Input((T,), dtype="int32")
    return {
        "lstm_time_distributed_dense": lambda: keras.Sequential([
            keras.Input((T, D)), L.LSTM(3, return_sequences=True),
            L.TimeDistributed(L.Dense(2, activation="softmax"))]),
        "masked_lstm_time_distributed_dense": lambda: keras.Sequential([
            ids(), L.Embedding(V, D, mask_zero=True), L.LSTM(3, return_sequences=True),
            L.TimeDistributed(L.Dense(2)), L.GRU(2)]),
        "masked_average_pooling": lambda: keras.Sequential([
            ids(), L.Embedding(V, D, mask_zero=True), L.Dropout(0.5),
            L.GlobalAveragePooling1D(), L.Dense(1, activation="sigmoid")]),
        "max_pooling_flatten": lambda: keras.Sequential([
            ids(), L.Embedding(V, D, mask_zero=True), L.LSTM(3, return_sequences=True),
            L.GlobalMaxPooling1D(keepdims=True), L.Flatten(), L.Dense(2)]),
        "seq2seq_repeat_vector": lambda: keras.Sequential([
            keras.Input((T, D)), L.LSTM(4), L.RepeatVector(3), L.LSTM(4, return_sequences=True),
            L.TimeDistributed(L.Dense(D))]),
        "flatten_dense": lambda: keras.Sequential([
            ids(), L.Embedding(V, D, mask_zero=True), L.Flatten(), L.Dense(2)]),
    }


TUTORIAL_MODELS = ["lstm_time_distributed_dense", "masked_lstm_time_distributed_dense",
                   "masked_average_pooling", "max_pooling_flatten", "seq2seq_repeat_vector",
                   "flatten_dense"]


@pytest.mark.parametrize("which", TUTORIAL_MODELS)
def test_tutorial_sequential_round_trips(keras, rng, which):
    """`from_keras(km)` predicts as `km` (masks passed along as Keras passes
    them); `to_keras` of the result predicts the same too, with the same
    layer classes and configurations."""
    km = _tutorial_models(keras)[which]()
    randomize(km, rng)
    x = (ids_with_padding(rng) if km.inputs[0].dtype == "int32"
         else features(rng, B, T, D))
    jm = R.from_keras(km)
    ky = km(x)
    assert_same(ky, jm(x))
    assert_same(ky, jax.jit(lambda x: jm(x))(x))
    has_flatten = any(isinstance(l, R.Flatten) for l in jm.layers)
    k2 = R.to_keras(jm, input_shape=tuple(km.inputs[0].shape[1:]) if has_flatten else None)
    assert [type(l).__name__ for l in k2.layers] == [type(l).__name__ for l in km.layers]
    for a, b in zip(k2.layers, km.layers):
        ca, cb = a.get_config(), b.get_config()
        ca.pop("name"), cb.pop("name")
        if "layer" in ca:  # TimeDistributed: the wrapped layer's, without names
            ca = dict(ca, layer=ca["layer"]["class_name"])
            cb = dict(cb, layer=cb["layer"]["class_name"])
        assert ca == cb, type(a).__name__
    assert_same(ky, k2(x))


def test_time_distributed_dense_after_lstm_equals_keras_built_in_rnn_jax(keras, rng):
    """Built in rnn_jax (its own weights), then moved to Keras: the same
    predictions, and TimeDistributed's weights are its Dense's."""
    rngs = nnx.Rngs(0)
    jm = R.Sequential([R.LSTM(3, return_sequences=True, rngs=rngs),
                       R.TimeDistributed(R.Dense(2, activation="tanh", rngs=rngs))],
                      input_shape=(T, D))
    td = jm.layers[1]
    assert [w.shape for w in td.get_weights()] == [(3, 2), (2,)]
    assert td.weights[0] is td.layer.weights[0]
    km = R.to_keras(jm)
    x = features(rng, B, T, D)
    assert_same(km(x), jm(x))
    np.testing.assert_array_equal(km.layers[1].get_weights()[0], td.get_weights()[0])


def test_to_keras_traces_the_input_shape_back_and_asks_with_flatten(keras, rng):
    rngs = nnx.Rngs(0)
    jm = R.Sequential([R.Dropout(0.2), R.RepeatVector(T), R.LSTM(2, rngs=rngs)])
    jm(features(rng, B, D))
    assert tuple(R.to_keras(jm).inputs[0].shape) == (None, D)
    jm = R.Sequential([R.GlobalAveragePooling1D(), R.Dense(2, rngs=rngs)])
    jm(features(rng, B, T, D))
    assert tuple(R.to_keras(jm).inputs[0].shape) == (None, None, D)
    jm = R.Sequential([R.Flatten(), R.Dense(2, rngs=rngs)])
    x = features(rng, B, 3, 2)
    jm(x)
    with pytest.raises(ValueError, match="has a Flatten.*pass input_shape"):
        R.to_keras(jm)
    assert_same(R.to_keras(jm, input_shape=(3, 2))(x), jm(x))


def test_to_keras_of_a_weightless_layer(keras):
    kl = R.to_keras(R.Concatenate(axis=1, name="join"))
    assert type(kl) is keras.layers.Concatenate and kl.axis == 1 and kl.name == "join"
    kl = R.to_keras(R.Dropout(0.3, (None, 1, None)))
    assert type(kl) is keras.layers.Dropout and kl.rate == 0.3
    assert tuple(kl.noise_shape) == (None, 1, None)


# -- transformations ---------------------------------------------------------------------


def test_sequential_with_masks_under_jit_and_vmap_over_weights(rng):
    """Embedding(mask_zero) -> TimeDistributed(Dense) -> SimpleRNN(return_sequences)
    -> GlobalAveragePooling1D -> RepeatVector, three weight sets vmapped under
    jit, equal to the eager calls."""
    def make(seed):
        r = nnx.Rngs(seed)
        return R.Sequential([R.Embedding(V, D, mask_zero=True, rngs=r),
                             R.TimeDistributed(R.Dense(3, rngs=r)),
                             R.SimpleRNN(2, return_sequences=True, rngs=r),
                             R.GlobalAveragePooling1D(), R.RepeatVector(2)], input_shape=(T,))

    models = [make(s) for s in range(3)]
    graphdef, _ = nnx.split(models[0])
    params = jax.tree.map(lambda *s: jnp.stack(s), *[nnx.state(m) for m in models])
    ids = ids_with_padding(rng)
    ys = jax.jit(jax.vmap(lambda p, x: nnx.merge(graphdef, p)(x), in_axes=(0, None)))(params,
                                                                                      ids)
    for m, y in zip(models, ys):
        np.testing.assert_allclose(np.asarray(y), np.asarray(m(ids)), atol=1e-6, rtol=0)


def test_merges_and_pooling_under_vmap(rng):
    """vmap over a leading axis of the inputs: each slice as an eager call."""
    a, b = features(rng, 2, B, T, D), features(rng, 2, B, T, D)
    mask = np.ones((2, B, T), bool)
    mask[:, 0, -2:] = False
    for layer in (R.Concatenate(), R.Add()):
        ys = jax.vmap(lambda a, b: layer([a, b]))(a, b)
        np.testing.assert_allclose(np.asarray(ys[1]), np.asarray(layer([a[1], b[1]])), atol=0)
    pool = R.GlobalAveragePooling1D()
    ys = jax.vmap(lambda a, m: pool(a, mask=m))(a, mask)
    np.testing.assert_allclose(np.asarray(ys[1]), np.asarray(pool(a[1], mask=mask[1])),
                               atol=1e-7, rtol=0)


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, True, "0.5"])
def test_dropout_rate_outside_zero_one(rate):
    with pytest.raises(ValueError, match=r"Dropout: rate must be a number in \[0, 1\)"):
        R.Dropout(rate)


def test_bad_constructor_arguments():
    for make, message in [
        (lambda: R.Dropout(0.5, noise_shape=(None, 0)), "noise_shape"),
        (lambda: R.RepeatVector(0), "n must be a positive integer"),
        (lambda: R.RepeatVector(2.0), "n must be a positive integer"),
        (lambda: R.Flatten("channels_middle"), "data_format"),
        (lambda: R.GlobalAveragePooling1D("nhwc"), "data_format"),
        (lambda: R.Concatenate(axis=1.0), "axis must be an integer"),
        (lambda: R.TimeDistributed(R.Add()), "single-input"),
        (lambda: R.TimeDistributed(R.LSTM(2, return_state=True, rngs=nnx.Rngs(0))),
         "return_state"),
        (lambda: R.Sequential([R.Concatenate()]), "merges a list of inputs"),
    ]:
        with pytest.raises(ValueError, match=message):
            make()


@pytest.mark.parametrize("layer, shape, message", [
    (R.RepeatVector(2), (B, T, D), r"RepeatVector 'r'.*\(batch, features\).*\(3, 5, 4\)"),
    (R.GlobalAveragePooling1D(), (B, D), r"\(batch, steps, features\).*\(3, 4\)"),
    (R.GlobalMaxPooling1D("channels_first"), (B, T, D, 1),
     r"\(batch, features, steps\).*\(3, 5, 4, 1\)"),
    (R.TimeDistributed(R.Dense(2, rngs=nnx.Rngs(0))), (B, D), r"at least 3 axes.*\(3, 4\)"),
    (R.Flatten(), (), r"\(batch, \.\.\.\).*\(\)"),
    (R.Dropout(0.5, noise_shape=(None, 2, None)), (B, T, D), r"noise_shape.*\(3, 5, 4\)"),
], ids=["repeat_vector", "average_pooling", "max_pooling", "time_distributed", "flatten",
        "noise_shape"])
def test_wrong_rank_names_the_layer_and_both_shapes(layer, shape, message):
    layer.name = "r" if isinstance(layer, R.RepeatVector) else layer.name
    x = np.ones(shape, np.float32)
    with pytest.raises(ValueError, match=message):
        layer(x, training=True, key=jax.random.key(0))


@pytest.mark.parametrize("layer, shapes, message", [
    (R.Concatenate(), [(B, T, D), (B, T + 1, 2)], r"except on axis -1.*\(3, 5, 4\), \(3, 6, 2\)"),
    (R.Concatenate(axis=1), [(B, T, D), (B, 2, D + 1)], r"except on axis 1"),
    (R.Concatenate(), [(B, T, D), (B, D)], r"same rank.*\(3, 5, 4\), \(3, 4\)"),
    (R.Concatenate(axis=3), [(B, T, D), (B, T, D)], r"except on axis 3"),
    (R.Add(), [(B, T, D), (B, T, D + 1)], r"same shape.*\(3, 5, 4\), \(3, 5, 5\)"),
    (R.Add(), [(B, T, D), (B + 1, T, D)], r"batch axis.*\(3, 5, 4\), \(4, 5, 4\)"),
])
def test_mismatched_merge_shapes(layer, shapes, message):
    with pytest.raises(ValueError, match=message):
        layer([np.ones(s, np.float32) for s in shapes])


def test_merge_needs_a_list_and_one_mask_per_input():
    x = np.ones((B, T, D), np.float32)
    with pytest.raises(ValueError, match=r"Add 'plus' merges a list.*\(3, 5, 4\)"):
        R.Add(name="plus")(x)
    with pytest.raises(ValueError, match="2 inputs but 1 masks"):
        R.Concatenate().compute_mask([x, x], [np.ones((B, T), bool)])
    with pytest.raises(ValueError, match="must be lists"):
        R.Concatenate().compute_mask([x, x], np.ones((B, T), bool))


def test_masks_of_the_wrong_shape():
    x = np.ones((B, T, D), np.float32)
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, steps\) = \(3, 5\), "
                                         r"got \(3, 4\)"):
        R.GlobalAveragePooling1D()(x, mask=np.ones((B, T - 1), bool))
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, time, \.\.\.\) = "
                                         r"\(3, 5\), got \(3,\)"):
        R.TimeDistributed(R.Dense(2, rngs=nnx.Rngs(0)))(x, mask=np.ones((B,), bool))
