"""The generated tasks (`rnn_jax.datasets.tasks`): deterministic per seed, different across
seeds, the documented shapes and dtypes, argument errors, the statistics the docstrings
promise, and, for each task, a reference solver written here from the task's definition
(a plain loop over samples and steps, reading only `x`) that reproduces `y` exactly."""

from __future__ import annotations

import numpy as np
import pytest

from rnn_jax import datasets
from rnn_jax.datasets import tasks

# --- Reference solvers: each reads x alone and writes what the definition says. ---------


def solve_flip_flop(x):
    """Each channel holds the sign of its latest nonzero input; 0 before any."""
    n, t, b = x.shape
    y = np.zeros((n, t, b), np.float32)
    for i in range(n):
        for k in range(b):
            state = 0.0
            for s in range(t):
                if x[i, s, k] > 0:
                    state = 1.0
                elif x[i, s, k] < 0:
                    state = -1.0
                y[i, s, k] = state
    return y


def solve_integrator(x, decay=1.0):
    """`y_t = decay * y_{t-1} + x_t`, in Python floats (float64)."""
    n, t, _ = x.shape
    y = np.zeros((n, t, 1), np.float32)
    for i in range(n):
        total = 0.0
        for s in range(t):
            total = decay * total + float(x[i, s, 0])
            y[i, s, 0] = total
    return y


def solve_adding(x):
    """The sum of the values where the marker is 1."""
    n, t, _ = x.shape
    y = np.zeros((n, 1), np.float32)
    for i in range(n):
        total = 0.0
        for s in range(t):
            if x[i, s, 1] == 1.0:
                total += float(x[i, s, 0])
        y[i, 0] = total
    return y


def solve_delayed_recall(x, delay):
    """Remember each step's category in a queue; answer with the one `delay` steps back."""
    n, t, k = x.shape
    y = np.zeros((n, t, k), np.float32)
    for i in range(n):
        seen = []
        for s in range(t):
            seen.append(int(np.argmax(x[i, s])))
            y[i, s, seen[s - delay] if s >= delay else 0] = 1.0
    return y


def solve_parity(x):
    """Flip a bit of state on every 1."""
    n, t, _ = x.shape
    y = np.zeros((n, t, 1), np.float32)
    for i in range(n):
        odd = 0
        for s in range(t):
            if x[i, s, 0] == 1.0:
                odd = 1 - odd
            y[i, s, 0] = odd
    return y


# name: (generator call, reference solver, x's shape, y's shape), for N = 16.
CASES = {
    "flip_flop": (lambda seed: tasks.flip_flop(16, 40, 3, pulse_prob=0.1, seed=seed),
                  solve_flip_flop, (16, 40, 3), (16, 40, 3)),
    "flip_flop_from_rest": (
        lambda seed: tasks.flip_flop(16, 40, 2, pulse_prob=0.05, initial_pulse=False, seed=seed),
        solve_flip_flop, (16, 40, 2), (16, 40, 2)),
    "integrator": (lambda seed: tasks.integrator(16, 30, noise_std=0.5, seed=seed),
                   solve_integrator, (16, 30, 1), (16, 30, 1)),
    "leaky_integrator": (lambda seed: tasks.integrator(16, 30, decay=0.9, seed=seed),
                         lambda x: solve_integrator(x, 0.9), (16, 30, 1), (16, 30, 1)),
    "adding_problem": (lambda seed: tasks.adding_problem(16, 25, seed=seed),
                       solve_adding, (16, 25, 2), (16, 1)),
    "delayed_recall": (lambda seed: tasks.delayed_recall(16, 25, 15, alphabet=5, seed=seed),
                       lambda x: solve_delayed_recall(x, 15), (16, 25, 6), (16, 25, 6)),
    "delay_line": (lambda seed: tasks.delayed_recall(16, 12, 3, seed=seed),
                   lambda x: solve_delayed_recall(x, 3), (16, 12, 9), (16, 12, 9)),
    "parity": (lambda seed: tasks.parity(16, 20, seed=seed),
               solve_parity, (16, 20, 1), (16, 20, 1)),
    "final_parity": (lambda seed: tasks.parity(16, 20, running=False, seed=seed),
                     lambda x: solve_parity(x)[:, -1], (16, 20, 1), (16, 1)),
}


@pytest.mark.parametrize("name", CASES)
def test_the_reference_solver_scores_100_percent(name):
    make, solve, _, _ = CASES[name]
    x, y = make(3)
    np.testing.assert_array_equal(solve(x), y)


@pytest.mark.parametrize("name", CASES)
def test_shapes_and_dtypes(name):
    make, _, x_shape, y_shape = CASES[name]
    x, y = make(0)
    assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
    assert (x.shape, y.shape) == (x_shape, y_shape)
    assert x.dtype == y.dtype == np.float32


@pytest.mark.parametrize("name", CASES)
def test_same_seed_same_arrays_other_seed_other_arrays(name):
    make = CASES[name][0]
    x0, y0 = make(7)
    x1, y1 = make(7)
    assert x0.tobytes() == x1.tobytes() and y0.tobytes() == y1.tobytes()
    x2, y2 = make(8)
    assert not np.array_equal(x0, x2) and not np.array_equal(y0, y2)


def test_the_defaults_run_and_are_exported():
    assert datasets.tasks is tasks
    for f in (tasks.flip_flop, tasks.integrator, tasks.adding_problem, tasks.delayed_recall,
              tasks.parity):
        x, y = f(4)
        assert x.ndim == 3 and x.shape[0] == y.shape[0] == 4


def test_flip_flop_pulses_come_at_pulse_prob_and_targets_are_held_signs():
    x, y = tasks.flip_flop(200, 100, 3, pulse_prob=0.1, seed=1)
    pulses = x[:, 1:] != 0
    n = pulses.size
    assert abs(pulses.mean() - 0.1) < 4 * np.sqrt(0.1 * 0.9 / n)   # 4 standard errors
    assert np.all(x[:, 0] != 0)                                     # the initial pulse
    assert set(np.unique(x)) == {-1.0, 0.0, 1.0} and set(np.unique(y)) == {-1.0, 1.0}
    signs = x[x != 0]
    assert abs((signs > 0).mean() - 0.5) < 4 * np.sqrt(0.25 / signs.size)
    x, y = tasks.flip_flop(50, 30, 2, pulse_prob=0.0, initial_pulse=False, seed=1)
    assert not x.any() and not y.any()                              # no pulse, rest state 0


def test_integrator_noise_has_the_asked_spread():
    x, y = tasks.integrator(400, 50, noise_std=2.0, seed=2)
    assert abs(x.mean()) < 4 * 2.0 / np.sqrt(x.size)
    assert abs(x.std() / 2.0 - 1) < 0.03
    assert abs(y[:, -1].std() / (2.0 * np.sqrt(50)) - 1) < 0.2    # a random walk's spread


def test_adding_problem_has_two_markers_one_per_half_and_values_in_0_1():
    x, y = tasks.adding_problem(300, 11, seed=4)
    markers = x[..., 1]
    assert set(np.unique(markers)) == {0.0, 1.0}
    np.testing.assert_array_equal(markers.sum(axis=1), 2.0)
    np.testing.assert_array_equal(markers[:, :5].sum(axis=1), 1.0)   # T // 2 = 5
    assert markers[:, :5].sum(axis=0).min() > 0 and markers[:, 5:].sum(axis=0).min() > 0
    values = x[..., 0]
    assert values.min() >= 0.0 and values.max() < 1.0
    assert np.all((y >= 0) & (y < 2))
    x, _ = tasks.adding_problem(5, 2, seed=0)                        # the shortest: steps 0 and 1
    np.testing.assert_array_equal(x[..., 1], 1.0)


def test_delayed_recall_is_one_hot_and_uses_the_whole_alphabet():
    x, y = tasks.delayed_recall(200, 30, 20, alphabet=4, seed=5)
    np.testing.assert_array_equal(x.sum(-1), 1.0)
    np.testing.assert_array_equal(y.sum(-1), 1.0)
    ids = x.argmax(-1)
    assert set(np.unique(ids[:, :10])) == {1, 2, 3, 4} and not ids[:, 10:].any()
    assert not y.argmax(-1)[:, :20].any()


def test_parity_bits_are_fair():
    x, _ = tasks.parity(200, 50, seed=6)
    assert set(np.unique(x)) == {0.0, 1.0}
    assert abs(x.mean() - 0.5) < 4 * np.sqrt(0.25 / x.size)


BAD = [
    (tasks.flip_flop, dict(num_samples=0), "num_samples"),
    (tasks.flip_flop, dict(num_samples=2.5), "num_samples"),
    (tasks.flip_flop, dict(seq_len=-1), "seq_len"),
    (tasks.flip_flop, dict(bits=0), "bits"),
    (tasks.flip_flop, dict(pulse_prob=1.5), "pulse_prob"),
    (tasks.flip_flop, dict(pulse_prob=-0.1), "pulse_prob"),
    (tasks.flip_flop, dict(initial_pulse="yes"), "initial_pulse"),
    (tasks.flip_flop, dict(seed=-1), "seed"),
    (tasks.flip_flop, dict(seed=1.0), "seed"),
    (tasks.integrator, dict(seq_len=0), "seq_len"),
    (tasks.integrator, dict(noise_std=0.0), "noise_std"),
    (tasks.integrator, dict(noise_std=float("inf")), "noise_std"),
    (tasks.integrator, dict(decay=1.1), "decay"),
    (tasks.adding_problem, dict(seq_len=1), "seq_len"),
    (tasks.adding_problem, dict(num_samples=True), "num_samples"),
    (tasks.delayed_recall, dict(seq_len=10, delay=10), "delay"),
    (tasks.delayed_recall, dict(delay=0), "delay"),
    (tasks.delayed_recall, dict(alphabet=0), "alphabet"),
    (tasks.parity, dict(seq_len=0), "seq_len"),
    (tasks.parity, dict(running=None), "running"),
    (tasks.parity, dict(seed="0"), "seed"),
]


@pytest.mark.parametrize("make, kwargs, name", BAD,
                         ids=[f"{f.__name__}-{next(iter(k))}={k[next(iter(k))]!r}"
                              for f, k, _ in BAD])
def test_bad_arguments_raise_naming_the_argument(make, kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} "):
        make(**kwargs)
