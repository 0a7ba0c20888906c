"""PNG plots of training histories, state traces, per-token weights and seeds.

Every `plot_*` function draws one figure, writes it atomically (with
`rnn_jax.workdir.atomic_write`, so a reader never sees half a file) and
returns `path`; `figure` and `save` are those two steps, for figures drawn
elsewhere (the benchmark report's).
matplotlib is imported inside the functions, so `import rnn_jax` stays fast;
figures are drawn on matplotlib's `Figure` directly, which renders PNG with
the Agg backend on a machine without a display and leaves the global pyplot
backend (a notebook's, say) alone.

Shapes: `E` epochs, `S` seeds (or members of a sweep), `T` time steps, `U` units,
`V` tokens (or swept values).
"""

from __future__ import annotations

import os

import numpy as np

from rnn_jax import workdir


def figure(nrows=1, ncols=1, *, width=7.0, height=3.2, sharex=False):
    """A new matplotlib `Figure` of `nrows x ncols` panels, each `width x height`
    inches, and its axes as a flat array `(nrows * ncols,)`; pass it to `save`.

    Drawn off pyplot, so it needs no display and leaves pyplot's backend alone.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
    return fig, axes.ravel()


def save(fig, path) -> str:
    """Writes `fig` as PNG (110 dpi) to `path` atomically
    (`rnn_jax.workdir.atomic_write`); returns `path`."""
    path = os.fspath(path)
    with workdir.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    return path


def plot_history(history, path, title=None) -> str:
    """Training curves against epoch `1..E`.

    Args:
      history: `{name: values}`, values per epoch `(E,)`, or with many seeds
        `(S, E)` (one thin line per seed, the median over seeds in bold).
        Names ending in `loss` (`loss`, `val_loss`) share the first panel
        (log scale when every value is positive); the others (`accuracy`,
        `val_accuracy`, ...) go in a second panel if there are any.
      path: the PNG file to write.
      title: optional figure title.
    """
    curves = {k: np.asarray(v, dtype=float) for k, v in history.items()}
    for k, v in curves.items():
        if v.ndim not in (1, 2) or v.shape[-1] == 0:
            raise ValueError(
                f"plot_history: {k!r} must be (epochs,) or (seeds, epochs), got {v.shape}")
    panels = [[k for k in curves if k.endswith("loss")],
              [k for k in curves if not k.endswith("loss")]]
    panels = [p for p in panels if p]
    if not panels:
        raise ValueError("plot_history: the history is empty")
    fig, axes = figure(len(panels), sharex=True)
    colors = {k: f"C{i}" for i, k in enumerate(curves)}
    for ax, keys in zip(axes, panels):
        for k in keys:
            v = np.atleast_2d(curves[k])
            epochs = np.arange(1, v.shape[1] + 1)
            style = "--" if k.startswith("val_") else "-"
            if v.shape[0] > 1:
                for row in v:
                    ax.plot(epochs, row, style, color=colors[k], lw=0.6, alpha=0.35)
                with np.errstate(all="ignore"):
                    median = np.nanmedian(v, axis=0)
                ax.plot(epochs, median, style, color=colors[k], lw=2.4,
                        label=f"{k} (median of {v.shape[0]} seeds)")
            else:
                ax.plot(epochs, v[0], style, color=colors[k], lw=1.8, label=k)
        values = np.concatenate([curves[k].ravel() for k in keys])
        values = values[np.isfinite(values)]
        if keys[0].endswith("loss") and values.size and np.all(values > 0):
            ax.set_yscale("log")
        ax.set_ylabel("loss" if keys[0].endswith("loss") else "metric")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    from matplotlib.ticker import MaxNLocator

    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("epoch")
    if title:
        fig.suptitle(title)
    return save(fig, path)


def plot_state_trace(trace, path, sample=0, title=None, xticklabels=None) -> str:
    """States and gates of one traced cell over time, for one sample.

    One panel per quantity (`h`, `c` for an LSTM, then each gate), one line
    per unit; steps the mask dropped are shaded grey.

    Args:
      trace: a `rnn_jax.readout.LayerTrace` (arrays `(B, T, U)`).
      path: the PNG file to write.
      sample: which sequence of the batch.
      title: optional title (default: layer name, direction, cell, sample).
      xticklabels: optional `T` labels of the steps (e.g. the input digits).
    """
    quantities = {**trace.states, **trace.gates}
    batch, steps = trace.outputs.shape[:2]
    if not 0 <= sample < batch:
        raise ValueError(f"plot_state_trace: sample {sample} is not in [0, {batch})")
    if xticklabels is not None and len(xticklabels) != steps:
        raise ValueError(f"plot_state_trace: {len(xticklabels)} xticklabels for {steps} steps")
    fig, axes = figure(len(quantities), height=2.0, sharex=True)
    t = np.arange(steps)
    for ax, (q, values) in zip(axes, quantities.items()):
        v_TxU = np.asarray(values)[sample]
        for u in range(v_TxU.shape[1]):
            ax.plot(t, v_TxU[:, u], marker="o", ms=3, lw=1.2, label=f"unit {u}")
        if trace.mask is not None:
            for s in np.flatnonzero(~np.asarray(trace.mask[sample], bool)):
                ax.axvspan(s - 0.5, s + 0.5, color="0.85", zorder=0)
        ax.set_ylabel(q)
        ax.grid(True, alpha=0.3)
    if 1 < v_TxU.shape[1] <= 8:
        axes[0].legend(fontsize="x-small", ncols=min(v_TxU.shape[1], 4))
    axes[-1].set_xlabel("time step (input order)")
    axes[-1].set_xticks(t)
    if xticklabels is not None:
        axes[-1].set_xticklabels([str(s) for s in xticklabels])
    fig.suptitle(title or f"{trace.name} ({trace.direction}, cell {trace.cell_index}), "
                 f"sample {sample}")
    return save(fig, path)


def plot_token_weights(values, path, labels=None, title=None, highlight=None,
                       ylabel="effective input weight") -> str:
    """Bar chart of one value per token (e.g. each digit's `W_embd W + b`).

    Args:
      values: `(V,)`, or `(S, V)` over seeds: the median bar with min / max
        error bars.
      path: the PNG file to write.
      labels: `V` tick labels (default `0..V-1`).
      title: optional title.
      highlight: index of a token whose bar is drawn in another colour.
      ylabel: the value's name.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim not in (1, 2):
        raise ValueError(
            f"plot_token_weights: values must be (tokens,) or (seeds, tokens), got {v.shape}")
    n = v.shape[-1]
    labels = [str(i) for i in range(n)] if labels is None else [str(s) for s in labels]
    if len(labels) != n:
        raise ValueError(f"plot_token_weights: {len(labels)} labels for {n} tokens")
    fig, (ax,) = figure(width=6.0)
    colors = ["C0"] * n
    if highlight is not None:
        colors[int(highlight)] = "C3"
    if v.ndim == 2:
        with np.errstate(all="ignore"):
            mid, lo, hi = np.nanmedian(v, 0), np.nanmin(v, 0), np.nanmax(v, 0)
        ax.bar(labels, mid, color=colors, yerr=np.stack([mid - lo, hi - mid]), capsize=3,
               ecolor="0.3", label=f"median of {v.shape[0]} seeds, bars min to max")
        ax.legend(fontsize="small")
    else:
        ax.bar(labels, v, color=colors)
    ax.set_ylabel(ylabel)
    ax.axhline(0.0, color="0.4", lw=0.8)
    ax.set_xlabel("token")
    ax.grid(True, axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    return save(fig, path)


def plot_seed_scatter(x, y, path, xlabel, ylabel, color=None, color_label=None,
                      title=None, ylog_floor=None, groups=None) -> str:
    """One point per seed, `(S,)` each (e.g. learned W against U).

    `color` `(S,)` (e.g. the final val_loss) colours the points, on a log
    scale when every finite value is positive, with a colour bar named
    `color_label`. Or `groups` `(S,)`, a name per point (e.g. "readable" /
    "not readable"): each group in its own colour (in sorted order of the
    names), named in a legend with its count. With `ylog_floor` the y axis is logarithmic and values below
    the floor (zeros too) are drawn at it.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if ylog_floor is not None:
        if not ylog_floor > 0:
            raise ValueError(f"plot_seed_scatter: ylog_floor must be > 0, got {ylog_floor}")
        y = np.maximum(y, ylog_floor)
    if x.shape != y.shape:
        raise ValueError(f"plot_seed_scatter: x has {x.size} points, y has {y.size}")
    if color is not None and groups is not None:
        raise ValueError("plot_seed_scatter: give color or groups, not both")
    fig, (ax,) = figure(width=5.0, height=4.2)
    if groups is not None:
        g = np.asarray(groups, dtype=str).ravel()
        if g.shape != x.shape:
            raise ValueError(f"plot_seed_scatter: groups has {g.size} values for {x.size} points")
        for name in sorted(set(g)):  # the same colours for the same names, every time
            ax.scatter(x[g == name], y[g == name], s=22, alpha=0.8,
                       label=f"{name} ({np.sum(g == name)})")
        ax.legend(fontsize="small")
    elif color is None:
        ax.scatter(x, y, s=22, alpha=0.8)
    else:
        from matplotlib.colors import LogNorm, Normalize

        c = np.asarray(color, dtype=float).ravel()
        if c.shape != x.shape:
            raise ValueError(f"plot_seed_scatter: color has {c.size} values for {x.size} points")
        finite = c[np.isfinite(c)]
        if finite.size and np.all(finite > 0) and finite.max() > finite.min():
            norm = LogNorm(finite.min(), finite.max())
        else:
            norm = Normalize()
        points = ax.scatter(x, y, c=c, s=22, cmap="viridis", norm=norm, alpha=0.9)
        fig.colorbar(points, ax=ax, label=color_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel if ylog_floor is None else f"{ylabel} (log, floor {ylog_floor:g})")
    if ylog_floor is not None:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return save(fig, path)


def plot_sweep(values, y, path, xlabel, ylabel, yerr=None, title=None, xlog=True,
               ylim=None) -> str:
    """One point per swept value (a line through them), e.g. the fraction of
    seeds that found a solution against the learning rate.

    Args:
      values: the swept values `(V,)` (x axis, logarithmic with `xlog`).
      y: one number per value `(V,)`.
      yerr: optional error bars `(V,)` (e.g. the standard deviation over seeds).
      ylim: optional `(bottom, top)` of the y axis (e.g. `(0, 1)` for a fraction).
    """
    x, y = np.asarray(values, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"plot_sweep: {x.size} values and {y.size} y values")
    if xlog and not np.all(x > 0):
        raise ValueError("plot_sweep: a log x axis needs values > 0")
    order = np.argsort(x)
    fig, (ax,) = figure(width=5.0, height=3.6)
    err = None if yerr is None else np.asarray(yerr, dtype=float).ravel()[order]
    ax.errorbar(x[order], y[order], yerr=err, marker="o", capsize=3)
    if xlog:
        ax.set_xscale("log")
    ax.set_xticks(x[order], [f"{v:g}" for v in x[order]])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return save(fig, path)


_STABILITY_STYLE = {"stable": dict(marker="o", color="tab:blue"),
                    "saddle": dict(marker="X", color="tab:orange"),
                    "unstable": dict(marker="o", facecolors="none", edgecolors="tab:red")}


def principal_components(points, k: int = 2):
    """`(mean (S,), components (k, S))` of the rows of `points` `(P, S)`: the
    directions of largest variance (SVD of the centred rows)."""
    points = np.asarray(points, float)
    mean = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - mean, full_matrices=False)
    comps = vt[:k]
    if comps.shape[0] < k:  # fewer directions than asked: pad with zeros
        comps = np.vstack([comps, np.zeros((k - comps.shape[0], points.shape[1]))])
    return mean, comps


def plot_fixed_points(trajectories, fixed_points, path, title=None, max_lines: int = 20) -> str:
    """Hidden-state trajectories in their first two principal components, with
    the fixed points on them, marked by stability (stable filled, saddle a
    cross, unstable open).

    Args:
      trajectories: `(B, T, S)` states over time (flattened as
        `rnn_jax.dynamics` flattens them), or `(P, S)` points.
      fixed_points: a `rnn_jax.dynamics.FixedPoints`.
      path: the PNG file to write.
      max_lines: draw at most this many trajectories.
    """
    traj = np.asarray(trajectories, float)
    if traj.ndim == 2:
        traj = traj[:, None, :]
    if traj.ndim != 3:
        raise ValueError(f"plot_fixed_points: trajectories must be (B, T, S) or (P, S), got "
                         f"{np.shape(trajectories)}")
    mean, comps = principal_components(traj.reshape(-1, traj.shape[-1]))
    fig, (ax,) = figure(width=4.8, height=4.2)
    for line in traj[:max_lines]:
        pc = (line - mean) @ comps.T
        ax.plot(pc[:, 0], pc[:, 1], color="0.75", lw=0.8, zorder=1)
    fps = np.asarray(fixed_points.states, float)
    for kind in ("stable", "saddle", "unstable"):
        sel = [i for i, s in enumerate(fixed_points.stability) if s == kind]
        if sel:
            pc = (fps[sel] - mean) @ comps.T
            ax.scatter(pc[:, 0], pc[:, 1], s=45, zorder=3, label=f"{kind} ({len(sel)})",
                       **_STABILITY_STYLE[kind])
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    if len(fps):
        ax.legend(fontsize=8)
    ax.set_title(title or "states and fixed points", fontsize=9)
    return save(fig, path)


def plot_eigenvalues(fixed_points, path, title=None) -> str:
    """The eigenvalues of every fixed point's Jacobian in the complex plane,
    against the unit circle (inside: a contracting direction of this
    discrete-time map, outside: an expanding one), coloured by the point's
    stability."""
    import matplotlib.patches

    fig, (ax,) = figure(width=4.4, height=4.2)
    ax.add_patch(matplotlib.patches.Circle((0, 0), 1.0, fill=False, color="0.4", ls="--"))
    eig = np.asarray(fixed_points.eigenvalues)
    colors = {"stable": "tab:blue", "saddle": "tab:orange", "unstable": "tab:red"}
    seen = set()
    for ev, kind in zip(eig, fixed_points.stability):
        ax.scatter(ev.real, ev.imag, s=14, color=colors[kind], alpha=0.7,
                   label=None if kind in seen else kind)
        seen.add(kind)
    lim = max(1.2, float(np.abs(eig).max()) * 1.1 if eig.size else 1.2)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", lw=0.5)
    ax.axvline(0, color="0.85", lw=0.5)
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    if seen:
        ax.legend(fontsize=8)
    ax.set_title(title or "eigenvalues of dF/dh at the fixed points", fontsize=9)
    return save(fig, path)
