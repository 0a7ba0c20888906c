"""The Reuters experiment (notebook 004): every model runs 2 epochs from the
flagfile on the real data (in-process: `train_and_evaluate(config, workdir)`,
the config parsed from the command's flags), and its reported test accuracy
and baseline are recomputed from the checkpoint and the data independently.
Bad flags and missing or broken data files stop the command with one line
(subprocesses; these need no data)."""

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from flax import nnx

from conftest import ROOT, SHARED_DATA, assert_flag_error, train_in_process
from experiments import reuters

pytestmark = pytest.mark.usefixtures("compilation_cache_of_the_commands")

DATA = os.path.join(SHARED_DATA, "reuters.npz")
needs_data = pytest.mark.skipif(not os.path.exists(DATA),
                                reason=f"the Reuters data file is not at {DATA}")


def run_module(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


MODELS = ["vanilla", "stacked_vanilla", "lstm", "stacked_lstm", "gru", "bidirectional_lstm"]


# The README's rows run by default; the other variants (their layers are
# Keras-parity-tested elsewhere) with `pytest -m slow`.
DEFAULT_RUNS = {("vanilla", "raw"), ("lstm", "raw"), ("lstm", "embedding")}


@needs_data
@pytest.mark.parametrize("model,encoding", [
    pytest.param(m, e, marks=() if (m, e) in DEFAULT_RUNS else pytest.mark.slow)
    for m, e in [(m, "raw") for m in MODELS] + [("lstm", "embedding"), ("vanilla", "embedding")]])
def test_reuters_two_epochs_from_flagfile(tmp_path, model, encoding, capsys):
    returned = train_in_process(reuters, "--flagfile=experiments/flags/reuters.flags",
                                f"--model={model}", f"--encoding={encoding}", "--epochs=2",
                                f"--data_path={DATA}", workdir=tmp_path)
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "majority baseline" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_accuracy"] == returned["test_accuracy"]
    assert metrics["model"] == model and metrics["encoding"] == encoding
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2

    # Recompute test accuracy and the majority baseline from the data and the
    # checkpoint, with numpy argmax over the model's outputs.
    from experiments.reuters import load, make_model_fn
    from rnn_jax import checkpoints

    (x_tr, y_tr), (x_te, y_te) = load(DATA, encoding=encoding)
    assert x_tr.shape[:2] == (1395, 49) and x_te.shape[:2] == (599, 49)
    net = make_model_fn(model, encoding, 49)(nnx.Rngs(3))
    checkpoints.load_weights(net, str(tmp_path / "checkpoints"))
    probs = np.asarray(net(x_te))
    acc = np.mean(np.argmax(probs, 1) == np.argmax(y_te, 1))
    assert metrics["test_accuracy"] == pytest.approx(acc, abs=1e-6)
    # val_* is the test set at the end of the last epoch: the same number.
    assert metrics["val_accuracy"] == pytest.approx(acc, abs=1e-6)
    counts = np.bincount(np.argmax(y_tr, 1), minlength=46)
    assert metrics["majority_baseline"] == pytest.approx(
        np.mean(np.argmax(y_te, 1) == np.argmax(counts)))


@needs_data
def test_reuters_learning_rate_sweep(tmp_path, capsys):
    """2 learning rates x 2 seeds, 1 epoch: each member's test accuracy recomputed
    from its slot of the checkpoint, and the per-value mean and std from those."""
    train_in_process(reuters, "--flagfile=experiments/flags/reuters.flags", "--model=vanilla",
                     "--epochs=1", "--num_seeds=2", "--learning_rate=0.001,0.01",
                     f"--data_path={DATA}", workdir=tmp_path)
    stdout = capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [(m["seed"], m["learning_rate"]) for m in metrics["members"]] == [
        (0, 0.001), (1, 0.001), (0, 0.01), (1, 0.01)]
    from experiments.reuters import load, make_model_fn
    from rnn_jax import checkpoints

    _, (x_te, y_te) = load(DATA)
    acc = []
    for m in range(4):
        net = make_model_fn("vanilla", "raw", 49)(nnx.Rngs(3))
        checkpoints.load_weights(net, str(tmp_path / "checkpoints"), seed_index=m)
        acc.append(np.mean(np.argmax(np.asarray(net(x_te)), 1) == np.argmax(y_te, 1)))
    np.testing.assert_allclose(metrics["test_accuracy"], acc, atol=1e-6)
    for row, idx in zip(metrics["per_learning_rate"], ([0, 1], [2, 3])):
        a = np.array(acc)[idx]
        assert row["seeds"] == 2
        assert row["test_accuracy_mean"] == pytest.approx(a.mean(), abs=1e-6)
        assert row["test_accuracy_std"] == pytest.approx(a.std(ddof=1), abs=1e-6)
        assert (f"  learning rate {row['learning_rate']:g}: test accuracy "
                f"{row['test_accuracy_mean']:.4f} +- {row['test_accuracy_std']:.4f}") in stdout


@pytest.mark.parametrize("bad", ["--model=transformer", "--encoding=bytes", "--test_split=1.0",
                                 "--epochs=0", "--epochs=-1", "--batch_size=0",
                                 "--validation_split=1.0", "--validation_split=-0.5",
                                 "--no_such_flag=1"])
def test_reuters_bad_flags(bad):
    proc = run_module("experiments.reuters", "--flagfile=experiments/flags/reuters.flags", bad)
    flag, value = bad.lstrip("-").split("=")
    assert_flag_error(proc, flag, None if flag == "no_such_flag" else value)


def _broken_npz(path, damage):
    """A Reuters-like file (x: object array of lists, y: labels), damaged (more damage
    of the loader's own: tests/test_datasets.py)."""
    x = np.empty(20, dtype=object)
    for i in range(20):
        x[i] = [1 + i % 5, 2, 3]
    np.savez(path, x=x, y=np.arange(20) % 46)
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[:len(good) // 2])
    elif damage == "corrupt-member":  # a valid zip whose x.npy is cut short
        with zipfile.ZipFile(io.BytesIO(good)) as z:
            x_npy, y_npy = z.read("x.npy"), z.read("y.npy")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", x_npy[:len(x_npy) - 7])
            z.writestr("y.npy", y_npy)
    return path


@pytest.mark.parametrize("damage", ["missing", "truncated", "corrupt-member"])
def test_reuters_bad_data_file(tmp_path, damage):
    path = tmp_path / "reuters.npz"
    if damage != "missing":
        _broken_npz(path, damage)
    proc = run_module("experiments.reuters", "--flagfile=experiments/flags/reuters.flags",
                      f"--data_path={path}", f"--workdir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if str(path) in line]
    assert len(lines) == 1 and lines[0].startswith("reuters: cannot load the data"), lines
    assert {"missing": "no such file", "corrupt-member": "(x.npy): corrupt or truncated"}.get(
        damage, "not a readable .npz file") in lines[0]
    assert not (tmp_path / "run").exists()
