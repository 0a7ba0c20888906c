"""rnn_jax in `benchmarks.compare`: `rnn_jax.fit` and the layers under `jax.jit`.

What is timed:
- `sum3`, `seeds`: whole `rnn_jax.fit` calls (fresh weights, seed `r` for
  repeat `r`) with fit's default compiler options (the toy experiments' one-seed
  runs compile with `xla_backend_optimization_level=0`); `compile` is fit's
  compile time (the init and epoch programs), `times` its training time (all
  epochs: programs, validation, logs copied to the host).
- `reuters`: one `fit` of `1 + repeats` epochs with `experiments.reuters`'
  model; `first` is the compile plus epoch 1, `times` the later epochs.
- `reuters_seeds`: one `fit(num_seeds=S)` of `1 + repeats` epochs of the
  Reuters LSTM; `times` its later epochs (all S seeds at once); `layout` fit's
  compile line (the devices, mesh and seed padding). For S > 1 a one-seed fit
  runs just before and just after it in the same worker, and `one_seed_times`
  holds both fits' later epochs: the ratio's baseline, side by side (one
  seed's epoch drifts by tens of percent between processes on a shared VM).
- `notebook_table`: notebook 004's table, one model's seeds at once, end to end
  (one `fit` call: compile and every epoch); `times` is `[that total]`.
- `forward`: `jax.jit` of the layer's call (`nnx.split` once, `nnx.merge`
  inside the jitted function), `(B, T, D) -> (B, U)`, until the result is ready.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from flax import nnx

import rnn_jax
from benchmarks import workloads

# Every core, as the experiments use them (experiments.common.setup): one JAX
# CPU device per core, before JAX runs anything, unless XLA_FLAGS already fix a
# count. `fit` trains on min(num_seeds, devices) devices, so the one-seed tasks
# (sum3, reuters) still run on one device, and `forward`'s jit on the default one.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    rnn_jax.use_cpu_cores()


LAYERS = {"simple_rnn": rnn_jax.SimpleRNN, "gru": rnn_jax.GRU, "lstm": rnn_jax.LSTM}


def versions():
    import flax

    return {"rnn_jax": rnn_jax.__version__,
            "jax": jax.__version__, "flax": flax.__version__, "device": workloads.jax_device(),
            "cpu_devices": len(jax.devices("cpu"))}


def _sum3_fits(num_samples, epochs, batch_size, repeats, num_seeds):
    from experiments.sum3 import make_model_fn

    x, y = workloads.sum3_data(num_samples)
    runs = []
    for r in range(repeats + 1):
        res = rnn_jax.fit(make_model_fn("scalar"), x, y, loss="mean_squared_error",
                          optimizer=rnn_jax.optimizers.adam(1e-3), batch_size=batch_size,
                          epochs=epochs, validation_split=0.2, seed=r * num_seeds,
                          num_seeds=num_seeds, verbose=0)
        runs.append((res.compile_seconds, res.train_seconds))
    (c0, t0), rest = runs[0], runs[1:]
    return {"first": c0 + t0, "compile": float(np.median([c for c, _ in rest])),
            "times": [t for _, t in rest],
            "note": "fit's training time; compile reported apart (each fit compiles)"}


def sum3(num_samples, epochs, batch_size, repeats):
    return _sum3_fits(num_samples, epochs, batch_size, repeats, 1)


def seeds(num_seeds, num_samples, epochs, batch_size, repeats):
    return _sum3_fits(num_samples, epochs, batch_size, repeats, num_seeds)


def _reuters_fit(model, epochs, num_seeds=1, data_path=None, seed=0):
    """`(fit's result, its printed lines)`: notebook 004's model on the real data."""
    from experiments.reuters import make_model_fn

    x, y = workloads.reuters_data(data_path)
    name = {"simple_rnn": "vanilla"}.get(model, model)
    lines = []
    res = rnn_jax.fit(make_model_fn(name, "raw", x.shape[1]), x, y,
                      loss="categorical_crossentropy",
                      optimizer=rnn_jax.optimizers.adam(1e-3), batch_size=50,
                      epochs=epochs, seed=seed, num_seeds=num_seeds,
                      verbose=1 if num_seeds > 1 else 0, print_fn=lines.append)
    return res, lines


def reuters(model, repeats, data_path=None):
    res, _ = _reuters_fit(model, 1 + repeats, 1, data_path)
    return {"first": res.compile_seconds + res.epoch_seconds[0],
            "compile": res.compile_seconds, "times": list(res.epoch_seconds[1:])}


def reuters_seeds(num_seeds, repeats, model="lstm", data_path=None):
    def one_seed():
        return [] if num_seeds == 1 else list(
            _reuters_fit(model, 1 + repeats, 1, data_path)[0].epoch_seconds[1:])

    before = one_seed()
    res, lines = _reuters_fit(model, 1 + repeats, num_seeds, data_path)
    after = one_seed()
    return {"first": res.compile_seconds + res.epoch_seconds[0],
            "compile": res.compile_seconds, "times": list(res.epoch_seconds[1:]),
            **({"one_seed_times": before + after} if num_seeds > 1 else {}),
            "devices": len(jax.devices()),
            "layout": next((ln for ln in lines if ln.startswith("compiled")), ""),
            "note": "epoch time of one fit(num_seeds=S), all seeds at once"}


def notebook_table(model, epochs, num_seeds, measure_epochs=None, data_path=None):
    t0 = time.perf_counter()
    res, lines = _reuters_fit(model, epochs, num_seeds, data_path)
    total = time.perf_counter() - t0
    return {"first": total, "times": [total], "compile": res.compile_seconds,
            "total": total, "models": num_seeds, "devices": len(jax.devices()),
            "layout": next((ln for ln in lines if ln.startswith("compiled")), ""),
            "note": f"end to end: one fit of {num_seeds} seeds x {epochs} epochs"}


def forward(cell, batch, steps, units, features, repeats, min_seconds=0.0):
    layer = LAYERS[cell](units, input_shape=(steps, features), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(layer)
    x = jax.device_put(workloads.forward_input(batch, steps, features))
    exe, compile_s = workloads.compile_timed(
        lambda state, x: nnx.merge(graphdef, state)(x), state, x)
    _, first = workloads.call_timed(exe, state, x)
    times = workloads.repeat_calls(lambda: workloads.call_timed(exe, state, x)[1], repeats,
                                   min_seconds)
    return workloads.compiled_result(compile_s, first, times)
