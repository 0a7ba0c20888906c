"""Side by side on one machine, in one invocation: rnn_jax, Keras 3 (TensorFlow
and JAX backends), Flax's own `nnx.RNN`, a hand-written `lax.scan` loop (the
floor) and PyTorch (when importable).

    python -m benchmarks.compare            # everything, 10 to 15 minutes on 2 CPU cores
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
5. `reuters_seeds` (rnn_jax only): the Reuters LSTM(50) epoch with 1, 2, 5, 16
   and 64 seeds trained at once (`fit(num_seeds=S)` over every core's host
   device), models per second = S / epoch time, and the epoch against one
   seed's epoch measured just before and after it in the same worker.
6. `notebook_table` (not in the default list; `--workloads=notebook_table`):
   notebook 004's four models x 5 seeds x `--notebook_epochs` (200) epochs;
   rnn_jax end to end (a model's 5 seeds in one fit), Keras estimated from a
   few measured epochs (20 models one after another).

Each framework runs in its own subprocess (`benchmarks.worker`; Keras fixes
its backend at import), all started at the beginning and kept up; each task
(one forward point, one Reuters epoch, ...) goes to every framework in turn,
one at a time so that they do not compete, in an order rotated from task to
task (`run_interleaved`). So every task is measured by every framework within
seconds of the others, and a shared machine's drift during the run (more
than 2x within two hours on one 2-core VM measured) falls on all of them alike
rather than on whichever ran its workload last. Every
figure is the median of `--repeats` steady-state runs with min and max
(forward calls: at least `--repeats`, and more until they add up to
`workloads.FORWARD_MIN_SECONDS`, since sub-millisecond calls are noisy);
compile time (or the first call's extra time) is reported apart. Output: a
table on the terminal, `<out_dir>/results.json`, and PNG plots of how time
grows with batch, length, units and seeds. Interrupted (Ctrl-C, or SIGTERM
from a time limit), it stops the workers and still writes all of that for
the tasks done so far, and exits with status 1.
"""

from __future__ import annotations

import json
import os
import platform
import select
import signal
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks import report, workloads

FLAGS = flags.FLAGS
FRAMEWORKS, LABELS = report.FRAMEWORKS, report.LABELS
WORKLOADS = ("sum3", "reuters", "forward", "seeds", "reuters_seeds", "notebook_table")
DEFAULT_WORKLOADS = WORKLOADS[:-1]  # the notebook's table takes ~half an hour

flags.DEFINE_bool("quick", False, "a small subset that checks everything works (< 2 minutes)")
flags.DEFINE_integer("repeats", 5, "steady-state repeats of each measurement", lower_bound=1)
flags.DEFINE_list("frameworks", list(FRAMEWORKS), f"frameworks to run, of {FRAMEWORKS}")
flags.DEFINE_integer("notebook_epochs", None, "epochs of notebook_table (default 200; "
                     "--quick: 2)", lower_bound=1)
flags.DEFINE_list("workloads", list(DEFAULT_WORKLOADS), f"workloads to run, of {WORKLOADS}")
flags.DEFINE_string("out_dir", "benchmarks/results/compare", "where results.json and plots go")
flags.DEFINE_string("reuters_path", None, "reuters.npz (default: ../shared/data/reuters.npz)")
flags.DEFINE_integer("task_timeout", 1800, "seconds one framework may take for one task before "
                     "its worker is stopped", lower_bound=1)
flags.register_validator("frameworks", lambda v: set(v) <= set(FRAMEWORKS),
                         message=f"--frameworks must be names from {FRAMEWORKS}")
flags.register_validator("workloads", lambda v: set(v) <= set(WORKLOADS),
                         message=f"--workloads must be names from {WORKLOADS}")


# -- what to run ------------------------------------------------------------------


def make_tasks(quick: bool, repeats: int, workload_names, data_path=None,
               notebook_epochs=None):
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
    if "reuters_seeds" in workload_names:
        # one worker, consecutive tasks: the seed counts side by side
        for s in (workloads.QUICK_REUTERS_SEEDS if quick else workloads.REUTERS_SEEDS):
            tasks.append(dict(kind="reuters_seeds", num_seeds=s, model="lstm",
                              repeats=1 if quick else min(repeats, 3), data_path=data_path))
    if "notebook_table" in workload_names:
        epochs = notebook_epochs or (2 if quick else 200)
        for m in workloads.NOTEBOOK_MODELS:
            tasks.append(dict(kind="notebook_table", model=m, epochs=epochs,
                              num_seeds=workloads.NOTEBOOK_SEEDS,
                              measure_epochs=1 if quick else 3, data_path=data_path))
    return tasks


def turn_order(frameworks, i: int) -> list:
    """The frameworks in the order they run task `i`: rotated by one each task,
    so that none is always first or last."""
    k = i % len(frameworks) if frameworks else 0
    return list(frameworks[k:]) + list(frameworks[:k])


class Worker:
    """One framework's `benchmarks.worker` process, serving tasks one at a time.

    `out` collects what the framework reported: `versions` or `unavailable`,
    the task records in order, `wall` (seconds spent in its tasks) and a
    `failure` when the worker crashed or a task ran past its timeout (the
    worker is then stopped and given no more tasks).
    """

    def __init__(self, framework: str, log_dir: str):
        self.framework = framework
        self.out = {"framework": framework, "results": [], "wall": 0.0}
        self._log_path = os.path.join(log_dir, f"{framework}.log")
        self._log = open(self._log_path, "w")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", framework], cwd=workloads.ROOT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True)

    def wait_ready(self, timeout: float) -> None:
        """Reads the worker's first line: its versions, or that it is unavailable."""
        header = self._read(timeout)
        if header is None:
            self._fail("did not start", timeout)
        else:
            self.out.update(header)
            if "unavailable" in header:
                self.close()

    @property
    def serving(self) -> bool:
        return "failure" not in self.out and "unavailable" not in self.out

    def run(self, task: dict, timeout: float) -> None:
        """Gives the worker one task and records its answer."""
        t0 = time.perf_counter()
        try:
            self._proc.stdin.write(json.dumps(task) + "\n")
            self._proc.stdin.flush()
            record = self._read(timeout)
        except OSError:  # the worker has gone
            record = None
        self.out["wall"] += time.perf_counter() - t0
        if record is None:
            self._fail(f"task {task}", timeout)
        else:
            self.out["results"].append(record)

    def _read(self, timeout: float):
        """The worker's next JSON line; None after `timeout` seconds or if it exited.
        (The worker writes one line per request, so none waits in a buffer.)"""
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self._proc.stdout.readline()
        if not line:  # the worker closed its output: wait for its exit status
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            return None
        return json.loads(line)

    def _fail(self, what: str, timeout: float) -> None:
        if self._proc.poll() is None:
            self.out["failure"] = f"{what}: stopped after {timeout:.0f} s (--task_timeout)"
        else:
            self._log.flush()
            with open(self._log_path) as f:
                tail = f.read()[-2000:]
            self.out["failure"] = f"{what}: exit status {self._proc.returncode}: {tail}"
        self.close()

    def close(self) -> None:
        """Ends the worker: end of input, or killed if it is still busy."""
        if self._proc.poll() is None:
            if "failure" in self.out:
                self._proc.kill()
            else:
                try:
                    self._proc.stdin.close()
                except OSError:
                    pass
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


def run_interleaved(frameworks, tasks, log_dir: str, timeout: float, pause: float = 0.05,
                    progress=print) -> dict:
    """Every task given to every framework's worker in turn (`turn_order`);
    returns `{framework: Worker.out}`.

    All workers stay up for the whole run, so each task is measured by every
    framework within seconds of the others, and the drift of a shared machine
    falls on all of them alike. `pause` seconds before each task let the
    previous worker's thread pools go idle.

    Interrupted (KeyboardInterrupt: Ctrl-C, or SIGTERM under `main`), it
    stops the workers and returns what they answered so far, every worker
    still serving marked with the failure "interrupted after i of n tasks",
    so that the tasks already measured are reported rather than lost.
    """
    workers = {}
    done = 0
    try:
        for fw in frameworks:  # all start at once: their imports overlap
            workers[fw] = Worker(fw, log_dir)
        for fw in frameworks:
            workers[fw].wait_ready(timeout)
            if "unavailable" in workers[fw].out:
                progress(f"  {LABELS[fw]} unavailable: {workers[fw].out['unavailable']}")
        for i, task in enumerate(tasks):
            walls = []
            for fw in turn_order(frameworks, i):
                w = workers[fw]
                if not w.serving:
                    continue
                time.sleep(pause)
                before = w.out["wall"]
                w.run(task, timeout)
                walls.append(f"{LABELS[fw]} {w.out['wall'] - before:.1f} s")
                if "failure" in w.out:
                    progress(f"  {LABELS[fw]} failed: {w.out['failure']}")
            done = i + 1
            progress(f"[{done}/{len(tasks)}] {report.task_label(task)}: " + ", ".join(walls))
    except KeyboardInterrupt:
        where = f"interrupted after {done} of {len(tasks)} tasks"
        progress(f"{where}: stopping the workers; the tasks done so far are reported")
        for w in workers.values():
            if w.serving:
                w.out["failure"] = where
    finally:
        for w in workers.values():
            w.close()
    return {fw: w.out for fw, w in workers.items()}


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


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from rnn_jax.workdir import write_json, write_text

    tasks = make_tasks(FLAGS.quick, 2 if FLAGS.quick else FLAGS.repeats, FLAGS.workloads,
                       FLAGS.reuters_path, FLAGS.notebook_epochs)
    frameworks = [fw for fw in FRAMEWORKS if fw in FLAGS.frameworks]
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    # SIGTERM (a time limit, `kill`) interrupts like Ctrl-C: the tasks done so
    # far are still reported (`run_interleaved`).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            outputs = run_interleaved(frameworks, tasks, tmp, FLAGS.task_timeout)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    table = report.collect(outputs)
    present = [fw for fw in frameworks if "unavailable" not in outputs[fw]]
    r = report.ratios(table, tasks)
    r.update(report.reuters_seeds_summary(outputs, tasks))
    r.update(report.notebook_table_summary(outputs, tasks))
    devices = sorted({out["versions"]["device"] for out in outputs.values()
                      if (out.get("versions") or {}).get("device")})
    text = (f"{time.strftime('%Y-%m-%d')}, {machine().get('cpu', platform.processor())}, "
            f"{os.cpu_count()} CPUs, device {' / '.join(devices) or 'cpu'}; seconds, "
            f"median [min, max] of the steady-state runs\n"
            + report.format_table(table, tasks, present) + "\n\n"
            + report.format_throughput(table, tasks, present) + "\n\n"
            + report.format_ratios(r) + "\n"
            + report.format_reuters_seeds(r) + "\n"
            + report.format_notebook_table(r))
    print(text)
    plots = report.plot_forward(table, tasks, present, FLAGS.out_dir)
    plots += report.plot_seeds(table, tasks, present, FLAGS.out_dir)
    plots += report.plot_seeds(table, tasks, present, FLAGS.out_dir, kind="reuters_seeds")
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
