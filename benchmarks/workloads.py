"""The work every framework in `benchmarks.compare` runs: data, sizes, grids.

The data are NumPy arrays (made with `rnn_jax.datasets`), so that each
framework's worker builds its own model around the same arrays:

- `sum3`: notebook 000. `x (N, 3, 1)` float32 digits, `y (N, 1)` their sum;
  `SimpleRNN(1, activation='linear')`, MSE, Adam(1e-3), batch 4,
  `validation_split=0.2` (the last 20% of the samples, as Keras takes them),
  the training part reshuffled every epoch, validation loss every epoch.
- `reuters`: notebook 004, one epoch. `x (1395, 49, 1)` float32 word ids,
  `y (1395, 46)` one-hot; `LSTM(50)` (or `SimpleRNN(50)`) -> `Dense(46)` ->
  softmax, categorical cross-entropy, Adam(1e-3), batch 50 (28 minibatches,
  the last one of 45), shuffled every epoch; no validation.
- `forward`: one forward call `(B, T, D) -> (B, U)` (the last output, as
  `return_sequences=False`) of SimpleRNN, GRU or LSTM with `D = FEATURES`,
  over sweeps of batch, length and units around a base point.
- `seeds`: `sum3` with `num_seeds` independent models at once (each its own
  initial weights and shuffling); models trained per second.

Each worker reports, per task, `first` (seconds of the first call: tracing
and compilation included) and `times` (seconds of each later, steady-state
call); `benchmarks.compare` derives compile time as `first - median(times)`
where the framework does not report it itself.
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_REUTERS = os.path.join(os.path.dirname(ROOT), "shared", "data", "reuters.npz")

FEATURES = 16  # input features D of the forward grid
BASE = dict(batch=64, steps=100, units=64)
CELLS = ("simple_rnn", "gru", "lstm")
SWEEPS = {
    "batch": (1, 16, 64, 256, 1024, 4096),
    "steps": (10, 100, 1000),
    "units": (1, 16, 64, 256, 1024),
}
QUICK_SWEEPS = {"batch": (1, 64), "steps": (100,), "units": (64,)}
SEEDS = (1, 8, 64, 512)
QUICK_SEEDS = (1, 8)
REUTERS_SEEDS = (1, 2, 5, 16, 64)
QUICK_REUTERS_SEEDS = (1, 2)
NOTEBOOK_MODELS = ("vanilla", "stacked_vanilla", "lstm", "stacked_lstm")
NOTEBOOK_SEEDS = 5
FORWARD_MIN_SECONDS = 0.25  # each forward point: at least `repeats` calls and this long


def sum3_data(num_samples: int = 10000, seed: int = 0):
    """`(x (N, 3, 1) float32, y (N, 1) float32)`: notebook 000's digits and sums."""
    from rnn_jax.datasets import digits

    x, y, _ = digits.sum_of_digits(num_samples, seed=seed, encoding="scalar")
    return np.asarray(x, np.float32), np.asarray(y, np.float32)


def split(x, y, validation_split: float = 0.2):
    """Keras' `validation_split`: the last fraction of the samples, before shuffling
    (the split point of `rnn_jax.training.train_validation_split`)."""
    from rnn_jax.training import train_validation_split

    n_train = train_validation_split(len(x), validation_split)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


@functools.lru_cache(maxsize=2)
def reuters_data(path: str | None = None):
    """`(x (1395, 49, 1) float32, y (1395, 46) float32)`: notebook 004's training set."""
    from experiments.reuters import load

    (x, y), _ = load(path or DEFAULT_REUTERS, num_words=30000, maxlen=50, test_split=0.3,
                     encoding="raw")
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    x.flags.writeable = y.flags.writeable = False  # cached: shared by the tasks
    return x, y


def forward_points(quick: bool = False, cells=CELLS):
    """The forward grid: dicts `{cell, batch, steps, units}`, each sweep varying
    one of batch, steps, units with the others at `BASE` (each point once)."""
    sweeps = QUICK_SWEEPS if quick else SWEEPS
    points = []
    for cell in cells:
        for axis, values in sweeps.items():
            for v in values:
                p = dict(cell=cell, **BASE)
                p[axis] = v
                if p not in points:
                    points.append(p)
    return points


def on_sweep(point: dict, axis: str) -> bool:
    """Whether a forward point lies on the sweep along `axis` (others at `BASE`)."""
    return all(point[k] == v for k, v in BASE.items() if k != axis)


def forward_input(batch: int, steps: int, features: int = FEATURES, seed: int = 0):
    """A fixed `(B, T, D)` float32 input in [-1, 1)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (batch, steps, features)).astype(np.float32)


# -- timing, shared by the JAX workers ----------------------------------------------


def jax_device() -> str:
    """JAX's default device for the reports: `'cpu'`, or its platform and kind
    (e.g. `'gpu (NVIDIA H200)'`)."""
    import jax

    d = jax.devices()[0]
    return "cpu" if d.platform == "cpu" else f"{d.platform} ({d.device_kind})"


def compile_timed(fn, *args, **jit_kw):
    """`jax.jit(fn, **jit_kw)` traced and compiled for `args`: `(executable, seconds)`."""
    import jax

    t0 = time.perf_counter()
    exe = jax.jit(fn, **jit_kw).lower(*args).compile()
    return exe, time.perf_counter() - t0


def call_timed(fn, *args):
    """One call, waited for (`jax.block_until_ready`): `(result, seconds)`."""
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def repeat_calls(call, repeats: int, min_seconds: float = 0.0, max_calls: int = 1000):
    """Seconds of steady-state calls: `call()` returns one call's seconds; it is
    called at least `repeats` times, and more until the calls add up to
    `min_seconds` (at most `max_calls` in all).

    Sub-millisecond forward calls are bimodal on a shared CPU (XLA spreads a
    small loop body over the cores or not, from call to call), so a median of
    5 is mostly noise there; a time box gives them hundreds of samples while a
    100 ms call still gets `repeats`.
    """
    times = []
    while len(times) < repeats or (sum(times) < min_seconds and len(times) < max_calls):
        times.append(call())
    return times


def compiled_result(compile_s, first_call_s, times, note=None):
    """A worker's record when compilation was timed apart: `first` is the compile
    plus the first call."""
    out = {"first": compile_s + first_call_s, "times": times, "compile": compile_s}
    if note:
        out["note"] = note
    return out
