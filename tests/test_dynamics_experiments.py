"""experiments.flipflop and experiments.integrator end to end (short runs in
the default suite, the flagfiles' full runs opt-in), each result checked
against the trained networks' own behaviour: what the fixed points say must
be what running the network with no input does."""

import json

import numpy as np
import pytest
from flax import nnx

from conftest import train_in_process

PNG = b"\x89PNG\r\n\x1a\n"


def reload(make_model, workdir, seed_index):
    from rnn_jax import checkpoints

    return checkpoints.load_weights(make_model(nnx.Rngs(0)), str(workdir / "checkpoints"),
                                    seed_index=seed_index)


def run_free(model, states, steps):
    """The recurrent layer's states after `steps` steps of zero input, from
    `states` `(N, U)` (a plain loop over the layer's own cell call)."""
    cell = model.layers[0].cell
    h = states
    zeros = np.zeros((states.shape[0], cell.input_dim), np.float32)
    for _ in range(steps):
        _, (h,) = cell(zeros, (h,))
    return np.asarray(h)


def flipflop_memories(model, bits, steps):
    """The state each of the 2^bits memories settles in: a pulse pattern at
    step 0, then no input for `steps` steps (by running the network)."""
    from rnn_jax import readout

    patterns = np.array([[1 if (m >> b) & 1 else -1 for b in range(bits)]
                         for m in range(2 ** bits)], np.float32)
    x = np.zeros((2 ** bits, steps, bits), np.float32)
    x[:, 0] = patterns
    trace = readout.trace_states(model, x)[0]
    outputs = np.asarray(model(x))[:, -1]
    return trace.states["h"][:, -1], outputs, patterns


def test_flipflop_short_run(tmp_path):
    from experiments import flipflop

    args = ["--flagfile=experiments/flags/flipflop.flags", "--num_seeds=2", "--num_samples=1000",
            "--epochs=20", "--candidates=128"]
    metrics = train_in_process(flipflop, *args, workdir=tmp_path)
    as_json = json.loads(json.dumps(metrics, default=lambda a: np.asarray(a).tolist()))
    assert json.loads((tmp_path / "metrics.json").read_text()) == as_json
    metrics = as_json
    for name in ("fixed_points.png", "eigenvalues.png", "seeds.png", "loss.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    report = (tmp_path / "report.txt").read_text()
    assert "fixed points under zero input" in report
    # The task is solved: recomputed from the checkpoint on fresh sequences.
    from rnn_jax import dynamics
    from rnn_jax.datasets import tasks

    x, y = tasks.flip_flop(128, 64, 3, pulse_prob=0.1, seed=99)
    make = flipflop.make_model_fn("gru", 16, 3, 64)
    for i in range(2):
        model = reload(make, tmp_path, i)
        accuracy = np.mean(np.sign(np.asarray(model(x))) == np.sign(y))
        assert accuracy == pytest.approx(metrics["accuracy"][i], abs=0.01)
        assert accuracy >= 0.99
        # Independently of the fixed-point search: running the network, each of
        # the 8 memories settles in a state the map leaves in place, which the
        # search reported as one of the seed's stable points.
        settled, outputs, patterns = flipflop_memories(model, 3, 200)
        np.testing.assert_array_equal(np.sign(outputs), patterns)  # the memory is held
        assert np.abs(run_free(model, settled, 1) - settled).max() < 1e-2  # nearly still
        fps = dynamics.find_fixed_points(model, np.zeros(3), settled, method="newton",
                                         max_iters=50, tol_q=1e-12)
        assert fps.count("stable") == 8
        # ... one per memory: the read-out of the 8 stable points gives the 8
        # sign patterns, each once.
        stable = fps.states[[k for k, s in enumerate(fps.stability) if s == "stable"]]
        read = np.sign(np.asarray(model.layers[1](stable)))
        assert sorted(map(tuple, read)) == sorted(map(tuple, patterns))
        assert metrics["stable_fixed_points"][i] >= 8
    assert metrics["exact_structure_fraction"] == pytest.approx(
        np.mean([(a >= 0.99) and (s == 8) for a, s in
                 zip(metrics["accuracy"], metrics["stable_fixed_points"])]))


def test_integrator_short_run(tmp_path):
    from experiments import integrator

    args = ["--flagfile=experiments/flags/integrator.flags", "--num_seeds=2",
            "--num_samples=1000", "--epochs=15", "--candidates=128"]
    metrics = json.loads(json.dumps(train_in_process(integrator, *args, workdir=tmp_path),
                                    default=lambda a: np.asarray(a).tolist()))
    for name in ("fixed_points.png", "eigenvalues.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    from rnn_jax import readout
    from rnn_jax.datasets import tasks

    x, y = tasks.integrator(64, 50, noise_std=0.1, seed=99)
    make = integrator.make_model_fn("gru", 16, 50)
    for i in range(2):
        model = reload(make, tmp_path, i)
        mse = float(np.mean((np.asarray(model(x)) - y) ** 2))
        assert mse < 0.05 * np.var(y)  # it integrates
        if not metrics["line_attractor"][i]:
            continue
        # A line attractor holds any sum: with no input the readout stays where
        # the sum left it (run by the network itself, not by the search).
        states = readout.trace_states(model, x)[0].states["h"][:, -1]
        dense = model.layers[1]
        before = np.asarray(dense(states))
        after = np.asarray(dense(run_free(model, states, 50)))
        assert np.median(np.abs(after - before)) < 0.1 * np.std(before)
    assert metrics["line_attractor_fraction"] == np.mean(metrics["line_attractor"])
    assert len(metrics["slow_points"]) == 2


@pytest.mark.slow
def test_flipflop_flagfile_run(tmp_path):
    # The flagfile's run: 64 GRU seeds. Most solve the task with exactly 8
    # stable fixed points (measured fraction: docs/dynamics.md).
    from experiments import flipflop

    metrics = train_in_process(flipflop, "--flagfile=experiments/flags/flipflop.flags",
                               workdir=tmp_path)
    assert len(metrics["accuracy"]) == 64
    assert metrics["exact_structure_fraction"] >= 0.75


@pytest.mark.slow
def test_integrator_flagfile_run(tmp_path):
    from experiments import integrator

    metrics = train_in_process(integrator, "--flagfile=experiments/flags/integrator.flags",
                               workdir=tmp_path)
    assert metrics["line_attractor_fraction"] >= 0.75
