"""Runs that survive being killed, stop clearly when they diverge, and are
deterministic: resume equals an unbroken run bitwise (fit and experiments,
after SIGKILL at chosen moments, even inside a checkpoint or metrics.json
write, and past a damaged newest checkpoint), a workdir with other flags, one
that cannot be made, damaged or foreign checkpoints are refused in one line,
non-finite losses stop with one line, and many-seed runs report the diverged
seeds while the others go on."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnn_jax as R
from rnn_jax import checkpoints
from conftest import ROOT, train_in_process


def lstm_factory(rngs):
    return R.Sequential([R.LSTM(3, rngs=rngs), R.Dense(1, rngs=rngs)], input_shape=(4, 2))


def regression_data(n=600):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4, 2)).astype(np.float32)
    return x, x.sum(axis=(1, 2))[:, None]


# The toy experiments' fast-compile options: the same program every time, compiled quicker.
FIT = dict(loss="mse", batch_size=32, validation_split=0.2, verbose=0,
           compiler_options={"xla_backend_optimization_level": 0,
                             "xla_llvm_disable_expensive_passes": True})


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """A persistent compilation cache for this module: the repeated fits here
    compile the same programs (identical executables, so bitwise claims hold)."""
    path = str(tmp_path_factory.mktemp("xla_cache"))
    before = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield path
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


def assert_same_run(a, b):
    assert a.history.keys() == b.history.keys()
    for k in a.history:
        np.testing.assert_array_equal(a.history[k], b.history[k], err_msg=k)
    for u, v in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state)):
        if jax.dtypes.issubdtype(u.dtype, jax.dtypes.prng_key):
            u, v = jax.random.key_data(u), jax.random.key_data(v)
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


# -- fit: checkpoints and resume ----------------------------------------------------------------


@pytest.mark.parametrize("num_seeds", [1, 3])
def test_resume_equals_unbroken_run_bitwise(tmp_path, num_seeds):
    x, y = regression_data()
    unbroken = R.fit(lstm_factory, x, y, epochs=4, num_seeds=num_seeds, **FIT)
    first = R.fit(lstm_factory, x, y, epochs=2, num_seeds=num_seeds, checkpoint_every=1,
                  checkpoint_dir=str(tmp_path), **FIT)
    assert first.initial_epoch == 0 and len(first.epoch_seconds) == 2
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]
    resumed = R.fit(lstm_factory, x, y, epochs=4, num_seeds=num_seeds, checkpoint_every=1,
                    checkpoint_dir=str(tmp_path), **FIT)
    assert resumed.initial_epoch == 2 and len(resumed.epoch_seconds) == 2
    assert_same_run(unbroken, resumed)
    # max_to_keep=3: epochs 2, 3 and 4 remain; the newest is the final state.
    assert sorted(os.listdir(tmp_path)) == ["2", "3", "4"]
    model = checkpoints.load_weights(lstm_factory(nnx.Rngs(5)), str(tmp_path),
                                     seed_index=num_seeds - 1)
    np.testing.assert_array_equal(model(x[:7]), unbroken.model(num_seeds - 1)(x[:7]))


def test_resume_of_a_sweep_keeps_its_values_and_equals_unbroken_run(tmp_path):
    """The swept values live in the optimizer state: the checkpoint holds them,
    and the resumed run trains on with them (a run that lost them would train
    every member with the first values and fail the comparison)."""
    x, y = regression_data()
    kw = dict(FIT, optimizer="adam", learning_rate=[0.003, 0.03], num_seeds=2, seed=1)
    unbroken = R.fit(lstm_factory, x, y, epochs=4, **kw)
    R.fit(lstm_factory, x, y, epochs=2, checkpoint_every=1, checkpoint_dir=str(tmp_path), **kw)
    resumed = R.fit(lstm_factory, x, y, epochs=4, checkpoint_every=1,
                    checkpoint_dir=str(tmp_path), **kw)
    assert resumed.initial_epoch == 2 and resumed.members == unbroken.members
    np.testing.assert_array_equal(resumed.state.opt_state.hyperparams["learning_rate"],
                                  np.float32([0.003, 0.003, 0.03, 0.03]))
    assert_same_run(unbroken, resumed)
    assert not np.allclose(unbroken.history["loss"][0], unbroken.history["loss"][2])


def test_checkpoint_every_and_at_the_end(tmp_path):
    x, y = regression_data()
    R.fit(lstm_factory, x, y, epochs=5, checkpoint_every=2, checkpoint_dir=str(tmp_path), **FIT)
    assert sorted(os.listdir(tmp_path)) == ["2", "4", "5"]
    tree = checkpoints.RunCheckpoints(str(tmp_path))
    assert tree.latest_epoch() == 5


def test_resume_from_the_final_checkpoint_trains_nothing(tmp_path):
    x, y = regression_data()
    a = R.fit(lstm_factory, x, y, epochs=2, checkpoint_dir=str(tmp_path), **FIT)
    b = R.fit(lstm_factory, x, y, epochs=2, checkpoint_dir=str(tmp_path), **FIT)
    assert b.initial_epoch == 2 and b.epoch_seconds == []
    assert_same_run(a, b)
    with pytest.raises(ValueError, match="epoch 2, past epochs=1"):
        R.fit(lstm_factory, x, y, epochs=1, checkpoint_dir=str(tmp_path), **FIT)


def test_reading_a_runs_checkpoint_back_logs_no_warning(tmp_path, caplog):
    # Orbax's Checkpointer looks for a step's _CHECKPOINT_METADATA in the item
    # directory (<epoch>/default) it is given, and warns through absl logging
    # ("Metadata file does not exist") that it is not there: it is one level up.
    x, y = regression_data()
    fit = R.fit(lstm_factory, x, y, epochs=1, num_seeds=2, checkpoint_dir=str(tmp_path), **FIT)
    with caplog.at_level(logging.DEBUG):
        model = checkpoints.load_weights(lstm_factory(nnx.Rngs(5)), str(tmp_path), seed_index=1)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    np.testing.assert_array_equal(model(x[:7]), fit.model(1)(x[:7]))


def test_checkpoint_of_another_model_is_refused(tmp_path):
    x, y = regression_data()
    R.fit(lstm_factory, x, y, epochs=1, checkpoint_dir=str(tmp_path), **FIT)

    def other(rngs):
        return R.Sequential([R.GRU(3, rngs=rngs), R.Dense(1, rngs=rngs)], input_shape=(4, 2))

    with pytest.raises(checkpoints.CheckpointMismatchError,
                       match=f"checkpoint {tmp_path}/1 does not fit this run.*"
                             r"params/layers/0/cell/bias has shape \(1, 12\) there, "
                             r"\(1, 2, 9\) here"):  # GRU's reset_after bias: (2, 3 units)
        R.fit(other, x, y, epochs=2, checkpoint_dir=str(tmp_path), **FIT)

    def deeper(rngs):
        return R.Sequential([R.LSTM(3, rngs=rngs), R.Dense(2, rngs=rngs), R.Dense(1, rngs=rngs)],
                            input_shape=(4, 2))

    with pytest.raises(checkpoints.CheckpointMismatchError,
                       match=f"checkpoint {tmp_path}/1 does not fit this run.*other arrays"):
        R.fit(deeper, x, y, epochs=2, checkpoint_dir=str(tmp_path), **FIT)
    assert sorted(os.listdir(tmp_path)) == ["1"]  # readable: not taken for damaged


def test_killed_checkpoint_write_is_ignored_and_removed(tmp_path):
    # What a save killed before Orbax's final rename leaves: a temporary directory.
    x, y = regression_data()
    R.fit(lstm_factory, x, y, epochs=1, checkpoint_dir=str(tmp_path), **FIT)
    partial = tmp_path / "2.orbax-checkpoint-tmp-1234"
    partial.mkdir()
    (partial / "garbage").write_bytes(b"\x00" * 10)
    r = R.fit(lstm_factory, x, y, epochs=2, checkpoint_dir=str(tmp_path), **FIT)
    assert r.initial_epoch == 1
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]


# -- fit: damaged checkpoints -----------------------------------------------------------------


def damage(checkpoint, kind: str = "manifest"):
    """Damage the checkpoint directory `checkpoint` (`<dir>/<epoch>`) as a bad
    disk or a partial copy leaves it."""
    item = pathlib.Path(checkpoint) / "default"
    rng = np.random.default_rng(0)
    if kind == "manifest":  # random bytes over every OCDBT manifest
        files = list(item.rglob("manifest.ocdbt"))
    elif kind == "data":  # random bytes over the OCDBT data files
        files = [f for f in item.rglob("*") if f.parent.name == "d"]
    elif kind == "metadata":  # random bytes over the tree's metadata
        files = [item / "_METADATA"]
    elif kind == "truncated":  # every manifest cut to nothing
        files = list(item.rglob("manifest.ocdbt"))
        for f in files:
            f.write_bytes(b"")
    elif kind == "missing":  # the whole item directory gone
        files = [item]
        shutil.rmtree(item)
    assert files, f"nothing to damage under {item}"
    if kind in ("manifest", "data", "metadata"):
        for f in files:
            f.write_bytes(rng.bytes(f.stat().st_size))


@pytest.mark.parametrize("kind", ["manifest", "data", "metadata", "truncated", "missing"])
def test_damaged_newest_checkpoint_is_set_aside_and_fit_resumes_before_it(tmp_path, caplog,
                                                                           capfd, kind):
    x, y = regression_data()
    unbroken = R.fit(lstm_factory, x, y, epochs=3, **FIT)
    kw = dict(epochs=3, checkpoint_every=1, checkpoint_dir=str(tmp_path), **FIT)
    R.fit(lstm_factory, x, y, **kw)
    damage(tmp_path / "3", kind)
    capfd.readouterr()
    with caplog.at_level(logging.WARNING, logger="rnn_jax.checkpoints"):
        resumed = R.fit(lstm_factory, x, y, **kw)
    assert resumed.initial_epoch == 2 and len(resumed.epoch_seconds) == 1
    assert_same_run(unbroken, resumed)
    said = [r.getMessage() for r in caplog.records if r.name == "rnn_jax.checkpoints"]
    assert len(said) == 1 and "\n" not in said[0], said
    assert said[0].startswith(f"checkpoint {tmp_path}/3 is damaged ("), said[0]
    assert said[0].endswith(f"moved to {tmp_path}/3.damaged; resuming from {tmp_path}/2")
    assert sorted(os.listdir(tmp_path)) == ["1", "2", "3", "3.damaged"]
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Event loop is closed" not in err, err[-3000:]
    # Epoch 3 was saved anew: the next run resumes from it, the set-aside copy unread.
    again = R.fit(lstm_factory, x, y, **kw)
    assert again.initial_epoch == 3
    assert_same_run(unbroken, again)


def test_fit_refuses_when_no_checkpoint_is_intact(tmp_path, capfd):
    x, y = regression_data()
    kw = dict(epochs=3, checkpoint_every=1, checkpoint_dir=str(tmp_path), **FIT)
    R.fit(lstm_factory, x, y, epochs=2, **{k: v for k, v in kw.items() if k != "epochs"})
    damage(tmp_path / "1", "manifest")
    damage(tmp_path / "2", "data")
    capfd.readouterr()
    with pytest.raises(checkpoints.DamagedCheckpointError,
                       match=f"^no intact checkpoint in {tmp_path}: {tmp_path}/2 is damaged .*; "
                             f"{tmp_path}/1 is damaged .*; remove them to train from the start$"
                       ) as e:
        R.fit(lstm_factory, x, y, **kw)
    assert "\n" not in str(e.value)
    assert sorted(e.value.damaged) == [f"{tmp_path}/1", f"{tmp_path}/2"]
    assert "manifest.ocdbt" in e.value.damaged[f"{tmp_path}/1"]
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]  # nothing moved
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Event loop is closed" not in err, err[-3000:]


# -- determinism ------------------------------------------------------------------------------


def test_same_flags_same_results_bitwise():
    x, y = regression_data()
    assert_same_run(R.fit(lstm_factory, x, y, epochs=2, seed=4, **FIT),
                    R.fit(lstm_factory, x, y, epochs=2, seed=4, **FIT))


def test_each_of_many_seeds_is_its_separate_run():
    # Documented tolerance: the vmapped program may order float sums differently.
    x, y = regression_data()
    many = R.fit(lstm_factory, x, y, epochs=2, seed=3, num_seeds=3, **FIT)
    for i in range(3):
        one = R.fit(lstm_factory, x, y, epochs=2, seed=3 + i, **FIT)
        np.testing.assert_allclose(many.history["val_loss"][i], one.history["val_loss"],
                                   rtol=1e-5)
        for u, v in zip(jax.tree.leaves(many.params(i)), jax.tree.leaves(one.params(0))):
            np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)


# -- divergence -------------------------------------------------------------------------------


def dense_factory(rngs):
    return R.Sequential([R.Dense(1, rngs=rngs)], input_shape=(3,))


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # Two clean epochs with checkpoints, then the same run goes on over data
    # whose sample 70 has a NaN target: unshuffled, batch 8, that is step
    # 70 // 8 = 8 of epoch 3. Nothing is saved or called back for epoch 3, and
    # the weights stay those after epoch 2 (== the last checkpoint's).
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = x.sum(axis=1, keepdims=True)
    kw = dict(loss="mse", batch_size=8, shuffle=False, verbose=0, check_inputs=False,
              checkpoint_dir=str(tmp_path), checkpoint_every=1)
    clean = R.fit(dense_factory, x, y, epochs=2, **kw)
    y_bad = y.copy()
    y_bad[70] = np.nan
    calls = []
    with pytest.raises(R.NonFiniteLossError, match=r"^non-finite loss at epoch 3, step 8$") as e:
        R.fit(dense_factory, x, y_bad, epochs=4, callbacks=[lambda *a: calls.append(a)], **kw)
    assert calls == [] and sorted(os.listdir(tmp_path)) == ["1", "2"]
    assert e.value.diverged == {0: (3, 8)}
    saved = checkpoints.load_weights(dense_factory(nnx.Rngs(9)), str(tmp_path))
    for u, v, w in zip(jax.tree.leaves(e.value.result.params(0)),
                       jax.tree.leaves(clean.params(0)), jax.tree.leaves(nnx.state(saved))):
        np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(v, w)
    hist = e.value.result.history["loss"]
    assert np.all(np.isfinite(hist[:2])) and np.isnan(hist[2])


def test_nonfinite_gradient_alone_is_caught():
    # sqrt at 0: finite loss, infinite gradient.
    x = np.zeros((16, 3), np.float32)
    y = np.zeros((16, 1), np.float32)

    def loss(y_true, y_pred):
        return jnp.sqrt(jnp.abs(y_pred - y_true))[:, 0] * 0.0

    def zero_factory(rngs):
        return R.Sequential([R.Dense(1, kernel_initializer="zeros", rngs=rngs)],
                            input_shape=(3,))

    with pytest.raises(R.NonFiniteLossError, match="epoch 1, step 0"):
        R.fit(zero_factory, x, y, loss=loss, epochs=1, batch_size=4, verbose=0)


def test_many_seeds_diverged_ones_reported_others_go_on():
    # Loss NaN while the prediction is positive; x = 1, y = -1, bias 0: a seed
    # diverges at its first step exactly when its initial kernel sums to > 0
    # (its weights: the factory with Rngs(split(key(seed + i))[0]), fit's contract).
    x = np.ones((64, 3), np.float32)
    y = -np.ones((64, 1), np.float32)

    def loss(y_true, y_pred):
        return jnp.where(y_pred[:, 0] > 0, jnp.nan, (y_true - y_pred)[:, 0] ** 2)

    seeds = 8
    expected = set()
    for i in range(seeds):
        init_key = jax.random.split(jax.random.key(10 + i))[0]
        if float(np.sum(dense_factory(nnx.Rngs(init_key)).layers[0].kernel[...])) > 0:
            expected.add(i)
    assert 0 < len(expected) < seeds  # both kinds present with these seeds
    lines = []
    r = R.fit(dense_factory, x, y, loss=loss, epochs=3, batch_size=16, seed=10,
              num_seeds=seeds, print_fn=lines.append)
    assert r.diverged == {i: (1, 0) for i in expected}
    for i in range(seeds):
        if i in expected:
            assert np.all(np.isnan(r.history["loss"][i]))
            init_key = jax.random.split(jax.random.key(10 + i))[0]
            start = dense_factory(nnx.Rngs(init_key))
            np.testing.assert_array_equal(r.model(i).layers[0].kernel[...],
                                          start.layers[0].kernel[...])
        else:
            assert np.all(np.isfinite(r.history["loss"][i]))
            assert r.history["loss"][i][-1] < r.history["loss"][i][0]
    said = [line for line in lines if "non-finite loss" in line]
    assert len(said) == len(expected)
    assert all(f"seed index {i}: non-finite loss at epoch 1, step 0" in " ".join(said)
               for i in expected)


# -- experiments: resume after SIGKILL, workdir flags, divergence -------------------------------

SUM3 = ["--flagfile=experiments/flags/sum3.flags", "--num_seeds=1", "--num_samples=2000",
        "--epochs=6", "--checkpoint_every=2"]

# Runs experiments.sum3 in-process, SIGKILL-ing itself at a chosen moment.
KILLER = textwrap.dedent("""
    import os, pathlib, signal, sys
    moment = sys.argv.pop(1)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if moment == "checkpoint_rename":  # Orbax wrote epoch 4's files, not yet renamed
        rename = pathlib.Path.rename
        def patched(self, target):
            if ".orbax-checkpoint-tmp" in str(self) and str(target).endswith("/4"):
                die()
            return rename(self, target)
        pathlib.Path.rename = patched
        os_rename = os.rename
        def patched_os(src, dst, *a, **k):
            if ".orbax-checkpoint-tmp" in str(src) and str(dst).endswith("/4"):
                die()
            return os_rename(src, dst, *a, **k)
        os.rename = patched_os
    elif moment == "metrics_write":  # metrics.json written to its temporary name only
        replace = os.replace
        def patched(src, dst, *a, **k):
            if str(dst).endswith("metrics.json"):
                die()
            return replace(src, dst, *a, **k)
        os.replace = patched
    elif moment == "after_epoch_5":  # between checkpoints (epoch 5 of 6 done)
        from rnn_jax import workdir
        history_line = workdir.history_line
        def patched(epoch, *a, **k):
            if epoch == 6:
                die()
            return history_line(epoch, *a, **k)
        workdir.history_line = patched
    from absl import app
    from experiments import sum3
    app.run(sum3.main)
""")


@pytest.fixture(scope="module")
def run_sum3(compilation_cache):
    """`run_sum3(*flags, killer=None)`: experiments.sum3 in a subprocess (killed
    at the moment `killer` names, if given)."""
    cache = f"--compilation_cache={compilation_cache}"  # operational: resuming ignores it

    def run(*args, killer=None):
        cmd = [sys.executable, "-m", "experiments.sum3", *SUM3, cache, *args]
        if killer:
            cmd = [sys.executable, "-c", KILLER, killer, *SUM3, cache, *args]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return run


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, run_sum3):
    workdir = tmp_path_factory.mktemp("unbroken")
    proc = run_sum3(f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


@pytest.mark.parametrize("moment", ["checkpoint_rename", "metrics_write", "after_epoch_5"])
def test_experiment_killed_then_rerun_ends_bitwise_equal(tmp_path, unbroken, moment, run_sum3):
    killed = run_sum3(f"--workdir={tmp_path}", killer=moment)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "metrics.json").exists()
    rerun = run_sum3(f"--workdir={tmp_path}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stderr == ""  # no Orbax warning on resuming
    resumed_from = json.loads((tmp_path / "timing.json").read_text())["resumed_from_epoch"]
    assert resumed_from == {"checkpoint_rename": 2, "metrics_write": 6,
                            "after_epoch_5": 4}[moment]
    assert (tmp_path / "metrics.json").read_bytes() == (unbroken / "metrics.json").read_bytes()
    assert ((tmp_path / "history.jsonl").read_bytes()
            == (unbroken / "history.jsonl").read_bytes())
    assert not [p for p in os.listdir(tmp_path / "checkpoints") if not p.isdigit()]


def test_workdir_with_other_flags_is_refused_unless_overwrite(tmp_path, unbroken, run_sum3):
    proc = run_sum3(f"--workdir={unbroken}", "--learning_rate=0.01")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    assert ("holds a run with other flags" in errors[0] and "--overwrite" in errors[0]
            and "--learning_rate=None there, 0.01 here" in errors[0]), errors[0]
    assert json.loads((unbroken / "run.json").read_text())["flags"]["learning_rate"] is None

    from experiments import sum3

    shutil.copytree(unbroken, tmp_path / "w")
    train_in_process(sum3, *SUM3, "--epochs=2", "--overwrite", workdir=tmp_path / "w")
    assert sorted(os.listdir(tmp_path / "w" / "checkpoints")) == ["2"]
    assert len((tmp_path / "w" / "history.jsonl").read_text().splitlines()) == 2


def test_finished_run_is_left_as_it_is_and_overwrite_starts_over(tmp_path, unbroken, run_sum3):
    work = tmp_path / "w"
    shutil.copytree(unbroken, work)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in work.iterdir()
              if p.is_file()}
    proc = run_sum3(f"--workdir={work}")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        f"sum3 (scalar): --workdir={work} holds this run, already complete; its outputs are "
        "left as they are (--overwrite trains it again)"]
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in work.iterdir()
            if p.is_file()} == before
    assert sorted(os.listdir(work / "checkpoints")) == ["2", "4", "6"]

    # --overwrite with the same flags: every epoch trained again, from the start.
    proc = run_sum3(f"--workdir={work}", "--overwrite")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Epoch 1/6" in proc.stdout and "resumed from" not in proc.stdout
    assert json.loads((work / "timing.json").read_text())["resumed_from_epoch"] == 0
    assert (work / "metrics.json").read_bytes() == before["metrics.json"][0]  # deterministic
    assert (work / "metrics.json").stat().st_mtime_ns != before["metrics.json"][1]


def test_experiment_divergence_is_one_line_and_exit_1(tmp_path, run_sum3):
    proc = run_sum3(f"--workdir={tmp_path}", "--learning_rate=1e30")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sum3 (scalar): non-finite loss at epoch 1, step ")
    assert not (tmp_path / "metrics.json").exists()


def test_experiment_many_seeds_names_diverged_seeds(tmp_path):
    # lr 1e30 sends every seed off; the one line (RunError: the command prints it
    # and exits with status 1, as above) names the first.
    from experiments import common, sum3

    with pytest.raises(common.RunError, match=r"^sum3 \(scalar\): non-finite loss in every "
                                              r"seed \(first: seed index \d"):
        train_in_process(sum3, *SUM3, "--learning_rate=1e30", "--num_seeds=3",
                         workdir=tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_claim_workdir_old_or_foreign_outputs(tmp_path):
    from experiments import common, sum3
    from rnn_jax import workdir

    config = common.parse_config(sum3.define_flags, [f"--flagfile={ROOT}/experiments/flags/"
                                                     "sum3.flags", *SUM3[1:]])
    flags = common.run_flags(config)
    assert flags["num_samples"] == 2000 and flags["epochs"] == 6 and "workdir" not in flags
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="holds run outputs but no run.json"):
        workdir.claim(str(tmp_path), flags, overwrite=False)
    (tmp_path / "run.json").write_text('{"flags": ')
    with pytest.raises(ValueError, match="holds run outputs but an unreadable run.json"):
        workdir.claim(str(tmp_path), flags, overwrite=False)
    assert workdir.claim(str(tmp_path), flags, overwrite=True) is False  # replaced
    assert not (tmp_path / "metrics.json").exists()
    assert workdir.claim(str(tmp_path), flags, overwrite=False) is True  # same: resume
    assert json.loads((tmp_path / "run.json").read_text())["flags"] == flags
    with pytest.raises(ValueError, match=r"holds a run with other flags \(--epochs=6 there, 7 "
                                         r"here\): pass --overwrite"):
        workdir.claim(str(tmp_path), {**flags, "epochs": 7}, overwrite=False)


# -- experiments: damaged or foreign checkpoints, a workdir that cannot be made ---------------


def stderr_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_experiment_resumes_before_a_damaged_newest_checkpoint(tmp_path, unbroken, run_sum3):
    # The unbroken run's workdir, its last checkpoint (6) damaged and its
    # final outputs gone: the rerun trains epochs 5 and 6 again from 4.
    work = tmp_path / "w"
    shutil.copytree(unbroken, work)
    (work / "metrics.json").unlink()
    (work / "timing.json").unlink()
    damage(work / "checkpoints" / "6", "manifest")
    proc = run_sum3(f"--workdir={work}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert f"checkpoint {work}/checkpoints/6 is damaged (" in lines[0], lines[0]
    assert lines[0].endswith(f"resuming from {work}/checkpoints/4"), lines[0]
    assert json.loads((work / "timing.json").read_text())["resumed_from_epoch"] == 4
    assert (work / "metrics.json").read_bytes() == (unbroken / "metrics.json").read_bytes()
    assert (work / "history.jsonl").read_bytes() == (unbroken / "history.jsonl").read_bytes()
    assert sorted(os.listdir(work / "checkpoints")) == ["2", "4", "6", "6.damaged"]


def test_experiment_with_every_checkpoint_damaged_stops_in_one_line(tmp_path, unbroken,
                                                                      run_sum3):
    work = tmp_path / "w"
    shutil.copytree(unbroken, work)
    (work / "metrics.json").unlink()  # unfinished: the rerun resumes
    for epoch in ("2", "4", "6"):
        damage(work / "checkpoints" / epoch, "manifest")
    proc = run_sum3(f"--workdir={work}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"sum3 (scalar): no intact checkpoint in {work}/checkpoints: ")
    assert all(f"{work}/checkpoints/{e} is damaged" in lines[0] for e in ("2", "4", "6"))
    assert lines[0].endswith("remove them to train from the start"), lines[0]
    assert "does not fit" not in lines[0]
    assert sorted(os.listdir(work / "checkpoints")) == ["2", "4", "6"]


def test_experiment_checkpoint_of_another_model_is_refused_in_one_line(tmp_path, unbroken,
                                                                        run_sum3):
    # The scalar run's workdir holding checkpoints of sum3's onehot model,
    # whose SimpleRNN has a (10, 1) kernel (the scalar one's: (1, 1)).
    from experiments import sum3

    work = tmp_path / "w"
    shutil.copytree(unbroken, work)
    (work / "metrics.json").unlink()  # unfinished: the rerun resumes
    shutil.rmtree(work / "checkpoints")
    x = np.eye(10, dtype=np.float32)[np.arange(96).reshape(32, 3) % 10]
    R.fit(sum3.make_model_fn("onehot"), x, x.sum(axis=(1, 2))[:, None], epochs=2,
          checkpoint_dir=str(work / "checkpoints"), **FIT)
    proc = run_sum3(f"--workdir={work}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0] == (f"sum3 (scalar): checkpoint {work}/checkpoints/2 does not fit this run "
                        "(different model, optimizer or number of seeds?): "
                        "params/layers/0/cell/kernel has shape (1, 10, 1) there, (1, 1, 1) "
                        "here"), lines[0]


def _unusable_workdir(kind: str, tmp_path):
    """(workdir, the OS reason the refusal names) for each kind of unusable --workdir."""
    if kind == "under_a_file":
        (tmp_path / "file").write_text("not a directory\n")
        return tmp_path / "file" / "run", f"{tmp_path}/file: Not a directory"
    if kind == "missing_parent_in_proc":
        return pathlib.Path("/proc/forbidden/run"), "/proc/forbidden: No such file or directory"
    if kind == "name_too_long":  # its parent could be made: removed again
        return tmp_path / "new" / ("x" * 300), "File name too long"
    # an existing directory that takes no files (a read-only one; /proc for root)
    if os.geteuid() == 0:
        return pathlib.Path("/proc"), "/proc: No such file or directory (writing a file in it)"
    (tmp_path / "ro").mkdir(mode=0o555)
    return tmp_path / "ro", f"{tmp_path}/ro: Permission denied (writing a file in it)"


@pytest.mark.parametrize("kind", ["under_a_file", "missing_parent_in_proc", "name_too_long",
                                  "unwritable"])
def test_experiment_workdir_that_cannot_be_made_is_one_line(tmp_path, run_sum3, kind):
    workdir, reason = _unusable_workdir(kind, tmp_path)
    if str(workdir).startswith("/proc") and not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux's /proc")
    before = sorted(os.listdir(tmp_path))
    proc = run_sum3(f"--workdir={workdir}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"sum3 (scalar): cannot use --workdir={workdir}: "), lines[0]
    assert reason in lines[0], lines[0]
    assert sorted(os.listdir(tmp_path)) == before  # nothing left behind
