"""The Reuters experiment (notebook 004): every model runs 2 epochs from the
flagfile on the real data, and its reported test accuracy and baseline are
recomputed from the checkpoint and the data independently."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from conftest import ROOT, SHARED_DATA

DATA = os.path.join(SHARED_DATA, "reuters.npz")
pytestmark = pytest.mark.skipif(not os.path.exists(DATA),
                                reason=f"the Reuters data file is not at {DATA}")


def run_module(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


MODELS = ["vanilla", "stacked_vanilla", "lstm", "stacked_lstm", "gru", "bidirectional_lstm"]


@pytest.mark.parametrize("model,encoding", [(m, "raw") for m in MODELS]
                         + [("lstm", "embedding"), ("vanilla", "embedding")])
def test_reuters_two_epochs_from_flagfile(tmp_path, model, encoding):
    proc = run_module("experiments.reuters", "--flagfile=experiments/flags/reuters.flags",
                      f"--model={model}", f"--encoding={encoding}", "--epochs=2",
                      f"--data_path={DATA}", f"--workdir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Epoch 2/2" in proc.stdout and "majority baseline" in proc.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
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
    checkpoints.load_weights(net, str(tmp_path / "checkpoint"))
    probs = np.asarray(net(x_te))
    acc = np.mean(np.argmax(probs, 1) == np.argmax(y_te, 1))
    assert metrics["test_accuracy"] == pytest.approx(acc, abs=1e-6)
    # val_* is the test set at the end of the last epoch: the same number.
    assert metrics["val_accuracy"] == pytest.approx(acc, abs=1e-6)
    counts = np.bincount(np.argmax(y_tr, 1), minlength=46)
    assert metrics["majority_baseline"] == pytest.approx(
        np.mean(np.argmax(y_te, 1) == np.argmax(counts)))


@pytest.mark.parametrize("bad", ["--model=transformer", "--encoding=bytes", "--test_split=1.0",
                                 "--epochs=0", "--batch_size=0"])
def test_reuters_bad_flags(bad):
    proc = run_module("experiments.reuters", "--flagfile=experiments/flags/reuters.flags", bad)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert bad.split("=")[0].lstrip("-") in proc.stderr
