"""Tables, ratios and plots of `benchmarks.compare`'s results (no flags here).

`collect` turns the workers' outputs into one entry per task; `ratios` states
the figures the targets are written in (speed-ups, time against the floor,
seeds against one seed, forward against Flax and PyTorch); `format_table` and
`format_ratios` print them; `plot_forward` and `plot_seeds` draw the PNGs.
"""

from __future__ import annotations

import json
import os

import numpy as np

from benchmarks import workloads

FRAMEWORKS = ("rnn_jax_fit", "floor", "flax_rnn", "keras_jax", "keras_tf", "pytorch")
LABELS = {"rnn_jax_fit": "rnn_jax", "floor": "floor (lax.scan)", "flax_rnn": "flax nnx.RNN",
          "keras_jax": "Keras-JAX", "keras_tf": "Keras-TF", "pytorch": "PyTorch"}


# -- summarising ------------------------------------------------------------------


def stats(times):
    t = np.asarray(times, float)
    return {"median": float(np.median(t)), "min": float(t.min()), "max": float(t.max()),
            "runs": int(t.size)}


def task_key(task):
    """The key of `task` in `collect`'s table: its JSON without the settings
    that do not change what is measured (`repeats`, `data_path`)."""
    return json.dumps({k: v for k, v in task.items() if k not in ("repeats", "data_path")},
                      sort_keys=True)


def collect(outputs: dict) -> dict:
    """`{task key: {framework: {steady, compile, note} | {error} | ...}}`."""
    table = {}
    for fw, out in outputs.items():
        for rec in out.get("results", []):
            entry = table.setdefault(task_key(rec["task"]), {"task": rec["task"]})
            if rec.get("unsupported"):
                continue
            if "error" in rec:
                entry[fw] = {"error": rec["error"]}
                continue
            steady = stats(rec["times"])
            compile_s = rec.get("compile", rec["first"] - steady["median"])
            entry[fw] = {"steady": steady, "compile": float(max(compile_s, 0.0)),
                         "first": rec["first"], "note": rec.get("note")}
            if rec["task"]["kind"] == "forward":  # throughput beside the latency
                entry[fw]["sequences_per_second"] = rec["task"]["batch"] / steady["median"]
    return table


def _median(table, task, fw):
    e = table.get(task_key(task), {}).get(fw)
    return None if not e or "steady" not in e else e["steady"]["median"]


def ratios(table, tasks) -> dict:
    """The figures the targets are stated in, from the medians of one run."""
    out = {}
    by_kind = {}
    for t in tasks:
        by_kind.setdefault(t["kind"], []).append(t)
    for t in by_kind.get("sum3", []) + by_kind.get("reuters", []):
        name = t["kind"] if t["kind"] == "sum3" else f"reuters_{t['model']}"
        ours = _median(table, t, "rnn_jax_fit")
        if ours is None:
            continue
        r = {}
        for fw in ("keras_tf", "keras_jax", "flax_rnn", "pytorch"):
            other = _median(table, t, fw)
            if other is not None:
                r[f"speedup_vs_{fw}"] = other / ours
        floor = _median(table, t, "floor")
        if floor is not None:
            r["time_vs_floor"] = ours / floor
        out[name] = r
    seeds = {t["num_seeds"]: _median(table, t, "rnn_jax_fit") for t in by_kind.get("seeds", [])}
    if seeds.get(1):
        out["seeds"] = {f"time_{s}_vs_1": v / seeds[1] for s, v in seeds.items() if v}
        out["seeds"].update({f"models_per_second_{s}": s / v for s, v in seeds.items() if v})
        floor = {t["num_seeds"]: _median(table, t, "floor") for t in by_kind.get("seeds", [])}
        if floor.get(1):
            out["seeds"].update({f"floor_time_{s}_vs_1": v / floor[1]
                                 for s, v in floor.items() if v})
    fwd = []
    for t in by_kind.get("forward", []):
        ours, flax_t, torch_t = (_median(table, t, fw) for fw in ("rnn_jax_fit", "flax_rnn",
                                                                   "pytorch"))
        if ours is None:
            continue
        fwd.append({"point": {k: t[k] for k in ("cell", "batch", "steps", "units")},
                    "vs_flax": None if flax_t is None else ours / flax_t,
                    "vs_torch": None if torch_t is None else ours / torch_t})
    if fwd:
        vs_flax = [f for f in fwd if f["vs_flax"] is not None]
        out["forward"] = {
            "points": fwd,
            "worst_vs_flax": max(vs_flax, key=lambda f: f["vs_flax"]) if vs_flax else None,
            "slower_than_flax": [f for f in vs_flax if f["vs_flax"] > 1.0],
            "torch_faster": [f for f in fwd if f["vs_torch"] is not None and f["vs_torch"] > 1.0],
        }
    return out


def task_label(t):
    if t["kind"] == "sum3":
        return f"sum3 {t['num_samples']} samples, {t['epochs']} epochs (training)"
    if t["kind"] == "reuters":
        return f"Reuters {t['model']}, one epoch"
    if t["kind"] == "seeds":
        return f"sum3 x {t['num_seeds']} seeds (training)"
    if t["kind"] == "reuters_seeds":
        return f"Reuters {t['model']} x {t['num_seeds']} seeds, one epoch"
    if t["kind"] == "notebook_table":
        return f"notebook table {t['model']} x {t['num_seeds']}, {t['epochs']} epochs"
    return f"forward {t['cell']} B={t['batch']} T={t['steps']} U={t['units']}"


def format_table(table, tasks, frameworks) -> str:
    """One row per task: median [min, max] seconds per framework, compile apart."""
    lines = []
    head = f"{'work':44s}" + "".join(f"{LABELS[fw]:>26s}" for fw in frameworks)
    lines += [head, "-" * len(head)]
    for t in tasks:
        row = table.get(task_key(t), {})
        cells, comp = [], []
        for fw in frameworks:
            e = row.get(fw)
            if e is None:
                cells.append("-")
                comp.append("")
            elif "error" in e:
                cells.append("error")
                comp.append("")
            else:
                s = e["steady"]
                cells.append(f"{_fmt(s['median'])} [{_fmt(s['min'])},{_fmt(s['max'])}]")
                comp.append(f"+{_fmt(e['compile'])} compile")
        lines.append(f"{task_label(t):44s}" + "".join(f"{c:>26s}" for c in cells))
        if any(comp):
            lines.append(f"{'':44s}" + "".join(f"{c:>26s}" for c in comp))
    return "\n".join(lines)


def format_throughput(table, tasks, frameworks) -> str:
    """Forward throughput (sequences per second, from the median latency) along
    the batch sweep, one row per cell and batch size."""
    pts = [t for t in tasks if t["kind"] == "forward" and workloads.on_sweep(t, "batch")]
    if not pts:
        return ""
    others = ", ".join(f"{k} {v}" for k, v in workloads.BASE.items() if k != "batch")
    lines = [f"forward throughput, sequences per second ({others}):",
             f"{'cell, batch':20s}" + "".join(f"{LABELS[fw]:>18s}" for fw in frameworks)]
    for t in pts:
        row = table.get(task_key(t), {})
        cells = [f"{row[fw]['sequences_per_second']:.4g}" if "steady" in row.get(fw, {})
                 else "-" for fw in frameworks]
        lines.append(f"{t['cell'] + ', ' + str(t['batch']):20s}"
                     + "".join(f"{c:>18s}" for c in cells))
    return "\n".join(lines)


def _fmt(s):
    return f"{s * 1e3:.3g}ms" if s < 1 else f"{s:.3g}s"


def format_ratios(r) -> str:
    lines = []
    for name in ("sum3", "reuters_lstm", "reuters_simple_rnn"):
        if name in r:
            parts = [f"{LABELS[k.replace('speedup_vs_', '')]} takes {v:.2f}x rnn_jax's time"
                     if k.startswith("speedup") else f"rnn_jax takes {v:.2f}x the floor's time"
                     for k, v in r[name].items()]
            lines.append(f"{name}: " + "; ".join(parts))
    if "seeds" in r:
        lines.append("seeds: " + "; ".join(f"{k} {v:,.2f}" for k, v in r["seeds"].items()))
    if "forward" in r and r["forward"]["worst_vs_flax"]:
        w = r["forward"]["worst_vs_flax"]
        lines.append(f"forward: worst rnn_jax / flax {w['vs_flax']:.2f} at {w['point']}; "
                     f"{len(r['forward']['slower_than_flax'])} of "
                     f"{len(r['forward']['points'])} points slower than flax; PyTorch faster at "
                     f"{len(r['forward']['torch_faster'])}")
    return "\n".join(lines)


# -- plots ------------------------------------------------------------------------


def _measured(table, task, frameworks) -> bool:
    """Whether some framework has a time for `task` (an interrupted run may not)."""
    return any(_median(table, task, fw) is not None for fw in frameworks)


def plot_forward(table, tasks, frameworks, out_dir) -> list[str]:
    """One PNG per cell: time of a forward call against batch, length and units,
    and the throughput (sequences per second) against batch."""
    from rnn_jax.plots import figure, save

    paths = []
    fwd = [t for t in tasks if t["kind"] == "forward" and _measured(table, t, frameworks)]
    for cell in dict.fromkeys(t["cell"] for t in fwd):
        fig, axes = figure(1, 4, width=3.8, height=3.4)
        for ax, axis in zip(axes, ("batch", "steps", "units")):
            pts = sorted((t for t in fwd if t["cell"] == cell and workloads.on_sweep(t, axis)),
                         key=lambda t: t[axis])
            for fw in frameworks:
                xs = [t[axis] for t in pts if _median(table, t, fw) is not None]
                ys = [_median(table, t, fw) for t in pts if _median(table, t, fw) is not None]
                if xs:
                    ax.plot(xs, ys, marker="o", label=LABELS[fw])
            ax.set_xscale("log")
            ax.set_yscale("log")
            others = ", ".join(f"{k} {v}" for k, v in workloads.BASE.items() if k != axis)
            ax.set_xlabel(f"{axis} ({others})")
            ax.set_ylabel("seconds per forward call")
            ax.grid(True, alpha=0.3)
        pts = sorted((t for t in fwd if t["cell"] == cell and workloads.on_sweep(t, "batch")),
                     key=lambda t: t["batch"])
        for fw in frameworks:
            done = [t for t in pts if _median(table, t, fw) is not None]
            if done:
                axes[3].plot([t["batch"] for t in done],
                             [t["batch"] / _median(table, t, fw) for t in done],
                             marker="o", label=LABELS[fw])
        axes[3].set_xscale("log")
        axes[3].set_yscale("log")
        axes[3].set_xlabel("batch")
        axes[3].set_ylabel("sequences per second")
        axes[3].grid(True, alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{cell} forward pass, {workloads.FEATURES} input features")
        paths.append(save(fig, os.path.join(out_dir, f"forward_{cell}.png")))
    return paths


def plot_seeds(table, tasks, frameworks, out_dir, kind="seeds") -> list[str]:
    """Training time and models per second against the number of seeds
    (`kind`: `seeds`, sum3's training, or `reuters_seeds`, one Reuters epoch)."""
    from rnn_jax.plots import figure, save

    pts = sorted((t for t in tasks if t["kind"] == kind and _measured(table, t, frameworks)),
                 key=lambda t: t["num_seeds"])
    if not pts:
        return []
    fig, axes = figure(1, 2, width=4.6, height=3.6)
    for fw in frameworks:
        xs = [t["num_seeds"] for t in pts if _median(table, t, fw) is not None]
        ys = [_median(table, t, fw) for t in pts if _median(table, t, fw) is not None]
        if xs:
            axes[0].plot(xs, ys, marker="o", label=LABELS[fw])
            axes[1].plot(xs, np.asarray(xs) / np.asarray(ys), marker="o", label=LABELS[fw])
    for ax, label in zip(axes, ("training seconds (all seeds)", "models trained per second")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("seeds trained at once")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    t = pts[0]
    if kind == "reuters_seeds":
        axes[0].set_ylabel("seconds per epoch (all seeds)")
        fig.suptitle(f"Reuters {t['model']}(50), one epoch, batch 50")
        return [save(fig, os.path.join(out_dir, "reuters_seeds.png"))]
    fig.suptitle(f"sum3, {t['num_samples']} samples, {t['epochs']} epochs, batch "
                 f"{t['batch_size']}")
    return [save(fig, os.path.join(out_dir, "seeds.png"))]




# -- reuters_seeds and the notebook's table ---------------------------------------


def _records(outputs, fw, kind):
    return [r for r in (outputs.get(fw) or {}).get("results", [])
            if r["task"]["kind"] == kind and "times" in r]


def reuters_seeds_summary(outputs, tasks) -> dict:
    """`{"reuters_seeds": {seeds: {epoch_seconds, models_per_second, vs_1}, devices,
    layouts}}` from rnn_jax's median epoch times; `{}` when not run. `vs_1` is
    against the one-seed epochs measured beside that task (`one_seed_times`)
    where the worker gave them, else against the one-seed task's median."""
    recs = _records(outputs, "rnn_jax_fit", "reuters_seeds")
    if not recs:
        return {}
    med = {r["task"]["num_seeds"]: float(np.median(r["times"])) for r in recs}
    beside = {r["task"]["num_seeds"]: float(np.median(r["one_seed_times"]))
              for r in recs if r.get("one_seed_times")}

    def vs_1(s, v):
        one = beside.get(s) or med.get(1)
        return None if not one else v / one

    return {"reuters_seeds": {
        "per_seeds": {str(s): {"epoch_seconds": v, "models_per_second": s / v,
                               "vs_1": vs_1(s, v),
                               **({"one_seed_beside": beside[s]} if s in beside else {})}
                      for s, v in sorted(med.items())},
        "devices": max(r.get("devices", 1) for r in recs),
        "layouts": {str(r["task"]["num_seeds"]): r.get("layout", "") for r in recs}}}


def format_reuters_seeds(r) -> str:
    if "reuters_seeds" not in r:
        return ""
    rs = r["reuters_seeds"]
    lines = [f"reuters_seeds (rnn_jax, LSTM(50), one epoch, {rs['devices']} CPU devices):"]
    for s, e in rs["per_seeds"].items():
        vs = "-" if e["vs_1"] is None else f"{e['vs_1']:.2f}"
        beside = ("" if "one_seed_beside" not in e
                  else f" (one seed beside it: {e['one_seed_beside']:.3f} s)")
        lines.append(f"  {s:>3s} seeds: epoch {e['epoch_seconds']:.3f} s, "
                     f"{e['models_per_second']:.2f} models/s, epoch({s})/epoch(1) {vs}{beside}"
                     + (f"  [{rs['layouts'][s]}]" if rs["layouts"].get(s) else ""))
    return "\n".join(lines)


def notebook_table_summary(outputs, tasks) -> dict:
    """Total seconds of the notebook's table per framework (summed over its
    models' tasks) and rnn_jax's speed-up against each Keras; `{}` when not run."""
    out = {}
    for fw in ("rnn_jax_fit", "keras_tf", "keras_jax"):
        recs = [r for r in _records(outputs, fw, "notebook_table") if "total" in r]
        if recs:
            out[fw] = {"total_seconds": float(sum(r["total"] for r in recs)),
                       "models": int(sum(r.get("models", 1) for r in recs)),
                       "epochs": recs[0]["task"]["epochs"],
                       "estimated": bool(recs[0].get("estimated")),
                       "measured_epochs": recs[0].get("measured_epochs"),
                       "per_model": {r["task"]["model"]: r["total"] for r in recs}}
    if not out:
        return {}
    ours = out.get("rnn_jax_fit", {}).get("total_seconds")
    for fw in ("keras_tf", "keras_jax"):
        if ours and fw in out:
            out[f"speedup_vs_{fw}"] = out[fw]["total_seconds"] / ours
    return {"notebook_table": out}


def format_notebook_table(r) -> str:
    if "notebook_table" not in r:
        return ""
    nt = r["notebook_table"]
    lines = ["notebook table (4 Reuters models x 5 seeds):"]
    for fw in ("rnn_jax_fit", "keras_tf", "keras_jax"):
        if fw in nt:
            e = nt[fw]
            how = (f"estimated from {e['measured_epochs']} measured epochs" if e["estimated"]
                   else "measured end to end")
            lines.append(f"  {LABELS[fw]}: {e['total_seconds']:.1f} s for {e['models']} models "
                         f"x {e['epochs']} epochs ({how})")
    for fw in ("keras_tf", "keras_jax"):
        if f"speedup_vs_{fw}" in nt:
            lines.append(f"  rnn_jax speed-up vs {LABELS[fw]}: {nt[f'speedup_vs_{fw}']:.2f}x")
    return "\n".join(lines)
