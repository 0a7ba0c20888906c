"""The layers under JAX transformations: scan vs a Python loop, vmap over
parameter sets, jit caching, the hoisted input projection, gradients."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnn_jax as R

B, T, D, U = 3, 5, 3, 4
ATOL = 1e-5


def _x(seed=0, shape=(B, T, D)):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _nonzero_biases(cell_or_layer, seed):
    """Random weights so that every bias (incl. the GRU's recurrent row) matters."""
    rng = np.random.default_rng(seed)
    cell_or_layer.set_weights(
        [0.5 * rng.standard_normal(w.shape).astype("float32") for w in cell_or_layer.get_weights()])


CELLS = {
    "simple_rnn": lambda seed, d=D: R.SimpleRNNCell(U, rngs=nnx.Rngs(seed), input_shape=(d,)),
    "gru_reset_after": lambda seed, d=D: R.GRUCell(U, rngs=nnx.Rngs(seed), input_shape=(d,)),
    "gru_reset_before": lambda seed, d=D: R.GRUCell(U, reset_after=False, rngs=nnx.Rngs(seed),
                                                     input_shape=(d,)),
    "lstm": lambda seed, d=D: R.LSTMCell(U, rngs=nnx.Rngs(seed), input_shape=(d,)),
    "stacked": lambda seed, d=D: R.StackedRNNCells([
        R.LSTMCell(U, rngs=nnx.Rngs(seed), input_shape=(d,)),
        R.GRUCell(2, rngs=nnx.Rngs(seed + 1), input_shape=(U,)),
        R.SimpleRNNCell(3, rngs=nnx.Rngs(seed + 2), input_shape=(2,)),
    ]),
}


def _python_loop(cell, x, mask=None):
    """Keras' recurrence written as a loop of single cell calls."""
    states = cell.get_initial_state(x.shape[0])
    prev = None
    outs = []
    for t in range(x.shape[1]):
        out, new = cell(x[:, t], states)
        if mask is not None:
            m = mask[:, t][:, None]
            out = jnp.where(m, out, jnp.zeros_like(out) if prev is None else prev)
            new = jax.tree.map(lambda n, o: jnp.where(m, n, o), new, states)
        outs.append(out)
        prev, states = out, new
    return jnp.stack(outs, axis=1), states


# -- scan == Python loop ------------------------------------------------------------------


# sequence 0 has holes, 1 is fully masked, 2 is complete
LOOP_MASK = np.array([[True, False, True, False, True], [False] * T, [True] * T])


@pytest.mark.parametrize("unroll", [False, 1, 3, True], ids=["rolled", "u1", "u3", "unrolled"])
@pytest.mark.parametrize("name", list(CELLS))
def test_scan_equals_python_loop(name, unroll):
    cell = CELLS[name](0)
    _nonzero_biases(cell, 1)
    x = _x(2)
    mask = None if unroll is False else LOOP_MASK
    layer = R.RNN(cell, return_sequences=True, return_state=True, unroll=unroll)
    out, *final = layer(x, mask=mask)
    exp_out, exp_states = _python_loop(cell, x, mask)
    np.testing.assert_allclose(out, exp_out, atol=ATOL)
    flat, flat_exp = jax.tree.leaves(tuple(final)), jax.tree.leaves(exp_states)
    assert len(flat) == len(flat_exp)
    for a, e in zip(flat, flat_exp):
        np.testing.assert_allclose(a, e, atol=ATOL)


def test_list_of_cells_is_stacked():
    cells = [R.SimpleRNNCell(U, rngs=nnx.Rngs(0), input_shape=(D,)),
             R.LSTMCell(2, rngs=nnx.Rngs(1), input_shape=(U,))]
    layer = R.RNN(cells, return_sequences=True)
    assert isinstance(layer.cell, R.StackedRNNCells)
    out, _ = _python_loop(layer.cell, _x(3))
    np.testing.assert_allclose(layer(_x(3)), out, atol=ATOL)


# -- vmap over stacked parameter sets ----------------------------------------------------

SEEDS = (0, 1, 2)
IDS = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 1], [2, 0, 4, 0, 6]])

MODELS = {
    "simple_rnn": (lambda s: R.SimpleRNN(U, return_sequences=True, rngs=nnx.Rngs(s)), _x(4)),
    "gru": (lambda s: R.GRU(U, rngs=nnx.Rngs(s)), _x(4)),
    "lstm": (lambda s: R.LSTM(U, return_sequences=True, rngs=nnx.Rngs(s)), _x(4)),
    "bidirectional": (lambda s: R.Bidirectional(R.LSTM(U, return_sequences=True,
                                                       rngs=nnx.Rngs(s))), _x(4)),
    "sequential": (lambda s: R.Sequential([
        R.Embedding(10, D, rngs=nnx.Rngs(s)),
        R.SimpleRNN(U, rngs=nnx.Rngs(100 + s)),
        R.Activation("sigmoid"),
    ]), IDS),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_vmap_over_parameter_sets(name):
    make, x = MODELS[name]
    models = [make(s) for s in SEEDS]
    first = np.asarray(models[0](x))  # builds eagerly
    for m in models[1:]:
        m.build((None, *x.shape[1:]))  # the same weights' shapes, without a call
    splits = [nnx.split(m) for m in models]
    graphdef = splits[0][0]
    # the same structure of parameters (the graphs differ only in the layers'
    # automatic names), so one graph runs every set
    assert all(jax.tree.structure(st) == jax.tree.structure(splits[0][1]) for _, st in splits)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[st for _, st in splits])

    ys = jax.vmap(lambda s, x: nnx.merge(graphdef, s)(x), in_axes=(0, None))(stacked, x)
    assert ys.shape[0] == len(SEEDS)
    # each set on its own: an eager call of the first, one jitted call per set
    single = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    singles = [np.asarray(single(st, x)) for _, st in splits]
    np.testing.assert_allclose(singles[0], first, atol=ATOL)
    np.testing.assert_allclose(singles[1], np.asarray(models[1](x)), atol=ATOL)
    assert not np.allclose(singles[0], singles[1])  # the parameter sets really differ
    for i, y in enumerate(singles):
        np.testing.assert_allclose(ys[i], y, atol=ATOL)


def test_vmap_over_parameters_and_data_under_jit():
    """One batch per parameter set, vmapped and jitted."""
    models = [R.LSTM(U, return_sequences=True, rngs=nnx.Rngs(s), input_shape=(None, D))
              for s in SEEDS]
    graphdef = nnx.split(models[0])[0]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[nnx.split(m)[1] for m in models])
    xs = np.stack([_x(10 + i) for i in range(len(SEEDS))])
    ys = jax.jit(jax.vmap(lambda s, x: nnx.merge(graphdef, s)(x)))(stacked, xs)
    for i, m in enumerate(models):
        np.testing.assert_allclose(ys[i], m(xs[i]), atol=ATOL)


# -- jit caching ------------------------------------------------------------------------


def test_jit_traces_once_per_shape():
    layer = R.LSTM(U, return_sequences=True, rngs=nnx.Rngs(0), input_shape=(None, D))
    graphdef, state = nnx.split(layer)
    traces = []

    @jax.jit
    def f(state, x):
        traces.append(x.shape)
        return nnx.merge(graphdef, state)(x)

    x = _x(0)
    y1 = f(state, x)
    y2 = f(state, _x(1))
    assert len(traces) == 1
    np.testing.assert_allclose(y1, layer(x), atol=ATOL)
    assert not np.allclose(y1, y2)
    f(state, _x(2, (B, T + 2, D)))  # a new time length: one new trace
    assert len(traces) == 2
    f(state, _x(3, (B, T + 2, D)))
    f(state, _x(4))
    assert len(traces) == 2
    f(state, _x(5, (B + 1, T, D)))  # a new batch size
    assert len(traces) == 3


def test_jit_chex_max_traces():
    chex.clear_trace_counter()
    layer = R.GRU(U, rngs=nnx.Rngs(0), input_shape=(None, D))
    graphdef, state = nnx.split(layer)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(state, x):
        return nnx.merge(graphdef, state)(x)

    for i in range(3):
        f(state, _x(i))
    with pytest.raises(AssertionError):
        f(state, _x(0, (B, T + 1, D)))


def test_nnx_jit_traces_once_per_shape():
    model = R.Sequential([R.SimpleRNN(U, return_sequences=True, rngs=nnx.Rngs(0)),
                          R.Dense(2, rngs=nnx.Rngs(1))], input_shape=(None, D))
    traces = []

    @nnx.jit
    def f(model, x):
        traces.append(x.shape)
        return model(x)

    y = f(model, _x(0))
    np.testing.assert_allclose(y, model(_x(0)), atol=ATOL)
    f(model, _x(1))
    f(model, _x(2))
    assert len(traces) == 1
    f(model, _x(3, (B, T + 1, D)))
    assert len(traces) == 2
    f(model, _x(4, (B, T + 1, D)))
    assert len(traces) == 2


def test_unbuilt_layer_under_jit_raises():
    layer = R.SimpleRNN(U, rngs=nnx.Rngs(0))
    with pytest.raises(RuntimeError, match="not built"):
        nnx.jit(lambda m, x: m(x))(layer, _x(0))


# -- the input projection is hoisted out of the scan --------------------------------------


def _sub_jaxprs(eqn):
    for v in eqn.params.values():
        vs = v if isinstance(v, (tuple, list)) else (v,)
        for item in vs:
            if hasattr(item, "eqns"):
                yield item
            elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
                yield item.jaxpr


def _eqns(jaxpr, into_scan):
    """All equations, recursing into sub-jaxprs (into scan bodies only if asked)."""
    for eqn in jaxpr.eqns:
        yield eqn
        if eqn.primitive.name == "scan" and not into_scan:
            continue
        for sub in _sub_jaxprs(eqn):
            yield from _eqns(sub, into_scan)


def _scan_bodies(jaxpr):
    return [eqn.params["jaxpr"].jaxpr for eqn in _eqns(jaxpr, into_scan=False)
            if eqn.primitive.name == "scan"]


@pytest.mark.parametrize("make,call,expected", [
    (lambda: R.LSTM(U, rngs=nnx.Rngs(0)), {}, True),
    (lambda: R.LSTM(U, return_sequences=True, go_backwards=True, rngs=nnx.Rngs(0)), {}, True),
    (lambda: R.Bidirectional(R.LSTM(U, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1)), {}, True),
    (lambda: R.LSTM(U, rngs=nnx.Rngs(0)), {"mask": np.arange(T) < np.array([[T], [2], [4]])},
     False),
    (lambda: R.LSTM(U, dropout=0.3, rngs=nnx.Rngs(0)),
     {"training": True, "key": jax.random.key(0)}, False),
    (lambda: R.LSTM(U, dropout=0.3, rngs=nnx.Rngs(0)), {}, True),  # dropout off at inference
    (lambda: R.LSTM(U, activation="relu", rngs=nnx.Rngs(0)), {}, False),
    (lambda: R.LSTM(U, recurrent_activation="hard_sigmoid", rngs=nnx.Rngs(0)), {}, False),
    (lambda: R.GRU(U, rngs=nnx.Rngs(0)), {}, False),
    (lambda: R.RNN(R.StackedRNNCells([R.LSTMCell(U, rngs=nnx.Rngs(0)),
                                      R.LSTMCell(U, rngs=nnx.Rngs(1))])), {}, False),
], ids=["lstm", "sequences_backwards", "bidirectional", "mask", "dropout_training",
        "dropout_inference", "relu", "hard_sigmoid", "gru", "stacked_cells"])
def test_lstm_vjp_taken_where_it_applies(make, call, expected):
    """On CPU an unmasked LSTM without active dropout, with Keras' default
    activations, runs through `lstm_scan` (a `custom_vjp` around the scan, so
    its hand-written backward pass is the one differentiated); masks,
    dropout, other activations and other cells take JAX's transpose of the
    scan, and so does `lstm_vjp=False` (`test_keras_parity` checks the
    gradients against Keras')."""
    layer = make()
    x = _x()
    layer(x)  # builds

    def uses_lstm_vjp(jaxpr):
        return any(e.primitive.name == "custom_vjp_call" for e in _eqns(jaxpr, into_scan=True))

    graphdef, state = nnx.split(layer)
    forward = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x, **call))(state, x)
    assert uses_lstm_vjp(forward.jaxpr) == (expected and jax.default_backend() == "cpu")
    if expected:
        cell = getattr(layer, "cell", None) or layer.forward_layer.cell
        off = jax.make_jaxpr(lambda p: R.scan.scan_cell(
            cell, p, x, cell.get_initial_state(B), lstm_vjp=False)[1])(cell.params())
        assert not uses_lstm_vjp(off.jaxpr)


@pytest.mark.parametrize("make,call,expected", [
    (lambda: R.SimpleRNN(U, rngs=nnx.Rngs(0)), {}, True),
    (lambda: R.SimpleRNN(U, activation="relu", return_sequences=True, go_backwards=True,
                         rngs=nnx.Rngs(0)), {}, True),
    (lambda: R.SimpleRNN(U, activation=None, rngs=nnx.Rngs(0)), {}, True),
    (lambda: R.Bidirectional(R.SimpleRNN(U, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1)), {}, True),
    (lambda: R.SimpleRNN(1, rngs=nnx.Rngs(0)), {}, False),  # one unit: JAX's transpose
    (lambda: R.SimpleRNN(U, activation="sigmoid", rngs=nnx.Rngs(0)), {}, False),
    (lambda: R.SimpleRNN(U, rngs=nnx.Rngs(0)),
     {"mask": np.arange(T) < np.array([[T], [2], [4]])}, False),
    (lambda: R.SimpleRNN(U, recurrent_dropout=0.3, rngs=nnx.Rngs(0)),
     {"training": True, "key": jax.random.key(0)}, False),
], ids=["tanh", "relu_sequences_backwards", "linear", "bidirectional", "one_unit", "sigmoid",
        "mask", "dropout_training"])
def test_simple_rnn_vjp_taken_where_it_applies(make, call, expected):
    """On CPU an unmasked SimpleRNN of more than one unit without active
    dropout, with a `tanh`, linear or `relu` activation, runs through
    `simple_rnn_scan` (a `custom_vjp`); the rest, and `lstm_vjp=False`, take
    JAX's transpose of the scan (`test_keras_parity` checks the gradients)."""
    layer = make()
    x = _x()
    layer(x)  # builds

    def uses_vjp(jaxpr):
        return any(e.primitive.name == "custom_vjp_call" for e in _eqns(jaxpr, into_scan=True))

    graphdef, state = nnx.split(layer)
    forward = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x, **call))(state, x)
    assert uses_vjp(forward.jaxpr) == (expected and jax.default_backend() == "cpu")
    if expected:
        cell = getattr(layer, "cell", None) or layer.forward_layer.cell
        off = jax.make_jaxpr(lambda p: R.scan.scan_cell(
            cell, p, x, cell.get_initial_state(B), lstm_vjp=False)[1])(cell.params())
        assert not uses_vjp(off.jaxpr)


def test_jax_lstm_gradients_allows_forward_mode_through_simple_rnn():
    layer = R.SimpleRNN(U, input_shape=(T, D), rngs=nnx.Rngs(0))
    x = _x()
    f = jax.jit(lambda x: layer(x))
    if jax.default_backend() == "cpu":
        with pytest.raises(TypeError, match="custom_vjp"):
            jax.jacfwd(f)(x)
    with R.jax_lstm_gradients():
        forward = jax.jacfwd(f)(x)
    np.testing.assert_allclose(forward, jax.jacrev(f)(x), atol=1e-6)


def test_jax_lstm_gradients_allows_forward_mode():
    """`lstm_scan` is a `custom_vjp`: on CPU forward-mode autodiff through an
    LSTM is refused unless `jax_lstm_gradients()` is on; with it, `jacfwd`
    (JAX's transpose) equals `jacrev` taken through the hand-written pass,
    and the switch is part of the jit cache key (on, then off again)."""
    layer = R.LSTM(U, input_shape=(T, D), rngs=nnx.Rngs(0))
    x = _x()
    f = jax.jit(lambda x: layer(x))
    on_cpu = jax.default_backend() == "cpu"
    if on_cpu:
        with pytest.raises(TypeError, match="custom_vjp"):
            jax.jacfwd(f)(x)
    with R.jax_lstm_gradients():
        forward = jax.jacfwd(f)(x)
    reverse = jax.jacrev(f)(x)
    np.testing.assert_allclose(forward, reverse, atol=1e-6)
    if on_cpu:
        with pytest.raises(TypeError, match="custom_vjp"):
            jax.jacfwd(f)(x)
    R.jax_lstm_gradients()
    try:
        np.testing.assert_allclose(jax.jacfwd(f)(x), reverse, atol=1e-6)
    finally:
        R.jax_lstm_gradients(False)


@pytest.mark.parametrize("name,make,gates", [
    ("simple_rnn", lambda: R.SimpleRNN(U, rngs=nnx.Rngs(0), input_shape=(None, D)), 1),
    ("gru", lambda: R.GRU(U, rngs=nnx.Rngs(0), input_shape=(None, D)), 3),
    ("lstm", lambda: R.LSTM(U, rngs=nnx.Rngs(0), input_shape=(None, D)), 4),
    ("lstm_input_dropout", lambda: R.LSTM(U, dropout=0.3, rngs=nnx.Rngs(0),
                                          input_shape=(None, D)), 4),
], ids=["simple_rnn", "gru", "lstm", "lstm_input_dropout"])
@pytest.mark.parametrize("in_loop", [False, True], ids=["before_loop", "in_loop"])
def test_input_projection_placement(name, make, gates, in_loop):
    """`project_in_loop=False`: one `(B, T, D) x (D, G*U)` matmul before the scan
    and only the recurrent matmul inside; True: both matmuls per step, none
    outside. Both give the same outputs (the default is True on CPU)."""
    layer = make()
    cell = layer.cell
    training = "dropout" in name
    masks = cell.dropout_masks(jax.random.key(0), B, training)

    def f(params, x):
        return R.scan_cell(cell, params, x, cell.get_initial_state(B), masks,
                           project_in_loop=in_loop)[1]

    jaxpr = jax.make_jaxpr(f)(cell.params(), _x(0)).jaxpr
    bodies = _scan_bodies(jaxpr)
    assert len(bodies) == 1, "expected exactly one scan"
    outside = [e for e in _eqns(jaxpr, into_scan=False) if e.primitive.name == "dot_general"]
    inside = [e for e in _eqns(bodies[0], into_scan=True) if e.primitive.name == "dot_general"]
    assert not any(len(e.invars[0].aval.shape) == 3 for e in inside)
    recurrent = [e for e in inside if tuple(e.invars[1].aval.shape) == (U, gates * U)]
    assert len(recurrent) == 1, f"{len(recurrent)} recurrent matmuls per step"
    if in_loop:
        assert not outside, [tuple(e.outvars[0].aval.shape) for e in outside]
        kernel = [e for e in inside if tuple(e.invars[1].aval.shape) == (D, gates * U)]
        assert len(kernel) == 1 and len(inside) == 2
    else:
        # the kernel matmul over all time steps: (B, T, D) x (D, G*U) -> (B, T, G*U)
        # (time-major, (T, B, ...), in `lstm_scan`, which the LSTM takes on CPU)
        hoisted = [e for e in outside
                   if (tuple(e.outvars[0].aval.shape), tuple(e.invars[0].aval.shape))
                   in {((B, T, gates * U), (B, T, D)), ((T, B, gates * U), (T, B, D))}]
        assert len(hoisted) == 1, [tuple(e.outvars[0].aval.shape) for e in outside]
        assert len(inside) == 1, f"{len(inside)} matmuls per step"
    other = jax.jit(lambda p, x: R.scan_cell(cell, p, x, cell.get_initial_state(B), masks,
                                             project_in_loop=not in_loop)[1])
    np.testing.assert_allclose(np.asarray(jax.jit(f)(cell.params(), _x(0))),
                               np.asarray(other(cell.params(), _x(0))), rtol=1e-5, atol=1e-6)


# -- gradients ------------------------------------------------------------------------------


GRAD_MODELS = {
    "simple_rnn": (lambda: R.SimpleRNN(U, return_sequences=True, rngs=nnx.Rngs(0)), _x(5)),
    "gru_reset_after": (lambda: R.GRU(U, rngs=nnx.Rngs(0)), _x(5)),
    "lstm": (lambda: R.LSTM(U, return_sequences=True, rngs=nnx.Rngs(0)), _x(5)),
    "stacked": (lambda: R.RNN([R.LSTMCell(U, rngs=nnx.Rngs(0)),
                               R.GRUCell(2, rngs=nnx.Rngs(1))]), _x(5)),
    "bidirectional": (lambda: R.Bidirectional(R.GRU(U, return_sequences=True,
                                                    rngs=nnx.Rngs(0)), merge_mode="sum"), _x(5)),
    "sequential": (lambda: R.Sequential([
        R.Embedding(10, D, mask_zero=True, rngs=nnx.Rngs(0)),
        R.LSTM(U, rngs=nnx.Rngs(1)),
        R.Dense(1, rngs=nnx.Rngs(2)),
        R.Activation("sigmoid"),
    ]), IDS),
}


@pytest.mark.parametrize("name", list(GRAD_MODELS))
def test_gradients_flow_to_every_weight(name):
    make, x = GRAD_MODELS[name]
    model = make()
    model(x)
    graphdef, state = nnx.split(model)
    target = np.random.default_rng(1).standard_normal(model(x).shape).astype("float32")

    def loss(state):
        y = nnx.merge(graphdef, state)(x)
        return jnp.mean((y - target) ** 2)

    grads = jax.jit(jax.grad(loss))(state)
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    n_weights = len(jax.tree.leaves(state))
    assert len(leaves) == n_weights > 0
    for path, g in leaves:
        g = np.asarray(g)
        label = jax.tree_util.keystr(path)
        assert np.all(np.isfinite(g)), label
        assert np.any(g != 0), f"zero gradient for {label}"



def test_bidirectional_clones_custom_activation_with_fresh_weights():
    """The backward copy keeps a custom callable activation and gets new weights."""
    import jax.numpy as jnp
    from flax import nnx

    import rnn_jax

    x = np.random.default_rng(3).standard_normal((2, 4, 3)).astype(np.float32)
    custom = rnn_jax.Bidirectional(
        rnn_jax.GRU(3, activation=lambda v: jnp.tanh(v), return_sequences=True, rngs=nnx.Rngs(0)))
    named = rnn_jax.Bidirectional(
        rnn_jax.GRU(3, activation="tanh", return_sequences=True, rngs=nnx.Rngs(1)))
    custom(x)
    named(x)
    fwd, bwd = custom.forward_layer.get_weights(), custom.backward_layer.get_weights()
    assert not np.allclose(fwd[0], bwd[0])
    named.set_weights(custom.get_weights())
    np.testing.assert_allclose(np.asarray(custom(x)), np.asarray(named(x)), atol=1e-6, rtol=0)
