"""Notebook 002: does a sequence of 3 digits contain a 4?

    python -m experiments.contains4 --flagfile=experiments/flags/contains4.flags
    python -m experiments.contains4 --flagfile=experiments/flags/contains4_sigmoid.flags

Model: `Embedding(10, E)` (`--embedding_dim` 10, 4 or 1), `SimpleRNN(1)` and
a sigmoid, trained with binary cross-entropy:

- `--rnn_activation=linear` (the notebook's first model): `SimpleRNN(1,
  'linear')` then `Activation('sigmoid')`; Adam(0.02), batch 8, 4 epochs;
- `--rnn_activation=sigmoid`: `SimpleRNN(1, 'sigmoid')` is the output;
  Adam(0.03).

What it learns: the per-digit effective input `e_d = W_embd[d] W + b` is
high for 4 and negative for every other digit, and `U` carries the "seen a
4" score from step to step. The report gives validation accuracy (the
notebook reaches 1.0), `e_d` and `U`, and traces the score over the steps.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

import rnn_jax
from experiments import common
from rnn_jax import readout

FLAGS = flags.FLAGS

NOTEBOOK = {  # the notebook's hyperparameters for each model
    "linear": dict(learning_rate=0.02, batch_size=8, epochs=4, validation_split=0.2),
    "sigmoid": dict(learning_rate=0.03, batch_size=8, epochs=4, validation_split=0.2),
}
DIGITS = np.arange(10)


def define_flags(flag_values: flags.FlagValues = FLAGS):
    """contains4's flags, and the common ones, in `flag_values`."""
    common.define_run_flags(flag_values)
    common.define_training_flags(flag_values)
    common.define_generated_data_flags(flag_values)
    # experiments.reuters defines --embedding_dim too (default 32); in absl's global
    # FLAGS, allow_override lets one process import both, the later import's winning
    # (`common.parse_config` gives each experiment flags of its own).
    flags.DEFINE_integer("embedding_dim", 10, "embedding size E", lower_bound=1,
                         allow_override=True, flag_values=flag_values)
    flags.DEFINE_enum("rnn_activation", "linear", ["linear", "sigmoid"],
                      "SimpleRNN activation (linear is followed by a sigmoid Activation)",
                      flag_values=flag_values)
    flags.DEFINE_integer("digit", 4, "the digit to detect", lower_bound=0, upper_bound=9,
                         flag_values=flag_values)


define_flags(FLAGS)


def make_model_fn(embedding_dim: int, rnn_activation: str):
    def make(rngs):
        layers = [rnn_jax.Embedding(10, embedding_dim, rngs=rngs),
                  rnn_jax.SimpleRNN(1, activation=rnn_activation, rngs=rngs)]
        if rnn_activation == "linear":
            layers.append(rnn_jax.Activation("sigmoid"))
        return rnn_jax.Sequential(layers, input_shape=(3,))
    return make


def latch_fixed_points(model, digit: int) -> dict:
    """The "seen a digit" latch read through its dynamics: the fixed point of
    the cell's map `h -> F(h, u_d)` with each digit `d` held (`u_d` its
    embedding row; `rnn_jax.dynamics`), its eigenvalue, and two report lines."""
    from rnn_jax import dynamics

    rows = np.asarray(model.layers[0].get_weights()[0])  # (10, E): the cell's input per digit
    fps = dynamics.find_fixed_points(model, rows, np.zeros((10, 1)), method="newton",
                                     max_iters=100, tol_q=1e-12, outlier_distance_scale=None)
    h, eig = np.full(10, np.nan), np.full(10, np.nan)
    for k, u in enumerate(fps.inputs):
        d = int(np.argmin(np.abs(rows - u).sum(axis=1)))
        h[d], eig[d] = fps.states[k, 0], fps.eigenvalues[k, 0].real
    others = np.delete(np.arange(10), digit)
    lo, hi = np.nanmin(h[others]), np.nanmax(h[others])
    lines = [f"  the latch's fixed points (the map with one digit held): holding {digit}, "
             f"h* = {h[digit]:+.3f}; holding any other digit, h* from {lo:+.3f} to {hi:+.3f}"]
    if np.all(eig > 1):
        lines.append(f"  eigenvalue dF/dh {np.nanmax(eig):.3f} > 1: each h* repels, a threshold: "
                     f"with other digits held, a state above {hi:+.2f} (after a {digit}) rises "
                     "and one below falls, so the score latches")
    elif np.all(np.abs(eig) < 1):
        lines.append(f"  eigenvalue dF/dh {np.nanmax(eig):.3f} < 1: each h* attracts: the score "
                     "drifts toward the held digit's h*, a leaky latch")
    else:
        lines.append(f"  eigenvalues dF/dh from {np.nanmin(eig):+.3f} to {np.nanmax(eig):+.3f}")
    return {"h": h.tolist(), "eigenvalues": eig.tolist(), "lines": lines}


def train_and_evaluate(config: common.Config, workdir: str | None) -> dict:
    """Train notebook 002's model as `config` says, writing the run into
    `workdir` (none: nothing written); returns the metrics (metrics.json's
    dict). Raises `common.RunError` when the run cannot go on."""
    act, digit, dim = config.rnn_activation, config.digit, config.embedding_dim
    hp = common.hyperparameters(config, NOTEBOOK[act])
    x, y, ids = rnn_jax.datasets.digits.contains_digit(config.num_samples, digit=digit,
                                                       seed=config.data_seed)
    run = common.Run(f"contains{digit} (E={dim}, {act})", config, workdir)
    if run.complete:
        return run.saved_metrics()
    result = run.fit(make_model_fn(dim, act), x, y, loss="binary_crossentropy",
                     metrics=["accuracy"], hp=hp)

    n = result.num_members
    lrs = common.learning_rates(hp)
    hist = result.history
    val_acc = np.atleast_1d(hist["val_accuracy"][..., -1] if "val_accuracy" in hist
                            else hist["accuracy"][..., -1])
    per_seed = []
    for i in range(n):
        m = result.model(i)
        per_seed.append((readout.input_weights_per_token(m)[:, 0],
                         float(m.layers[1].get_weights()[1][0, 0])))
    others = DIGITS != digit
    detects = np.array([e[digit] > 0 and bool(np.all(e[others] < 0)) for e, _ in per_seed])

    model0 = result.model(0)
    e0, U0 = per_seed[0]
    lines = [f"seed {config.seed}: validation accuracy {val_acc[0]:.4f}",
             "  digit   e_d = W_embd[d] . W + b"]
    for d in DIGITS:
        lines.append(f"  {d}{' <' if d == digit else '  '}    {e0[d]:9.3f}")
    lines.append(f"  U = {U0:.3f}")
    lines.append(f"  e_{digit} high and every other e_d negative: {'yes' if detects[0] else 'no'}")

    latch = latch_fixed_points(model0, digit)
    lines += latch["lines"]

    examples = np.array([[digit, 1, 7], [1, digit, 7], [1, 7, digit], [1, 7, 0]], np.int32)
    trace = readout.trace_states(model0, examples)[0]
    probs = np.asarray(model0(examples))[:, 0]
    lines.append("  the carried score h_t (the RNN state) step by step:")
    for ex, row, p in zip(examples, trace.states["h"][:, :, 0], probs):
        lines.append(f"    {ex}: h = {common.fmt(row, 2)}  -> P(contains {digit}) = {p:.4f}")

    extra = {"embedding_dim": dim, "rnn_activation": act, "digit": digit,
             "latch_fixed_points": latch["h"], "latch_eigenvalues": latch["eigenvalues"],
             "digit_weights": [s[0] for s in per_seed] if n > 1 else e0,
             "U": [s[1] for s in per_seed] if n > 1 else U0,
             "detector_pattern": detects.tolist() if n > 1 else bool(detects[0])}
    if n > 1:
        extra["val_accuracy_1_fraction"] = float(np.mean(val_acc == 1.0))
        extra["detector_pattern_fraction"] = float(detects.mean())
        who = (f"{n} members ({len(lrs)} learning rates x {result.num_seeds} seeds)" if lrs
               else f"{n} seeds")
        lines.append(f"{who}: validation accuracy 1.0 in {np.sum(val_acc == 1.0)}, median "
                     f"{np.median(val_acc):.4f}, min {np.min(val_acc):.4f}; e_{digit} high and "
                     f"the others negative in {detects.sum()}")
    if lrs:
        extra["per_learning_rate"] = []
        for lr in lrs:
            idx = result.member_indices(learning_rate=lr)
            row = {"learning_rate": lr, "seeds": len(idx),
                   "val_accuracy_1_fraction": float(np.mean(val_acc[idx] == 1.0)),
                   "val_accuracy_median": float(np.median(val_acc[idx])),
                   "detector_pattern_fraction": float(detects[idx].mean())}
            extra["per_learning_rate"].append(row)
            lines.append(f"  learning rate {lr:g}: validation accuracy 1.0 in "
                         f"{np.sum(val_acc[idx] == 1.0)} of {len(idx)}, median "
                         f"{row['val_accuracy_median']:.4f}; the detector pattern in "
                         f"{detects[idx].sum()}")

    def plots():
        from rnn_jax import plots as P
        return [
            P.plot_token_weights(np.stack([s[0] for s in per_seed]) if n > 1 else e0,
                                 run.path("digit_weights.png"),
                                 labels=[str(d) for d in DIGITS], highlight=digit,
                                 title=f"contains{digit}: e_d = W_embd[d] . W + b per digit"),
            P.plot_state_trace(trace, run.path("state_trace.png"), sample=0,
                               xticklabels=[str(d) for d in examples[0]],
                               title=f"contains{digit}: the carried score h_t"),
            P.plot_token_weights(np.asarray(latch["h"]), run.path("fixed_points.png"),
                                 labels=[str(d) for d in DIGITS], highlight=digit,
                                 title=f"contains{digit}: the fixed point h* with each digit "
                                       "held"),
        ]

    return run.finish(extra, "\n".join(lines), plots)


main = common.main_of(train_and_evaluate)


if __name__ == "__main__":
    app.run(main)
