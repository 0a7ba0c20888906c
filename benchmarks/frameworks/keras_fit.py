"""Keras 3 `fit` and `predict_on_batch`, on whichever backend the worker chose.

The worker sets `KERAS_BACKEND` (`tensorflow` for `keras_tf`, `jax` for
`keras_jax`) before this module imports Keras. What is timed
(`time.perf_counter`, seconds):

- `sum3`: whole `model.fit` calls, each on a fresh model (model building and
  `compile()` outside the timing). `first` is the first fit of the process;
  `times` are later fits of fresh models, each of which traces its own train
  and test functions again, as a user pays it. `compile` estimates that
  tracing from the first fit: its first epoch minus the median of its other
  epochs (absent with a single epoch).
- `reuters`: one `fit(epochs=1 + repeats)`; each epoch's wall time, from
  `on_epoch_begin` to `on_epoch_end`. `first` is epoch 1 (tracing included).
- `notebook_table`: notebook 004's table for one model, estimated: one
  `fit(epochs=1 + measure_epochs)`; a model's time is the first epoch
  (tracing included) + (epochs - 1) x the median later epoch, times
  `num_seeds` models trained one after another.
- `forward`: `model.predict_on_batch(x)` on a fixed input, the result turned
  into a NumPy array. `first` is the first call (tracing included).
"""

from __future__ import annotations

import importlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import workloads  # noqa: E402

CELLS = {"simple_rnn": keras.layers.SimpleRNN, "gru": keras.layers.GRU,
         "lstm": keras.layers.LSTM}


def versions() -> dict:
    backend = keras.backend.backend()
    out = {"keras": keras.__version__, "backend": backend}
    try:
        out[backend] = importlib.import_module(backend).__version__
    except ImportError:
        pass
    return out


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch, from `on_epoch_begin` to `on_epoch_end`."""

    def __init__(self):
        super().__init__()
        self.times = []
        self._t0 = None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._t0)


def _sum3_model():
    model = keras.Sequential([keras.Input((3, 1)), keras.layers.SimpleRNN(1, activation="linear")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mean_squared_error")
    return model


def sum3(num_samples, epochs, batch_size, repeats):
    """Notebook 000: whole `fit` calls, each on a fresh model."""
    x, y = workloads.sum3_data(num_samples)

    def one_fit(seed, callbacks=None):
        keras.utils.set_random_seed(seed)
        model = _sum3_model()
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_split=0.2,
                  shuffle=True, verbose=0, callbacks=callbacks)
        return time.perf_counter() - t0

    timer = EpochTimer()
    first = one_fit(0, [timer])
    times = [one_fit(r) for r in range(1, repeats + 1)]
    out = {"first": first, "times": times,
           "note": "whole fit() of a fresh model each time; every Keras fit of a fresh "
                   "model traces its own train/test functions, so times include that "
                   "tracing; compile = first epoch minus median later epoch of the first fit"}
    if len(timer.times) > 1:
        out["compile"] = timer.times[0] - float(np.median(timer.times[1:]))
    return out


def _reuters_net(model, x, y):
    """Notebook 004's models: `vanilla`/`simple_rnn`, `stacked_vanilla`, `lstm`,
    `stacked_lstm` (50 units) -> Dense(46) softmax, compiled."""
    cell = keras.layers.LSTM if "lstm" in model else keras.layers.SimpleRNN
    rnns = ([cell(50, return_sequences=True)] if model.startswith("stacked") else []) + [cell(50)]
    net = keras.Sequential([keras.Input(x.shape[1:]), *rnns,
                            keras.layers.Dense(y.shape[-1], activation="softmax")])
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    return net


def _reuters_epochs(model, epochs, data_path=None):
    x, y = workloads.reuters_data(data_path)
    keras.utils.set_random_seed(0)
    net = _reuters_net(model, x, y)
    timer = EpochTimer()
    net.fit(x, y, batch_size=50, epochs=epochs, shuffle=True, verbose=0, callbacks=[timer])
    return timer.times


def reuters(model, repeats, data_path=None):
    """Notebook 004: epoch times of one `fit(epochs=1 + repeats)`."""
    times = _reuters_epochs(model, 1 + repeats, data_path)
    return {"first": times[0], "times": times[1:],
            "note": "per-epoch wall time of one fit(); the first epoch includes tracing"}


def notebook_table(model, epochs, num_seeds, measure_epochs=3, data_path=None):
    """Notebook 004's table for one model, estimated from `measure_epochs` epochs."""
    times = _reuters_epochs(model, 1 + measure_epochs, data_path)
    steady = float(np.median(times[1:]))
    one = times[0] + (epochs - 1) * steady
    return {"first": times[0], "times": times[1:], "total": one * num_seeds,
            "models": num_seeds, "estimated": True, "measured_epochs": measure_epochs,
            "note": f"estimated from {measure_epochs} measured epochs: (first epoch + "
                    f"{epochs - 1} x median epoch) x {num_seeds} models one after another"}


def forward(cell, batch, steps, units, features, repeats, min_seconds=0.0):
    """One forward call `(B, T, D) -> (B, U)` through `predict_on_batch`."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((steps, features)), CELLS[cell](units)])
    x = workloads.forward_input(batch, steps, features)

    def call():
        t0 = time.perf_counter()
        np.asarray(model.predict_on_batch(x))
        return time.perf_counter() - t0

    first = call()
    times = workloads.repeat_calls(call, repeats, min_seconds)
    return {"first": first, "times": times,
            "note": "model.predict_on_batch (Keras default layer settings)"}
