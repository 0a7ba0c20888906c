"""Side-by-side: notebook 000's sum3 training in rnn_jax and in Keras `fit`.

    python -m benchmarks.sum3                 # the notebook's setup, ~1 minute
    python -m benchmarks.sum3 --quick         # a small run that checks it all works

In one invocation, on the same data and hyperparameters (10,000 samples,
`SimpleRNN(1, 'linear')`, MSE, Adam 1e-3, batch 4, 5 epochs,
validation_split 0.2):

- rnn_jax `fit`: compile time and training time reported apart (median,
  min and max over `--repeats` runs, each after its own compile);
- Keras 3 `fit` with the TensorFlow backend, in a subprocess (Keras fixes its
  backend at import), each repeat a fresh model: the whole `fit` call;
- the whole command `python -m experiments.sum3 --flagfile=experiments/flags/sum3.flags`
  with `--num_seeds=1` (the notebook's one run) and with `--num_seeds=64` (the
  flagfile's), imports, compilation, outputs and plots included, each in a
  fresh process: `cold` with an empty JAX
  compilation cache (a first run), `warm` run again with that cache.

Prints a table and writes `--out` (JSON).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks.report import stats

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "a small, fast run (1,000 samples, 1 epoch, 1 repeat)")
flags.DEFINE_integer("repeats", 3, "repeats of each measurement", lower_bound=1)
flags.DEFINE_string("out", "benchmarks/results/sum3.json", "where the JSON results go")
flags.DEFINE_bool("keras", True, "also time Keras (TensorFlow backend) in a subprocess")
flags.DEFINE_bool("commands", True, "also time the whole experiment commands")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KERAS_SCRIPT = r"""
import json, os, sys, time
os.environ["KERAS_BACKEND"] = "tensorflow"
import numpy as np, keras
d = np.load(sys.argv[1]); cfg = json.loads(sys.argv[2])
times = []
for r in range(cfg["repeats"]):
    keras.utils.set_random_seed(r)
    m = keras.Sequential([keras.Input((3, 1)), keras.layers.SimpleRNN(1, activation="linear")])
    m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mean_squared_error")
    t0 = time.perf_counter()
    m.fit(d["x"], d["y"], batch_size=cfg["batch_size"], epochs=cfg["epochs"],
          validation_split=0.2, verbose=0)
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "keras": keras.__version__,
                  "backend": keras.backend.backend()}))
"""


def time_rnn_jax(x, y, epochs, repeats):
    import rnn_jax
    from experiments.sum3 import make_model_fn

    compile_s, train_s = [], []
    for r in range(repeats):
        res = rnn_jax.fit(make_model_fn("scalar"), x, y, loss="mean_squared_error",
                          optimizer=rnn_jax.optimizers.adam(1e-3), batch_size=4, epochs=epochs,
                          validation_split=0.2, seed=r, verbose=0,
                          compiler_options={"xla_backend_optimization_level": 0})
        compile_s.append(res.compile_seconds)
        train_s.append(res.train_seconds)
    return {"compile": stats(compile_s), "train": stats(train_s)}


def time_keras(x, y, epochs, repeats):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npz")
        np.savez(path, x=x, y=y)
        proc = subprocess.run(
            [sys.executable, "-c", KERAS_SCRIPT, path,
             json.dumps({"epochs": epochs, "batch_size": 4, "repeats": repeats})],
            capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    if proc.returncode != 0:
        raise RuntimeError(f"the Keras run failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"fit": stats(out["times"]), "keras": out["keras"], "backend": out["backend"]}


def time_command(args, repeats):
    """Whole-command wall times: `cold` with an empty compilation cache, `warm` rerun."""
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for times, tag in ((cold, "cold"), (warm, "warm")):
                t0 = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-m", "experiments.sum3", *args,
                     f"--workdir={tmp}/run{r}{tag}", f"--compilation_cache={tmp}/cache{r}"],
                    cwd=ROOT, capture_output=True, text=True)
                times.append(time.perf_counter() - t0)
                if proc.returncode != 0:
                    raise RuntimeError(f"experiments.sum3 {args} failed:\n{proc.stderr[-3000:]}")
    return {"cold": stats(cold), "warm": stats(warm)}


def main(argv):
    del argv
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    import jax

    import rnn_jax

    n, epochs, repeats = (1000, 1, 1) if FLAGS.quick else (10000, 5, FLAGS.repeats)
    x, y, _ = rnn_jax.datasets.digits.sum_of_digits(n, seed=0, encoding="scalar")
    res = {"setup": {"samples": n, "epochs": epochs, "batch_size": 4, "repeats": repeats},
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "python": platform.python_version(), "jax": jax.__version__,
                       "device": str(jax.devices()[0])},
           "date": time.strftime("%Y-%m-%d"),
           "rnn_jax": time_rnn_jax(x, y, epochs, repeats)}
    if FLAGS.keras:
        res["keras_tf"] = time_keras(x, y, epochs, repeats)
        res["speedup_train_vs_keras_tf"] = (res["keras_tf"]["fit"]["median"]
                                            / res["rnn_jax"]["train"]["median"])
        res["speedup_compile_and_train_vs_keras_tf"] = res["keras_tf"]["fit"]["median"] / (
            res["rnn_jax"]["train"]["median"] + res["rnn_jax"]["compile"]["median"])
    if FLAGS.commands:
        base = ["--flagfile=experiments/flags/sum3.flags"]
        extra = [f"--num_samples={n}", f"--epochs={epochs}"] if FLAGS.quick else []
        res["command_1_seed"] = time_command(base + extra + ["--num_seeds=1"], repeats)
        res["command_64_seeds"] = time_command(base + extra + ["--num_seeds=64"], repeats)

    rows = [("rnn_jax compile", res["rnn_jax"]["compile"]),
            ("rnn_jax training", res["rnn_jax"]["train"])]
    if "keras_tf" in res:
        rows.append(("Keras fit (TensorFlow)", res["keras_tf"]["fit"]))
    if "command_1_seed" in res:
        for label, key in (("1 seed", "command_1_seed"), ("64 seeds", "command_64_seeds")):
            rows += [(f"whole command, {label}, cold", res[key]["cold"]),
                     (f"whole command, {label}, warm", res[key]["warm"])]
    print(f"sum3: {n} samples, batch 4, {epochs} epochs; {res['machine']['cpus']} CPUs; "
          f"median [min, max] of {repeats}")
    for name, s in rows:
        print(f"  {name:26s} {s['median']:9.3f} s  [{s['min']:.3f}, {s['max']:.3f}]")
    if "speedup_train_vs_keras_tf" in res:
        print(f"  training speed-up vs Keras-TF fit: {res['speedup_train_vs_keras_tf']:.0f}x "
              f"({res['speedup_compile_and_train_vs_keras_tf']:.0f}x counting our compile)")
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    from rnn_jax.workdir import write_json
    write_json(FLAGS.out, res)
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
