"""`rnn_jax.readout` and `rnn_jax.plots` against independent references.

- `summary` / `summary_rows`: the rows of Keras' own `model.summary()` (names,
  types, output shapes, parameter counts) for the same architecture;
- `trace_states`: a numpy loop over samples and steps that records every gate,
  written from the cell equations (the step functions of `tests/reference.py`
  give the new states; the gates here must reproduce them);
- `input_weights_per_token`: numpy `W_embd @ W + b` / `W + b` and the linear
  network's own response to one token;
- the plots: real PNG files, written without leftovers.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

import rnn_jax as R
from rnn_jax import plots, readout
from rnn_jax.base import snake_case
from conftest import ROOT

try:  # tests/reference.py: tests/ is on sys.path under pytest's default import mode
    import reference as ref
except ImportError:  # tests/ as a package
    from tests import reference as ref

# Weights are set from numpy; constant initial draws avoid compiling random draws.
FAST = {"kernel_initializer": "zeros", "recurrent_initializer": "zeros"}
ATOL = 1e-5
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- summary against Keras ------------------------------------------------------------


def keras_summary_rows(km, monkeypatch):
    """(name, type, output shape string, params) per row of Keras' summary, and the total."""
    lines = []
    monkeypatch.setenv("COLUMNS", "200")  # wide enough that no name wraps
    km.summary(line_length=160, print_fn=lambda s, line_break=False: lines.append(s))
    text = "\n".join(lines)
    rows = re.findall(r"│ (\S+) \((\w+)\)\s*│ (\(.*?\))\s*│\s*([\d,]+) │", text)
    total = int(re.search(r"Total params: ([\d,]+)", text).group(1).replace(",", ""))
    return [(n, t, s, int(p.replace(",", ""))) for n, t, s, p in rows], total


# architecture -> (input shape without the batch axis, Keras layers)
KERAS_MODELS = {
    "simple_rnn_dense": lambda L: ((10, 3), [L.SimpleRNN(5), L.Dense(2)]),
    "gru_reset_after": lambda L: ((6, 3), [L.GRU(4, reset_after=True)]),
    "gru_reset_before": lambda L: ((6, 3), [L.GRU(4, reset_after=False, return_sequences=True),
                                            L.Dense(3)]),
    "lstm_stacked_layers": lambda L: ((6, 2), [L.LSTM(3, return_sequences=True), L.LSTM(2)]),
    "stacked_cells": lambda L: ((5, 3), [L.RNN([L.SimpleRNNCell(3), L.GRUCell(2),
                                                L.LSTMCell(4)], return_sequences=True)]),
    "bidirectional": lambda L: ((5, 3), [L.Bidirectional(L.LSTM(3, return_sequences=True)),
                                         L.Bidirectional(L.GRU(2), merge_mode="sum")]),
    "embedding_dense": lambda L: ((7,), [L.Embedding(12, 4), L.SimpleRNN(3), L.Dense(1),
                                         L.Activation("sigmoid")]),
}


@pytest.mark.parametrize("arch", list(KERAS_MODELS))
def test_summary_matches_keras(keras, monkeypatch, arch):
    input_shape, layers = KERAS_MODELS[arch](keras.layers)
    km = keras.Sequential([keras.Input(input_shape)] + layers)
    model = R.from_keras(km)
    expected, total = keras_summary_rows(km, monkeypatch)
    assert len(expected) == len(km.layers)

    rows = readout.summary_rows(model, input_shape=input_shape)
    got = [(r["name"], r["type"], str(r["output_shape"]), r["params"]) for r in rows]
    assert got == expected
    assert [r["params"] for r in rows] == [kl.count_params() for kl in km.layers]
    assert [r["output_shape"] for r in rows] == [tuple(kl.output.shape) for kl in km.layers]

    text = readout.summary(model, input_shape=input_shape)
    assert re.search(r"Layer \(type\)\s{2,}Output Shape\s{2,}Param #", text)
    for name, kind, shape, params in expected:
        assert re.search(rf"^{name} \({kind}\)\s{{2,}}{re.escape(shape)}\s{{2,}}{params}$",
                         text, re.M), (name, text)
    assert f"\nTotal params: {total}\n" in text
    assert f"\nTrainable params: {total}\n" in text
    assert text.endswith("\nNon-trainable params: 0")


def test_summary_default_names_follow_keras(keras):
    # Keras names an unnamed layer by its snake_case class name (then _1, _2, ...).
    for keras_layer, ours in [(keras.layers.SimpleRNN(2), R.SimpleRNN),
                              (keras.layers.GRU(2), R.GRU), (keras.layers.LSTM(2), R.LSTM),
                              (keras.layers.Dense(2), R.Dense),
                              (keras.layers.Embedding(3, 2), R.Embedding),
                              (keras.layers.Bidirectional(keras.layers.LSTM(2)), R.Bidirectional),
                              (keras.layers.RNN(keras.layers.SimpleRNNCell(2)), R.RNN)]:
        assert snake_case(ours.__name__) == re.sub(r"_\d+$", "", keras_layer.name)
    R.utils.clear_session()  # names count from here, as after Keras' clear_session
    model = R.Sequential([R.SimpleRNN(3, return_sequences=True, rngs=nnx.Rngs(0), **FAST),
                          R.SimpleRNN(2, rngs=nnx.Rngs(1), **FAST),
                          R.Dense(1, rngs=nnx.Rngs(2), name="head")])
    rows = readout.summary_rows(model, input_shape=(4, 3))  # builds the model
    assert model.built
    assert [r["name"] for r in rows] == ["simple_rnn", "simple_rnn_1", "head"]
    # built: without input_shape the time axis is unknown
    assert [r["output_shape"] for r in readout.summary_rows(model)] == [
        (None, None, 3), (None, 2), (None, 1)]
    assert [r["params"] for r in rows] == [3 * (3 + 3) + 3, 2 * (2 + 3) + 2, 2 + 1]


def test_summary_single_layer_and_errors():
    layer = R.LSTM(3, rngs=nnx.Rngs(0), **FAST)
    with pytest.raises(ValueError, match="input_shape"):
        readout.summary(layer)
    rows = readout.summary_rows(layer, input_shape=(5, 2))
    assert rows == [{"name": "lstm", "type": "LSTM", "output_shape": (None, 3),
                     "params": 4 * (3 * (3 + 2) + 3)}]
    with pytest.raises(ValueError, match="Sequential or layer"):
        readout.summary_rows("not a model")


# -- trace_states against a numpy loop ------------------------------------------------


def np_gates(kind, x, h, c, weights, reset_after=True):
    """The gates of one step of one sample, numpy, from the Keras equations."""
    s, f = ref.sigmoid, ref.tanh
    if kind == "simple_rnn":
        return {}
    kernel, rk = weights[0], weights[1]
    u = h.shape[0]
    cols = [slice(g * u, (g + 1) * u) for g in range(4)]
    if kind == "gru":
        bias = weights[2]
        b_x, b_h = (bias[0], bias[1]) if reset_after else (bias, np.zeros_like(bias))
        pre_x = [x @ kernel[:, cols[g]] + b_x[cols[g]] for g in range(3)]
        z = s(pre_x[0] + h @ rk[:, cols[0]] + b_h[cols[0]])
        r = s(pre_x[1] + h @ rk[:, cols[1]] + b_h[cols[1]])
        if reset_after:
            h_tilde = f(pre_x[2] + r * (h @ rk[:, cols[2]] + b_h[cols[2]]))
        else:
            h_tilde = f(pre_x[2] + (r * h) @ rk[:, cols[2]])
        return {"z": z, "r": r, "h_tilde": h_tilde}
    pre = [x @ kernel[:, cols[g]] + h @ rk[:, cols[g]] + weights[2][cols[g]] for g in range(4)]
    i, fg, g, o = s(pre[0]), s(pre[1]), f(pre[2]), s(pre[3])
    return {"i": i, "f": fg, "g": g, "o": o, "c": fg * c + i * g}


def np_step(kind, x, state, weights, reset_after=True):
    """(new state list, gates) of one step, the state from tests/reference.py."""
    kernel, rk, bias = weights
    h = state[0]
    c = state[1] if kind == "lstm" else None
    gates = np_gates(kind, x, h, c, weights, reset_after)
    if kind == "simple_rnn":
        new = [ref.simple_rnn_step(x, h, kernel, rk, bias, ref.tanh)]
    elif kind == "gru":
        new = [ref.gru_step(x, h, kernel, rk, bias, ref.tanh, ref.sigmoid, reset_after)]
        # the gates reproduce the reference's new state
        np.testing.assert_allclose(gates["z"] * h + (1 - gates["z"]) * gates["h_tilde"], new[0],
                                   atol=1e-12)
    else:
        new = list(ref.lstm_step(x, h, c, kernel, rk, bias, ref.tanh, ref.sigmoid))
        np.testing.assert_allclose(gates["c"], new[1], atol=1e-12)
        np.testing.assert_allclose(gates["o"] * np.tanh(gates["c"]), new[0], atol=1e-12)
    return new, gates


def np_trace(cells, x, mask=None, go_backwards=False, zero_output_for_mask=False,
             initial_state=None):
    """Per cell `(outputs, states, gates)` `(B, T, U)` in input order, numpy float64.

    cells: `[(kind, weights, reset_after)]`, stacked (cell k reads cell k-1's
    output at the same step). Masked steps keep every cell's state; the
    outputs repeat the previous one (or are zero).
    """
    x = np.asarray(x, np.float64)
    batch, steps, _ = x.shape
    n_states = [2 if kind == "lstm" else 1 for kind, _, _ in cells]
    units = [np.asarray(w[1]).shape[0] for _, w, _ in cells]
    out = [np.zeros((batch, steps, u)) for u in units]
    states = [{"h": np.zeros((batch, steps, u)), **({"c": np.zeros((batch, steps, u))}
                                                   if n == 2 else {})}
              for u, n in zip(units, n_states)]
    gates = [{} for _ in cells]
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    for b in range(batch):
        if initial_state is None:
            st = [[np.zeros(u) for _ in range(n)] for u, n in zip(units, n_states)]
        else:
            st = [[np.asarray(s, np.float64)[b] for s in cell_st] for cell_st in initial_state]
        prev = [np.zeros(u) for u in units]
        for t in order:
            inp = x[b, t]
            new_all, keep = [], mask is None or bool(mask[b, t])
            for k, (kind, weights, reset_after) in enumerate(cells):
                w = [np.asarray(a, np.float64) for a in weights]
                new, g = np_step(kind, inp, st[k], w, reset_after)
                new_all.append(new)
                inp = new[0]
                for name, v in g.items():
                    gates[k].setdefault(name, np.zeros((batch, steps, units[k])))[b, t] = v
            for k in range(len(cells)):
                if keep:
                    st[k] = new_all[k]
                    o = st[k][0]
                else:
                    o = np.zeros(units[k]) if zero_output_for_mask else prev[k]
                prev[k] = o
                out[k][b, t] = o
                states[k]["h"][b, t] = st[k][0]
                if n_states[k] == 2:
                    states[k]["c"][b, t] = st[k][1]
    return [(out[k], states[k], gates[k]) for k in range(len(cells))]


def check_trace(trace, expected, name, layer_index, cell_index=0, direction="forward"):
    outputs, states, gates = expected
    assert (trace.name, trace.layer_index, trace.cell_index, trace.direction) == (
        name, layer_index, cell_index, direction)
    np.testing.assert_allclose(trace.outputs, outputs, rtol=0, atol=ATOL, err_msg="outputs")
    assert list(trace.states) == list(states)
    for k in states:
        np.testing.assert_allclose(trace.states[k], states[k], rtol=0, atol=ATOL, err_msg=k)
    assert sorted(trace.gates) == sorted(gates)
    for k in gates:
        np.testing.assert_allclose(trace.gates[k], gates[k], rtol=0, atol=ATOL, err_msg=k)


def holes(batch, steps):
    """Row 0 with holes, row 1 starting masked, the rest kept."""
    mask = np.ones((batch, steps), bool)
    mask[0, 1::3] = False
    mask[1, : steps // 2] = False
    return mask


def weights_for(rng, kind, d, u, reset_after=True):
    return ref.random_weights(kind, d, u, rng, reset_after=reset_after)


CASES = {
    # kind, layer kwargs, reset_after, mask?, go_backwards
    "simple_rnn": ("simple_rnn", {}, True, False, False),
    "gru_reset_after_mask": ("gru", {"reset_after": True}, True, True, False),
    "gru_reset_before_backwards": ("gru", {"reset_after": False}, False, False, True),
    "lstm_mask_backwards": ("lstm", {}, True, True, True),
}
LAYERS = {"simple_rnn": R.SimpleRNN, "gru": R.GRU, "lstm": R.LSTM}


@pytest.mark.parametrize("case", list(CASES))
def test_trace_single_layer(rng, case):
    kind, kw, reset_after, use_mask, backwards = CASES[case]
    batch, steps, d, u = 3, 6, 2, 3
    layer = LAYERS[kind](u, go_backwards=backwards, rngs=nnx.Rngs(0), input_shape=(steps, d),
                         **kw, **FAST)
    weights = weights_for(rng, kind, d, u, reset_after)
    layer.set_weights(weights)
    head = R.Dense(1, kernel_initializer="zeros", rngs=nnx.Rngs(1))
    model = R.Sequential([layer, head])
    x = rng.standard_normal((batch, steps, d)).astype(np.float32)
    mask = holes(batch, steps) if use_mask else None

    traces = readout.trace_states(model, x, mask=mask)
    assert len(traces) == 1
    direction = "backward" if backwards else "forward"
    expected = np_trace([(kind, weights, reset_after)], x, mask, go_backwards=backwards)[0]
    check_trace(traces[0], expected, layer.name, 0, direction=direction)
    if use_mask:
        np.testing.assert_array_equal(traces[0].mask, mask)
    # a single layer is traced the same way
    check_trace(readout.trace_states(layer, x, mask=mask)[0], expected, layer.name, 0,
                direction=direction)


def test_trace_stacked_cells_with_mask(rng):
    batch, steps, d = 3, 5, 2
    specs = [("simple_rnn", 3, True), ("lstm", 2, True), ("gru", 4, False)]
    classes = {"simple_rnn": R.SimpleRNNCell, "gru": R.GRUCell, "lstm": R.LSTMCell}
    cells, cell_specs, dim = [], [], d
    for kind, u, reset_after in specs:
        kw = {"reset_after": reset_after} if kind == "gru" else {}
        cell = classes[kind](u, rngs=nnx.Rngs(0), input_shape=(dim,), **kw, **FAST)
        w = weights_for(rng, kind, dim, u, reset_after)
        cell.set_weights(w)
        cells.append(cell)
        cell_specs.append((kind, w, reset_after))
        dim = u
    layer = R.RNN(cells, return_sequences=True, name="stack")
    x = rng.standard_normal((batch, steps, d)).astype(np.float32)
    mask = holes(batch, steps)
    traces = readout.trace_states(layer, x, mask=mask)
    expected = np_trace(cell_specs, x, mask)
    assert len(traces) == 3
    for k, (trace, exp) in enumerate(zip(traces, expected)):
        check_trace(trace, exp, "stack", 0, cell_index=k)


def test_trace_bidirectional_masking_then_lstm(rng):
    # Masking -> Bidirectional(GRU, return_sequences) -> LSTM: the mask made by
    # Masking reaches both recurrent layers; the Bidirectional's halves output
    # zeros at masked steps; the LSTM reads [forward | backward] in input order.
    batch, steps, d, u = 3, 6, 2, 2
    x = rng.standard_normal((batch, steps, d)).astype(np.float32)
    x[0, [1, 4]] = 0.0
    x[1, :3] = 0.0
    mask = np.any(x != 0.0, axis=-1)
    fwd = R.GRU(u, return_sequences=True, rngs=nnx.Rngs(0), input_shape=(steps, d), **FAST)
    bwd = R.GRU(u, return_sequences=True, go_backwards=True, rngs=nnx.Rngs(1),
                input_shape=(steps, d), **FAST)
    w_f, w_b = weights_for(rng, "gru", d, u), weights_for(rng, "gru", d, u)
    fwd.set_weights(w_f)
    bwd.set_weights(w_b)
    lstm = R.LSTM(3, rngs=nnx.Rngs(2), input_shape=(steps, 2 * u), **FAST)
    w_l = weights_for(rng, "lstm", 2 * u, 3)
    lstm.set_weights(w_l)
    R.utils.clear_session()
    model = R.Sequential([R.Masking(0.0), R.Bidirectional(fwd, backward_layer=bwd), lstm],
                         name="model")
    lstm.name = "lstm"  # made before clear_session

    traces = readout.trace_states(model, x)
    assert [(t.name, t.layer_index, t.direction) for t in traces] == [
        ("bidirectional", 1, "forward"), ("bidirectional", 1, "backward"), ("lstm", 2, "forward")]
    exp_f = np_trace([("gru", w_f, True)], x, mask, zero_output_for_mask=True)[0]
    exp_b = np_trace([("gru", w_b, True)], x, mask, go_backwards=True,
                     zero_output_for_mask=True)[0]
    check_trace(traces[0], exp_f, "bidirectional", 1, direction="forward")
    check_trace(traces[1], exp_b, "bidirectional", 1, direction="backward")
    lstm_in = np.concatenate([exp_f[0], exp_b[0]], axis=-1)
    exp_l = np_trace([("lstm", w_l, True)], lstm_in, mask)[0]
    check_trace(traces[2], exp_l, "lstm", 2)
    np.testing.assert_array_equal(traces[2].mask, mask)


def test_trace_embedding_mask_zero(rng):
    batch, steps, vocab = 3, 5, 9
    ids = rng.integers(1, vocab, (batch, steps))
    ids[0, 3:] = 0
    ids[2, [0, 2]] = 0
    emb = R.Embedding(vocab, 4, mask_zero=True, rngs=nnx.Rngs(0))
    rnn = R.SimpleRNN(3, return_sequences=True, rngs=nnx.Rngs(1), input_shape=(steps, 4), **FAST)
    gru = R.GRU(2, rngs=nnx.Rngs(2), input_shape=(steps, 3), **FAST)
    w_r, w_g = weights_for(rng, "simple_rnn", 4, 3), weights_for(rng, "gru", 3, 2)
    rnn.set_weights(w_r)
    gru.set_weights(w_g)
    model = R.Sequential([emb, rnn, gru])
    traces = readout.trace_states(model, ids)
    mask = ids != 0
    x = emb.get_weights()[0][ids]
    exp_r = np_trace([("simple_rnn", w_r, True)], x, mask)[0]
    check_trace(traces[0], exp_r, "simple_rnn", 1)
    check_trace(traces[1], np_trace([("gru", w_g, True)], exp_r[0], mask)[0], "gru", 2)


def test_trace_stateful_starts_from_kept_states(rng):
    batch, steps, d, u = 2, 4, 2, 3
    layer = R.LSTM(u, stateful=True, rngs=nnx.Rngs(0), **FAST)
    x = rng.standard_normal((batch, steps, d)).astype(np.float32)
    layer(x)  # builds and keeps the final states
    weights = weights_for(rng, "lstm", d, u)
    layer.set_weights(weights)
    h0, c0 = (rng.standard_normal((batch, u)).astype(np.float32) for _ in range(2))
    layer.states.set_value(R.LSTMState(h0, c0))
    trace = readout.trace_states(layer, x)[0]
    check_trace(trace, np_trace([("lstm", weights, True)], x, initial_state=[[h0, c0]])[0],
                "lstm", 0)
    kept = layer.states.get_value()
    np.testing.assert_array_equal(np.asarray(kept.h), h0)
    np.testing.assert_array_equal(np.asarray(kept.c), c0)


def test_trace_errors():
    with pytest.raises(ValueError, match="no recurrent layer"):
        readout.trace_states(R.Sequential([R.Dense(2, rngs=nnx.Rngs(0))]), np.ones((1, 2, 3)))
    layer = R.SimpleRNN(2, rngs=nnx.Rngs(0), **FAST)
    with pytest.raises(ValueError, match="batch, time, features"):
        readout.trace_states(layer, np.ones((2, 3)))


# -- effective input weights ------------------------------------------------------------


def test_input_weights_embedding_simple_rnn(rng):
    vocab, e, u = 10, 4, 2
    emb = R.Embedding(vocab, e, rngs=nnx.Rngs(0))
    rnn = R.SimpleRNN(u, activation="linear", rngs=nnx.Rngs(1), input_shape=(3, e), **FAST)
    rnn.set_weights(ref.random_weights("simple_rnn", e, u, rng))
    model = R.Sequential([emb, rnn, R.Activation("sigmoid")])
    got = readout.input_weights_per_token(model)
    E = emb.get_weights()[0].astype(np.float64)
    W, _, b = (w.astype(np.float64) for w in rnn.get_weights())
    assert got.shape == (vocab, u)
    np.testing.assert_allclose(got, E @ W + b, rtol=0, atol=1e-6)
    # what it means: a linear SimpleRNN's response to a one-token sequence
    tokens = np.arange(vocab)[:, None]
    np.testing.assert_allclose(got, np.asarray(R.Sequential([emb, rnn])(tokens)), atol=1e-6)
    # RNN(SimpleRNNCell) without a bias: b = 0
    cell = R.SimpleRNNCell(u, use_bias=False, rngs=nnx.Rngs(2), input_shape=(e,), **FAST)
    cell.set_weights([W[:, ::-1], np.eye(u)])
    np.testing.assert_allclose(
        readout.input_weights_per_token(R.Sequential([emb, R.RNN(cell)])), E @ W[:, ::-1],
        rtol=0, atol=1e-6)


def test_input_weights_one_hot(rng):
    vocab, u = 10, 3
    layer = R.SimpleRNN(u, activation="linear", rngs=nnx.Rngs(0), input_shape=(3, vocab), **FAST)
    weights = ref.random_weights("simple_rnn", vocab, u, rng)
    layer.set_weights(weights)
    expected = weights[0].astype(np.float64) + weights[2]
    for model in (layer, R.Sequential([layer, R.Dense(1, rngs=nnx.Rngs(1))])):
        np.testing.assert_allclose(readout.input_weights_per_token(model), expected, atol=1e-6)
    one_hot_steps = np.eye(vocab, dtype=np.float32)[:, None, :]  # each token alone: (V, 1, V)
    np.testing.assert_allclose(np.asarray(layer(one_hot_steps)), expected, atol=1e-6)


def test_input_weights_other_models_refused():
    emb = R.Embedding(5, 2, rngs=nnx.Rngs(0))
    gru = R.GRU(2, rngs=nnx.Rngs(1), input_shape=(3, 2), **FAST)
    stacked = R.RNN([R.SimpleRNNCell(2, rngs=nnx.Rngs(2), **FAST)] * 1)
    stacked.build((None, 3, 2))
    for model, match in [(R.Sequential([emb, gru]), "followed by a SimpleRNN"),
                         (R.Sequential([emb]), "followed by a SimpleRNN"),
                         (gru, "GRU"),
                         (stacked, "StackedRNNCells"),
                         (R.Sequential([R.Dense(2, rngs=nnx.Rngs(3))]), "Dense")]:
        with pytest.raises(ValueError, match=match):
            readout.input_weights_per_token(model)


# -- plots ----------------------------------------------------------------------------


def assert_png(path, folder):
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_SIGNATURE
    assert (folder / path.split("/")[-1]).stat().st_size > 1000
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]


def test_plots_write_png(tmp_path, rng):
    one = {"loss": np.linspace(1, 0.1, 8), "val_loss": np.linspace(1.2, 0.2, 8),
           "accuracy": np.linspace(0.5, 1, 8), "val_accuracy": np.linspace(0.4, 0.9, 8)}
    many = {"loss": rng.random((5, 8)) + 0.01, "val_loss": rng.random((5, 8)).tolist()}
    layer = R.LSTM(2, rngs=nnx.Rngs(0), input_shape=(4, 3), **FAST)
    layer.set_weights(ref.random_weights("lstm", 3, 2, rng))
    trace = readout.trace_states(layer, rng.standard_normal((2, 4, 3)), mask=holes(2, 4))[0]
    written = [
        plots.plot_history(one, str(tmp_path / "history.png"), title="one seed"),
        plots.plot_history(many, str(tmp_path / "history_seeds.png")),
        plots.plot_state_trace(trace, str(tmp_path / "trace.png"), sample=1,
                               xticklabels=[7, 4, 1, 0]),
        plots.plot_token_weights(rng.standard_normal(10), str(tmp_path / "tokens.png"),
                                 highlight=4, title="per digit"),
        plots.plot_token_weights(rng.standard_normal((6, 10)), str(tmp_path / "tokens_seeds.png"),
                                 labels=list("abcdefghij")),
        plots.plot_seed_scatter(rng.standard_normal(9), rng.standard_normal(9),
                                str(tmp_path / "scatter.png"), "W", "U",
                                color=10.0 ** -rng.integers(1, 8, 9), color_label="val_loss"),
        plots.plot_seed_scatter([1, 2], [3, 4], str(tmp_path / "scatter_plain.png"), "a", "b"),
        plots.plot_seed_scatter([1, 2, 3], [1e-12, 2, 20], str(tmp_path / "scatter_groups.png"),
                                "U", "val_loss", ylog_floor=1e-15,
                                groups=["readable", "not readable", "not readable"]),
        plots.plot_sweep([1e-2, 3e-4, 1e-3], [0.5, 0.2, 0.4], str(tmp_path / "sweep.png"),
                         "learning rate", "fraction", ylim=(0, 1)),
        plots.plot_sweep([0.8, 0.9], [0.7, 0.8], str(tmp_path / "sweep_err.png"), "beta_1",
                         "accuracy", yerr=[0.01, 0.02], xlog=False),
    ]
    assert sorted(p.split("/")[-1] for p in written) == sorted(p.name for p in tmp_path.iterdir())
    for path in written:
        assert_png(path, tmp_path)
    with pytest.raises(ValueError):
        plots.plot_state_trace(trace, str(tmp_path / "bad.png"), xticklabels=[1, 2])
    assert not (tmp_path / "bad.png").exists()
    with pytest.raises(ValueError, match="groups has 2 values for 3 points"):
        plots.plot_seed_scatter([1, 2, 3], [1, 2, 3], str(tmp_path / "bad.png"), "x", "y",
                                groups=["a", "b"])
    with pytest.raises(ValueError, match="give color or groups, not both"):
        plots.plot_seed_scatter([1, 2], [1, 2], str(tmp_path / "bad.png"), "x", "y",
                                color=[1, 2], groups=["a", "b"])
    with pytest.raises(ValueError, match="log x axis needs values > 0"):
        plots.plot_sweep([0.0, 1.0], [1, 2], str(tmp_path / "bad.png"), "x", "y")
    assert not (tmp_path / "bad.png").exists()


def test_import_does_not_load_matplotlib():
    code = ("import sys, rnn_jax, rnn_jax.plots, rnn_jax.readout; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
