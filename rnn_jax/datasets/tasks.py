"""Generated tasks of RNN-dynamics studies (fixed points, linearisation).

- `flip_flop`: n-bit flip-flop (Sussillo & Barak 2013): pulses in, held signs out.
- `integrator`: white noise in, its running (optionally leaky) sum out.
- `adding_problem`: values and two markers in, the sum of the marked values out
  (Hochreiter & Schmidhuber 1997).
- `delayed_recall`: a sequence of symbols in, the same symbols out `delay`
  steps later (the copy task), one-hot.
- `parity`: bits in, their running parity (or the final one) out.

Conventions, shared by every task:

- Each is a pure function of `seed` (an int), as `digits` is: the numbers
  come from `numpy.random.RandomState(seed)`, whose stream NumPy keeps fixed
  across versions and platforms, so a seed gives the same arrays everywhere,
  bitwise. Different seeds give different data. Nothing is downloaded. From a
  JAX key, pass e.g. `seed=int(jax.random.randint(key, (), 0, 2**31 - 1))`.
- `x` is `(N, T, D)` float32 and `y` is `(N, T, K)` (a target every step)
  or `(N, K)` (one target per sequence) float32, NumPy arrays, ready for
  `rnn_jax.fit` (`return_sequences=True` for the per-step targets).
- `N = num_samples`, `T = seq_len` (the length of `x` and of a per-step `y`),
  positional, and so is a task's own size (`bits`, `delay`); the rest are
  keyword-only. A bad argument raises a `ValueError` naming it.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["adding_problem", "delayed_recall", "flip_flop", "integrator", "parity"]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _in_range(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _rng(seed) -> np.random.RandomState:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return np.random.RandomState(int(seed))


def flip_flop(num_samples: int = 1000, seq_len: int = 100, bits: int = 3, *,
              pulse_prob: float = 0.05, initial_pulse: bool = True, seed: int = 0):
    """The `bits`-bit flip-flop of Sussillo & Barak (2013), `(x, y)`.

    `x` `(N, T, bits)`: on each channel `b` and step `t`, a pulse with
    probability `pulse_prob`, of sign +1 or -1 with equal probability, else 0.
    `y` `(N, T, bits)`: each channel holds the sign of its latest pulse,

    .. math::

        y_{t,b} = x_{s,b}, \\quad s = \\max\\{s' \\le t : x_{s',b} \\ne 0\\},

    and 0 before the channel's first pulse. With `initial_pulse` (the
    default) every channel has a pulse at `t = 0`, so `y` is always +-1 and
    every sequence starts in one of the `2**bits` memory states, as in the
    reference implementation of the fixed-point analysis (Golub & Sussillo's
    FixedPointFinder); the pulses at `t >= 1` come at rate `pulse_prob`.
    The default rate (a pulse every 20 steps per channel on average) keeps the
    pulses sparse, so the states must be held for many steps.
    """
    n = _positive_int("num_samples", num_samples)
    t = _positive_int("seq_len", seq_len)
    b = _positive_int("bits", bits)
    p = _in_range("pulse_prob", pulse_prob, 0.0, 1.0)
    if not isinstance(initial_pulse, (bool, np.bool_)):
        raise ValueError(f"initial_pulse must be True or False, got {initial_pulse!r}")
    rng = _rng(seed)
    pulse = rng.random_sample((n, t, b)) < p
    if initial_pulse:
        pulse[:, 0, :] = True
    sign = np.where(rng.random_sample((n, t, b)) < 0.5, 1.0, -1.0)
    x = np.where(pulse, sign, 0.0).astype(np.float32)
    latest = np.maximum.accumulate(np.where(pulse, np.arange(t)[:, None], -1), axis=1)
    held = np.take_along_axis(x, np.maximum(latest, 0), axis=1)
    y = np.where(latest >= 0, held, 0.0).astype(np.float32)
    return x, y


def integrator(num_samples: int = 1000, seq_len: int = 100, *, noise_std: float = 1.0,
               decay: float = 1.0, seed: int = 0):
    """Integrate white noise, `(x, y)`, both `(N, T, 1)`.

    .. math::

        x_t \\sim \\mathcal{N}(0, \\sigma^2) \\text{ i.i.d.}, \\qquad
        y_t = \\lambda\\, y_{t-1} + x_t, \\quad y_{-1} = 0,

    with `sigma = noise_std > 0` and `lambda = decay` in [0, 1]: 1 (the
    default) is the running sum `y_t = x_0 + ... + x_t`, a perfect integrator
    (a line attractor); below 1 a leaky one, forgetting with time constant
    `-1 / log(decay)` steps. `x` is drawn in float32 and summed in float64
    from those float32 values, in time order, then rounded to float32.
    """
    n = _positive_int("num_samples", num_samples)
    t = _positive_int("seq_len", seq_len)
    if (isinstance(noise_std, bool) or not isinstance(noise_std, numbers.Real)
            or not 0 < noise_std < np.inf):
        raise ValueError(f"noise_std must be a positive finite number, got {noise_std!r}")
    lam = _in_range("decay", decay, 0.0, 1.0)
    rng = _rng(seed)
    x = (float(noise_std) * rng.standard_normal((n, t, 1))).astype(np.float32)
    y = np.empty((n, t, 1))
    acc = np.zeros((n, 1))
    for step in range(t):
        acc = lam * acc + x[:, step].astype(np.float64)
        y[:, step] = acc
    return x, y.astype(np.float32)


def adding_problem(num_samples: int = 1000, seq_len: int = 50, *, seed: int = 0):
    """The adding problem (Hochreiter & Schmidhuber 1997), `(x (N, T, 2), y (N, 1))`.

    Channel 0 holds values `v_t` uniform in [0, 1) (on the float32 grid of
    step `2**-24`, so exactly representable and below 1); channel 1 holds
    markers `m_t`, exactly two 1s per sequence, the first at a uniform step
    of the first half `[0, T // 2)`, the second of the second half
    `[T // 2, T)` (the form of Le et al. 2015 and Arjovsky et al. 2016), 0
    elsewhere. The target is the sum of the two marked values,

    .. math::

        y = \\sum_t m_t v_t \\in [0, 2),

    computed in float64 (exact) and rounded to float32. `T >= 2`.
    """
    n = _positive_int("num_samples", num_samples)
    t = _positive_int("seq_len", seq_len)
    if t < 2:
        raise ValueError(f"seq_len must be >= 2 for the two markers, got {seq_len!r}")
    rng = _rng(seed)
    values = np.floor(rng.random_sample((n, t)) * 2.0**24) / 2.0**24
    first = rng.randint(0, t // 2, size=n)
    second = rng.randint(t // 2, t, size=n)
    markers = np.zeros((n, t))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
    return x, y


def delayed_recall(num_samples: int = 1000, seq_len: int = 20, delay: int = 10, *,
                   alphabet: int = 8, seed: int = 0):
    """Delayed recall (the copy task): `(x, y)`, both `(N, T, alphabet + 1)`, one-hot.

    Category 0 is the blank, `1..alphabet` the symbols. The first
    `L = T - delay` steps of `x` show symbols `s_0..s_{L-1}`, each uniform
    over the alphabet; the rest of `x` is blank. `y` is the input `delay`
    steps later, blank before:

    .. math::

        y_t = \\text{onehot}(s_{t - \\text{delay}}) \\text{ for } \\text{delay} \\le t < T,
        \\qquad y_t = \\text{onehot}(0) \\text{ for } t < \\text{delay}.

    With `delay > L` this is "a sequence, then `delay - L` blank steps, then
    reproduce it": the timing of Arjovsky et al.'s (2016) copying memory
    problem (`L = 10` symbols, `delay = L + gap`, `T = L + delay`), without
    its cue symbol, since the recall always starts at step `delay`. With
    `delay <= L` presentation and recall overlap: a delay line. Needs
    `1 <= delay < T`.
    """
    n = _positive_int("num_samples", num_samples)
    t = _positive_int("seq_len", seq_len)
    d = _positive_int("delay", delay)
    if d >= t:
        raise ValueError(f"delay must be < seq_len ({t}) to leave symbols to recall, got {delay!r}")
    a = _positive_int("alphabet", alphabet)
    rng = _rng(seed)
    symbols = rng.randint(1, a + 1, size=(n, t - d))
    shown = np.zeros((n, t), np.int64)
    shown[:, :t - d] = symbols
    recalled = np.zeros((n, t), np.int64)
    recalled[:, d:] = symbols
    eye = np.eye(a + 1, dtype=np.float32)
    return eye[shown], eye[recalled]


def parity(num_samples: int = 1000, seq_len: int = 20, *, running: bool = True, seed: int = 0):
    """Parity of random bits, `(x (N, T, 1), y)`.

    `x_t` is 0 or 1 with equal probability. With `running` (the default) the
    target is the parity so far, `y` `(N, T, 1)`:

    .. math::

        y_t = (x_0 + x_1 + \\dots + x_t) \\bmod 2 = y_{t-1} \\oplus x_t,

    a two-state machine that flips on every 1. With `running=False` only the
    parity of the whole sequence, `y = y_{T-1}` `(N, 1)` (harder: the
    error signal comes once, at the end).
    """
    n = _positive_int("num_samples", num_samples)
    t = _positive_int("seq_len", seq_len)
    if not isinstance(running, (bool, np.bool_)):
        raise ValueError(f"running must be True or False, got {running!r}")
    rng = _rng(seed)
    bits = rng.randint(0, 2, size=(n, t))
    y = (np.cumsum(bits, axis=1) % 2).astype(np.float32)[..., None]
    return bits[..., None].astype(np.float32), (y if running else y[:, -1])
