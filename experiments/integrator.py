"""An integrator, read through its fixed points: a line attractor.

    python -m experiments.integrator --flagfile=experiments/flags/integrator.flags

The input is white noise, the target its running sum
(`rnn_jax.datasets.tasks.integrator`); a recurrent layer (`--cell`, `--units`,
`return_sequences`) and a `Dense(1)` read-out are trained with MSE, many seeds
at once. To integrate, a network must hold any value of the sum still when
the input is zero: its zero-input map needs a line of fixed points (or of
slow points, where q(h) = |F(h) - h|^2 / 2 is tiny), along which one
eigenvalue of dF/dh is 1 and across which the others are below 1 (Seung's
line attractor; Maheswaranathan et al. 2019 found them in sentiment RNNs).

The report gives each seed's held-out loss against the target's variance,
the slow points found under zero input (`--fp_tol_q`, candidates from the
seed's own trajectories), how much of their spread lies along one direction
(the first principal component's share of their variance), and the
magnitude of their largest eigenvalue; a seed "has a line attractor" when
at least 3 slow points lie on a line (share >= 0.95) and their largest
eigenvalues are within 0.02 of 1. Plots: the first seed's trajectories with
its slow points (`fixed_points.png`) and their eigenvalues (`eigenvalues.png`).
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

import rnn_jax
from experiments import common

FLAGS = flags.FLAGS

DEFAULTS = dict(learning_rate=1e-2, batch_size=64, epochs=20, validation_split=0.1)


def define_flags(flag_values: flags.FlagValues = FLAGS):
    """integrator's flags, and the common ones, in `flag_values`."""
    common.define_sequence_task_flags(flag_values, steps=50)
    flags.DEFINE_float("noise_std", 0.1, "standard deviation of the input noise",
                       lower_bound=0.0, flag_values=flag_values)


define_flags(FLAGS)


def make_model_fn(cell: str, units: int, steps: int):
    """`rngs -> Sequential`: the recurrent layer and a `Dense(1)` read-out."""
    return common.sequence_model_fn(cell, units, steps, 1, 1)


def line_share(points) -> float:
    """The share of the points' variance along their first principal component
    (1 for points on a line; 1 for fewer than two points, said as such)."""
    points = np.asarray(points, float)
    if len(points) < 2:
        return 1.0
    sv = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    total = float(np.sum(sv ** 2))
    return 1.0 if total == 0 else float(sv[0] ** 2 / total)


def train_and_evaluate(config: common.Config, workdir: str | None) -> dict:
    """Train the integrators as `config` says and analyse their slow points,
    writing the run into `workdir` (none: nothing written); returns the
    metrics (metrics.json's dict). Raises `common.RunError` when the run
    cannot go on."""
    hp = common.hyperparameters(config, DEFAULTS)
    x, y = rnn_jax.datasets.tasks.integrator(config.num_samples, config.steps,
                                             noise_std=config.noise_std, seed=config.data_seed)
    x_test, y_test = rnn_jax.datasets.tasks.integrator(256, config.steps,
                                                       noise_std=config.noise_std,
                                                       seed=config.data_seed + 1)
    run = common.Run(f"integrator ({config.cell})", config, workdir)
    if run.complete:
        return run.saved_metrics()
    result = run.fit(make_model_fn(config.cell, config.units, config.steps), x, y,
                     loss="mean_squared_error", hp=hp, fast_compile=False)

    n = result.num_members
    variance = float(np.var(y_test))
    test_loss = np.array([float(np.mean((np.asarray(result.model(i)(x_test)) - y_test) ** 2))
                          for i in range(n)])
    fps = common.find_fixed_points(result, x_test[:64], np.zeros(1), config)
    points = np.array([len(fp) for fp in fps.per_member])
    share = np.array([line_share(fp.states) for fp in fps.per_member])
    top = np.array([np.median(np.abs(fp.eigenvalues[:, 0])) if len(fp) else np.nan
                    for fp in fps.per_member])
    close = np.array([len(fp) > 0 and bool(np.all(np.abs(np.abs(fp.eigenvalues[:, 0]) - 1)
                                                  <= 0.02)) for fp in fps.per_member])
    line = (points >= 3) & (share >= 0.95) & close
    seeds = [m["seed"] for m in result.members]
    lines = [f"{n} seeds: held-out MSE median {np.median(test_loss):.2e} (the target's variance "
             f"{variance:.3f}: {np.median(test_loss) / variance:.1e} of it)",
             f"slow points under zero input (q < {config.fp_tol_q:g}, {config.candidates} "
             f"candidates a seed): a line attractor (>= 3 points on a line, largest |eigenvalue| "
             f"within 0.02 of 1) in {line.sum()} of {n} seeds ({100 * line.mean():.0f}%)",
             "  seed   test MSE   points   on a line   largest |eigenvalue| (median)"]
    for i in range(n):
        lines.append(f"  {seeds[i]:>4}   {test_loss[i]:.2e}   {points[i]:6d}   {share[i]:9.4f}   "
                     f"{top[i]:.4f}")
    extra = {"cell": config.cell, "test_mse": test_loss.tolist(), "target_variance": variance,
             "slow_points": points.tolist(), "line_share": share.tolist(),
             "largest_eigenvalue": [None if np.isnan(t) else float(t) for t in top],
             "line_attractor": line.tolist(), "line_attractor_fraction": float(line.mean())}

    return run.finish(extra, "\n".join(lines),
                      lambda: common.fixed_point_plots(run, result, fps, x_test[:16],
                                                       "integrator"))


main = common.main_of(train_and_evaluate)


if __name__ == "__main__":
    app.run(main)
