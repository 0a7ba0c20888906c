"""rnn_jax in `benchmarks.compare`: `rnn_jax.fit` and the layers under `jax.jit`.

What is timed:
- `sum3`, `seeds`: whole `rnn_jax.fit` calls (fresh weights, seed `r` for
  repeat `r`) with fit's default compiler options (the toy experiments' one-seed
  runs compile with `xla_backend_optimization_level=0`); `compile` is fit's
  compile time (the init and epoch programs), `times` its training time (all
  epochs: programs, validation, logs copied to the host).
- `reuters`: one `fit` of `1 + repeats` epochs with `experiments.reuters`'
  model; `first` is the compile plus epoch 1, `times` the later epochs.
- `forward`: `jax.jit` of the layer's call (`nnx.split` once, `nnx.merge`
  inside the jitted function), `(B, T, D) -> (B, U)`, until the result is ready.
"""

from __future__ import annotations


import jax
import numpy as np
from flax import nnx

import rnn_jax
from benchmarks import workloads


LAYERS = {"simple_rnn": rnn_jax.SimpleRNN, "gru": rnn_jax.GRU, "lstm": rnn_jax.LSTM}


def versions():
    import flax

    return {"rnn_jax": rnn_jax.__version__,
            "jax": jax.__version__, "flax": flax.__version__, "device": workloads.jax_device()}


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


def reuters(model, repeats, data_path=None):
    from experiments.reuters import make_model_fn

    x, y = workloads.reuters_data(data_path)
    name = {"simple_rnn": "vanilla"}.get(model, model)
    res = rnn_jax.fit(make_model_fn(name, "raw", x.shape[1]), x, y,
                      loss="categorical_crossentropy",
                      optimizer=rnn_jax.optimizers.adam(1e-3), batch_size=50,
                      epochs=1 + repeats, verbose=0)
    return {"first": res.compile_seconds + res.epoch_seconds[0],
            "compile": res.compile_seconds, "times": list(res.epoch_seconds[1:])}


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
