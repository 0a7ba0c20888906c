"""Notebooks 001, 003, 004: the shapes N, T, D, M, K and every layer redone by hand.

- prints the summary of `SimpleRNN(M) + Dense(K)` on `(T, D)` and of `GRU(M)`
  (`reset_after` True and False) and `LSTM(M)`, and checks each recurrent
  parameter count against its formula: SimpleRNN `M(M+D)+M`, GRU
  `3(M(M+D)+2M)` (`reset_after=True`, two biases) or `3(M(M+D)+M)`, LSTM
  `4(M(M+D)+M)`;
- redoes the `SimpleRNN + Dense` forward pass with a numpy loop over time
  (`h_t = tanh(x_t W + h_{t-1} U + b)`, `y = h_T W_o + b_o`) for N = 1 and
  N > 1 and compares it with the jit-compiled model;
- one `SimpleRNNCell` step with explicit states (`h_1 = tanh(x_0 W + h_0 U + b)`,
  `h_0 = 1`), `RNN(StackedRNNCells([SimpleRNNCell(M), SimpleRNNCell(K)]))`
  (two loops stacked) and `SimpleRNN(M, return_sequences=True)` (every step;
  its last step is the `return_sequences=False` output), each against numpy.

Every check prints its max |difference|; the run fails if one exceeds 1e-5
or a parameter count is off. With --workdir, results.json holds them all.
`evaluate(config, workdir)` is the same in-process (`common.parse_config`).

    python -m experiments.shapes --flagfile=experiments/flags/shapes.flags
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import app, flags, logging
from flax import nnx

import rnn_jax
from experiments import common
from rnn_jax import readout
from rnn_jax import workdir as workdir_lib

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS):
    """The shapes' flags, and the common ones (`--workdir`, `--seed`, ...), in `flag_values`."""
    fv = dict(flag_values=flag_values)
    common.define_run_flags(flag_values)
    flags.DEFINE_integer("N", 4, "number of samples (batch)", lower_bound=1, **fv)
    flags.DEFINE_integer("T", 10, "sequence length", lower_bound=1, **fv)
    flags.DEFINE_integer("D", 3, "input features", lower_bound=1, **fv)
    flags.DEFINE_integer("M", 5, "hidden units", lower_bound=1, **fv)
    flags.DEFINE_integer("K", 2, "output units", lower_bound=1, **fv)


define_flags(FLAGS)

TOLERANCE = 1e-5


def states_by_hand(x_NxTxD, W, U, b, h0_NxM=None):
    """All states `h_1..h_T` `(N, T, M)` of `h_t = tanh(x_t W + h_{t-1} U + b)`, numpy."""
    n, steps, _ = x_NxTxD.shape
    h_NxM = np.zeros((n, U.shape[0]), x_NxTxD.dtype) if h0_NxM is None else h0_NxM
    hs = []
    for t in range(steps):
        h_NxM = np.tanh(x_NxTxD[:, t] @ W + h_NxM @ U + b)
        hs.append(h_NxM)
    return np.stack(hs, axis=1)


def forward_by_hand(x_NxTxD, W, U, b, Wo, bo):
    """The SimpleRNN + Dense forward pass as a numpy loop over time: `h_T W_o + b_o`."""
    return states_by_hand(x_NxTxD, W, U, b)[:, -1] @ Wo + bo


def expected_params(kind, m, d, reset_after=True):
    """The recurrent layer's parameter count from its formula."""
    if kind == "SimpleRNN":
        return m * (m + d) + m
    if kind == "GRU":
        return 3 * (m * (m + d) + (2 * m if reset_after else m))
    if kind == "LSTM":
        return 4 * (m * (m + d) + m)
    raise ValueError(kind)


def check_summaries(m, d, t, k, model, seed=0):
    """Prints the summaries; returns the parameter counts; exits on a mismatch."""
    counts = {}

    def abstract(layer_fn):
        # Counting needs only the weight shapes: nnx.eval_shape builds the
        # model without drawing (or compiling the draw of) any weight.
        return nnx.eval_shape(lambda: rnn_jax.Sequential(
            [layer_fn(rngs=nnx.Rngs(seed))], input_shape=(t, d)))

    models = [("SimpleRNN", True, model),
              ("GRU", True, abstract(lambda rngs: rnn_jax.GRU(m, rngs=rngs))),
              ("GRU", False, abstract(lambda rngs: rnn_jax.GRU(m, reset_after=False, rngs=rngs))),
              ("LSTM", True, abstract(lambda rngs: rnn_jax.LSTM(m, rngs=rngs)))]
    for kind, reset_after, mdl in models:
        label = kind + ("" if kind != "GRU" else f" (reset_after={reset_after})")
        print(f"\n{label}:")
        print(readout.summary(mdl, input_shape=(t, d)))
        rows = readout.summary_rows(mdl, input_shape=(t, d))
        got, want = rows[0]["params"], expected_params(kind, m, d, reset_after)
        formula = {"SimpleRNN": "M(M+D)+M", "LSTM": "4(M(M+D)+M)"}.get(
            kind, "3(M(M+D)+2M)" if reset_after else "3(M(M+D)+M)")
        print(f"  {label} parameters: {formula} = {want}; counted {got}")
        if got != want:
            raise SystemExit(
                f"{label}: counted {got} parameters, the formula {formula} gives {want}")
        key = kind if kind != "GRU" else f"GRU_reset_after_{reset_after}"
        counts[key] = got
    dense = readout.summary_rows(model, input_shape=(t, d))[1]["params"]
    if dense != m * k + k:
        raise SystemExit(f"Dense: counted {dense} parameters, the formula MK+K gives {m * k + k}")
    counts["Dense"] = dense
    return counts


def evaluate(config: common.Config, workdir: str | None) -> dict:
    """Every check of the module's docstring with the shapes `config` gives,
    printed; returns the results (and writes them to `workdir`/results.json
    when given). Raises SystemExit naming the check when one fails."""
    n, t, d, m, k = config.N, config.T, config.D, config.M, config.K
    rngs = nnx.Rngs(config.seed)
    model = rnn_jax.Sequential(
        [rnn_jax.SimpleRNN(m, rngs=rngs), rnn_jax.Dense(k, rngs=rngs)], input_shape=(t, d))
    data = np.random.default_rng(config.seed)
    x_NxTxD = data.standard_normal((n, t, d)).astype(np.float32)

    print(f"N={n} samples, T={t} steps, D={d} features, M={m} hidden units, K={k} outputs")
    W, U, b = model.layers[0].get_weights()
    Wo, bo = model.layers[1].get_weights()
    for name, w in (("W (kernel)", W), ("U (recurrent_kernel)", U), ("b (bias)", b),
                    ("W_o (dense kernel)", Wo), ("b_o (dense bias)", bo)):
        print(f"  {name:22s} shape {w.shape}")
    print(f"  parameters: SimpleRNN M(M+D)+M = {m * (m + d) + m}, "
          f"Dense MK+K = {m * k + k}; counted {model.count_params()}")
    counts = check_summaries(m, d, t, k, model, config.seed)

    graphdef, state = nnx.split(model)
    predict = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    t0 = time.perf_counter()
    y_model = np.asarray(jax.block_until_ready(predict(state, x_NxTxD)))
    compile_s = time.perf_counter() - t0  # first call: trace + compile + run

    results = {"N": n, "T": t, "D": d, "M": m, "K": k, "compile_seconds": compile_s,
               "params": counts, "checks": {}}

    def check(key, what, got, want):
        err = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))
        print(f"{what}: max |difference| = {err:.2e}")
        results["checks"][key] = err
        if not err <= TOLERANCE:  # also fails on NaN
            raise SystemExit(f"{what}: the hand computation differs from rnn_jax by {err}")

    print()
    for label, x in (("N = 1", x_NxTxD[:1]), (f"N = {n}", x_NxTxD)):
        y_hand = forward_by_hand(x, W, U, b, Wo, bo)
        y_jax = np.asarray(predict(state, x))
        key = f"max_abs_diff_{label.replace(' ', '').replace('=', '')}"
        check(key, f"forward pass {label}: model output {y_jax.shape}, by hand {y_hand.shape}",
              y_jax, y_hand)
        results[key] = results["checks"][key]

    # One SimpleRNNCell step with explicit states (notebook 003: h_0 = 1).
    cell = rnn_jax.SimpleRNNCell(m, rngs=rngs, input_shape=(d,))
    Wc, Uc, bc = cell.get_weights()
    h0_NxM = np.ones((n, m), np.float32)
    out, (h1,) = cell(x_NxTxD[:, 0], (h0_NxM,))
    h1_hand = np.tanh(x_NxTxD[:, 0] @ Wc + h0_NxM @ Uc + bc)
    check("cell_step", f"SimpleRNNCell step, h_1 = tanh(x_0 W + h_0 U + b) {h1_hand.shape}",
          np.stack([out, h1]), np.stack([h1_hand, h1_hand]))

    # RNN(StackedRNNCells): cell 2 reads cell 1's state at the same step.
    stacked = rnn_jax.RNN(rnn_jax.StackedRNNCells(
        [rnn_jax.SimpleRNNCell(m, rngs=rngs), rnn_jax.SimpleRNNCell(k, rngs=rngs)]))
    y_stacked = np.asarray(stacked(x_NxTxD))
    W1, U1, b1, W2, U2, b2 = stacked.get_weights()
    y_stacked_hand = states_by_hand(states_by_hand(x_NxTxD, W1, U1, b1), W2, U2, b2)[:, -1]
    check("stacked_cells", f"RNN(StackedRNNCells([SimpleRNNCell({m}), SimpleRNNCell({k})])) "
          f"output {y_stacked.shape}", y_stacked, y_stacked_hand)

    # return_sequences=True with the model's weights: every state h_1..h_T.
    seq = rnn_jax.SimpleRNN(m, return_sequences=True, rngs=rngs, input_shape=(t, d))
    seq.set_weights([W, U, b])
    y_seq = np.asarray(seq(x_NxTxD))
    check("return_sequences", f"SimpleRNN(return_sequences=True) output {y_seq.shape}",
          y_seq, states_by_hand(x_NxTxD, W, U, b))
    check("last_step", "its last step vs return_sequences=False",
          y_seq[:, -1], model.layers[0](x_NxTxD))

    print(f"first prediction: {np.round(y_model[0], 6)}   (compile {compile_s:.2f} s)")
    if workdir:
        path = workdir_lib.write_json(os.path.join(workdir, "results.json"), results)
        logging.info("wrote %s", path)
    return results


def main(argv):
    config = common.config_from_flags(FLAGS, argv)
    common.setup(config)
    evaluate(config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
