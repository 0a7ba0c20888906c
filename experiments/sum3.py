"""Notebook 000: the sum of 3 digits with `SimpleRNN(1, activation='linear')`.

    python -m experiments.sum3 --flagfile=experiments/flags/sum3.flags
    python -m experiments.sum3 --flagfile=experiments/flags/sum3.flags --input=onehot
    python -m experiments.sum3 --flagfile=experiments/flags/sum3.flags --num_seeds=1

The cell is `h_t = x_t W + h_{t-1} U + b` (linear), `h_0 = 0`, and the model
predicts `h_3`. The readable solution adds the digits as they come:
the digit `d` enters as `e_d = d` and the sum is carried with `U = 1`:

- `--input=scalar`: `x_t = d` `(N, 3, 1)`, so `e_d = d W + b`: `W = 1, U = 1, b = 0`;
- `--input=onehot`: `x_t` one-hot `(N, 3, 10)`, so `e_d = W_d + b`;
- `--input=embedding`: `Embedding(10, 10)` ids `(N, 3)`, so `e_d = W_embd[d] W + b`.

Hyperparameters left unset default to the notebook's for each input
(`NOTEBOOK` below, their one home). In a script or a test, the same run
in-process: `train_and_evaluate(common.parse_config(define_flags, [...]), workdir)`.

The flagfile trains 64 seeds at once (`--num_seeds=64`). The report first
says how many reach the readable solution (`|U - 1|` and every `|e_d - d|` at
most `--readable_tol`), what the others found (grouped by `U` and the slope
of `e_d`) and plots every seed's `U` against its final val_loss
(`seeds.png`, readable or not); then the read-outs (predictions for the last
5 samples, the weights, the carried state `h_t`) of the first seed that
reached the readable solution, named in their header, or of seed index 0
when none did. `--num_seeds=1` is the notebook's single run, read out alone.

With several learning rates (`--learning_rate=0.0003,0.001,0.003,0.01`, each
trained with the same `--num_seeds` seeds in one program) the report adds a
table (learning rate, seeds, readable fraction, median val_loss),
`readable_fraction.png` plots the fraction against the learning rate, and
metrics.json holds `per_learning_rate`; its per-seed lists are per member.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

import rnn_jax
from experiments import common
from rnn_jax import readout

FLAGS = flags.FLAGS

NOTEBOOK = {  # the notebook's hyperparameters for each part
    "scalar": dict(learning_rate=1e-3, batch_size=4, epochs=5, validation_split=0.2),
    "onehot": dict(learning_rate=0.005, batch_size=8, epochs=8, validation_split=0.2),
    "embedding": dict(learning_rate=0.01, batch_size=8, epochs=4, validation_split=0.2),
}
ENCODING = {"scalar": "scalar", "onehot": "onehot", "embedding": "ids"}
DIGITS = np.arange(10)


def define_flags(flag_values: flags.FlagValues = FLAGS):
    """sum3's flags, and the common ones, in `flag_values`."""
    common.define_run_flags(flag_values)
    common.define_training_flags(flag_values)
    common.define_generated_data_flags(flag_values)
    flags.DEFINE_enum("input", "scalar", ["scalar", "onehot", "embedding"],
                      "how the digits are fed: a scalar, one-hot, or through Embedding(10, 10)",
                      flag_values=flag_values)
    flags.DEFINE_float("readable_tol", 0.1, "tolerance of the readable-solution test",
                       lower_bound=0, flag_values=flag_values)


define_flags(FLAGS)


def make_model_fn(input_kind: str):
    """`rngs -> Sequential` for the chosen input."""
    def make(rngs):
        if input_kind == "embedding":
            return rnn_jax.Sequential([
                rnn_jax.Embedding(10, 10, rngs=rngs),
                rnn_jax.SimpleRNN(1, activation="linear", rngs=rngs)], input_shape=(3,))
        d = 1 if input_kind == "scalar" else 10
        return rnn_jax.Sequential(
            [rnn_jax.SimpleRNN(1, activation="linear", rngs=rngs)], input_shape=(3, d))
    return make


def digit_weights(model, input_kind: str):
    """`(e (10,), U, W, b)`: the effective input `e_d` of each digit, and the cell's weights."""
    W, U, b = model.layers[-1].get_weights()
    if input_kind == "scalar":
        e = DIGITS * W[0, 0] + b[0]
    else:
        e = readout.input_weights_per_token(model)[:, 0]
    return np.asarray(e), float(U[0, 0]), W, b


def is_readable(e, U, tol):
    return abs(U - 1.0) <= tol and float(np.max(np.abs(e - DIGITS))) <= tol


def per_learning_rate(result, readable, val_loss) -> list[dict]:
    """One row per swept learning rate: its seeds, how many of them are readable
    (count and fraction) and the median final val_loss over its seeds."""
    rows = []
    for lr in dict.fromkeys(m["learning_rate"] for m in result.members):
        idx = result.member_indices(learning_rate=lr)
        rows.append({"learning_rate": lr, "seeds": len(idx), "readable": int(readable[idx].sum()),
                     "readable_fraction": float(readable[idx].mean()),
                     "val_loss_median": float(np.median(val_loss[idx]))})
    return rows


def other_solutions(per_seed, readable) -> dict:
    """The members that did not reach the readable solution, grouped by what
    they found: `(round(U), round(slope, 1)) -> member indices`, where `slope`
    is that of the least-squares line `e_d ~ slope * d + c`."""
    groups: dict = {}
    for i, (e, U, _, _) in enumerate(per_seed):
        if not readable[i]:
            groups.setdefault((round(U), round(np.polyfit(DIGITS, e, 1)[0], 1)), []).append(i)
    return groups


def map_eigenvalues(result) -> np.ndarray:
    """`(M,)` the eigenvalue of each member's map `h -> F(h, 0)` (one unit:
    dF/dh, which for this linear cell is `U` everywhere), from
    `rnn_jax.dynamics.linearize`, every member at once."""
    from rnn_jax import dynamics

    cell = dynamics.recurrent_cell(result.model(0))
    jh, _ = dynamics.linearize(result, np.zeros((1, 1)), np.zeros(cell.input_dim))
    return jh[:, 0, 0, 0]


def dynamics_of(eigenvalue: float, tol: float) -> str:
    """What a one-unit linear map `h -> U h + e` with eigenvalue `U` does
    between digits, in words."""
    U = eigenvalue
    if abs(U - 1) <= tol:
        return (f"a line attractor (eigenvalue U = {U:.2f}): without input h stays where it "
                "is (up to the bias), so the running sum is held")
    if abs(U) < 1:
        return (f"a point attractor (eigenvalue U = {U:.2f}): without input h decays to one "
                "value, so earlier digits fade")
    return (f"a repeller (eigenvalue U = {U:.2f}{', flipping sign each step' if U < 0 else ''})"
            ": h runs away from its fixed point; fitted to 3 steps, it is no sum")


def readout_lines(model, header: str, kind: str, x, y, ids, weights, readable: bool,
                  tol: float, one_seed: bool, eigenvalue: float):
    """The report's read-outs of one trained model: its predictions for the
    last 5 samples, its weights, whether it is readable, its dynamics (the
    map's `eigenvalue`), the carried state `h_t` `(5, 3)`; returns `(lines,
    trace)` (the trace for state_trace.png)."""
    e, U, W, b = weights
    lines = [f"{header}: predictions for the last 5 samples", "  digits      label  prediction"]
    pred = np.asarray(model(x[-5:]))
    for d, lab, p in zip(ids[-5:], y[-5:, 0], pred[:, 0]):
        lines.append(f"  {d}  {lab:5.0f}  {p:10.4f}")
    if kind == "scalar":
        lines.append(f"  W = {W[0, 0]:.4f}  U = {U:.4f}  b = {b[0]:.4g}   (rounded: W = "
                     f"{np.round(W[0, 0]):.0f}, U = {np.round(U):.0f}, b = {np.round(b[0]):.0f})")
    else:
        what = "W + b" if kind == "onehot" else "W_embd . W + b"
        lines.append(f"  per-digit {what}: {common.fmt(e, 3)}")
        lines.append(f"  rounded:            {common.fmt(np.round(e), 0)}")
        lines.append(f"  U = {U:.4f} (rounded {np.round(U):.0f})")
    lines.append(f"  readable solution (U = 1, e_d = d within {tol}): "
                 f"{'yes' if readable else 'no'}")
    if one_seed and not readable:
        lines.append("  (not every seed finds it: --num_seeds=64 trains 64 at once and "
                     "counts how many do)")
    lines.append(f"  its dynamics: {dynamics_of(eigenvalue, tol)}")
    trace = readout.trace_states(model, x[-5:])[0]
    lines.append("  the carried state h_t for the last 5 samples (h_3 is the prediction):")
    for d, row in zip(ids[-5:], trace.states["h"][:, :, 0]):
        lines.append(f"    {d}: h = {common.fmt(row, 2)}")
    return lines, trace


def train_and_evaluate(config: common.Config, workdir: str | None) -> dict:
    """Train notebook 000's model as `config` says, writing the run into
    `workdir` (none: nothing written); returns the metrics (metrics.json's
    dict). Raises `common.RunError` when the run cannot go on."""
    kind, tol = config.input, config.readable_tol
    hp = common.hyperparameters(config, NOTEBOOK[kind])
    x, y, ids = rnn_jax.datasets.digits.sum_of_digits(config.num_samples, seed=config.data_seed,
                                                      encoding=ENCODING[kind])
    run = common.Run(f"sum3 ({kind})", config, workdir)
    if run.complete:
        return run.saved_metrics()
    result = run.fit(make_model_fn(kind), x, y, loss="mean_squared_error", hp=hp)

    n = result.num_members
    lrs = common.learning_rates(hp)
    val_loss = np.atleast_1d(result.history.get("val_loss", result.history["loss"])[..., -1])
    per_seed = [digit_weights(result.model(i), kind) for i in range(n)]
    readable = np.array([is_readable(e, U, tol) for e, U, _, _ in per_seed])

    # The read-outs show one model: the only one, or with many the first that
    # reached the readable solution (else the first), said in its header.
    shown = int(np.argmax(readable)) if n > 1 and readable.any() else 0
    member = result.members[shown]
    who = "member" if lrs else "seed"
    header = f"seed {member['seed']}" + (f", learning_rate {member['learning_rate']:g}"
                                         if lrs else "")
    if n > 1 and readable[shown]:
        header += (f", the first of the {n} {who}s to reach the readable solution"
                   + (f" ({who} index {shown})" if lrs else ""))
    elif n > 1:
        header += f" ({who} index 0; none of the {n} {who}s reached the readable solution)"
    eigenvalues = map_eigenvalues(result)
    readouts, trace = readout_lines(result.model(shown), header, kind, x, y, ids,
                                    per_seed[shown], bool(readable[shown]), tol, n == 1,
                                    float(eigenvalues[shown]))
    e0, U0, W0, b0 = per_seed[shown]

    lines = []  # with many: the distribution first, then the read-outs
    extra = {"input": kind, "readable": readable.tolist() if n > 1 else bool(readable[0]),
             "eigenvalue": eigenvalues.tolist() if n > 1 else float(eigenvalues[0]),
             "U": [s[1] for s in per_seed] if n > 1 else U0,
             "digit_weights": [s[0] for s in per_seed] if n > 1 else e0}
    if kind == "scalar":
        extra["W"] = [float(s[2][0, 0]) for s in per_seed] if n > 1 else float(W0[0, 0])
        extra["b"] = [float(s[3][0]) for s in per_seed] if n > 1 else float(b0[0])
    if n > 1:
        frac = float(readable.mean())
        extra["readable_fraction"] = frac
        extra["readout_index"] = shown
        extra["readout_seed"] = member["seed"]
        solution = ("W = U = 1, b = 0" if kind == "scalar" else "U = 1, e_d = d")
        who_all = (f"{n} members ({len(lrs)} learning rates x {result.num_seeds} seeds)" if lrs
                   else f"{n} seeds")
        lines.append(f"{who_all}: {readable.sum()} reach the readable solution {solution} "
                     f"(within {tol}; {100 * frac:.0f}%); their median val_loss "
                     f"{np.median(val_loss[readable]) if readable.any() else float('nan'):.3g}")
        if readable.any():
            lines.append(f"  their dynamics: {dynamics_of(np.median(eigenvalues[readable]), tol)}")
        groups = other_solutions(per_seed, readable)
        if groups:
            lines.append("  the other solutions (U and the slope of e_d ~ slope * d + c, rounded):")
        for (U, slope), members in sorted(groups.items(), key=lambda g: -len(g[1])):
            lines.append(f"    U ~ {U:+d}, slope ~ {slope:+.1f}: {len(members)} "
                         f"{who}{'s' if len(members) > 1 else ''}, median "
                         f"val_loss {np.median(val_loss[members]):.3g}; "
                         f"{dynamics_of(np.median(eigenvalues[members]), tol)}")
        extra["other_solutions"] = [
            {"U": U, "slope": s, "seeds": [result.members[i]["seed"] for i in m],
             **({"learning_rates": [result.members[i]["learning_rate"] for i in m]} if lrs else {})}
            for (U, s), m in groups.items()]
    if lrs:
        extra["per_learning_rate"] = per_value = per_learning_rate(result, readable, val_loss)
        lines.append("  learning rate   seeds   readable   median val_loss")
        for row in per_value:
            lines.append(f"  {row['learning_rate']:>13g}   {row['seeds']:5d}   "
                         f"{100 * row['readable_fraction']:7.0f}%   {row['val_loss_median']:.3g}")
    if n > 1 and run.workdir:
        lines.append(f"  seeds.png: each {who}'s U against its final val_loss, readable or not")
    lines += readouts
    extra["val_loss_readable_median"] = (float(np.median(val_loss[readable]))
                                         if readable.any() else None)

    def plots():
        from rnn_jax import plots as P
        out = [P.plot_token_weights(
            np.stack([s[0] for s in per_seed]) if n > 1 else e0, run.path("digit_weights.png"),
            labels=[str(d) for d in DIGITS],
            title=f"sum3 ({kind}): effective input e_d per digit (readable: e_d = d)")]
        out.append(P.plot_state_trace(trace, run.path("state_trace.png"),
                                      xticklabels=[str(d) for d in ids[-5]],
                                      title="sum3: the carried state h_t (sample -5)"))
        if lrs:
            out.append(P.plot_sweep(
                [r["learning_rate"] for r in per_value],
                [r["readable_fraction"] for r in per_value], run.path("readable_fraction.png"),
                xlabel="learning rate", ylabel="readable fraction", ylim=(0, 1),
                title=f"sum3 ({kind}): readable fraction\n({result.num_seeds} seeds per "
                      "learning rate)"))
        if n > 1:
            out.append(P.plot_seed_scatter(
                np.array([s[1] for s in per_seed]), val_loss, run.path("seeds.png"),
                xlabel="U: the recurrent weight, the map's eigenvalue dF/dh",
                ylabel="final val_loss",
                groups=np.where(readable, "readable", "not readable"),
                title=f"sum3 ({kind}): {n} seeds", ylog_floor=1e-15))
        return out

    return run.finish(extra, "\n".join(lines), plots)


main = common.main_of(train_and_evaluate)


if __name__ == "__main__":
    app.run(main)
