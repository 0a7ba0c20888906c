"""Side-by-side: the fixed points of many seeds in one compiled program,
against the same search run one seed at a time (FixedPointFinder's way).

    python -m benchmarks.fixed_points             # 64 seeds x 1024 candidates, GRU(64)
    python -m benchmarks.fixed_points --quick     # a small run that checks it all works

A GRU(64) is trained for one epoch on a flip-flop task with `--seeds` seeds at
once (`rnn_jax.fit`: the weights are those of real, if barely trained,
networks). Then `rnn_jax.dynamics.find_fixed_points` searches `--candidates`
random states per seed under zero input with Adam (FixedPointFinder's
algorithm), for exactly `--iters` steps (the tolerance is set so that no
candidate stops early, and nothing is kept: the search alone is timed):

- `population`: `find_fixed_points(fit_result, ...)`: every seed and
  candidate in one program (`vmap` over the seeds);
- `loop`: `find_fixed_points(fit_result.model(i), ...)` for each seed in
  turn, the same code one seed at a time.

Each is run `--repeats` times after a first run that compiles; the table
gives the median [min, max] seconds of the steady-state runs, the compile
time apart, and the ratio loop / population. Prints it and writes `--out`
(JSON).
"""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "a small run: 4 seeds, 128 candidates, 16 units, 20 steps")
flags.DEFINE_integer("seeds", 64, "seeds analysed", lower_bound=1)
flags.DEFINE_integer("candidates", 1024, "candidate states per seed", lower_bound=1)
flags.DEFINE_integer("units", 64, "GRU units", lower_bound=1)
flags.DEFINE_integer("iters", 100, "Adam steps of the search", lower_bound=1)
flags.DEFINE_integer("repeats", 3, "steady-state repeats of each measurement", lower_bound=1)
flags.DEFINE_string("out", "benchmarks/results/fixed_points.json", "where the JSON goes")


def trained(seeds: int, units: int):
    import rnn_jax
    from rnn_jax.datasets import tasks

    x, y = tasks.flip_flop(256, 20, 3, pulse_prob=0.1, seed=0)

    def make(rngs):
        return rnn_jax.Sequential([rnn_jax.GRU(units, return_sequences=True, rngs=rngs),
                                   rnn_jax.Dense(3, rngs=rngs)], input_shape=(20, 3))

    return rnn_jax.fit(make, x, y, loss="mean_squared_error", batch_size=64, epochs=1,
                       num_seeds=seeds, verbose=0)


def timed(fn, repeats: int):
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, times


def main(argv):
    del argv
    from rnn_jax import dynamics

    seeds, candidates, units, iters = ((4, 128, 16, 20) if FLAGS.quick else
                                       (FLAGS.seeds, FLAGS.candidates, FLAGS.units, FLAGS.iters))
    repeats = 1 if FLAGS.quick else FLAGS.repeats
    result = trained(seeds, units)
    h0 = np.asarray(jax.random.normal(jax.random.key(0), (seeds, candidates, units)), np.float32)
    options = dict(method="adam", learning_rate=1e-2, max_iters=iters, tol_q=1e-30)
    inputs = np.zeros(3)

    def population():
        return dynamics.find_fixed_points(result, inputs, h0, **options)

    def loop():
        return [dynamics.find_fixed_points(result.model(i), inputs, h0[i], **options)
                for i in range(seeds)]

    rows = {}
    for name, fn in (("population", population), ("loop", loop)):
        first, times = timed(fn, repeats)
        rows[name] = {"first_seconds": first, "times": times,
                      "median_seconds": float(np.median(times)),
                      "compile_seconds": first - float(np.median(times))}
    ratio = rows["loop"]["median_seconds"] / rows["population"]["median_seconds"]
    device = jax.devices()[0]
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
               f"{device.platform} ({device.device_kind}), {len(jax.devices())} device(s)")
    print(f"fixed points of {seeds} seeds x {candidates} candidates, GRU({units}), {iters} Adam "
          f"steps; {machine}")
    for name, r in rows.items():
        print(f"  {name:>10}: {r['median_seconds']:.3f} s [{min(r['times']):.3f}, "
              f"{max(r['times']):.3f}] (+{r['compile_seconds']:.2f} s to compile)")
    print(f"  loop / population: {ratio:.2f}x")
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    with open(FLAGS.out, "w") as f:
        json.dump({"seeds": seeds, "candidates": candidates, "units": units, "iters": iters,
                   "machine": machine, "jax": jax.__version__, "rows": rows,
                   "loop_over_population": ratio}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
