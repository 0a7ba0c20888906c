"""fit's progress output and Keras-style callbacks (rnn_jax.callbacks).

The model is one Dense unit trained with a large SGD step on noisy data, so
its val_loss goes up and down: early stopping, best-only checkpoints and the
like have something to decide. Every expectation is computed here from the
history of a plain run (numpy), or compared with a separate run.
"""

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from flax import nnx

import rnn_jax
from rnn_jax import callbacks as C
from rnn_jax import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
EPOCHS = 20


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """The runs here compile a handful of programs again and again: JAX's
    persistent cache (a fresh one) makes each recompilation a load."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = [getattr(jax.config, n) for n in names]
    jax.config.update(names[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(names[1], 0)
    yield
    for n, v in zip(names, before):
        jax.config.update(n, v)


def make(rngs):
    return rnn_jax.Sequential([rnn_jax.Dense(1, rngs=rngs)], input_shape=(3,))


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [2.0], [-1.0]], np.float32) + 0.5 * rng.normal(size=(64, 1))
    return x, y.astype(np.float32)


X, Y = data()
KW = dict(loss="mse", optimizer="sgd", learning_rate=0.3, batch_size=8, validation_split=0.25,
          seed=0, compiler_options=FAST)


def fit(epochs=EPOCHS, verbose=0, **kw):
    return rnn_jax.fit(make, X, Y, epochs=epochs, verbose=verbose, **{**KW, **kw})


def leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def assert_same(a, b):
    for u, v in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)


class Recorder:
    """A plain callback keeping every epoch's parameters (numpy, member axis first)."""

    def __init__(self):
        self.params = {}

    def __call__(self, epoch, logs, state):
        self.params[epoch] = leaves(state.params)


@pytest.fixture(scope="module")
def one():
    """A plain one-seed run of EPOCHS epochs, and its parameters after every epoch."""
    rec = Recorder()
    return fit(callbacks=[rec]), rec.params


@pytest.fixture(scope="module")
def three():
    rec = Recorder()
    return fit(num_seeds=3, callbacks=[rec]), rec.params


def keras_format(v):
    return f"{v:.4f}" if abs(v) > 1e-3 else f"{v:.4e}"


# -- progress ------------------------------------------------------------------------------------

TIMES = r"\d+s \d+(?:s|ms|us)/epoch"


def test_verbose_2_one_line_per_epoch(one):
    res, _ = one
    lines = []
    fit(epochs=5, verbose=2, print_fn=lines.append)
    assert lines[0].startswith("compiled in ") and len(lines) == 6
    for e, line in enumerate(lines[1:]):
        want = (rf"Epoch {e + 1}/5 - \d+\.\d{{3}}s - loss: {keras_format(res.history['loss'][e])}"
                rf" - val_loss: {keras_format(res.history['val_loss'][e])}")
        assert re.fullmatch(want, line), (line, want)


def test_verbose_1_off_a_terminal_first_and_last_epoch(one):
    # print_fn is not a terminal: the first epoch's line, then at most one every
    # 5 s (these epochs take milliseconds), and the last, without ETA.
    res, _ = one
    h = res.history
    lines = []
    fit(epochs=5, verbose=1, print_fn=lines.append)
    assert len(lines) == 3, lines
    assert re.fullmatch(rf"Epoch 1/5 ━{{4}}─{{16}} {TIMES} - ETA \d+s - loss: "
                        rf"{keras_format(h['loss'][0])} - val_loss: "
                        rf"{keras_format(h['val_loss'][0])}", lines[1]), lines[1]
    assert re.fullmatch(rf"Epoch 5/5 ━{{20}} {TIMES} - loss: {keras_format(h['loss'][4])} - "
                        rf"val_loss: {keras_format(h['val_loss'][4])}", lines[2]), lines[2]


def test_many_seeds_show_mean_and_range_every_interval(three):
    # ProgbarLogger(interval=0): a line for every epoch; logs are the mean over
    # the seeds, with their range, and say so.
    res, _ = three
    lines = []
    fit(epochs=4, verbose=1, num_seeds=3, print_fn=lines.append,
        callbacks=[C.ProgbarLogger(interval=0)])
    assert len(lines) == 5, lines
    for e, line in enumerate(lines[1:]):
        parts = []
        for name in ("loss", "val_loss"):
            v = res.history[name][:, e].astype(np.float64)
            parts.append(f"{name}: {keras_format(v.mean())} [{v.min():.3g}, {v.max():.3g}]")
        tail = " - ".join(parts) + " (mean [min, max] of 3 seeds)"
        assert line.endswith(tail), (line, tail)
        assert ("ETA" in line) == (e < 3)
        assert line.startswith(f"Epoch {e + 1}/4 {'━' * (5 * (e + 1))}{'─' * (15 - 5 * e)} ")


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_verbose_1_on_a_terminal_rewrites_one_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    out = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", out)
    fit(epochs=5, verbose=1)  # print_fn=print
    text = out.getvalue()
    compiled, rest = text.split("\n", 1)
    assert compiled.startswith("compiled in ")
    assert rest.startswith("\rEpoch 1/5 ") and rest.endswith("\n") and rest.count("\n") == 1
    shown = [s.rstrip() for s in rest[:-1].split("\r")[1:]]
    assert all(re.match(r"Epoch [1-5]/5 ", s) for s in shown), shown
    assert shown[-1].startswith("Epoch 5/5 " + "━" * 20) and "ETA" not in shown[-1]


def test_printer_ends_the_bar_line_and_cuts_it_to_the_terminal(monkeypatch):
    out = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setenv("COLUMNS", "30")
    printer = C.Printer(print)
    assert printer.dynamic
    printer.rewrite("x" * 50)
    printer.rewrite("short")
    printer.line("a message")
    printer.end_line()  # nothing open: nothing written
    assert out.getvalue() == "\r" + "x" * 29 + "\rshort" + " " * 24 + "\na message\n"
    assert not C.Printer(lambda s: None).dynamic


def test_bad_verbose_is_refused():
    with pytest.raises(ValueError, match="verbose must be 0, 1, 2 or 'auto'"):
        fit(epochs=1, verbose=3)


# -- EarlyStopping -------------------------------------------------------------------------------

def keras_early_stop(values, patience, min_delta=0.0, baseline=None, start_from_epoch=0):
    """Keras' EarlyStopping (mode 'min') over a sequence of monitored values:
    `(epoch it stops at or None, best epoch)`, epochs from 0."""
    best, best_epoch, wait = None, 0, 0
    for epoch, v in enumerate(values):
        if epoch < start_from_epoch:
            continue
        if best is None:
            best_epoch = epoch
        wait += 1
        if best is None or v + min_delta < best:
            best, best_epoch = v, epoch
            if baseline is None or v + min_delta < baseline:
                wait = 0
            continue
        if wait >= patience and epoch > 0:
            return epoch, best_epoch
    return None, best_epoch


@pytest.mark.parametrize("kw", [dict(patience=1, min_delta=0.01, start_from_epoch=3),
                                dict(patience=3, baseline=0.2)])
def test_early_stopping_stops_where_keras_rule_says(one, kw):
    res, params = one
    val = res.history["val_loss"].astype(np.float64)
    stop, best = keras_early_stop(val, **kw)
    assert stop is not None and stop < EPOCHS - 1  # the run does stop early
    lines = []
    es = C.EarlyStopping(verbose=1, **kw)
    got = fit(callbacks=[es], verbose=2, print_fn=lines.append)
    assert got.stopped_epoch == stop + 1
    assert es.stopped_epoch == stop and es.best_epoch == best
    for name in res.history:
        np.testing.assert_array_equal(got.history[name], res.history[name][:stop + 1])
    assert lines[-1] == f"Epoch {stop + 1}: early stopping"
    assert_same(got.state.params, [p for p in params[stop + 1]])  # no restore: last weights


def test_restore_best_weights_equal_a_run_of_that_many_epochs(one):
    res, _ = one
    stop, best = keras_early_stop(res.history["val_loss"].astype(np.float64), patience=2)
    lines = []
    es = C.EarlyStopping(patience=2, restore_best_weights=True, verbose=1)
    got = fit(callbacks=[es], print_fn=lines.append)
    assert got.stopped_epoch == stop + 1 and es.best_epoch == best < stop
    assert lines == [f"Epoch {stop + 1}: early stopping",
                     f"Restoring model weights from the end of the best epoch: {best + 1}."]
    separate = fit(epochs=best + 1)
    assert_same(got.params(0), separate.params(0))


def test_early_stopping_many_seeds_stops_when_every_seed_would(three):
    res, params = three
    per_seed = [keras_early_stop(res.history["val_loss"][i].astype(np.float64), patience=2)
                for i in range(3)]
    stops = [s for s, _ in per_seed]
    assert None not in stops and len(set(stops)) > 1 and max(stops) < EPOCHS - 1
    es = C.EarlyStopping(patience=2, restore_best_weights=True)
    got = fit(num_seeds=3, callbacks=[es])
    assert got.stopped_epoch == max(stops) + 1
    np.testing.assert_array_equal(es.stopped_epoch, stops)
    np.testing.assert_array_equal(es.best_epoch, [b for _, b in per_seed])
    np.testing.assert_array_equal(got.history["val_loss"], res.history["val_loss"][:, :max(stops) + 1])
    # Each seed's weights: those after its own best epoch, from the plain run.
    for i, (_, b) in enumerate(per_seed):
        for u, v in zip(leaves(got.params(i)), params[b + 1], strict=True):
            np.testing.assert_array_equal(u, v[i])


# -- stop_training, checkpoints, resume ----------------------------------------------------------

class StopAt(C.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


def test_stop_training_saves_that_epoch_and_a_rerun_trains_no_more(tmp_path, one):
    res, params = one
    ckpt = str(tmp_path / "run")
    got = fit(callbacks=[StopAt(2)], checkpoint_dir=ckpt, checkpoint_every=2)
    assert got.stopped_epoch == 3 and got.history["loss"].shape == (3,)
    assert sorted(os.listdir(ckpt)) == ["2", "3"]
    saved = checkpoints.load_weights(make(nnx.Rngs(0)), ckpt)
    assert_same(nnx.state(saved, nnx.Param), got.params(0))
    assert_same(got.params(0), [p[0] for p in params[3]])

    lines, seen = [], []
    again = fit(callbacks=[C.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(e))],
                checkpoint_dir=ckpt, checkpoint_every=2, verbose=1, print_fn=lines.append)
    assert seen == [] and again.stopped_epoch == 3 and again.epoch_seconds == []
    assert any("a callback stopped the run there: no more epochs to train" in l for l in lines)
    for name in res.history:
        np.testing.assert_array_equal(again.history[name], got.history[name])
    assert_same(again.params(0), got.params(0))
    assert sorted(os.listdir(ckpt)) == ["2", "3"]


def test_model_checkpoint_every_epoch_and_best_per_seed(tmp_path, three):
    res, params = three
    every = C.ModelCheckpoint(str(tmp_path / "every" / "{epoch:02d}"))
    best = C.ModelCheckpoint(str(tmp_path / "best"), save_best_only=True)
    state = C.ModelCheckpoint(str(tmp_path / "state"), save_weights_only=False)
    fit(epochs=6, num_seeds=3, callbacks=[every, best, state])
    assert sorted(os.listdir(tmp_path / "every")) == [f"{e:02d}" for e in range(1, 7)]
    for e in (1, 4, 6):
        for i in range(3):
            model = checkpoints.load_weights(make(nnx.Rngs(9)), str(tmp_path / "every" / f"{e:02d}"),
                                             seed_index=i)
            for u, v in zip(leaves(nnx.state(model, nnx.Param)), params[e], strict=True):
                np.testing.assert_array_equal(u, v[i])
    # Best only: seed i holds its weights after its lowest val_loss epoch (the first, on ties).
    first_best = np.argmin(res.history["val_loss"][:, :6], axis=1)
    np.testing.assert_array_equal(best.best_epoch, first_best)
    for i in range(3):
        model = checkpoints.load_weights(make(nnx.Rngs(9)), str(tmp_path / "best"), seed_index=i)
        for u, v in zip(leaves(nnx.state(model, nnx.Param)), params[first_best[i] + 1],
                        strict=True):
            np.testing.assert_array_equal(u, v[i])
    # The whole training state: epoch 6, its weights read back by load_weights too.
    model = checkpoints.load_weights(make(nnx.Rngs(9)), str(tmp_path / "state"), seed_index=2)
    for u, v in zip(leaves(nnx.state(model, nnx.Param)), params[6], strict=True):
        np.testing.assert_array_equal(u, v[2])


def test_model_checkpoint_best_only_one_seed_saves_on_each_new_best(tmp_path, one):
    res, params = one
    lines = []
    cb = C.ModelCheckpoint(str(tmp_path / "{epoch}"), save_best_only=True, verbose=1)
    fit(epochs=8, callbacks=[cb], print_fn=lines.append, verbose=0)
    val = res.history["val_loss"][:8]
    new_best = [e + 1 for e in range(8) if val[e] < val[:e].min(initial=np.inf)]
    assert sorted(int(n) for n in os.listdir(tmp_path)) == new_best
    assert sum("saving model to" in l for l in lines) == len(new_best)
    assert sum("did not improve" in l for l in lines) == 8 - len(new_best)
    model = checkpoints.load_weights(make(nnx.Rngs(9)), str(tmp_path / str(new_best[-1])))
    assert_same(nnx.state(model, nnx.Param), [p[0] for p in params[new_best[-1]]])


# -- CSVLogger, LambdaCallback, History ----------------------------------------------------------

def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_logger_equals_the_history(tmp_path, one):
    res, _ = one
    path = tmp_path / "h.csv"
    fit(epochs=6, callbacks=[C.CSVLogger(str(path))])
    rows = read_csv(path)
    assert rows[0] == ["epoch", "loss", "val_loss"]
    assert [int(r[0]) for r in rows[1:]] == list(range(6))
    for name, col in (("loss", 1), ("val_loss", 2)):
        assert [float(r[col]) for r in rows[1:]] == [float(v) for v in res.history[name][:6]]


def test_csv_logger_many_members_a_row_each_and_a_resumed_run_equals_an_unbroken_one(tmp_path):
    kw = dict(num_seeds=2, learning_rate=[0.1, 0.3])
    unbroken = fit(epochs=6, **kw)
    path, ckpt = tmp_path / "h.csv", str(tmp_path / "run")
    fit(epochs=4, checkpoint_dir=ckpt, checkpoint_every=2,
        callbacks=[C.CSVLogger(str(path), append=True)], **kw)
    # A crash after epoch 4's rows but before its checkpoint: resume from 2.
    shutil.rmtree(os.path.join(ckpt, "4"))
    fit(epochs=6, checkpoint_dir=ckpt, checkpoint_every=2,
        callbacks=[C.CSVLogger(str(path), append=True)], **kw)
    rows = read_csv(path)
    assert rows[0] == ["epoch", "seed", "learning_rate", "loss", "val_loss"]
    members = [(0, 0.1), (1, 0.1), (0, 0.3), (1, 0.3)]
    want = [[e, seed, lr, float(unbroken.history["loss"][m, e]),
             float(unbroken.history["val_loss"][m, e])]
            for e in range(6) for m, (seed, lr) in enumerate(members)]
    got = [[int(r[0]), int(r[1]), float(r[2]), float(r[3]), float(r[4])] for r in rows[1:]]
    assert got == want


def test_lambda_callback_gets_keras_arguments(three):
    res, _ = three
    calls = []
    cb = C.LambdaCallback(on_train_begin=lambda logs: calls.append(("train_begin", logs)),
                          on_epoch_begin=lambda e, logs: calls.append(("epoch_begin", e, logs)),
                          on_epoch_end=lambda e, logs: calls.append(("epoch_end", e, logs)),
                          on_train_end=lambda logs: calls.append(("train_end", logs)))
    plain = []
    hist = C.History()
    fit(epochs=3, num_seeds=3, callbacks=[
        cb, lambda e, logs, state: plain.append((e, logs, int(np.asarray(state.epoch)[0]))), hist])
    assert [c[:2] if c[0] != "train_begin" else c for c in calls] == [
        ("train_begin", None), ("epoch_begin", 0), ("epoch_end", 0), ("epoch_begin", 1),
        ("epoch_end", 1), ("epoch_begin", 2), ("epoch_end", 2), ("train_end", calls[-1][1])]
    assert all(c[2] is None for c in calls if c[0] == "epoch_begin")
    for e in range(3):
        logs = calls[2 + 2 * e][2]
        assert list(logs) == ["loss", "val_loss", "per_seed"]
        for name in ("loss", "val_loss"):
            assert type(logs[name]) is float
            assert logs[name] == float(np.mean(res.history[name][:, e].astype(np.float64)))
            np.testing.assert_array_equal(logs["per_seed"][name], res.history[name][:, e])
            np.testing.assert_array_equal(hist.per_seed[name][e], res.history[name][:, e])
        assert hist.history["loss"][e] == logs["loss"]
        # plain callables: as before (epoch from 1, per-seed arrays, the state)
        epoch, plain_logs, state_epoch = plain[e]
        assert epoch == e + 1 and state_epoch == e + 1
        np.testing.assert_array_equal(plain_logs["loss"], res.history["loss"][:, e])
    assert calls[-1][1] is calls[-2][2]  # on_train_end: the last epoch's logs
    assert hist.epoch == [0, 1, 2]


def test_one_seed_logs_are_plain_floats_and_verbose_0_prints_nothing(one):
    res, _ = one
    seen, lines = [], []
    fit(epochs=2, callbacks=[C.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(logs))],
        verbose=0, print_fn=lines.append)
    assert lines == []
    assert seen == [{"loss": float(res.history["loss"][e]),
                     "val_loss": float(res.history["val_loss"][e])} for e in range(2)]


def test_refused_callbacks():
    class PerBatch(C.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    with pytest.raises(ValueError, match="no per-batch hooks"):
        fit(epochs=1, callbacks=[PerBatch()])
    with pytest.raises(TypeError, match="no per-batch hooks"):
        C.LambdaCallback(on_train_batch_end=print)
    with pytest.raises(TypeError, match="callbacks must be rnn_jax.callbacks.Callback"):
        fit(epochs=1, callbacks=[object()])
    with pytest.raises(ValueError, match="pass mode='min' or mode='max'"):
        C.EarlyStopping(monitor="val_something")
    with pytest.raises(ValueError, match="save_freq must be 'epoch'"):
        C.ModelCheckpoint("x", save_freq=10)


# -- TensorBoard ---------------------------------------------------------------------------------

def scalars(directory, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory))
    acc.Reload()
    events = acc.Scalars(tag)
    return [e.step for e in events], np.array([e.value for e in events], np.float32)


def test_tensorboard_event_files_hold_the_history(tmp_path, one, three):
    fit(epochs=4, callbacks=[C.TensorBoard(str(tmp_path / "one"))])
    fit(epochs=4, num_seeds=3, callbacks=[C.TensorBoard(str(tmp_path / "three"),
                                                        hparams={"units": 1})])
    for run, name in (("train", "loss"), ("validation", "val_loss")):
        steps, values = scalars(tmp_path / "one" / run, "epoch_loss")
        assert steps == [0, 1, 2, 3]
        np.testing.assert_array_equal(values, one[0].history[name][:4])
        for i in range(3):
            steps, values = scalars(tmp_path / "three" / f"seed_{i}" / run, "epoch_loss")
            assert steps == [0, 1, 2, 3]
            np.testing.assert_array_equal(values, three[0].history[name][i, :4])
    # hparams: each seed's run holds the hparams and its final logs
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(tmp_path / "three" / "seed_2"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hp["units"].number_value == 1 and hp["seed"].number_value == 2
    assert acc.Scalars("val_loss")[0].value == np.float32(three[0].history["val_loss"][2, 3])


def test_tensorboard_without_tensorflow(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import rnn_jax
        from rnn_jax import callbacks
        def make(rngs):
            return rnn_jax.Sequential([rnn_jax.Dense(1, rngs=rngs)], input_shape=(3,))
        x = np.ones((8, 3), np.float32)
        rnn_jax.fit(make, x, x[:, :1], loss="mse", epochs=2, verbose=0, validation_split=0.25,
                    callbacks=[callbacks.TensorBoard({str(tmp_path)!r}, histogram_freq=1)])
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        assert not bad, bad
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
    assert os.listdir(tmp_path / "train") and os.listdir(tmp_path / "validation")


def test_tensorboard_says_how_to_install_tensorboardx_when_it_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=re.escape("pip install tensorboardX")):
        C.TensorBoard("logs")


def test_restore_best_weights_with_seeds_over_two_devices():
    # 3 seeds on 2 host devices: 4 slots, the last repeating seed 0; the
    # restored weights go back into the sharded, padded state.
    script = textwrap.dedent("""
        import os, sys
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        sys.path.insert(0, "tests")
        import jax
        import numpy as np
        from test_callbacks import C, Recorder, fit, keras_early_stop, leaves
        assert len(jax.devices()) == 2
        rec = Recorder()
        ref = fit(num_seeds=3, callbacks=[rec])
        es = C.EarlyStopping(patience=2, restore_best_weights=True)
        got = fit(num_seeds=3, callbacks=[es])
        expected = [keras_early_stop(ref.history["val_loss"][i].astype(float), 2)
                    for i in range(3)]
        assert got.stopped_epoch == max(s for s, _ in expected) + 1
        for i, (_, best) in enumerate(expected):
            for u, v in zip(leaves(got.params(i)), rec.params[best + 1], strict=True):
                np.testing.assert_array_equal(u, v[i])
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
