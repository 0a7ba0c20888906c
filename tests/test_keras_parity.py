"""Parity of `rnn_jax` with real Keras 3 (TensorFlow backend).

Every test runs the same computation through a Keras object and through the
`rnn_jax` module obtained from it (`from_keras`) or converted to it
(`to_keras`), and compares the outputs: float32 within 1e-5 absolute, float64
within 1e-10 absolute. Nothing is compared against stored numbers or against
an earlier `rnn_jax` output.

Layer kinds (`KINDS`): SimpleRNN, GRU (`reset_after` True and False), LSTM,
and `RNN` over each cell type and over a stack of mixed cells.

Dropout is random on both sides; the tests hand rnn_jax's masks
(`cell.dropout_masks(key, ...)`) to the Keras cells by replacing their
`get_dropout_mask` / `get_recurrent_dropout_mask`, then compare
`training=True` outputs.

Known divergences (tested as such, see the tests named below):
- `test_unroll_backwards_zero_output_tf_quirk`: Keras' TF backend, unrolled,
  zeroes a `go_backwards` layer's masked outputs with the mask in forward
  order; rnn_jax follows Keras' rolled loop for every `unroll`.
- Keras' explicit `implementation=1` without recurrent dropout draws one
  input-dropout mask per gate; rnn_jax draws per-gate masks only when
  `recurrent_dropout > 0` (as Keras' default does). Inference is the same
  (`test_implementation_1_inference`).

Compiling each new layer configuration's scan (0.1-0.3 s) dominates the
runtime: shapes are kept small and not every kind runs every option.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

import rnn_jax
from rnn_jax.keras_interop import UnsupportedKerasObject

B, T, D = 3, 6, 4  # batch, time steps, input features
U = 3  # units
ATOL32 = 1e-5
ATOL64 = 1e-10

KINDS = ("simple", "gru", "gru_v1", "lstm", "rnn_simple", "rnn_gru", "rnn_lstm", "rnn_stacked")


# -- helpers ------------------------------------------------------------------


def leaves(tree):
    """Flattens outputs (tuples, lists, LSTMState, Keras lists) to numpy arrays."""
    if isinstance(tree, (list, tuple)):
        return [a for t in tree for a in leaves(t)]
    return [np.asarray(tree)]


def assert_same(keras_out, jax_out, atol=ATOL32):
    """Same structure size, shapes and dtypes; values within `atol` absolute."""
    k, j = leaves(keras_out), leaves(jax_out)
    assert len(k) == len(j), f"Keras gives {len(k)} arrays, rnn_jax {len(j)}"
    for i, (a, b) in enumerate(zip(k, j)):
        assert a.shape == b.shape, f"array {i}: Keras shape {a.shape}, rnn_jax {b.shape}"
        assert a.dtype == b.dtype, f"array {i}: Keras dtype {a.dtype}, rnn_jax {b.dtype}"
        np.testing.assert_allclose(b, a, atol=atol, rtol=0, err_msg=f"array {i}")


def make_mask(rng, batch=B, steps=T):
    """Random holes; row 0 fully masked, row 1 masked at the first step."""
    mask = rng.random((batch, steps)) > 0.35
    mask[0] = False
    mask[1, 0] = False
    mask[1, 2:] = True
    mask[2, 0] = True
    mask[2, steps // 2] = False
    return mask


def base_kind(kind):
    return kind[4:] if kind.startswith("rnn_") else kind


def _cell_kw(base, kw):
    """Drops the arguments the cell type `base` does not take."""
    kw = dict(kw)
    if base == "simple":
        kw.pop("recurrent_activation", None)
    if base not in ("gru", "gru_v1"):
        kw.pop("reset_after", None)
    if base != "lstm":
        kw.pop("unit_forget_bias", None)
    return kw


# kind -> (Keras cell class name, Keras layer class name, extra arguments)
KERAS_CLASSES = {
    "simple": ("SimpleRNNCell", "SimpleRNN", {}),
    "gru": ("GRUCell", "GRU", {}),
    "gru_v1": ("GRUCell", "GRU", {"reset_after": False}),
    "lstm": ("LSTMCell", "LSTM", {}),
}


def keras_cell(keras, base, units, dtype="float32", **kw):
    cell_name, _, extra = KERAS_CLASSES[base]
    return getattr(keras.layers, cell_name)(units, dtype=dtype, **extra, **_cell_kw(base, kw))


def stacked_cells(keras, units, dtype="float32", **kw):
    """SimpleRNNCell(U) -> LSTMCell(U+1) -> GRUCell(U): mixed cells and sizes."""
    return [keras_cell(keras, "simple", units, dtype, **kw),
            keras_cell(keras, "lstm", units + 1, dtype, **kw),
            keras_cell(keras, "gru", units, dtype, **kw)]


def make_keras(keras, kind, units=U, dtype="float32", cell_kw=None, **layer_kw):
    """An unbuilt Keras recurrent layer of `kind`."""
    L = keras.layers
    cell_kw = dict(cell_kw or {})
    if kind == "rnn_stacked":
        cells = stacked_cells(keras, units, dtype, **cell_kw)
        if dtype != "float32":  # Keras' own StackedRNNCells would compute in float32
            cells = L.StackedRNNCells(cells, dtype=dtype)
        return L.RNN(cells, dtype=dtype, **layer_kw)
    if kind.startswith("rnn_"):
        return L.RNN(keras_cell(keras, base_kind(kind), units, dtype, **cell_kw), dtype=dtype,
                     **layer_kw)
    _, layer_name, extra = KERAS_CLASSES[kind]
    return getattr(L, layer_name)(units, dtype=dtype, **extra, **_cell_kw(kind, cell_kw),
                                  **layer_kw)


def set_weights(layer, mode, rng, scale=0.7):
    """`default`: keep Keras' initial weights; `normal`: N(0, scale^2); `const`: 0.1."""
    if mode == "default":
        return
    ws = layer.get_weights()
    if mode == "normal":
        new = [rng.normal(0.0, scale, w.shape) for w in ws]
    elif mode == "const":
        new = [np.full(w.shape, 0.1) for w in ws]
    else:
        raise ValueError(mode)
    layer.set_weights([n.astype(w.dtype) for n, w in zip(new, ws)])


def built_keras(keras, kind, rng, mode="normal", dtype="float32", units=U, cell_kw=None,
                **layer_kw):
    """A Keras layer of `kind`, built for `(B, T, D)` inputs, weights set by `mode`."""
    kl = make_keras(keras, kind, units, dtype, cell_kw, **layer_kw)
    kl.build((B, T, D))
    set_weights(kl, mode, rng)
    return kl


def state_sizes(kind, units=U):
    base = base_kind(kind)
    if kind == "rnn_stacked":
        return [units, [units + 1, units + 1], units]
    if base == "lstm":
        return [units, units]
    return [units]


def random_states(rng, sizes, dtype="float32", batch=B):
    """Random states with the (nested) structure of `sizes`."""
    return [random_states(rng, s, dtype, batch) if isinstance(s, list)
            else rng.normal(size=(batch, s)).astype(dtype) for s in sizes]


def inputs(rng, dtype="float32", batch=B, steps=T, features=D):
    return rng.normal(size=(batch, steps, features)).astype(dtype)


def compare_layer(kl, x, atol=ATOL32, **call_kw):
    """Calls Keras layer `kl` and `from_keras(kl)` alike; returns the rnn_jax layer."""
    ko = kl(x, **call_kw)
    jl = rnn_jax.from_keras(kl)
    jo = jl(x, **call_kw)
    assert_same(ko, jo, atol)
    return jl


def patch_dropout(kc, masks):
    """Makes Keras cell `kc` use rnn_jax's `DropoutMasks` instead of random ones.

    With `M = 1` Keras uses one array; with `M = gates` (Keras'
    `implementation=1`, `dropout_mask_count`) a list of per-gate arrays.
    """
    import keras

    count = getattr(kc, "dropout_mask_count", None)

    def convert(m, rate):
        if rate == 0:
            assert m is None
            return None
        m = np.asarray(m)
        if count is None:
            assert m.shape[0] == 1, f"Keras uses one mask, rnn_jax has {m.shape[0]}"
            return keras.ops.convert_to_tensor(m[0])
        assert m.shape[0] == count, f"Keras uses {count} masks, rnn_jax has {m.shape[0]}"
        return [keras.ops.convert_to_tensor(m[g]) for g in range(count)]

    if masks is None:
        assert kc.dropout == 0 and kc.recurrent_dropout == 0
        return
    dp = convert(masks.inputs, kc.dropout)
    rec = convert(masks.recurrent, kc.recurrent_dropout)
    kc.get_dropout_mask = lambda step_input: dp
    kc.get_recurrent_dropout_mask = lambda step_input: rec


def patch_layer_dropout(kl, jl, key, batch=B):
    """Patches every Keras cell of layer `kl` with the masks `jl` draws from `key`."""
    if isinstance(jl, rnn_jax.Bidirectional):
        k_f, k_b = jax.random.split(key)
        patch_layer_dropout(kl.forward_layer, jl.forward_layer, k_f, batch)
        patch_layer_dropout(kl.backward_layer, jl.backward_layer, k_b, batch)
        return
    masks = jl.cell.dropout_masks(key, batch, training=True)
    if isinstance(jl.cell, rnn_jax.StackedRNNCells):
        assert masks is not None
        for kc, m in zip(kl.cell.cells, masks):
            patch_dropout(kc, m)
    else:
        patch_dropout(kl.cell, masks)


# -- recurrent layers: weights ---------------------------------------------------


# "normal" weights: the option tests
WEIGHT_CASES = ([(k, "default") for k in ("simple", "gru", "gru_v1", "lstm", "rnn_stacked")]
                + [(k, "const") for k in ("gru_v1", "lstm", "rnn_stacked")])


@pytest.mark.parametrize("kind,mode", WEIGHT_CASES)
def test_layer_weights(keras, rng, kind, mode):
    kl = built_keras(keras, kind, rng, mode, return_sequences=True, return_state=True)
    compare_layer(kl, inputs(rng), mask=make_mask(rng))


@pytest.mark.parametrize("kind", ["gru"])
def test_implementation_1_inference(keras, rng, kind):
    """Keras' per-gate `implementation=1` computes the same function."""
    kl = built_keras(keras, kind, rng, "normal", cell_kw=dict(implementation=1),
                     return_sequences=True)
    assert kl.cell.implementation == 1
    compare_layer(kl, inputs(rng), mask=make_mask(rng))


def test_large_scale_weights(keras, rng):
    """Saturating gates: weights N(0, 2^2) and inputs of scale 3."""
    for kind in ("gru", "lstm", "rnn_stacked"):
        kl = make_keras(keras, kind, return_sequences=True, return_state=True)
        kl.build((B, T, D))
        ws = kl.get_weights()
        kl.set_weights([rng.normal(0, 2.0, w.shape).astype(w.dtype) for w in ws])
        compare_layer(kl, 3 * inputs(rng))


# -- recurrent layers: options ---------------------------------------------------

OPTIONS = {
    # no mask, last output only, states from the end
    "backwards_last": dict(layer=dict(return_state=True, go_backwards=True)),
    "mask_backwards": dict(
        layer=dict(return_sequences=True, return_state=True, go_backwards=True), mask=True),
    "mask_zero_output": dict(
        layer=dict(return_sequences=True, return_state=True, zero_output_for_mask=True),
        mask=True),
    "initial_state": dict(layer=dict(return_sequences=True, return_state=True), init=True),
    "initial_state_mask_backwards": dict(
        layer=dict(return_state=True, go_backwards=True), init=True, mask=True),
    "unroll_backwards": dict(
        layer=dict(unroll=True, return_sequences=True, return_state=True, go_backwards=True),
        mask=True),
    "unroll_zero_output_last": dict(
        layer=dict(unroll=True, return_state=True, zero_output_for_mask=True), mask=True),
    "no_bias": dict(layer=dict(return_sequences=True, return_state=True),
                    cell=dict(use_bias=False), init=True, mask=True),
}


# Each configuration compiles its own scan, so not every kind runs every option;
# unrolled scans compile slowest. `RNN(SimpleRNNCell)` etc. run the same rnn_jax code as
# SimpleRNN etc.: one option.
SOME_KINDS = {"backwards_last": ("simple", "lstm"),
              "initial_state": ("gru", "lstm", "rnn_stacked"),
              "unroll_backwards": ("simple", "gru", "lstm"),
              "unroll_zero_output_last": ("gru_v1", "rnn_stacked")}
OPTION_CASES = [(k, o) for k in ("simple", "gru", "gru_v1", "lstm", "rnn_stacked") for o in OPTIONS
                if k in SOME_KINDS.get(o, (k,))]
OPTION_CASES += [(k, "mask_backwards") for k in ("rnn_simple", "rnn_gru", "rnn_lstm")]


@pytest.mark.parametrize("kind,option", OPTION_CASES)
def test_layer_options(keras, rng, kind, option):
    case = OPTIONS[option]
    kl = built_keras(keras, kind, rng, "normal", cell_kw=case.get("cell"), **case.get("layer", {}))
    call_kw = {}
    if case.get("mask"):
        call_kw["mask"] = make_mask(rng)
    if case.get("init"):
        call_kw["initial_state"] = random_states(rng, state_sizes(kind))
    jl = compare_layer(kl, inputs(rng), **call_kw)
    layer_kw = case.get("layer", {})
    for name in ("return_sequences", "return_state", "go_backwards", "zero_output_for_mask"):
        assert getattr(jl, name) == layer_kw.get(name, False)


def test_unroll_backwards_zero_output_tf_quirk(keras, rng):
    """A known divergence, pinned down exactly.

    Keras' TensorFlow backend, when unrolled, zeroes the outputs of a
    `go_backwards` layer with `zero_output_for_mask=True` using the mask in
    forward time order while the outputs are in processing (reversed) order;
    its rolled loop (the default) uses the processing order. rnn_jax follows
    the rolled loop for every `unroll`. The unrolled Keras result is exactly
    rnn_jax's repeat-previous outputs zeroed with the unreversed mask.
    """
    x, mask = inputs(rng), make_mask(rng)
    kw = dict(return_sequences=True, go_backwards=True, zero_output_for_mask=True)
    k_unrolled = built_keras(keras, "gru", rng, "normal", unroll=True, **kw)
    k_rolled = make_keras(keras, "gru", **kw)
    k_rolled.build((B, T, D))
    k_rolled.set_weights(k_unrolled.get_weights())
    jl = rnn_jax.from_keras(k_unrolled)
    assert_same(k_rolled(x, mask=mask), jl(x, mask=mask))
    jl.zero_output_for_mask = False
    quirk = np.where(mask[:, :, None], np.asarray(jl(x, mask=mask)), np.float32(0))
    assert_same(k_unrolled(x, mask=mask), quirk)


ACTIVATIONS = [
    ("simple", dict(activation="relu")),
    ("simple", dict(activation="hard_sigmoid")),
    ("simple", dict(activation="linear")),
    ("simple", dict(activation=None)),
    ("simple", dict(activation="sigmoid")),
    ("gru", dict(activation="relu", recurrent_activation="hard_sigmoid")),
    ("gru_v1", dict(activation="sigmoid", recurrent_activation="hard_sigmoid")),
    ("gru_v1", dict(activation="linear", recurrent_activation="relu")),
    ("lstm", dict(activation="relu", recurrent_activation="hard_sigmoid")),
    ("lstm", dict(activation=None, recurrent_activation="linear", scale=0.25)),
    ("rnn_stacked", dict(activation="hard_sigmoid", recurrent_activation="hard_sigmoid")),
]


@pytest.mark.parametrize("kind,acts", ACTIVATIONS,
                         ids=[f"{k}-{'-'.join(map(str, a.values()))}" for k, a in ACTIVATIONS])
def test_layer_activations(keras, rng, kind, acts):
    acts = dict(acts)
    scale = acts.pop("scale", 0.5)  # all-linear LSTMs grow fast: smaller weights
    kl = make_keras(keras, kind, cell_kw=acts, return_sequences=True, return_state=True)
    kl.build((B, T, D))
    set_weights(kl, "normal", rng, scale)
    compare_layer(kl, inputs(rng), mask=make_mask(rng))


@pytest.mark.parametrize("kind", ["gru_v1", "lstm", "rnn_stacked"])
def test_layer_built_natively(keras, rng, kind):
    """rnn_jax layers made by their constructors, given Keras' weights."""
    acts = dict(activation="sigmoid", recurrent_activation="hard_sigmoid")
    kl = built_keras(keras, kind, rng, "normal", cell_kw=acts, return_sequences=True,
                     return_state=True, go_backwards=True)
    kw = dict(return_sequences=True, return_state=True, go_backwards=True)
    if kind == "rnn_stacked":
        jl = rnn_jax.RNN([rnn_jax.SimpleRNNCell(U, activation="sigmoid", rngs=nnx.Rngs(1)),
                          rnn_jax.LSTMCell(U + 1, **acts, rngs=nnx.Rngs(2)),
                          rnn_jax.GRUCell(U, **acts, rngs=nnx.Rngs(3))], **kw)
    else:
        cls = {"simple": rnn_jax.SimpleRNN, "gru": rnn_jax.GRU, "gru_v1": rnn_jax.GRU,
               "lstm": rnn_jax.LSTM}[kind]
        extra = dict(reset_after=False) if kind == "gru_v1" else {}
        jl = cls(U, **_cell_kw(kind, acts), **extra, **kw, input_shape=(T, D), rngs=nnx.Rngs(0))
    x, mask = inputs(rng), make_mask(rng)
    if kind == "rnn_stacked":
        jl(x)  # lazy build
    jl.set_weights(kl.get_weights())
    assert_same(kl(x, mask=mask), jl(x, mask=mask))


@pytest.mark.parametrize("unit_forget_bias,bias_initializer", [(True, "zeros"), (False, "zeros"),
                                                              (True, "ones")])
def test_lstm_unit_forget_bias(keras, rng, unit_forget_bias, bias_initializer):
    """The initial LSTM bias matches Keras'; so do the outputs it gives."""
    kl = keras.layers.LSTM(U, unit_forget_bias=unit_forget_bias,
                           bias_initializer=bias_initializer, return_sequences=True)
    kl.build((B, T, D))
    jl = rnn_jax.LSTM(U, unit_forget_bias=unit_forget_bias, bias_initializer=bias_initializer,
                      return_sequences=True, input_shape=(T, D), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(jl.get_weights()[2], kl.get_weights()[2])
    kernel, recurrent, _ = kl.get_weights()
    jl.set_weights([kernel, recurrent, jl.get_weights()[2]])
    x = inputs(rng)
    assert_same(kl(x), jl(x))
    assert rnn_jax.from_keras(kl).cell.unit_forget_bias == unit_forget_bias


# -- gradients ---------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    dict(), dict(return_sequences=True), dict(go_backwards=True),
    dict(return_sequences=True, go_backwards=True, use_bias=False), dict(unroll=True),
], ids=["last", "sequences", "backwards", "sequences_backwards_no_bias", "unroll"])
def test_lstm_gradients_match_keras(keras, rng, options):
    """The gradient of a loss of an LSTM's output and final states with respect
    to every weight, the inputs and the initial states equals Keras' (a TF
    `GradientTape`). On CPU this LSTM is differentiated by `lstm_scan`'s
    hand-written backward pass (`test_transforms` checks that it is)."""
    import tensorflow as tf

    jl = rnn_jax.LSTM(U, return_state=True, input_shape=(T, D), rngs=nnx.Rngs(0), **options)
    if jl.cell.use_bias:  # every gate's bias away from its initial value
        jl.cell.bias[...] = jl.cell.bias[...] + rng.normal(size=(4 * U,)).astype("float32")
    kl = rnn_jax.to_keras(jl)
    x = inputs(rng)
    h0, c0 = random_states(rng, [U, U])
    w_out = rng.normal(size=(B, T, U) if options.get("return_sequences") else (B, U))
    w_h, w_c = rng.normal(size=(2, B, U)).astype("float32")
    w_out = w_out.astype("float32")

    def loss(out, h, c, total):
        return total(out * w_out) + total(h * w_h) + total(c * w_c)

    tx, th0, tc0 = tf.constant(x), tf.constant(h0), tf.constant(c0)
    with tf.GradientTape() as tape:
        tape.watch([tx, th0, tc0])
        k_loss = loss(*kl(tx, initial_state=[th0, tc0]), tf.reduce_sum)
    names = [w.name for w in kl.trainable_weights]
    k_grads = tape.gradient(k_loss, [*kl.trainable_weights, tx, th0, tc0])

    graphdef, params, rest = nnx.split(jl, nnx.Param, ...)

    def f(params, x, h0, c0):
        out, h, c = nnx.merge(graphdef, params, rest)(x, initial_state=(h0, c0))
        return loss(out, h, c, jax.numpy.sum)

    j_loss, (g_params, gx, gh0, gc0) = jax.value_and_grad(f, argnums=(0, 1, 2, 3))(
        params, x, h0, c0)
    by_name = {jax.tree_util.keystr(path).split("'")[-2]: g
               for path, g in jax.tree_util.tree_leaves_with_path(g_params)}
    assert sorted(by_name) == sorted(names)
    np.testing.assert_allclose(float(j_loss), float(k_loss), rtol=1e-6)
    assert_same([k.numpy() for k in k_grads], [*(by_name[n] for n in names), gx, gh0, gc0])


@pytest.mark.parametrize("options", [
    dict(), dict(return_sequences=True), dict(go_backwards=True, activation="relu"),
    dict(return_sequences=True, go_backwards=True, use_bias=False, activation="linear"),
    dict(unroll=True),
], ids=["last", "sequences", "backwards_relu", "sequences_backwards_no_bias_linear", "unroll"])
def test_simple_rnn_gradients_match_keras(keras, rng, options):
    """The gradient of a loss of a SimpleRNN's output and final state with
    respect to every weight, the inputs and the initial state equals Keras'
    (a TF `GradientTape`). On CPU this SimpleRNN is differentiated by
    `simple_rnn_scan`'s hand-written backward pass (`test_transforms` checks
    that it is)."""
    import tensorflow as tf

    jl = rnn_jax.SimpleRNN(U, return_state=True, input_shape=(T, D), rngs=nnx.Rngs(0),
                           **options)
    if jl.cell.use_bias:
        jl.cell.bias[...] = jl.cell.bias[...] + rng.normal(size=(U,)).astype("float32")
    kl = rnn_jax.to_keras(jl)
    x = inputs(rng)
    (h0,) = random_states(rng, [U])
    w_out = rng.normal(size=(B, T, U) if options.get("return_sequences") else (B, U))
    w_out, w_h = w_out.astype("float32"), rng.normal(size=(B, U)).astype("float32")

    def loss(out, h, total):
        return total(out * w_out) + total(h * w_h)

    tx, th0 = tf.constant(x), tf.constant(h0)
    with tf.GradientTape() as tape:
        tape.watch([tx, th0])
        k_loss = loss(*kl(tx, initial_state=[th0]), tf.reduce_sum)
    names = [w.name for w in kl.trainable_weights]
    k_grads = tape.gradient(k_loss, [*kl.trainable_weights, tx, th0])

    graphdef, params, rest = nnx.split(jl, nnx.Param, ...)

    def f(params, x, h0):
        out, h = nnx.merge(graphdef, params, rest)(x, initial_state=(h0,))
        return loss(out, h, jax.numpy.sum)

    j_loss, (g_params, gx, gh0) = jax.value_and_grad(f, argnums=(0, 1, 2))(params, x, h0)
    by_name = {jax.tree_util.keystr(path).split("'")[-2]: g
               for path, g in jax.tree_util.tree_leaves_with_path(g_params)}
    assert sorted(by_name) == sorted(names)
    np.testing.assert_allclose(float(j_loss), float(k_loss), rtol=1e-6)
    assert_same([k.numpy() for k in k_grads], [*(by_name[n] for n in names), gx, gh0])


# -- float64 -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["simple", "gru_v1", "lstm", "rnn_stacked"])  # GRU: below
def test_layer_float64(keras, rng, kind):
    with jax.enable_x64(True):
        kl = built_keras(keras, kind, rng, "normal", dtype="float64", return_sequences=True,
                         return_state=True, go_backwards=kind.endswith("lstm"))
        x = inputs(rng, "float64")
        jl = compare_layer(kl, x, ATOL64, mask=make_mask(rng),
                           initial_state=random_states(rng, state_sizes(kind), "float64"))
        assert all(w.dtype == np.float64 for w in jl.get_weights())
        k2 = rnn_jax.to_keras(jl)  # and back: a float64 Keras layer
        mask = make_mask(rng)
        assert_same(kl(x, mask=mask), k2(x, mask=mask), ATOL64)


def test_bidirectional_float64(keras, rng):
    with jax.enable_x64(True):
        L = keras.layers
        for layer in (L.LSTM(U, return_sequences=True, dtype="float64"),
                      L.GRU(U, return_state=True, dtype="float64")):
            kl = L.Bidirectional(layer, dtype="float64")
            kl.build((B, T, D))
            set_weights(kl, "normal", rng)
            x, mask = inputs(rng, "float64"), make_mask(rng)
            jl = compare_layer(kl, x, ATOL64, mask=mask)
            assert_same(kl(x, mask=mask), rnn_jax.to_keras(jl)(x, mask=mask), ATOL64)


@pytest.mark.parametrize("kind", ["simple", "gru", "gru_v1", "lstm"])
def test_cell_float64(keras, rng, kind):
    with jax.enable_x64(True):
        kc = keras_cell(keras, kind, U, "float64")
        kc.build((B, D))
        set_weights(kc, "normal", rng)
        x = rng.normal(size=(B, D))
        states = random_states(rng, state_sizes(kind), "float64")
        assert_same(kc(x, states), rnn_jax.from_keras(kc)(x, states), ATOL64)


# -- Bidirectional -----------------------------------------------------------------------


MERGE_CASES = ([(m, True) for m in ("concat", "sum", "mul", "ave", None)]
               + [(m, False) for m in ("concat", "ave", None)])


@pytest.mark.parametrize("merge_mode,return_sequences", MERGE_CASES)
def test_bidirectional_merge_modes(keras, rng, merge_mode, return_sequences):
    kl = keras.layers.Bidirectional(
        keras.layers.LSTM(U, return_sequences=return_sequences), merge_mode=merge_mode)
    kl.build((B, T, D))
    set_weights(kl, "normal", rng)
    jl = compare_layer(kl, inputs(rng), mask=make_mask(rng))
    assert jl.merge_mode == merge_mode


BIDIRECTIONAL_STATE_CASES = [("simple", "concat"), ("gru_v1", None), ("rnn_stacked", None),
                             ("rnn_stacked", "sum")]


@pytest.mark.parametrize("kind,merge_mode", BIDIRECTIONAL_STATE_CASES)
def test_bidirectional_kinds_return_state(keras, rng, kind, merge_mode):
    inner = make_keras(keras, kind, return_sequences=True, return_state=True)
    kl = keras.layers.Bidirectional(inner, merge_mode=merge_mode)
    kl.build((B, T, D))
    set_weights(kl, "normal", rng)
    # initial_state: the forward states then the backward ones (Keras halves the list)
    init = random_states(rng, state_sizes(kind)) + random_states(rng, state_sizes(kind))
    compare_layer(kl, inputs(rng), mask=make_mask(rng), initial_state=init)


def test_bidirectional_initial_state_lstm(keras, rng):
    kl = keras.layers.Bidirectional(keras.layers.LSTM(U, return_state=True), merge_mode="sum")
    kl.build((B, T, D))
    set_weights(kl, "normal", rng)
    init = random_states(rng, [U, U, U, U])
    compare_layer(kl, inputs(rng), initial_state=init, mask=make_mask(rng))


@pytest.mark.parametrize("return_sequences", [True])
def test_bidirectional_backward_layer(keras, rng, return_sequences):
    """An explicit backward layer of another type and activation."""
    L = keras.layers
    kl = L.Bidirectional(
        L.LSTM(U, return_sequences=return_sequences, return_state=True),
        backward_layer=L.GRU(U, activation="relu", return_sequences=return_sequences,
                             return_state=True, go_backwards=True, reset_after=False),
        merge_mode="concat")
    kl.build((B, T, D))
    set_weights(kl, "normal", rng, scale=0.5)
    jl = compare_layer(kl, inputs(rng), mask=make_mask(rng))
    assert isinstance(jl.backward_layer, rnn_jax.GRU)
    assert jl.backward_layer.go_backwards


def test_bidirectional_native(keras, rng):
    """rnn_jax Bidirectional from its constructor, given Keras' weights."""
    kl = keras.layers.Bidirectional(keras.layers.GRU(U, return_sequences=True),
                                    merge_mode="mul")
    kl.build((B, T, D))
    set_weights(kl, "normal", rng)
    jl = rnn_jax.Bidirectional(rnn_jax.GRU(U, return_sequences=True, input_shape=(T, D),
                                           rngs=nnx.Rngs(0)), merge_mode="mul",
                               rngs=nnx.Rngs(1))
    jl.set_weights(kl.get_weights())
    x, mask = inputs(rng), make_mask(rng)
    assert_same(kl(x, mask=mask), jl(x, mask=mask))


# -- cells, one step -----------------------------------------------------------------------


# bare: the state given as an array, not a list (SimpleRNN and GRU cells allow it)
CELL_CASES = [("simple", False), ("simple", True), ("gru", False), ("gru", True),
              ("gru_v1", False), ("lstm", False), ("stacked", False)]


@pytest.mark.parametrize("kind,bare", CELL_CASES)
def test_cell_one_step(keras, rng, kind, bare):
    if kind == "stacked":
        kc = keras.layers.StackedRNNCells(stacked_cells(keras, U))
        states = random_states(rng, state_sizes("rnn_stacked"))
    else:
        kc = keras_cell(keras, kind, U)
        states = random_states(rng, state_sizes(kind))
        if bare:
            states = states[0]
    kc.build((B, D))
    set_weights(kc, "normal", rng)
    x = rng.normal(size=(B, D)).astype("float32")
    ko = kc(x, states)
    jc = rnn_jax.from_keras(kc)
    jo = jc(x, states)
    assert_same(ko, jo)
    if bare:
        assert not isinstance(jo[1], (list, tuple))
    # the step again from the new states
    assert_same(kc(x, ko[1]), jc(x, jo[1]))


@pytest.mark.parametrize("kind", ["gru"])  # per-gate masks; the layer tests cover the rest
def test_cell_one_step_dropout(keras, rng, kind):
    rates = dict(dropout=0.3, recurrent_dropout=0.4)
    if kind == "stacked":
        kc = keras.layers.StackedRNNCells(stacked_cells(keras, U, **rates))
        states = random_states(rng, state_sizes("rnn_stacked"))
    else:
        kc = keras_cell(keras, kind, U, **rates)
        states = random_states(rng, state_sizes(kind))
    kc.build((B, D))
    set_weights(kc, "normal", rng)
    jc = rnn_jax.from_keras(kc)
    key = jax.random.key(7)
    masks = jc.dropout_masks(key, B, training=True)
    if kind == "stacked":
        for c, m in zip(kc.cells, masks):
            patch_dropout(c, m)
    else:
        patch_dropout(kc, masks)
    x = rng.normal(size=(B, D)).astype("float32")
    assert_same(kc(x, states, training=True), jc(x, states, training=True, key=key))


def test_cell_to_keras(keras, rng):
    x = rng.normal(size=(B, D)).astype("float32")
    for jc in (rnn_jax.GRUCell(U, reset_after=False, activation="relu", input_shape=(D,),
                               rngs=nnx.Rngs(0)),
               rnn_jax.StackedRNNCells([rnn_jax.LSTMCell(2, input_shape=(D,), rngs=nnx.Rngs(1)),
                                        rnn_jax.SimpleRNNCell(U, input_shape=(2,),
                                                              rngs=nnx.Rngs(2))])):
        kc = rnn_jax.to_keras(jc)
        if isinstance(jc, rnn_jax.StackedRNNCells):
            states = [random_states(rng, [2, 2]), random_states(rng, [U])]
        else:
            states = random_states(rng, [U])
        assert_same(kc(x, states), jc(x, states))


# -- stateful ---------------------------------------------------------------------------------


def reset_keras_state(kl):
    """`kl.reset_state()`; Keras' own fails on nested (stacked-cell) states."""
    if getattr(kl, "states", None) is not None:
        import keras

        for v in keras.tree.flatten(kl.states):
            v.assign(np.zeros(v.shape, v.dtype))
    else:
        kl.reset_state()


@pytest.mark.parametrize("kind", ["lstm", "rnn_stacked", "bidirectional"])
def test_stateful(keras, rng, kind):
    if kind == "bidirectional":
        kl = keras.layers.Bidirectional(keras.layers.LSTM(U, stateful=True,
                                                          return_sequences=True))
    else:
        kl = make_keras(keras, kind, stateful=True, return_sequences=True,
                        go_backwards=kind == "lstm")
    kl.build((B, T, D))  # stateful: the batch size is fixed
    set_weights(kl, "normal", rng)
    jl = rnn_jax.from_keras(kl)
    xs = [inputs(rng) for _ in range(4)]
    assert_same(kl(xs[0]), jl(xs[0]))
    mask = make_mask(rng)
    assert_same(kl(xs[1], mask=mask), jl(xs[1], mask=mask))  # from the carried states
    if kind != "bidirectional":
        assert_same(keras.tree.flatten(kl.states), jl.states.get_value())
    reset_keras_state(kl)
    jl.reset_state()
    assert_same(kl(xs[2]), jl(xs[2]))
    # the carried states travel both ways
    j2 = rnn_jax.from_keras(kl)
    k2 = rnn_jax.to_keras(jl)
    assert_same(kl(xs[3]), j2(xs[3]))
    assert_same(k2(xs[3]), jl(xs[3]))


def test_stateful_sequential(keras, rng):
    L = keras.layers
    km = keras.Sequential([keras.Input(batch_shape=(B, T, D)),
                           L.LSTM(U, stateful=True, return_sequences=True),
                           L.GRU(2, stateful=True)])
    jm = rnn_jax.from_keras(km)
    xs = [inputs(rng) for _ in range(3)]
    assert_same(km(xs[0]), jm(xs[0]))
    assert_same(km(xs[1]), jm(xs[1]))  # from the carried states
    k2 = rnn_jax.to_keras(jm)  # carries the states over
    assert k2.layers[0].stateful and k2.inputs[0].shape[0] == B
    assert_same(k2(xs[2]), km(xs[2]))
    for layer in km.layers:
        layer.reset_state()
    jm.reset_state()
    assert_same(km(xs[2]), jm(xs[2]))


# -- dropout ------------------------------------------------------------------------------------

DROPOUT_CASES = [
    ("simple", dict(dropout=0.3, recurrent_dropout=0.5)),
    ("gru", dict(dropout=0.4)),  # one input mask (Keras' implementation 2)
    ("gru", dict(recurrent_dropout=0.3)),  # per-gate masks (implementation 1)
    ("gru_v1", dict(dropout=0.3, recurrent_dropout=0.5)),
    ("lstm", dict(dropout=0.3, recurrent_dropout=0.5)),
    ("rnn_stacked", dict(dropout=0.3, recurrent_dropout=0.4)),
]


@pytest.mark.parametrize("kind,rates", DROPOUT_CASES,
                         ids=[f"{k}-{'-'.join(f'{n}{v}' for n, v in r.items())}"
                              for k, r in DROPOUT_CASES])
def test_dropout_training(keras, rng, kind, rates):
    kl = built_keras(keras, kind, rng, "normal", cell_kw=rates, return_sequences=True,
                     return_state=True, go_backwards=kind == "lstm")
    jl = rnn_jax.from_keras(kl)
    key = jax.random.key(3)
    patch_layer_dropout(kl, jl, key)
    x, mask = inputs(rng), make_mask(rng)
    ko = kl(x, mask=mask, training=True)
    jo = jl(x, mask=mask, training=True, key=key)
    assert_same(ko, jo)
    # dropout really acted: the result differs from inference
    assert not np.allclose(leaves(jo)[0], leaves(kl(x, mask=mask))[0], atol=1e-3)


def test_dropout_training_bidirectional(keras, rng):
    kl = keras.layers.Bidirectional(
        keras.layers.GRU(U, dropout=0.3, recurrent_dropout=0.4, return_sequences=True),
        merge_mode="ave")
    kl.build((B, T, D))
    set_weights(kl, "normal", rng)
    jl = rnn_jax.from_keras(kl)
    key = jax.random.key(11)
    patch_layer_dropout(kl, jl, key)
    x, mask = inputs(rng), make_mask(rng)
    assert_same(kl(x, mask=mask, training=True), jl(x, mask=mask, training=True, key=key))


@pytest.mark.parametrize("kind", ["gru", "rnn_stacked"])
def test_dropout_inference_ignored(keras, rng, kind):
    """training=False: no dropout, on both sides, even when given a key."""
    kl = built_keras(keras, kind, rng, "normal", cell_kw=dict(dropout=0.5, recurrent_dropout=0.5),
                     return_sequences=True)
    jl = rnn_jax.from_keras(kl)
    x = inputs(rng)
    assert_same(kl(x, training=False), jl(x, training=False, key=jax.random.key(0)))


# -- whole models -------------------------------------------------------------------------------


def check_model(keras, km, x, atol=ATOL32, **call_kw):
    """from_keras(km) matches km; to_keras of the result matches km too."""
    ko = km(x, **call_kw)
    jm = rnn_jax.from_keras(km)
    assert isinstance(jm, rnn_jax.Sequential if type(km).__name__ == "Sequential"
                      else rnn_jax.Model)
    assert_same(ko, jm(x, **call_kw), atol)
    k2 = rnn_jax.to_keras(jm)
    for a, b in zip(k2.get_weights(), km.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert_same(ko, k2(x, **call_kw), atol)
    return jm


def padded_ids(rng, batch=5, steps=7, vocab=12):
    """Ids in [1, vocab) padded with zeros at the end, some zeros in the middle too.

    Row 3 is all padding but one id; row 4 is all padding.
    """
    ids = rng.integers(1, vocab, (batch, steps))
    ids[0, 4:] = 0
    ids[1, 2] = 0
    ids[1, 5:] = 0
    ids[2, 0] = 0
    ids[3, :] = 0
    ids[3, 1] = 5
    ids[4, :] = 0
    return ids


def test_model_embedding_simple_rnn(keras, rng):
    L = keras.layers
    km = keras.Sequential([keras.Input((3,)), L.Embedding(10, 10),
                           L.SimpleRNN(1, activation="linear"), L.Activation("sigmoid")])
    check_model(keras, km, rng.integers(0, 10, (4, 3)))


def test_model_embedding_simple_rnn_functional(keras, rng):
    L = keras.layers
    inp = keras.Input((3,))
    h = L.Embedding(10, 10)(inp)
    h = L.SimpleRNN(1, activation="linear")(h)
    km = keras.Model(inp, L.Activation("sigmoid")(h))
    check_model(keras, km, rng.integers(0, 10, (4, 3)))


def test_model_simple_rnn_dense(keras, rng):
    L = keras.layers
    km = keras.Sequential([keras.Input((10, 3)), L.SimpleRNN(5), L.Dense(2)])
    check_model(keras, km, rng.normal(size=(4, 10, 3)).astype("float32"))


def test_model_stacked_lstm_softmax(keras, rng):
    L = keras.layers
    km = keras.Sequential([keras.Input((49, 1)), L.LSTM(50, return_sequences=True), L.LSTM(50),
                           L.Dense(46), L.Activation("softmax")])
    check_model(keras, km, rng.normal(size=(2, 49, 1)).astype("float32"))


@pytest.mark.parametrize("head", ["gru", "lstm", "bidirectional", "stacked_cells"])
def test_model_embedding_mask_zero(keras, rng, head):
    """The Embedding mask flows through Sequential into every recurrent layer."""
    L = keras.layers
    layers = {
        "gru": [L.GRU(U, return_sequences=True), L.GRU(2, reset_after=False)],
        "lstm": [L.LSTM(U, return_sequences=True, go_backwards=True), L.Dense(4, "tanh"),
                 L.LSTM(2)],
        "bidirectional": [L.Bidirectional(L.LSTM(U, return_sequences=True)),
                          L.Bidirectional(L.GRU(2), merge_mode="sum")],
        "stacked_cells": [L.RNN([L.GRUCell(2), L.LSTMCell(U)], return_sequences=True),
                          L.SimpleRNN(2)],
    }[head]
    km = keras.Sequential([keras.Input((7,), dtype="int32"), L.Embedding(12, 4, mask_zero=True),
                           *layers, L.Dense(2), L.Activation("softmax")])
    for layer in km.layers:
        if layer.get_weights() and not isinstance(layer, L.Embedding):
            set_weights(layer, "normal", rng)
    check_model(keras, km, padded_ids(rng))


def test_model_functional_mask_zero(keras, rng):
    """A functional chain: Keras propagates the mask, so does the converted model."""
    L = keras.layers
    inp = keras.Input((7,), dtype="int32")
    h = L.Embedding(12, 4, mask_zero=True)(inp)
    h = L.Bidirectional(L.GRU(U, return_sequences=True, reset_after=False), merge_mode="concat")(h)
    h = L.SimpleRNN(2, go_backwards=True)(h)
    km = keras.Model(inp, L.Dense(1, activation="sigmoid")(h))
    check_model(keras, km, padded_ids(rng))


def test_model_float64(keras, rng):
    with jax.enable_x64(True):
        L = keras.layers
        f64 = dict(dtype="float64")
        km = keras.Sequential([keras.Input((T, D), dtype="float64"), L.Masking(0.0, **f64),
                               L.Bidirectional(L.LSTM(U, return_sequences=True, **f64), **f64),
                               L.GRU(2, **f64), L.Dense(2, **f64), L.Activation("softmax", **f64)])
        x = inputs(rng, "float64")
        x[0, 2:] = 0.0
        x[1, 0] = 0.0
        check_model(keras, km, x, ATOL64)


@pytest.mark.parametrize("mask_value", [-1.0])  # 0.0: test_model_float64, test_model_to_keras
def test_model_masking(keras, rng, mask_value):
    L = keras.layers
    km = keras.Sequential([keras.Input((T, D)), L.Masking(mask_value),
                           L.SimpleRNN(U, return_sequences=True), L.LSTM(2)])
    x = inputs(rng, batch=4)
    x[0, 3:] = mask_value
    x[1, 1] = mask_value
    x[2, :] = mask_value
    x[3, 0, 0] = mask_value  # one feature only: not masked
    check_model(keras, km, x)


def test_model_dropout_training(keras, rng):
    """Dropout in a Sequential: rnn_jax folds the layer index into the key."""
    L = keras.layers
    km = keras.Sequential([keras.Input((T, D)),
                           L.LSTM(U, dropout=0.3, recurrent_dropout=0.2, return_sequences=True),
                           L.GRU(2, dropout=0.2)])
    jm = rnn_jax.from_keras(km)
    key = jax.random.key(5)
    for i, (kl, jl) in enumerate(zip(km.layers, jm.layers)):
        patch_layer_dropout(kl, jl, jax.random.fold_in(key, i))
    x = inputs(rng)
    assert_same(km(x, training=True), jm(x, training=True, key=key))


def native_model(which):
    """rnn_jax models made by their constructors, with their input.

    The first is built lazily by a call, the others by `input_shape`.
    """
    R = rnn_jax
    r = lambda s: nnx.Rngs(s)  # noqa: E731
    rng = np.random.default_rng(1)
    if which == "embedding_simple_rnn":
        return (R.Sequential([R.Embedding(10, 10, rngs=r(0)),
                              R.SimpleRNN(1, activation="linear", rngs=r(1)),
                              R.Activation("sigmoid")]), rng.integers(0, 10, (4, 3)))
    if which == "simple_rnn_dense":
        return (R.Sequential([R.SimpleRNN(5, rngs=r(0)), R.Dense(2, rngs=r(1))],
                             input_shape=(10, 3)),
                rng.normal(size=(4, 10, 3)).astype("float32"))
    if which == "masked_bidirectional":
        return (R.Sequential([R.Embedding(12, 4, mask_zero=True, rngs=r(0)),
                              R.Bidirectional(R.LSTM(U, return_sequences=True, rngs=r(1)),
                                              merge_mode="ave"),
                              R.GRU(2, reset_after=False, recurrent_activation="hard_sigmoid",
                                    rngs=r(2)),
                              R.Dense(2, activation="softmax", rngs=r(3))],
                             input_shape=(7,)),
                padded_ids(rng))
    if which == "masking_stacked_cells":
        x = rng.normal(size=(B, T, D)).astype("float32")
        x[0, 2:] = 0.0
        x[1, 0] = 0.0
        return (R.Sequential([R.Masking(0.0),
                              R.RNN([R.SimpleRNNCell(2, rngs=r(0)), R.LSTMCell(U, rngs=r(1)),
                                     R.GRUCell(2, rngs=r(2))], return_sequences=True,
                                    go_backwards=True),
                              R.Dense(1, rngs=r(3))], input_shape=(T, D)), x)
    raise ValueError(which)


@pytest.mark.parametrize("which", ["embedding_simple_rnn", "simple_rnn_dense",
                                   "masked_bidirectional", "masking_stacked_cells"])
def test_model_to_keras(keras, rng, which):
    jm, x = native_model(which)
    if not jm.built:
        jm(x)
    assert jm.built
    jm.set_weights([rng.normal(0, 0.6, w.shape) for w in jm.get_weights()])
    km = rnn_jax.to_keras(jm)
    assert isinstance(km, keras.Sequential)
    assert_same(km(x), jm(x))


@pytest.mark.parametrize("kind", ["gru_v1", "lstm", "rnn_stacked", "bidirectional"])
def test_layer_to_keras(keras, rng, kind):
    """A native rnn_jax layer, converted: the Keras layer gives the same outputs."""
    kw = dict(return_sequences=True, return_state=True, go_backwards=True)
    if kind == "rnn_stacked":
        jl = rnn_jax.RNN([rnn_jax.GRUCell(2, input_shape=(D,), rngs=nnx.Rngs(0)),
                          rnn_jax.LSTMCell(U, activation="relu", input_shape=(2,),
                                           rngs=nnx.Rngs(1))], **kw)
    elif kind == "bidirectional":
        jl = rnn_jax.Bidirectional(rnn_jax.SimpleRNN(U, return_sequences=True, rngs=nnx.Rngs(0)),
                                   merge_mode="sum")
    else:
        cls = {"simple": rnn_jax.SimpleRNN, "gru_v1": rnn_jax.GRU, "lstm": rnn_jax.LSTM}[kind]
        extra = dict(reset_after=False) if kind == "gru_v1" else {}
        jl = cls(U, activation="sigmoid", **extra, **kw, input_shape=(T, D), rngs=nnx.Rngs(0))
    x, mask = inputs(rng), make_mask(rng)
    if not jl.built:
        jl(x)  # the Bidirectional copy is built lazily
    assert jl.built
    jl.set_weights([rng.normal(0, 0.7, w.shape) for w in jl.get_weights()])
    kl = rnn_jax.to_keras(jl)
    assert type(kl).__name__ == {"simple": "SimpleRNN", "gru_v1": "GRU", "lstm": "LSTM",
                                 "rnn_stacked": "RNN", "bidirectional": "Bidirectional"}[kind]
    assert_same(kl(x, mask=mask), jl(x, mask=mask))


# -- unsupported Keras objects ------------------------------------------------------------------


def test_unsupported_layer(keras):
    conv = keras.layers.Conv1D(2, 3)
    conv.build((None, T, D))
    with pytest.raises(UnsupportedKerasObject, match="Conv1D"):
        rnn_jax.from_keras(conv)


def test_unsupported_layer_in_sequential(keras):
    L = keras.layers
    km = keras.Sequential([keras.Input((T, D)), L.LSTM(U, return_sequences=True),
                           L.LayerNormalization(), L.GRU(2)])
    with pytest.raises(UnsupportedKerasObject, match="LayerNormalization"):
        rnn_jax.from_keras(km)
    km = keras.Sequential([keras.Input((T, D)), L.Conv1D(2, 3), L.GRU(2)])
    with pytest.raises(UnsupportedKerasObject, match="Conv1D"):
        rnn_jax.from_keras(km)


def test_functional_graphs_convert_both_ways(keras):
    # Not only chains: two inputs merged, and a branch joined again.
    L = keras.layers
    rng = np.random.default_rng(3)
    a, b = keras.Input((T, D)), keras.Input((T, D))
    two_inputs = keras.Model([a, b], L.LSTM(2)(L.Add()([a, b])))
    xa, xb = (rng.normal(size=(B, T, D)).astype("float32") for _ in range(2))
    jm = rnn_jax.from_keras(two_inputs)
    assert isinstance(jm, rnn_jax.Model) and len(jm.inputs) == 2
    assert_same(two_inputs([xa, xb]), jm([xa, xb]), 1e-5)
    assert_same(two_inputs([xa, xb]), rnn_jax.to_keras(jm)([xa, xb]), 1e-5)
    inp = keras.Input((T, D))
    h = L.LSTM(U, return_sequences=True)(inp)
    branch = keras.Model(inp, L.Dense(2)(L.Concatenate()([L.GRU(2)(inp), L.SimpleRNN(2)(h)])))
    jm = rnn_jax.from_keras(branch)
    assert_same(branch(xa), jm(xa), 1e-5)
    assert_same(branch(xa), rnn_jax.to_keras(jm)(xa), 1e-5)


def test_unsupported_wrapper_and_activation(keras):
    L = keras.layers
    wrapped = L.TimeDistributed(L.Conv1D(2, 2))  # the wrapper is supported, not its layer
    wrapped.build((None, T, 3, D))
    with pytest.raises(UnsupportedKerasObject, match="Conv1D"):
        rnn_jax.from_keras(wrapped)
    def double(v):  # no Keras name; a named function, since Keras warns about a lambda
        return 2.0 * v

    custom = L.SimpleRNN(2, activation=double)
    custom.build((None, T, D))
    with pytest.raises(UnsupportedKerasObject, match="SimpleRNN"):
        rnn_jax.from_keras(custom)


def test_unsupported_operation_names_itself(keras):
    # `+` on Keras tensors is an operation, not a layer: refused, named.
    L = keras.layers
    inp = keras.Input((T, D))
    h = L.LSTM(U, return_sequences=True, name="first")(inp)
    skip = keras.Model(inp, L.GRU(2, name="skipping")(inp) + L.SimpleRNN(2)(h))
    with pytest.raises(UnsupportedKerasObject, match=r"cannot convert the operation .*\(Add, "
                                                      r"e\.g\. `\+` on tensors\)"):
        rnn_jax.from_keras(skip)


# -- weights of the wrong shape -----------------------------------------------------------------


def test_keras_weights_of_the_wrong_shape(keras):
    """Keras weights copied into a layer of another size: the layer, weight and both shapes."""
    klayer = keras.layers.LSTM(U + 1)
    klayer.build((None, T, D))
    ours = rnn_jax.LSTM(U, input_shape=(T, D), rngs=nnx.Rngs(0), name="ours")
    with pytest.raises(ValueError) as info:
        ours.set_weights(klayer.get_weights())
    assert str(info.value) == (f"LSTM 'ours': weight 'kernel' has shape ({D}, {4 * U}), got "
                               f"an array of shape ({D}, {4 * (U + 1)})")
    kmodel = keras.Sequential([keras.Input((T,)), keras.layers.Embedding(10, D),
                               keras.layers.GRU(U, reset_after=False)])
    model = rnn_jax.Sequential([rnn_jax.Embedding(10, D, rngs=nnx.Rngs(0), name="words"),
                                rnn_jax.GRU(U, rngs=nnx.Rngs(1), name="gru")], input_shape=(T,))
    with pytest.raises(ValueError) as info:
        model.set_weights(kmodel.get_weights())  # reset_after=True: bias (2, 3U), not (3U,)
    assert "layers[1] (GRU 'gru').bias" in str(info.value)
    assert f"(2, {3 * U})" in str(info.value) and f"({3 * U},)" in str(info.value)


def test_from_keras_weights_of_the_wrong_shape(keras, monkeypatch):
    kdense = keras.layers.Dense(2, name="head")
    kdense.build((None, D))
    monkeypatch.setattr(type(kdense), "get_weights",
                        lambda self: [np.zeros((D, 2), "float32"), np.zeros(3, "float32")])
    with pytest.raises(ValueError) as info:
        rnn_jax.from_keras(kdense)
    assert str(info.value) == ("from_keras: Keras Dense 'head': Dense 'head': weight 'bias' has "
                               "shape (2,), got an array of shape (3,)")


def test_to_keras_weights_of_the_wrong_shape(keras, monkeypatch):
    ours = rnn_jax.Dense(2, input_shape=(D,), rngs=nnx.Rngs(0), name="head")
    monkeypatch.setattr(rnn_jax.Dense, "get_weights",
                        lambda self: [np.zeros((D + 1, 2), "float32"), np.zeros(2, "float32")])
    with pytest.raises(ValueError) as info:
        rnn_jax.to_keras(ours)
    message = str(info.value)
    assert message.startswith("to_keras: Dense 'head' -> Keras Dense 'head': ")
    assert f"({D}, 2)" in message and f"({D + 1}, 2)" in message
