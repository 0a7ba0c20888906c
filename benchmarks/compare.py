"""Side by side on one machine, in one invocation: rnn_jax, Keras 3 (TensorFlow
and JAX backends), Flax's own `nnx.RNN`, a hand-written `lax.scan` loop (the
floor) and PyTorch (when importable).

    python -m benchmarks.compare            # everything, about 10 minutes on 2 CPU cores
    python -m benchmarks.compare --quick    # a small subset, under 2 minutes

Workloads (`benchmarks.workloads` defines the data and sizes; each framework's
`benchmarks/frameworks/*.py` says exactly what it times):

1. `sum3`: notebook 000's training, 10,000 samples, batch 4, 5 epochs, Adam.
2. `reuters`: one epoch of notebook 004 (LSTM(50) and SimpleRNN(50), 1,395
   newswires, batch 50) on the real data.
3. `forward`: one forward call, SimpleRNN / GRU / LSTM, sweeping batch (1 to
   4096), length (10 to 1000) and units (1 to 1024) around batch 64, length
   100, 64 units, 16 input features.
4. `seeds`: sum3 with 1, 8, 64 and 512 models trained at once.

Each framework runs in its own subprocess (`benchmarks.worker`; Keras fixes
its backend at import), one after the other so they do not compete, and in
rounds, one per workload (every framework's sum3, then every framework's
Reuters, ...), so that a shared machine's drift during the run falls on all
frameworks alike rather than on whichever ran last (`--quick`: one round). Every
figure is the median of `--repeats` steady-state runs with min and max
(forward calls: at least `--repeats`, and more until they add up to
`workloads.FORWARD_MIN_SECONDS`, since sub-millisecond calls are noisy);
compile time (or the first call's extra time) is reported apart. Output: a
table on the terminal, `<out_dir>/results.json`, and PNG plots of how time
grows with batch, length, units and seeds.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks import report, workloads

FLAGS = flags.FLAGS
FRAMEWORKS, LABELS = report.FRAMEWORKS, report.LABELS
WORKLOADS = ("sum3", "reuters", "forward", "seeds")

flags.DEFINE_bool("quick", False, "a small subset that checks everything works (< 2 minutes)")
flags.DEFINE_integer("repeats", 5, "steady-state repeats of each measurement", lower_bound=1)
flags.DEFINE_list("frameworks", list(FRAMEWORKS), f"frameworks to run, of {FRAMEWORKS}")
flags.DEFINE_list("workloads", list(WORKLOADS), f"workloads to run, of {WORKLOADS}")
flags.DEFINE_string("out_dir", "benchmarks/results/compare", "where results.json and plots go")
flags.DEFINE_string("reuters_path", None, "reuters.npz (default: ../shared/data/reuters.npz)")
flags.DEFINE_integer("worker_timeout", 3600, "seconds before a framework's worker is stopped",
                     lower_bound=1)
flags.register_validator("frameworks", lambda v: set(v) <= set(FRAMEWORKS),
                         message=f"--frameworks must be names from {FRAMEWORKS}")
flags.register_validator("workloads", lambda v: set(v) <= set(WORKLOADS),
                         message=f"--workloads must be names from {WORKLOADS}")


# -- what to run ------------------------------------------------------------------


def make_tasks(quick: bool, repeats: int, workload_names, data_path=None):
    """The task list every framework is given (each skips what it does not support)."""
    tasks = []
    if "sum3" in workload_names:
        n, epochs = (1000, 1) if quick else (10000, 5)
        tasks.append(dict(kind="sum3", num_samples=n, epochs=epochs, batch_size=4,
                          repeats=1 if quick else min(repeats, 3)))
    if "reuters" in workload_names:
        for model in (("simple_rnn",) if quick else ("lstm", "simple_rnn")):
            tasks.append(dict(kind="reuters", model=model, repeats=repeats, data_path=data_path))
    if "forward" in workload_names:
        cells = ("lstm",) if quick else workloads.CELLS
        for p in workloads.forward_points(quick, cells):
            tasks.append(dict(kind="forward", features=workloads.FEATURES, repeats=repeats,
                              min_seconds=0.0 if quick else workloads.FORWARD_MIN_SECONDS, **p))
    if "seeds" in workload_names:
        n, epochs = (1000, 1) if quick else (10000, 5)
        for s in (workloads.QUICK_SEEDS if quick else workloads.SEEDS):
            tasks.append(dict(kind="seeds", num_seeds=s, num_samples=n, epochs=epochs,
                              batch_size=4, repeats=1 if quick else min(repeats, 3)))
    return tasks


def rounds(tasks, quick: bool):
    """The task list cut into rounds: one per workload kind, in task order
    (`quick`: all tasks in one round)."""
    if quick:
        return [tasks] if tasks else []
    kinds = list(dict.fromkeys(t["kind"] for t in tasks))
    return [[t for t in tasks if t["kind"] == k] for k in kinds]


def merge_outputs(parts) -> dict:
    """One framework's worker outputs of several rounds as one output: results
    in order, walls summed, failures joined, versions and unavailability from
    the first round that has them."""
    out = {"results": [], "wall": 0.0}
    failures = []
    for part in parts:
        for k in ("framework", "versions", "unavailable"):
            if k in part and k not in out:
                out[k] = part[k]
        out["results"] += part.get("results", [])
        out["wall"] += part.get("wall", 0.0)
        if "failure" in part:
            failures.append(part["failure"])
    if failures:
        out["failure"] = "; ".join(failures)
    return out


def run_worker(framework: str, tasks, tmp: str, timeout: int, tag: str = "") -> dict:
    """Runs `benchmarks.worker` for one framework; returns its results (what it
    measured before a timeout or a crash included)."""
    tasks_path = os.path.join(tmp, f"{framework}{tag}.tasks.json")
    out_path = os.path.join(tmp, f"{framework}{tag}.out.json")
    with open(tasks_path, "w") as f:
        json.dump(tasks, f)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", framework, tasks_path,
                               out_path], cwd=workloads.ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
        failure = None if proc.returncode == 0 else (
            f"exit status {proc.returncode}: {proc.stderr[-2000:]}")
    except subprocess.TimeoutExpired:
        failure = f"stopped after {timeout} s (--worker_timeout)"
    wall = time.perf_counter() - t0
    out = {"framework": framework, "results": []}
    if os.path.exists(out_path):
        with open(out_path) as f:
            out = json.load(f)
    if failure:
        out["failure"] = failure
    out["wall"] = wall
    return out


# -- main -------------------------------------------------------------------------


def machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    return info


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from rnn_jax.workdir import write_json, write_text

    tasks = make_tasks(FLAGS.quick, 2 if FLAGS.quick else FLAGS.repeats, FLAGS.workloads,
                       FLAGS.reuters_path)
    frameworks = [fw for fw in FRAMEWORKS if fw in FLAGS.frameworks]
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    parts = {fw: [] for fw in frameworks}
    with tempfile.TemporaryDirectory() as tmp:
        for i, round_tasks in enumerate(rounds(tasks, FLAGS.quick)):
            what = "all" if FLAGS.quick else round_tasks[0]["kind"]
            for fw in frameworks:
                if any("unavailable" in p for p in parts[fw]):
                    continue
                print(f"running {LABELS[fw]}: {what} ({len(round_tasks)} tasks) ...", flush=True)
                part = run_worker(fw, round_tasks, tmp, FLAGS.worker_timeout, tag=f".{i}")
                parts[fw].append(part)
                if "unavailable" in part:
                    print(f"  {LABELS[fw]} unavailable: {part['unavailable']}")
                if "failure" in part:
                    print(f"  {LABELS[fw]} failed: {part['failure']}")
                print(f"  {part['wall']:.0f} s", flush=True)
    outputs = {fw: merge_outputs(p) for fw, p in parts.items()}
    table = report.collect(outputs)
    present = [fw for fw in frameworks if "unavailable" not in outputs[fw]]
    r = report.ratios(table, tasks)
    text = (f"{time.strftime('%Y-%m-%d')}, {machine().get('cpu', platform.processor())}, "
            f"{os.cpu_count()} CPUs; seconds, median [min, max] of the steady-state runs\n"
            + report.format_table(table, tasks, present) + "\n\n"
            + report.format_throughput(table, tasks, present) + "\n\n"
            + report.format_ratios(r))
    print(text)
    plots = report.plot_forward(table, tasks, present, FLAGS.out_dir)
    plots += report.plot_seeds(table, tasks, present, FLAGS.out_dir)
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "quick": FLAGS.quick,
              "machine": machine(),
              "versions": {fw: out.get("versions") for fw, out in outputs.items()},
              "unavailable": {fw: out["unavailable"] for fw, out in outputs.items()
                              if "unavailable" in out},
              "failures": {fw: out["failure"] for fw, out in outputs.items()
                           if "failure" in out},
              "tasks": tasks, "results": list(table.values()), "ratios": r,
              "raw": outputs, "plots": plots}
    write_json(os.path.join(FLAGS.out_dir, "results.json"), result)
    write_text(os.path.join(FLAGS.out_dir, "table.txt"), text + "\n")
    print(f"wrote {FLAGS.out_dir}/results.json, table.txt and {len(plots)} plots")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    app.run(main)
