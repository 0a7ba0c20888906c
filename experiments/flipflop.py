"""The 3-bit flip-flop (Sussillo & Barak 2013), read through its fixed points.

    python -m experiments.flipflop --flagfile=experiments/flags/flipflop.flags
    python -m experiments.flipflop --flagfile=experiments/flags/flipflop.flags --cell=lstm

Each of `--bits` input channels carries sparse +-1 pulses; the target on each
channel holds the sign of its last pulse (`rnn_jax.datasets.tasks.flip_flop`).
A recurrent layer (`--cell`: GRU, LSTM or SimpleRNN, `--units` units,
`return_sequences`) and a `Dense(bits)` read-out are trained with MSE, many
seeds at once (`--num_seeds`, 64 by default). A network that solves the task
must remember one of 2^bits states between pulses: with no input it should
have 2^bits stable fixed points (8 for 3 bits), one per memory, and saddles
between them.

The report gives each seed's accuracy (the sign of every output against the
target's, on held-out sequences), the stable fixed points found per seed
under zero input (`rnn_jax.dynamics.find_fixed_points`, all seeds in one
program, candidates from each seed's own trajectories), how often each count
occurs, and the fraction of seeds that solve the task with exactly 2^bits
stable points. Plots: the first seed's trajectories in their principal
components with its fixed points (`fixed_points.png`), their eigenvalues
(`eigenvalues.png`), and the stable counts against accuracy over the seeds
(`seeds.png`).
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

import rnn_jax
from experiments import common

FLAGS = flags.FLAGS

DEFAULTS = dict(learning_rate=1e-2, batch_size=64, epochs=20, validation_split=0.1)


def define_flags(flag_values: flags.FlagValues = FLAGS):
    """flipflop's flags, and the common ones, in `flag_values`."""
    common.define_sequence_task_flags(flag_values, steps=64)
    fv = dict(flag_values=flag_values)
    flags.DEFINE_integer("bits", 3, "input and output channels (memories: 2^bits)",
                         lower_bound=1, upper_bound=8, **fv)
    flags.DEFINE_float("pulse_prob", 0.1, "probability of a pulse per channel and step",
                       lower_bound=0.0, upper_bound=1.0, **fv)
    flags.DEFINE_float("accuracy_target", 0.99, "a seed solves the task at this accuracy",
                       lower_bound=0.0, upper_bound=1.0, **fv)


define_flags(FLAGS)


def make_model_fn(cell: str, units: int, bits: int, steps: int):
    """`rngs -> Sequential`: the recurrent layer and a `Dense(bits)` read-out."""
    return common.sequence_model_fn(cell, units, steps, bits, bits)


def sign_accuracy(model, x, y) -> float:
    """The fraction of outputs whose sign is the target's."""
    return float(np.mean(np.sign(np.asarray(model(x))) == np.sign(y)))


def train_and_evaluate(config: common.Config, workdir: str | None) -> dict:
    """Train the flip-flop networks as `config` says and analyse their fixed
    points, writing the run into `workdir` (none: nothing written); returns the
    metrics (metrics.json's dict). Raises `common.RunError` when the run
    cannot go on."""
    hp = common.hyperparameters(config, DEFAULTS)
    bits, memories = config.bits, 2 ** config.bits
    x, y = rnn_jax.datasets.tasks.flip_flop(config.num_samples, config.steps, bits,
                                            pulse_prob=config.pulse_prob, seed=config.data_seed)
    x_test, y_test = rnn_jax.datasets.tasks.flip_flop(256, config.steps, bits,
                                                      pulse_prob=config.pulse_prob,
                                                      seed=config.data_seed + 1)
    run = common.Run(f"flipflop ({config.cell}, {bits} bits)", config, workdir)
    if run.complete:
        return run.saved_metrics()
    result = run.fit(make_model_fn(config.cell, config.units, bits, config.steps), x, y,
                     loss="mean_squared_error", hp=hp, fast_compile=False)

    n = result.num_members
    accuracy = np.array([sign_accuracy(result.model(i), x_test, y_test) for i in range(n)])
    fps = common.find_fixed_points(result, x_test[:64], np.zeros(bits), config)
    stable = fps.counts("stable")
    solved = accuracy >= config.accuracy_target
    exact = solved & (stable == memories)
    seeds = [m["seed"] for m in result.members]
    lines = [f"{n} seeds: accuracy (sign of every output, 256 held-out sequences) median "
             f"{np.median(accuracy):.4f}, min {accuracy.min():.4f}; "
             f"{solved.sum()} at or above {config.accuracy_target}",
             f"fixed points under zero input ({config.candidates} candidates a seed, "
             f"{config.fp_method}, q < {config.fp_tol_q:g}): {memories} stable ones (one per "
             f"memory) in {np.sum(stable == memories)} of {n} seeds; solved with exactly "
             f"{memories}: {exact.sum()} of {n} ({100 * exact.mean():.0f}%)",
             "  stable fixed points: seeds"]
    for count, members in sorted(fps.summary()["stable_histogram"].items()):
        lines.append(f"  {count:>6}: {members}")
    lines.append("  seed   accuracy   stable   saddle   unstable")
    for i in range(n):
        c = fps[i].count()
        lines.append(f"  {seeds[i]:>4}   {accuracy[i]:8.4f}   {c['stable']:6d}   "
                     f"{c['saddle']:6d}   {c['unstable']:8d}")
    extra = {"cell": config.cell, "bits": bits, "accuracy": accuracy.tolist(),
             **{f"{k}_fixed_points": v for k, v in fps.summary().items()
                if k != "stable_histogram"},
             "stable_histogram": {str(k): v for k, v in fps.summary()["stable_histogram"].items()},
             "solved_fraction": float(solved.mean()),
             "exact_structure_fraction": float(exact.mean())}

    def plots():
        from rnn_jax import plots as P

        return common.fixed_point_plots(run, result, fps, x_test[:16], "flip-flop") + [
            P.plot_seed_scatter(
                stable, accuracy, run.path("seeds.png"), xlabel="stable fixed points",
                ylabel="accuracy", groups=np.where(exact, f"solved, {memories} stable",
                                                   "other"),
                title=f"flip-flop ({config.cell}): {n} seeds"),
        ]

    return run.finish(extra, "\n".join(lines), plots)


main = common.main_of(train_and_evaluate)


if __name__ == "__main__":
    app.run(main)
