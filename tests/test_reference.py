"""rnn_jax's layers against the plain-numpy reference in `tests/reference.py`.

The reference loops over batch and time with numpy and is written from the
Keras equations, so these tests check the scanned, vectorised layers (and
their masking, go_backwards, initial states, dropout) against an independent
implementation, in float32 and float64.
"""

from __future__ import annotations

import contextlib
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnn_jax as R
try:  # tests/reference.py: tests/ is on sys.path under pytest's default import mode
    import reference as ref
except ImportError:  # tests/ as a package
    from tests import reference as ref

LAYERS = {"simple_rnn": R.SimpleRNN, "gru": R.GRU, "lstm": R.LSTM}

# (kind, extra layer kwargs)
CONFIGS = [
    ("simple_rnn", {}),
    ("gru", {"reset_after": True}),
    ("gru", {"reset_after": False}),
    ("lstm", {}),
]
CONFIG_IDS = ["simple_rnn", "gru_reset_after", "gru_reset_before", "lstm"]

# The weights of reference tests are set from numpy; constant initial draws
# avoid compiling an orthogonal / uniform draw for every shape.
FAST_INIT = {"kernel_initializer": "zeros", "recurrent_initializer": "zeros"}

TOL = {"float32": 1e-5, "float64": 1e-10}

MERGE_MODES = ["concat", "sum", "mul", "ave", None]


@contextlib.contextmanager
def precision(dtype):
    """float64 needs x64 switched on around creation and calls."""
    if dtype == "float64":
        with jax.enable_x64(True):
            yield
    else:
        yield


def make_layer(kind, units, input_dim, rng, *, dtype="float32", use_bias=True, **kwargs):
    """A built layer with random (nonzero-bias) weights set from numpy."""
    kwargs = {**FAST_INIT, **kwargs}
    layer = LAYERS[kind](units, use_bias=use_bias, dtype=dtype, rngs=nnx.Rngs(0),
                         input_shape=(None, input_dim), **kwargs)
    reset_after = kwargs.get("reset_after", True)
    weights = ref.random_weights(kind, input_dim, units, rng, use_bias=use_bias,
                                 reset_after=reset_after, dtype=dtype)
    layer.set_weights(weights)
    return layer, weights


def ref_forward(kind, weights, x, layer_kwargs, **kwargs):
    """The numpy reference in float64 (also for float32 layers: a tighter oracle)."""
    return ref.rnn_forward(
        kind, [np.asarray(w, np.float64) for w in weights], np.asarray(x, np.float64),
        activation_name=layer_kwargs.get("activation", "tanh"),
        recurrent_activation=layer_kwargs.get("recurrent_activation", "sigmoid"),
        reset_after=layer_kwargs.get("reset_after", True), **kwargs)


def make_mask(batch, steps, rng):
    """Row 0 has holes, row 1 is fully masked, row 2 starts masked, then random rows."""
    mask = rng.random((batch, steps)) > 0.35
    if batch == 1:
        mask[0] = np.arange(steps) % 2 == 0  # holes, first and last step kept
        return mask
    mask[0] = np.arange(steps) % 3 != 1
    mask[1] = False
    if batch > 2:
        mask[2] = np.arange(steps) >= steps // 2
    return mask


def assert_close(actual, expected, dtype, what=""):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=0,
                               atol=TOL[dtype], err_msg=what)


# -- the main grid ----------------------------------------------------------------------

# Every pair of values of (batch > 1, mask, go_backwards, initial_state,
# return_sequences) occurs in some case (a strength-2 covering array), which
# keeps the number of compiled scans small.
GRID = [
    dict(batch=1, mask=False, go_backwards=False, init=False, return_sequences=True),
    dict(batch=1, mask=False, go_backwards=False, init=False, return_sequences=False),
    dict(batch=1, mask=True, go_backwards=True, init=True, return_sequences=False),
    dict(batch=4, mask=False, go_backwards=True, init=True, return_sequences=True),
    dict(batch=4, mask=True, go_backwards=False, init=True, return_sequences=True),
    dict(batch=4, mask=True, go_backwards=True, init=False, return_sequences=True),
]
GRID_IDS = [
    "N{batch}{m}{b}{i}-{r}".format(
        batch=c["batch"], m="-mask" if c["mask"] else "", b="-bwd" if c["go_backwards"] else "",
        i="-init" if c["init"] else "", r="seq" if c["return_sequences"] else "last")
    for c in GRID
]


# float64 (x64 switched on) on the cases with a mask and an initial state.
GRID_DTYPES = [(c, "float32") for c in GRID] + [(c, "float64") for c in GRID if c["mask"] or c["init"]]
GRID_DTYPE_IDS = [f"{i}-float32" for i in GRID_IDS] + [
    f"{i}-float64" for c, i in zip(GRID, GRID_IDS) if c["mask"] or c["init"]]


@pytest.mark.parametrize("case,dtype", GRID_DTYPES, ids=GRID_DTYPE_IDS)
@pytest.mark.parametrize("kind,kw", CONFIGS, ids=CONFIG_IDS)
def test_layer_matches_reference(kind, kw, case, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((kind, kw, case)).encode()))
    batch, steps, input_dim, units = case["batch"], 5, 3, 4
    go_backwards, return_sequences = case["go_backwards"], case["return_sequences"]
    n_states = 2 if kind == "lstm" else 1
    with precision(dtype):
        layer, weights = make_layer(kind, units, input_dim, rng, dtype=dtype,
                                    return_sequences=return_sequences, return_state=True,
                                    go_backwards=go_backwards, **kw)
        x = rng.standard_normal((batch, steps, input_dim)).astype(dtype)
        mask = make_mask(batch, steps, rng) if case["mask"] else None
        init = layer_init = None
        if case["init"]:
            init = [rng.standard_normal((batch, units)).astype(dtype) for _ in range(n_states)]
            layer_init = tuple(init) if kind == "lstm" else init
        out, *states = layer(x, initial_state=layer_init, mask=mask)
        exp_out, exp_states = ref_forward(kind, weights, x, kw, initial_state=init, mask=mask,
                                          go_backwards=go_backwards,
                                          return_sequences=return_sequences)
        assert out.dtype == jnp.dtype(dtype)
        assert out.shape == ((batch, steps, units) if return_sequences else (batch, units))
        assert_close(out, exp_out, dtype, "outputs")
        assert len(states) == n_states
        for s, e in zip(states, exp_states):
            assert s.shape == (batch, units) and s.dtype == jnp.dtype(dtype)
            assert_close(s, e, dtype, "final state")


@pytest.mark.parametrize("kind,kw", CONFIGS, ids=CONFIG_IDS)
def test_zero_output_for_mask(kind, kw):
    rng = np.random.default_rng(1)
    batch, steps, input_dim, units = 4, 6, 2, 3
    mask = make_mask(batch, steps, rng)
    x = rng.standard_normal((batch, steps, input_dim)).astype("float32")
    for go_backwards in (False, True):
        layer, weights = make_layer(kind, units, input_dim, rng, return_sequences=True,
                                    zero_output_for_mask=True, go_backwards=go_backwards, **kw)
        out = layer(x, mask=mask)
        exp, _ = ref_forward(kind, weights, x, kw, mask=mask, go_backwards=go_backwards,
                             return_sequences=True, zero_output_for_mask=True)
        assert_close(out, exp, "float32")
        # masked steps are exactly zero (in processing order)
        processed_mask = mask[:, ::-1] if go_backwards else mask
        assert np.all(np.asarray(out)[~processed_mask] == 0.0)


@pytest.mark.parametrize("kind,kw", CONFIGS, ids=CONFIG_IDS)
def test_masked_steps_repeat_previous_output(kind, kw):
    """Keras' rule without zero_output_for_mask, checked directly on the output."""
    rng = np.random.default_rng(2)
    layer, _ = make_layer(kind, 3, 2, rng, return_sequences=True, **kw)
    x = rng.standard_normal((3, 6, 2)).astype("float32")
    mask = np.array([[1, 0, 0, 1, 0, 1], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]], bool)
    out = np.asarray(layer(x, mask=mask))
    for b in range(3):
        prev = np.zeros(3, np.float32)
        for t in range(6):
            if not mask[b, t]:
                np.testing.assert_array_equal(out[b, t], prev)
            prev = out[b, t]
    # a fully masked row: zero output, final state = initial state
    full = layer.__class__(3, rngs=nnx.Rngs(0), return_state=True, input_shape=(None, 2),
                           **FAST_INIT, **kw)
    full.set_weights(layer.get_weights())
    n_states = 2 if kind == "lstm" else 1
    init = [rng.standard_normal((3, 3)).astype("float32") for _ in range(n_states)]
    res = full(x, initial_state=tuple(init) if kind == "lstm" else init, mask=mask)
    np.testing.assert_array_equal(np.asarray(res[0])[2], 0.0)
    for s, s0 in zip(res[1:], init):
        np.testing.assert_array_equal(np.asarray(s)[2], s0[2])


@pytest.mark.parametrize("activation,recurrent_activation", [
    ("relu", "hard_sigmoid"), ("linear", "sigmoid"), (None, "linear"), ("hard_sigmoid", "tanh"),
])
@pytest.mark.parametrize("kind", ["simple_rnn", "gru", "lstm"])
def test_activations_by_name(kind, activation, recurrent_activation):
    rng = np.random.default_rng(3)
    kw = {"activation": activation}
    if kind != "simple_rnn":
        kw["recurrent_activation"] = recurrent_activation
    layer, weights = make_layer(kind, 3, 2, rng, return_sequences=True, **kw)
    x = (2.0 * rng.standard_normal((2, 4, 2))).astype("float32")
    exp, _ = ref_forward(kind, weights, x, kw, return_sequences=True)
    np.testing.assert_allclose(np.asarray(layer(x), np.float64), exp, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind,kw", CONFIGS, ids=CONFIG_IDS)
def test_no_bias(kind, kw):
    rng = np.random.default_rng(4)
    layer, weights = make_layer(kind, 3, 2, rng, use_bias=False, return_sequences=True, **kw)
    assert len(layer.get_weights()) == 2
    x = rng.standard_normal((3, 4, 2)).astype("float32")
    mask = make_mask(3, 4, rng)
    exp, _ = ref_forward(kind, weights, x, kw, mask=mask, return_sequences=True)
    assert_close(layer(x, mask=mask), exp, "float32")


@pytest.mark.parametrize("kind,kw", CONFIGS, ids=CONFIG_IDS)
def test_cell_single_step_matches_reference(kind, kw):
    """The cell's own call (one step) against the reference step."""
    rng = np.random.default_rng(5)
    cell_cls = {"simple_rnn": R.SimpleRNNCell, "gru": R.GRUCell, "lstm": R.LSTMCell}[kind]
    cell = cell_cls(4, rngs=nnx.Rngs(0), input_shape=(3,), **FAST_INIT, **kw)
    weights = ref.random_weights(kind, 3, 4, rng, reset_after=kw.get("reset_after", True))
    cell.set_weights(weights)
    x = rng.standard_normal((4, 3)).astype("float32")
    states = [rng.standard_normal((4, 4)).astype("float32") for _ in range(2 if kind == "lstm" else 1)]
    out, new = cell(x, tuple(states))
    exp, exp_states = ref_forward(kind, weights, x[:, None, :], kw, initial_state=states)
    assert_close(out, exp, "float32")
    for s, e in zip(new, exp_states):
        assert_close(s, e, "float32")


def test_reference_matches_keras(keras):
    """Guards the oracle itself: the numpy reference agrees with Keras."""
    rng = np.random.default_rng(6)
    batch, steps, input_dim, units = 3, 5, 3, 4
    x = rng.standard_normal((batch, steps, input_dim)).astype("float32")
    mask = make_mask(batch, steps, rng)
    for kind, kw in CONFIGS:
        for go_backwards in (False, True):
            cls = {"simple_rnn": keras.layers.SimpleRNN, "gru": keras.layers.GRU,
                   "lstm": keras.layers.LSTM}[kind]
            klayer = cls(units, return_sequences=True, go_backwards=go_backwards, **kw)
            klayer.build((None, steps, input_dim))
            weights = ref.random_weights(kind, input_dim, units, rng,
                                         reset_after=kw.get("reset_after", True))
            klayer.set_weights(weights)
            expected = np.asarray(klayer(x, mask=mask))
            got, _ = ref_forward(kind, weights, x, kw, mask=mask, go_backwards=go_backwards,
                                 return_sequences=True)
            np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=f"{kind} {kw}")


# -- dropout ------------------------------------------------------------------------------


IN, REC, BOTH = (0.3, 0.0), (0.0, 0.4), (0.25, 0.4)
# Inputs only: one mask for all gates (Keras' implementation=2); recurrent
# dropout: one mask per gate (implementation=1) for inputs and states.
DROPOUT_CASES = [
    ("simple_rnn", {}, BOTH, "simple_rnn-both"),
    ("simple_rnn", {}, REC, "simple_rnn-rec"),
    ("gru", {"reset_after": True}, IN, "gru_reset_after-in"),
    ("gru", {"reset_after": True}, BOTH, "gru_reset_after-both"),
    ("gru", {"reset_after": False}, REC, "gru_reset_before-rec"),
    ("gru", {"reset_after": False}, BOTH, "gru_reset_before-both"),
    ("lstm", {}, IN, "lstm-in"),
    ("lstm", {}, BOTH, "lstm-both"),
]


@pytest.mark.parametrize("kind,kw,rates", [c[:3] for c in DROPOUT_CASES],
                         ids=[c[3] for c in DROPOUT_CASES])
def test_dropout_training_matches_reference(kind, kw, rates):
    dropout, recurrent_dropout = rates
    rng = np.random.default_rng(7)
    batch, steps, input_dim, units = 4, 5, 3, 4
    layer, weights = make_layer(kind, units, input_dim, rng, return_sequences=True,
                                return_state=True, dropout=dropout,
                                recurrent_dropout=recurrent_dropout, **kw)
    x = rng.standard_normal((batch, steps, input_dim)).astype("float32")
    mask = make_mask(batch, steps, rng)
    key = jax.random.key(11)
    masks = layer.cell.dropout_masks(key, batch, training=True)
    assert isinstance(masks, R.DropoutMasks)

    gates = ref.GATES[kind]
    per_gate = kind != "simple_rnn" and recurrent_dropout > 0  # Keras' implementation=1
    m_count = gates if per_gate else 1
    if dropout > 0:
        assert masks.inputs.shape == (m_count, batch, input_dim)
    else:
        assert masks.inputs is None
    if recurrent_dropout > 0:
        assert masks.recurrent.shape == (m_count, batch, units)
    else:
        assert masks.recurrent is None

    np_masks = tuple(None if m is None else np.asarray(m) for m in masks)
    res = layer(x, mask=mask, training=True, key=key)
    exp_out, exp_states = ref_forward(kind, weights, x, kw, mask=mask, return_sequences=True,
                                      dropout_masks=np_masks)
    assert_close(res[0], exp_out, "float32", "outputs with dropout")
    for s, e in zip(res[1:], exp_states):
        assert_close(s, e, "float32", "states with dropout")

    # dropout really did something, and inference ignores it
    no_drop, _ = ref_forward(kind, weights, x, kw, mask=mask, return_sequences=True)
    assert not np.allclose(np.asarray(res[0]), no_drop, atol=1e-4)
    if rates == BOTH:
        assert_close(layer(x, mask=mask, training=False, key=key)[0], no_drop, "float32")


def test_gru_final_mix_uses_undropped_state():
    """Keras' GRU mixes z * h_{t-1} with the un-dropped h_{t-1}.

    With a zero kernel, zero bias and recurrent dropout dropping every unit of
    every gate, the gates see h = 0: z = r = 0.5 and the
    candidate is tanh(0) = 0, so h_1 = 0.5 * h_0 (not 0.5 * dropped h_0 = 0).
    """
    layer = R.GRU(2, recurrent_dropout=0.95, rngs=nnx.Rngs(0), input_shape=(None, 1), **FAST_INIT)
    layer.set_weights([np.zeros((1, 6), "float32"), np.ones((2, 6), "float32"),
                       np.zeros((2, 6), "float32")])
    h0 = np.array([[0.8, -0.6]], "float32")
    x = np.zeros((1, 1, 1), "float32")
    # find a key that drops both units of every gate mask
    for seed in range(200):
        key = jax.random.key(seed)
        m = layer.cell.dropout_masks(key, 1, training=True)
        if np.all(np.asarray(m.recurrent) == 0):
            break
    else:  # each key drops all 6 entries with probability 0.95**6 = 0.74
        pytest.fail("no all-dropping key found")
    out = layer(x, initial_state=[h0], training=True, key=key)
    np.testing.assert_allclose(np.asarray(out), 0.5 * h0, atol=1e-6)


@pytest.mark.parametrize("kind", ["simple_rnn", "gru", "lstm"])
def test_dropout_mask_values_and_keys(kind):
    rate, rec_rate = 0.3, 0.6
    layer = LAYERS[kind](4, dropout=rate, recurrent_dropout=rec_rate, rngs=nnx.Rngs(0),
                         input_shape=(None, 5), **FAST_INIT)
    batch = 200
    m1 = layer.cell.dropout_masks(jax.random.key(0), batch, training=True)
    for m, r in ((m1.inputs, rate), (m1.recurrent, rec_rate)):
        m = np.asarray(m)
        values = np.unique(m)
        np.testing.assert_allclose(values, [0.0, 1.0 / (1.0 - r)], rtol=1e-6)
        kept = np.mean(m > 0)
        assert abs(kept - (1 - r)) < 0.05, (kept, r)
        if m.shape[0] > 1:  # per-gate masks are independent draws
            assert not np.array_equal(m[0], m[1])
    m2 = layer.cell.dropout_masks(jax.random.key(1), batch, training=True)
    assert not np.array_equal(np.asarray(m1.inputs), np.asarray(m2.inputs))
    assert not np.array_equal(np.asarray(m1.recurrent), np.asarray(m2.recurrent))
    m1_again = layer.cell.dropout_masks(jax.random.key(0), batch, training=True)
    np.testing.assert_array_equal(np.asarray(m1.inputs), np.asarray(m1_again.inputs))
    # inactive: not training, or no dropout
    assert layer.cell.dropout_masks(jax.random.key(0), batch, training=False) is None
    plain = LAYERS[kind](4, rngs=nnx.Rngs(0), input_shape=(None, 5), **FAST_INIT)
    assert plain.cell.dropout_masks(jax.random.key(0), batch, training=True) is None


def test_dropout_mask_is_the_same_at_every_step():
    """Variational dropout: with h_t = x_t * m (identity kernel), every step shows m."""
    batch, steps, d = 64, 7, 3
    layer = R.SimpleRNN(d, activation="linear", dropout=0.5, return_sequences=True,
                        rngs=nnx.Rngs(0), input_shape=(None, d), **FAST_INIT)
    layer.set_weights([np.eye(d, dtype="float32"), np.zeros((d, d), "float32"),
                       np.zeros(d, "float32")])
    x = np.ones((batch, steps, d), "float32")
    key = jax.random.key(3)
    out = np.asarray(layer(x, training=True, key=key))
    for t in range(1, steps):
        np.testing.assert_array_equal(out[:, t], out[:, 0])
    m = np.asarray(layer.cell.dropout_masks(key, batch, training=True).inputs[0])
    np.testing.assert_array_equal(out[:, 0], m)
    assert 0 < np.mean(m == 0) < 1
    # a different key gives a different mask
    assert not np.array_equal(np.asarray(layer(x, training=True, key=jax.random.key(4))), out)


@pytest.mark.parametrize("kind", ["simple_rnn", "gru", "lstm"])
def test_dropout_training_without_key_raises(kind):
    layer = LAYERS[kind](3, dropout=0.2, rngs=nnx.Rngs(0), input_shape=(None, 2), **FAST_INIT)
    x = np.zeros((2, 3, 2), "float32")
    with pytest.raises(ValueError, match="key"):
        layer(x, training=True)
    with pytest.raises(ValueError, match="key"):
        layer.cell.dropout_masks(None, 2, training=True)
    layer(x, training=False)  # fine without a key


# -- property test --------------------------------------------------------------------------


CELLS = {"simple_rnn": R.SimpleRNNCell, "gru": R.GRUCell, "lstm": R.LSTMCell}
STRUCTURES = ["layer", "stacked", "bidirectional"]


def draw_mask(data, batch, steps):
    """Random bits, plus (drawn) a fully masked row and/or a row with holes
    (steps 1, 3, ... masked) in random rows."""
    bits = data.draw(st.lists(st.booleans(), min_size=batch * steps, max_size=batch * steps),
                     label="mask")
    mask = np.array(bits, bool).reshape(batch, steps)
    rows = data.draw(st.permutations(range(batch)), label="rows")
    special = data.draw(st.sampled_from(["none", "all-masked", "holes", "both"]), label="special")
    if special in ("all-masked", "both"):
        mask[rows[0]] = False
    if special == "holes" or (special == "both" and batch > 1):
        mask[rows[-1]] = np.arange(steps) % 2 == 0
    return mask


def ref_cell(kind, kw, input_dim, units, rng):
    """`(kind, weights, options)` for the reference, with random weights."""
    reset_after = kw.get("reset_after", True)
    weights = ref.random_weights(kind, input_dim, units, rng, reset_after=reset_after)
    return kind, weights, {"reset_after": reset_after}


@pytest.mark.parametrize("structure", STRUCTURES)  # each its own examples
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    configs=st.lists(st.sampled_from(range(len(CONFIGS))), min_size=2, max_size=3),
    batch=st.integers(1, 4),
    steps=st.integers(1, 6),
    input_dim=st.integers(1, 4),
    units=st.lists(st.integers(1, 4), min_size=3, max_size=3),
    go_backwards=st.booleans(),
    return_sequences=st.booleans(),
    return_state=st.booleans(),
    use_mask=st.booleans(),
    with_state=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_property_layer_matches_reference(structure, configs, batch, steps, input_dim, units,
                                          go_backwards, return_sequences, return_state,
                                          use_mask, with_state, seed, data):
    """Random shapes, masks (holes, fully masked rows), cell types and flags for each
    structure (one layer, 2-3 stacked cells of mixed types, Bidirectional with every
    merge mode), against numpy. `go_backwards` is the layer's or the stack's;
    Bidirectional has its own backward layer."""
    rng = np.random.default_rng(seed)
    mask = draw_mask(data, batch, steps) if use_mask else None
    flags = dict(return_sequences=return_sequences, return_state=return_state)
    kind, kw = CONFIGS[configs[0]]

    def states_for(kinds_units):
        return [[rng.standard_normal((batch, u)).astype("float32")
                 for _ in range(2 if k == "lstm" else 1)] for k, u in kinds_units]

    if structure == "layer":
        layer, weights = make_layer(kind, units[0], input_dim, rng, go_backwards=go_backwards,
                                    **flags, **kw)
        init = states_for([(kind, units[0])]) if with_state else None
        layer_init = None if init is None else tuple(init[0])
        x = rng.standard_normal((batch, steps, input_dim)).astype("float32")
        exp_out, exp_states = ref_forward(kind, weights, x, kw, mask=mask,
                                          initial_state=None if init is None else init[0],
                                          go_backwards=go_backwards,
                                          return_sequences=return_sequences)
    elif structure == "stacked":
        cells, specs, in_dim = [], [], input_dim
        for k, c in enumerate(configs):
            ckind, ckw = CONFIGS[c]
            spec = ref_cell(ckind, ckw, in_dim, units[k], rng)
            cell = CELLS[ckind](units[k], rngs=nnx.Rngs(k), input_shape=(in_dim,), **FAST_INIT,
                                **ckw)
            cell.set_weights(spec[1])
            cells.append(cell)
            specs.append(spec)
            in_dim = units[k]
        layer = R.RNN(cells, go_backwards=go_backwards, **flags)
        init = states_for([(s[0], u) for s, u in zip(specs, units)]) if with_state else None
        layer_init = None if init is None else [tuple(s) for s in init]
        x = rng.standard_normal((batch, steps, input_dim)).astype("float32")
        exp_out, per_cell = ref.stacked_forward(
            specs, np.asarray(x, np.float64), initial_state=init, mask=mask,
            go_backwards=go_backwards, return_sequences=return_sequences)
        exp_states = [s for cell_states in per_cell for s in cell_states]
    else:
        merge_mode = data.draw(st.sampled_from(MERGE_MODES), label="merge_mode")
        forward, wf = make_layer(kind, units[0], input_dim, rng, **flags, **kw)
        layer = R.Bidirectional(forward, merge_mode=merge_mode, rngs=nnx.Rngs(1))
        back = ref_cell(kind, kw, input_dim, units[0], rng)
        layer.set_weights(wf + back[1])
        fwd = (kind, wf, back[2])
        init = states_for([(kind, units[0])] * 2) if with_state else None
        layer_init = None if init is None else init[0] + init[1]
        x = rng.standard_normal((batch, steps, input_dim)).astype("float32")
        exp_out, f_states, b_states = ref.bidirectional_forward(
            fwd, back, np.asarray(x, np.float64), initial_state=init, mask=mask,
            merge_mode=merge_mode, return_sequences=return_sequences)
        exp_states = f_states + b_states

    res = layer(x, initial_state=layer_init, mask=mask)
    n_out = 2 if isinstance(exp_out, tuple) else 1  # Bidirectional(merge_mode=None): a pair
    res = res if isinstance(res, tuple) else (res,)
    for got, want in zip(res[:n_out], exp_out if n_out == 2 else (exp_out,), strict=True):
        assert got.shape == want.shape
        assert_close(got, want, "float32", "outputs")
    got_states = jax.tree.leaves(res[n_out:])  # stacked cells: one tuple per cell
    assert len(got_states) == (len(exp_states) if return_state else 0)
    for got, want in zip(got_states, exp_states):
        assert_close(got, want, "float32", "final states")


class _DoubledOutputCell(R.SimpleRNNCell):
    """A cell whose output is not its state: `y_t = 2 h_t` (state `h_t` as SimpleRNN's)."""

    def step_with_gates(self, params, z_t, states, masks=None):
        h, new_states, gates = super().step_with_gates(params, z_t, states, masks)
        return 2.0 * h, new_states, gates


@pytest.mark.parametrize("return_sequences", [False, True])
def test_last_output_of_a_cell_whose_output_is_not_its_state(return_sequences):
    # Without a mask the scan carries only the states where a cell's output is
    # read back from them (Keras' cells); a subclass that outputs something else
    # must still get its own last output.
    B, T, D, U = 3, 5, 2, 4
    cell = _DoubledOutputCell(U, input_shape=(D,), rngs=nnx.Rngs(2))
    assert cell.output_from_states((jnp.zeros((B, U)),)) is None
    layer = R.RNN(cell, return_sequences=return_sequences, return_state=True)
    x = np.random.default_rng(4).normal(size=(B, T, D)).astype(np.float32)
    out, h_last = layer(x)
    W, Uk, b = (np.asarray(w) for w in cell.get_weights())
    h = np.zeros((B, U), np.float32)
    ys = []
    for t in range(T):
        h = np.stack([ref.simple_rnn_step(x[i, t], h[i], W, Uk, b, np.tanh) for i in range(B)])
        ys.append(2.0 * h)
    want = np.stack(ys, 1) if return_sequences else ys[-1]
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(h_last), h, rtol=1e-5, atol=1e-6)
