"""End-to-end runs of the toy training experiments (notebooks 000 and 002)
from their flagfiles, 1 or 2 epochs each, checking every output in the
workdir against numpy recomputations from the saved checkpoint. The runs are
in-process (`train_and_evaluate(config, workdir)`, the config parsed from the
command's flags); the command line itself (bad flags, what a plain run
imports and prints) is run as a subprocess."""

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from flax import nnx

from conftest import ROOT, assert_flag_error, train_in_process
from experiments import contains4, sum3

pytestmark = pytest.mark.usefixtures("compilation_cache_of_the_commands")
PNG = b"\x89PNG\r\n\x1a\n"


def run_module(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def linear_rnn_by_hand(e_NxT, U):
    """h_t = e_t + h_{t-1} U for a 1-unit linear SimpleRNN, given the inputs' x W + b."""
    h = np.zeros(e_NxT.shape[0])
    for t in range(e_NxT.shape[1]):
        h = e_NxT[:, t] + h * U
    return h


def as_json(metrics: dict) -> dict:
    """`metrics` as metrics.json reads back (numpy values as numbers and lists)."""
    return json.loads(json.dumps(metrics, default=lambda a: np.asarray(a).tolist()))


def check_outputs(workdir, epochs, num_seeds=1):
    for name in ("flags.txt", "metrics.json", "history.jsonl", "report.txt"):
        assert (workdir / name).is_file(), name
    for png in workdir.glob("*.png"):
        assert png.read_bytes()[:8] == PNG
    assert {p.name for p in workdir.glob("*.png")} >= {"loss.png", "digit_weights.png",
                                                       "state_trace.png"}
    assert not list(workdir.glob(".tmp*")) and not list(workdir.glob("*.tmp*"))
    assert (workdir / "checkpoints" / str(epochs) / "default").is_dir()
    lines = (workdir / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, epochs + 1))
    metrics = json.loads((workdir / "metrics.json").read_text())
    last = json.loads(lines[-1])
    for key in ("loss", "val_loss"):
        assert metrics[key] == last[key]
        if num_seeds > 1:
            assert len(metrics[key]) == num_seeds
    return metrics


@pytest.mark.parametrize("kind", ["scalar", "onehot", "embedding"])
def test_sum3_from_flagfile(tmp_path, kind, capsys):
    from experiments.sum3 import make_model_fn
    from rnn_jax import checkpoints

    returned = train_in_process(sum3, "--flagfile=experiments/flags/sum3.flags",
                                f"--input={kind}", "--num_seeds=1", "--epochs=2",
                                workdir=tmp_path)
    out = capsys.readouterr().out
    assert "compiled in" in out and "Epoch 2/2" in out
    assert "Epoch 3/" not in out
    metrics = check_outputs(tmp_path, epochs=2)
    assert as_json(returned) == metrics  # train_and_evaluate returns metrics.json's dict
    flags_txt = (tmp_path / "flags.txt").read_text()
    assert f"--input={kind}" in flags_txt and "--epochs=2" in flags_txt
    assert "readout_seed" not in metrics  # one seed: the notebook's report

    # The checkpoint holds the trained weights; the report's read-outs follow from them.
    model = checkpoints.load_weights(make_model_fn(kind)(nnx.Rngs(123)),
                                     str(tmp_path / "checkpoints"))
    W, U, b = (np.asarray(w, np.float64) for w in model.layers[-1].get_weights())
    if kind == "scalar":
        e = np.arange(10) * W[0, 0] + b[0]
        assert metrics["W"] == pytest.approx(W[0, 0], rel=1e-6)
        assert metrics["b"] == pytest.approx(b[0], rel=1e-6, abs=1e-9)
    elif kind == "onehot":
        e = W[:, 0] + b[0]
    else:
        E = np.asarray(model.layers[0].get_weights()[0], np.float64)
        e = E @ W[:, 0] + b[0]
    np.testing.assert_allclose(metrics["digit_weights"], e, rtol=1e-5, atol=1e-5)
    assert metrics["U"] == pytest.approx(U[0, 0], rel=1e-6)
    readable = abs(U[0, 0] - 1) <= 0.1 and np.max(np.abs(e - np.arange(10))) <= 0.1
    assert metrics["readable"] == readable
    # The map h -> U h + e has the eigenvalue U; the report names its dynamics.
    assert metrics["eigenvalue"] == pytest.approx(U[0, 0], rel=1e-6)
    words = ("a line attractor" if abs(U[0, 0] - 1) <= 0.1 else
             "a point attractor" if abs(U[0, 0]) < 1 else "a repeller")
    assert f"its dynamics: {words} (eigenvalue U = {U[0, 0]:.2f}" in (
        tmp_path / "report.txt").read_text()
    # The reported predictions for the last 5 samples equal the recurrence by hand.
    from rnn_jax.datasets.digits import sum_of_digits

    _, y, ids = sum_of_digits(10000, seed=0)
    report = (tmp_path / "report.txt").read_text().splitlines()
    start = report.index("  digits      label  prediction") + 1
    rows = [line.split("]")[1].split() for line in report[start:start + 5]]
    preds = linear_rnn_by_hand(e[ids[-5:]], U[0, 0])
    np.testing.assert_allclose([float(r[0]) for r in rows], y[-5:, 0])
    np.testing.assert_allclose([float(r[1]) for r in rows], preds, rtol=1e-4, atol=2e-4)


def sum3_weights_by_seed(checkpoint_dir):
    """`(W, U, b)` `(S,)` each of every seed's scalar SimpleRNN(1) in a checkpoint."""
    from rnn_jax import checkpoints

    cell = checkpoints.load_params(str(checkpoint_dir))["layers"]["0"]["cell"]
    return tuple(np.asarray(cell[k], np.float64).reshape(-1)
                 for k in ("kernel", "recurrent_kernel", "bias"))


@pytest.mark.parametrize("tol", ["0.1", "0"])
def test_sum3_main_flagfile_many_seeds_distribution_then_first_readable(tmp_path, tol, capsys):
    """The README's main command trains 64 seeds: the report gives how many
    reach W = U = 1, b = 0 and the other solutions first, then the read-outs of
    the first seed that reached it (recomputed here from the checkpoint), or of
    seed index 0 when none did (`--readable_tol=0`: none can)."""
    from rnn_jax.datasets.digits import sum_of_digits

    train_in_process(sum3, "--flagfile=experiments/flags/sum3.flags", "--epochs=1",
                     "--num_samples=4000", f"--readable_tol={tol}", workdir=tmp_path)
    stdout = capsys.readouterr().out
    metrics = check_outputs(tmp_path, epochs=1, num_seeds=64)
    assert (tmp_path / "seeds.png").read_bytes()[:8] == PNG

    W, U, b = sum3_weights_by_seed(tmp_path / "checkpoints")
    assert W.shape == (64,)
    e = np.arange(10)[None, :] * W[:, None] + b[:, None]  # (64, 10): e_d = d W + b
    readable = (np.abs(U - 1) <= float(tol)) & (np.max(np.abs(e - np.arange(10)), axis=1)
                                                <= float(tol))
    assert metrics["readable"] == readable.tolist()
    if tol == "0.1":
        assert 0 < readable.sum() < 64 and not readable[0]  # this run tells "first" from "0"
        shown = int(np.argmax(readable))
        header = (f"seed {shown}, the first of the 64 seeds to reach the readable solution: "
                  "predictions for the last 5 samples")
    else:
        assert not readable.any()
        shown = 0
        header = ("seed 0 (seed index 0; none of the 64 seeds reached the readable solution): "
                  "predictions for the last 5 samples")
    assert metrics["readout_seed"] == metrics["readout_index"] == shown

    # The distribution first, then the shown seed's read-outs.
    report = (tmp_path / "report.txt").read_text().splitlines()
    assert report[0].startswith(f"64 seeds: {readable.sum()} reach the readable solution "
                                f"W = U = 1, b = 0 (within {float(tol)}; "), report[0]
    counts = [int(line.split(": ")[1].split()[0]) for line in report
              if line.startswith("    U ~ ")]
    assert sum(counts) == 64 - readable.sum()
    assert "  seeds.png: each seed's U against its final val_loss, readable or not" in report
    start = report.index(header)
    assert start > report.index("  the other solutions (U and the slope of e_d ~ slope * d + c, "
                                "rounded):")
    assert report[start + 1] == "  digits      label  prediction"
    _, y, ids = sum_of_digits(4000, seed=0)
    rows = [line.split("]")[1].split() for line in report[start + 2:start + 7]]
    np.testing.assert_allclose([float(r[0]) for r in rows], y[-5:, 0])
    preds = linear_rnn_by_hand(e[shown][ids[-5:]], U[shown])
    np.testing.assert_allclose([float(r[1]) for r in rows], preds, rtol=1e-4, atol=2e-4)
    assert report[start + 7].startswith(f"  W = {W[shown]:.4f}  U = {U[shown]:.4f}  "
                                        f"b = {b[shown]:.4g} ")
    assert report[start + 8].endswith(": yes" if tol == "0.1" else ": no")
    assert stdout.index(report[0]) < stdout.index(header)


def test_sum3_many_seeds(tmp_path, capsys):
    args = ["--flagfile=experiments/flags/sum3.flags", "--epochs=2", "--num_seeds=3", "--seed=4"]
    train_in_process(sum3, *args, workdir=tmp_path)
    metrics = check_outputs(tmp_path, epochs=2, num_seeds=3)
    assert (tmp_path / "seeds.png").is_file()
    assert len(metrics["W"]) == len(metrics["U"]) == len(metrics["readable"]) == 3
    assert metrics["readable_fraction"] == pytest.approx(np.mean(metrics["readable"]))
    assert "3 seeds:" in capsys.readouterr().out
    # TensorBoard event files: a run per seed, each epoch's losses as history.jsonl
    # logged them, and the run's flags as hyperparameters.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    for i, s in enumerate(range(4, 7)):
        for run, key in (("train", "loss"), ("validation", "val_loss")):
            acc = EventAccumulator(str(tmp_path / "tensorboard" / f"seed_{s}" / run)).Reload()
            got = [e.value for e in acc.Scalars("epoch_loss")]
            np.testing.assert_allclose(got, [h[key][i] for h in history], rtol=1e-6)
    hparams = EventAccumulator(str(tmp_path / "tensorboard" / "seed_4")).Reload()
    assert hparams.PluginTagToContent("hparams")  # the flags, for TensorBoard's HParams tab
    # The same again: the finished run is left as it is, its metrics returned.
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert as_json(train_in_process(sum3, *args, workdir=tmp_path)) == metrics
    assert capsys.readouterr().out == (f"sum3 (scalar): --workdir={tmp_path} holds this run, "
                                       "already complete; its outputs are left as they are "
                                       "(--overwrite trains it again)\n")
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    # Each seed of the batch is the model a separate run with that seed trains.
    single = tmp_path / "single"
    one = train_in_process(sum3, "--flagfile=experiments/flags/sum3.flags", "--epochs=2",
                           "--seed=5", "--num_seeds=1", workdir=single)
    assert one["W"] == pytest.approx(metrics["W"][1], rel=1e-4, abs=1e-5)
    assert one["U"] == pytest.approx(metrics["U"][1], rel=1e-4, abs=1e-5)
    assert one["val_loss"] == pytest.approx(metrics["val_loss"][1], rel=1e-3, abs=1e-6)


def test_sum3_learning_rate_sweep(tmp_path):
    """Two learning rates x 2 seeds in one command: members, the per-value table
    and plot, each recomputed from the per-member lists; a member equals the
    one-value run of its seed and learning rate."""
    train_in_process(sum3, "--flagfile=experiments/flags/sum3.flags", "--epochs=2",
                     "--num_seeds=2", "--seed=4", "--learning_rate=0.001,0.01", workdir=tmp_path)
    metrics = check_outputs(tmp_path, epochs=2, num_seeds=4)
    assert metrics["num_seeds"] == 2 and metrics["num_members"] == 4
    assert metrics["members"] == [{"seed": 4, "learning_rate": 0.001},
                                  {"seed": 5, "learning_rate": 0.001},
                                  {"seed": 4, "learning_rate": 0.01},
                                  {"seed": 5, "learning_rate": 0.01}]
    assert (tmp_path / "readable_fraction.png").read_bytes()[:8] == PNG
    readable = np.array(metrics["readable"])
    val_loss = np.array(metrics["val_loss"])
    rows = metrics["per_learning_rate"]
    assert [r["learning_rate"] for r in rows] == [0.001, 0.01]
    report = (tmp_path / "report.txt").read_text()
    assert "  learning rate   seeds   readable   median val_loss" in report
    for r, idx in zip(rows, ([0, 1], [2, 3])):
        assert r["seeds"] == 2 and r["readable"] == readable[idx].sum()
        assert r["readable_fraction"] == pytest.approx(readable[idx].mean())
        assert r["val_loss_median"] == pytest.approx(np.median(val_loss[idx]))
        line = (f"  {r['learning_rate']:>13g}       2   {100 * r['readable_fraction']:7.0f}%   "
                f"{r['val_loss_median']:.3g}")
        assert line in report.splitlines(), (line, report)
    assert json.loads((tmp_path / "run.json").read_text())["flags"]["learning_rate"] == [0.001,
                                                                                         0.01]
    assert "--learning_rate=0.001,0.01" in (tmp_path / "flags.txt").read_text().splitlines()
    # Member 3 (seed 5, learning rate 0.01) is the one-value run of seed 5 with 0.01.
    single = tmp_path / "single"
    train_in_process(sum3, "--flagfile=experiments/flags/sum3.flags", "--epochs=2", "--seed=5",
                     "--num_seeds=1", "--learning_rate=0.01", workdir=single)
    one = json.loads((single / "metrics.json").read_text())
    assert "members" not in one and "per_learning_rate" not in one
    assert json.loads((single / "run.json").read_text())["flags"]["learning_rate"] == 0.01
    assert one["W"] == pytest.approx(metrics["W"][3], rel=1e-4, abs=1e-5)
    assert one["U"] == pytest.approx(metrics["U"][3], rel=1e-4, abs=1e-5)
    assert one["val_loss"] == pytest.approx(metrics["val_loss"][3], rel=1e-3, abs=1e-6)
    assert metrics["W"][3] != pytest.approx(metrics["W"][1], rel=1e-3)  # the values differ


# experiments.sum3 in a subprocess that, at its first epoch, logs a warning through
# absl logging and one through Python's warnings (as a library would), and at exit
# prints which TensorFlow / Keras modules were imported.
WATCHED = textwrap.dedent("""
    import atexit, sys, warnings
    from absl import logging
    from rnn_jax import workdir
    atexit.register(lambda: print("imported:", sorted(
        m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))))
    history_line = workdir.history_line
    def patched(epoch, *a, **k):
        if epoch == 1:
            logging.warning("a library's absl warning")
            warnings.warn("a library's Python warning")
        return history_line(epoch, *a, **k)
    workdir.history_line = patched
    from absl import app
    from experiments import sum3
    app.run(sum3.main)
""")
TF_LINES = re.compile(r"tensorflow|oneDNN|cuda drivers|TF-TRT|cuDNN|cuFFT|cuBLAS|StreamExecutor",
                      re.IGNORECASE)


def test_plain_run_imports_no_tensorflow_and_keeps_warnings_that_matter(tmp_path):
    """A plain run imports no TensorFlow (nor Keras), so none of its start-up
    lines; a resumed run prints no Orbax warning; and warnings of the libraries
    a run uses still reach the terminal."""
    args = ["--flagfile=experiments/flags/sum3.flags", "--num_seeds=1", "--num_samples=400",
            "--epochs=2", "--checkpoint_every=1", f"--workdir={tmp_path}"]
    proc = subprocess.run([sys.executable, "-c", WATCHED, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "imported: []", proc.stdout[-2000:]
    assert not TF_LINES.search(proc.stdout + proc.stderr), proc.stdout + proc.stderr
    assert "a library's absl warning" in proc.stderr
    assert "UserWarning: a library's Python warning" in proc.stderr
    # Resumed from epoch 1 (the newest checkpoint, 2, and the final outputs gone):
    # nothing on stderr.
    import shutil
    shutil.rmtree(tmp_path / "checkpoints" / "2")
    (tmp_path / "metrics.json").unlink()
    proc = run_module("experiments.sum3", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {tmp_path}/checkpoints/1 (epoch 1 of 2)" in proc.stdout
    assert proc.stderr == "", proc.stderr[-3000:]


def test_learning_rate_flag_keeps_one_value_a_float():
    """One value parses to the float a float flag gave (so run.json, and with it
    the resuming of existing workdirs, is unchanged); a list to floats; both
    serialise back to what parses to them."""
    from experiments.common import LearningRatesParser

    p = LearningRatesParser()
    one = p.parse("0.001")
    assert one == 0.001 and type(one) is float
    assert p.parse("3e-4, 0.001,0.01") == [0.0003, 0.001, 0.01]
    for value in (0.001, 0.1 + 0.2, [0.0003, 0.001]):
        assert p.parse(p.serialize(value)) == value
    assert p.serialize(0.001) == "0.001"


def test_toy_runs_compile_cheaply_for_one_seed_only():
    # XLA's cheaper optimisation trains many seeds 5-6x slower (see the
    # docstring's figures), so only a one-seed run on CPU asks for it.
    import jax

    from experiments.common import fast_compile_options

    assert jax.default_backend() == "cpu"
    assert fast_compile_options(1) == {"xla_backend_optimization_level": 0,
                                       "xla_llvm_disable_expensive_passes": True}
    for num_seeds in (2, 64, 512):
        assert fast_compile_options(num_seeds) is None


@pytest.mark.parametrize("flagfile", ["contains4", "contains4_sigmoid"])
def test_contains4_from_flagfile(tmp_path, flagfile):
    from experiments.contains4 import make_model_fn
    from rnn_jax import checkpoints

    train_in_process(contains4, f"--flagfile=experiments/flags/{flagfile}.flags", "--epochs=2",
                     workdir=tmp_path)
    metrics = check_outputs(tmp_path, epochs=2)
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    sigmoid = flagfile.endswith("sigmoid")
    assert metrics["rnn_activation"] == ("sigmoid" if sigmoid else "linear")
    model = make_model_fn(metrics["embedding_dim"], metrics["rnn_activation"])(nnx.Rngs(7))
    checkpoints.load_weights(model, str(tmp_path / "checkpoints"))
    E = np.asarray(model.layers[0].get_weights()[0], np.float64)
    W, U, b = (np.asarray(w, np.float64) for w in model.layers[1].get_weights())
    e = E @ W[:, 0] + b[0]
    np.testing.assert_allclose(metrics["digit_weights"], e, rtol=1e-5, atol=1e-5)
    assert metrics["U"] == pytest.approx(U[0, 0], rel=1e-6)
    assert metrics["detector_pattern"] == bool(e[4] > 0 and np.all(np.delete(e, 4) < 0))
    # Validation accuracy recomputed by hand from the checkpoint's weights.
    from rnn_jax.datasets.digits import contains_digit

    _, y, ids = contains_digit(10000, seed=0)
    ids_val, y_val = ids[8000:], y[8000:, 0]
    act = (lambda z: 1 / (1 + np.exp(-z))) if sigmoid else (lambda z: z)
    h = np.zeros(len(ids_val))
    for t in range(3):
        h = act(e[ids_val[:, t]] + h * U[0, 0])
    p = h if sigmoid else 1 / (1 + np.exp(-h))
    assert metrics["val_accuracy"] == pytest.approx(np.mean((p > 0.5) == y_val), abs=1e-6)
    # The latch's fixed points with each digit held: h* = e_d / (1 - U) for the
    # linear cell, dF/dh = U; the sigmoid cell's h* = sigmoid(U h* + e_d), dF/dh
    # = U h*(1 - h*).
    got = np.array(metrics["latch_fixed_points"])
    if sigmoid:
        np.testing.assert_allclose(got, act(U[0, 0] * got + e), atol=1e-5)
        np.testing.assert_allclose(metrics["latch_eigenvalues"], U[0, 0] * got * (1 - got),
                                   rtol=1e-4, atol=1e-6)
    else:
        np.testing.assert_allclose(got, e / (1 - U[0, 0]), rtol=1e-4)
        np.testing.assert_allclose(metrics["latch_eigenvalues"], U[0, 0], rtol=1e-5)
    assert (tmp_path / "fixed_points.png").read_bytes()[:8] == PNG
    assert "the latch's fixed points" in (tmp_path / "report.txt").read_text()


# Every training flag's bad values, and unknown names, for both toy experiments.
BAD_FLAGS = ["--epochs=0", "--epochs=-1", "--batch_size=0", "--batch_size=-1",
             "--validation_split=1.0", "--validation_split=-0.1", "--learning_rate=0.0",
             "--num_seeds=0", "--no_such_flag=1", "--learning_rate=0.001,0.0",
             "--learning_rate=0.01,0.01", "--learning_rate=0.001,fast"]


@pytest.mark.parametrize("module,bad", [("experiments.sum3", b) for b in BAD_FLAGS]
                         + [("experiments.sum3", "--input=bogus")]
                         + [("experiments.contains4", b) for b in
                            ("--epochs=0", "--batch_size=-4", "--validation_split=1.5",
                             "--no_such_flag=1", "--embedding_dim=0")])
def test_bad_flags_fail_cleanly(module, bad):
    flagfile = "sum3" if module.endswith("sum3") else "contains4"
    proc = run_module(module, f"--flagfile=experiments/flags/{flagfile}.flags", bad)
    flag, value = bad.lstrip("-").split("=")
    assert_flag_error(proc, flag, None if flag == "no_such_flag" else value)


def test_sum3_benchmark_quick(tmp_path):
    # The side-by-side benchmark keeps working (a small run; the real figures
    # come from `python -m benchmarks.sum3`).
    out = tmp_path / "sum3.json"
    proc = run_module("benchmarks.sum3", "--quick", "--nocommands", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["setup"]["samples"] == 1000
    assert res["keras_tf"]["backend"] == "tensorflow"
    assert res["rnn_jax"]["train"]["median"] > 0 and res["keras_tf"]["fit"]["median"] > 0
    assert res["speedup_train_vs_keras_tf"] == pytest.approx(
        res["keras_tf"]["fit"]["median"] / res["rnn_jax"]["train"]["median"])
    assert "training speed-up vs Keras-TF fit" in proc.stdout


@pytest.mark.parametrize("verbose,lines", [("2", 3), ("0", 0)])
def test_verbose_flag_gives_a_line_per_epoch_or_none(verbose, lines, tmp_path, capsys):
    # --verbose=2: one line per epoch (the default, 1, is a progress bar); 0:
    # none. It does not change the run: a rerun with another value resumes.
    args = ["--flagfile=experiments/flags/sum3.flags", "--num_seeds=1", "--epochs=3"]
    train_in_process(sum3, *args, f"--verbose={verbose}", workdir=tmp_path)
    out = capsys.readouterr().out
    assert len(re.findall(r"^Epoch \d/3 - ", out, re.M)) == lines
    other = "0" if verbose == "2" else "2"
    train_in_process(sum3, *args, f"--verbose={other}", workdir=tmp_path)
    assert "already complete" in capsys.readouterr().out
