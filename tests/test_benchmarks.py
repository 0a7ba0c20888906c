"""The side-by-side benchmark keeps working and compares like with like.

- the floor's hand-written cells compute what rnn_jax's layers compute (same
  weights, Keras' equations), so the timings compare the same work;
- `python -m benchmarks.compare --quick` runs every framework end to end and
  writes its table, JSON and plots.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnn_jax
from benchmarks import report, workloads
from benchmarks.frameworks import floor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("cell,layer", [("simple_rnn", rnn_jax.SimpleRNN), ("gru", rnn_jax.GRU),
                                        ("lstm", rnn_jax.LSTM)])
def test_floor_cells_equal_rnn_jax_layers(cell, layer):
    units, steps, features = 5, 7, 3
    lay = layer(units, input_shape=(steps, features), bias_initializer="uniform",
                rngs=nnx.Rngs(3))
    p = {"W": lay.cell.kernel[...], "U": lay.cell.recurrent_kernel[...], "b": lay.cell.bias[...]}
    assert float(jnp.abs(p["b"]).max()) > 0  # the bias layout is exercised
    x = workloads.forward_input(4, steps, features, seed=1)
    np.testing.assert_allclose(np.asarray(floor.last_output(cell, p, jnp.asarray(x))),
                               np.asarray(lay(x)), rtol=1e-5, atol=1e-6)


def test_forward_grid_sweeps_share_the_base_point():
    points = workloads.forward_points(quick=False, cells=("lstm",))
    assert len({json.dumps(p, sort_keys=True) for p in points}) == len(points)
    for axis, values in workloads.SWEEPS.items():
        on = sorted(p[axis] for p in points if workloads.on_sweep(p, axis))
        assert on == sorted(values)


@pytest.mark.parametrize("seconds,repeats,min_seconds,calls", [
    (0.1, 5, 0.0, 5),      # no time box: exactly `repeats`
    (0.1, 5, 0.25, 5),     # 5 calls already exceed the box
    (1 / 64, 5, 0.25, 16),  # sub-box calls: repeated until they add up to it (exact sums)
    (1e-6, 5, 0.25, 40),   # capped at max_calls
])
def test_repeat_calls_time_box(seconds, repeats, min_seconds, calls):
    n = []
    times = workloads.repeat_calls(lambda: n.append(1) or seconds, repeats, min_seconds,
                                   max_calls=40)
    assert len(times) == len(n) == calls
    assert times == [seconds] * calls


def test_ratios_from_medians():
    tasks = [dict(kind="sum3", num_samples=10, epochs=1, batch_size=4, repeats=1),
             dict(kind="forward", cell="lstm", batch=1, steps=10, units=4, features=16,
                  repeats=1)]
    outputs = {
        "rnn_jax_fit": {"results": [{"task": tasks[0], "first": 3.0, "compile": 2.0,
                                     "times": [0.1, 0.3, 0.2]},
                                    {"task": tasks[1], "first": 1.0, "times": [2.0]}]},
        "keras_tf": {"results": [{"task": tasks[0], "first": 9.0, "times": [8.0, 6.0]},
                                 {"task": tasks[1], "unsupported": True}]},
        "floor": {"results": [{"task": tasks[0], "first": 1.0, "times": [0.1]},
                              {"task": tasks[1], "error": "boom"}]},
        "flax_rnn": {"results": [{"task": tasks[1], "first": 1.0, "times": [1.0]}]},
    }
    table = report.collect(outputs)
    r = report.ratios(table, tasks)
    assert r["sum3"]["speedup_vs_keras_tf"] == pytest.approx(7.0 / 0.2)
    assert r["sum3"]["time_vs_floor"] == pytest.approx(2.0)
    assert r["forward"]["worst_vs_flax"]["vs_flax"] == pytest.approx(2.0)
    assert len(r["forward"]["slower_than_flax"]) == 1
    assert table[report.task_key(tasks[1])]["rnn_jax_fit"]["sequences_per_second"] == pytest.approx(0.5)
    text = report.format_table(table, tasks, ["rnn_jax_fit", "floor", "keras_tf"])
    assert "error" in text and "200ms" in text


def test_seeds_ratio_and_models_per_second():
    """The seeds workload's figures: time against one seed, and models trained
    per second (seeds over the median training time)."""
    tasks = [dict(kind="seeds", num_seeds=s, num_samples=10, epochs=1, batch_size=4, repeats=1)
             for s in (1, 64)]
    outputs = {"rnn_jax_fit": {"results": [
        {"task": tasks[0], "first": 1.0, "times": [0.01, 0.02, 0.03]},
        {"task": tasks[1], "first": 1.0, "times": [0.08, 0.05]}]}}
    r = report.ratios(report.collect(outputs), tasks)["seeds"]
    assert r["time_64_vs_1"] == pytest.approx(0.065 / 0.02)
    assert r["models_per_second_1"] == pytest.approx(50.0)
    assert r["models_per_second_64"] == pytest.approx(64 / 0.065)
    assert "models_per_second_64 984.62" in report.format_ratios({"seeds": r})


def test_plots_only_what_was_measured(tmp_path):
    """An interrupted run's tasks without times get no plot (and no empty one)."""
    seeds = [dict(kind="seeds", num_seeds=s, num_samples=10, epochs=1, batch_size=4, repeats=1)
             for s in (1, 8)]
    fwd = [dict(kind="forward", cell=c, batch=1, steps=100, units=64, features=16, repeats=1)
           for c in ("lstm", "gru")]
    outputs = {"rnn_jax_fit": {"results": [{"task": seeds[0], "first": 1.0, "times": [0.5]},
                                           {"task": fwd[0], "first": 1.0, "times": [0.1]},
                                           {"task": fwd[1], "error": "boom"}]}}
    table = report.collect(outputs)
    assert report.plot_seeds(table, seeds, ["rnn_jax_fit"], str(tmp_path)) == [
        str(tmp_path / "seeds.png")]
    assert report.plot_seeds(table, seeds[1:], ["rnn_jax_fit"], str(tmp_path / "x")) == []
    assert report.plot_forward(table, fwd, ["rnn_jax_fit"], str(tmp_path)) == [
        str(tmp_path / "forward_lstm.png")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forward_lstm.png", "seeds.png"]


def test_turn_order_rotates_every_framework_through_every_place():
    from benchmarks import compare

    fws = ["a", "b", "c"]
    orders = [compare.turn_order(fws, i) for i in range(6)]
    assert orders[:3] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert orders[3:] == orders[:3]
    assert compare.turn_order([], 4) == []


@pytest.fixture
def fake_frameworks(tmp_path, monkeypatch):
    """Stand-in frameworks, one module each: `fake_ok` answers every task,
    `fake_crash` dies on its second task, `fake_slow` runs past the timeout,
    `fake_missing` is not installed. Returns `(benchmarks.compare, calls)`:
    the file `calls` logs the tasks the stand-ins ran, in order."""
    from benchmarks import compare

    pkg = tmp_path / "benchmarks" / "frameworks"
    pkg.mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    ok = f"""
import time
def versions():
    return {{"fake": "1"}}
def forward(n):
    with open({str(calls)!r}, "a") as f:
        f.write(f"{{__name__.split('.')[-1]}} {{n}}\\n")
    return {{"first": 0.5, "times": [0.25]}}
"""
    (pkg / "fake_ok.py").write_text(ok)
    (pkg / "fake_crash.py").write_text(ok + "\ndef sum3(n):\n    raise SystemExit(3)\n")
    (pkg / "fake_slow.py").write_text(
        ok.replace('return {"first"', 'time.sleep(60 if n else 0)\n    return {"first"'))
    (pkg / "fake_missing.py").write_text("import a_module_that_is_not_installed\n")
    # The workers start in workloads.ROOT, here tmp_path, whose `benchmarks`
    # package reaches the real one (benchmarks.worker) and the stand-ins.
    real = os.path.join(ROOT, "benchmarks", "frameworks")
    (pkg / "__init__.py").write_text(f"__path__.append({real!r})\n")
    (tmp_path / "benchmarks" / "__init__.py").write_text(
        f"__path__.append({os.path.join(ROOT, 'benchmarks')!r})\n")
    monkeypatch.setattr(compare.workloads, "ROOT", str(tmp_path))
    for name in ("ok", "crash", "slow", "missing"):
        monkeypatch.setitem(compare.LABELS, f"fake_{name}", name)
    monkeypatch.setattr(compare.report, "task_label", str)
    return compare, calls


def test_workers_interleave_tasks_and_report_failures(tmp_path, fake_frameworks):
    compare, calls = fake_frameworks
    tasks = [{"kind": "forward", "n": 0}, {"kind": "sum3", "n": 1}, {"kind": "forward", "n": 2},
             {"kind": "reuters", "n": 3}]
    lines = []
    out = compare.run_interleaved(["fake_ok", "fake_crash", "fake_slow", "fake_missing"],
                                  tasks, str(tmp_path), timeout=6, pause=0,
                                  progress=lines.append)
    assert out["fake_missing"]["unavailable"].startswith("ModuleNotFoundError")
    assert out["fake_ok"]["versions"] == {"fake": "1"}
    assert [r["task"] for r in out["fake_ok"]["results"]] == tasks
    assert [("unsupported" in r, r.get("first")) for r in out["fake_ok"]["results"]] == [
        (False, 0.5), (True, None), (False, 0.5), (True, None)]
    assert "exit status 3" in out["fake_crash"]["failure"]
    assert len(out["fake_crash"]["results"]) == 1  # nothing after the crash
    assert "stopped after 6 s" in out["fake_slow"]["failure"]
    assert "failure" not in out["fake_ok"]
    # Task 0 in the order given; task 2 rotated by two (crash gone): slow,
    # stopped after its timeout, then ok; task 3 ok alone.
    assert calls.read_text().split("\n") == ["fake_ok 0", "fake_crash 0", "fake_slow 0",
                                             "fake_slow 2", "fake_ok 2", ""]
    assert len([ln for ln in lines if ln.startswith("[")]) == len(tasks)


def test_interrupted_run_keeps_the_tasks_done(tmp_path, fake_frameworks):
    """Ctrl-C (or SIGTERM, which `main` turns into the same) after the first
    task: its records are returned, the workers stopped and marked."""
    compare, calls = fake_frameworks
    tasks = [{"kind": "forward", "n": 0}, {"kind": "forward", "n": 1},
             {"kind": "forward", "n": 2}]
    lines = []

    def progress(line):
        lines.append(line)
        if line.startswith("[1/"):
            raise KeyboardInterrupt

    out = compare.run_interleaved(["fake_ok", "fake_slow"], tasks, str(tmp_path), timeout=30,
                                  pause=0, progress=progress)
    for fw in ("fake_ok", "fake_slow"):
        assert [r["task"] for r in out[fw]["results"]] == tasks[:1], out[fw]
        assert out[fw]["failure"] == "interrupted after 1 of 3 tasks"
    assert lines[-1].startswith("interrupted after 1 of 3 tasks: stopping the workers")
    assert calls.read_text().split("\n") == ["fake_ok 0", "fake_slow 0", ""]


# The default suite runs the quick benchmark's sum3 and seeds workloads for the
# JAX frameworks; the Keras and PyTorch workers (Keras itself is tested against
# rnn_jax throughout the suite) and the whole quick run (forward grid, Reuters)
# are opt-in (`pytest -m slow`), for the suite's time.
GROUPS = [("rnn_jax_fit", "floor", "flax_rnn"), ("keras_jax", "keras_tf", "pytorch")]


@pytest.mark.parametrize("frameworks, full", [
    pytest.param(GROUPS[0], False, id="+".join(GROUPS[0])),
    pytest.param(GROUPS[1], False, id="+".join(GROUPS[1]), marks=pytest.mark.slow),
    pytest.param(report.FRAMEWORKS, True, id="every_workload", marks=pytest.mark.slow)])
def test_compare_quick_runs_every_framework(tmp_path, frameworks, full):
    out = tmp_path / "cmp"
    have_reuters = full and os.path.exists(workloads.DEFAULT_REUTERS)  # ../shared/data/
    args = ([] if have_reuters else ["--workloads=sum3,forward,seeds"] if full
            else ["--workloads=sum3,seeds"])
    proc = subprocess.run([sys.executable, "-m", "benchmarks.compare", "--quick",
                           f"--out_dir={out}", f"--frameworks={','.join(frameworks)}", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert not res["failures"]
    expected = set(frameworks)
    if "pytorch" in expected and importlib.util.find_spec("torch") is None:
        assert "pytorch" in res["unavailable"]
        expected.discard("pytorch")
    assert set(res["raw"]) - set(res["unavailable"]) == expected
    for fw in expected:
        recs = res["raw"][fw]["results"]
        assert recs and not [r for r in recs if "error" in r], (fw, recs)
        timed = [r for r in recs if "times" in r]
        assert timed and all(min(r["times"]) > 0 for r in timed), fw
    text = (out / "table.txt").read_text()
    if full:
        assert (out / "forward_lstm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "sequences per second" in text
    if "rnn_jax_fit" in expected:  # the ratios are rnn_jax's against the others
        expected_ratios = {"sum3", "seeds"} | ({"forward"} if full else set()) | (
            {"reuters_simple_rnn"} if have_reuters else set())
        assert expected_ratios <= set(res["ratios"])
        assert (out / "seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "rnn_jax" in text


def test_reuters_seeds_and_notebook_table_summaries():
    """reuters_seeds: models per second = S / median epoch, ratio against one
    seed; the notebook's table: totals summed over the models, speed-ups."""
    rs = [dict(kind="reuters_seeds", num_seeds=s, model="lstm", repeats=2) for s in (1, 2, 5)]
    nb = [dict(kind="notebook_table", model=m, epochs=2, num_seeds=5) for m in ("lstm", "vanilla")]
    outputs = {
        "rnn_jax_fit": {"results": [
            {"task": rs[0], "first": 1.0, "times": [0.5, 0.3, 0.4], "devices": 2,
             "layout": "compiled in 1 s"},
            {"task": rs[1], "first": 1.0, "times": [0.6, 0.5], "devices": 2,
             "layout": "compiled in 1 s (2 seeds), on 2 devices"},
            # a one-seed fit before and after, in the same worker: the ratio's baseline
            {"task": rs[2], "first": 1.0, "times": [1.5, 1.4, 1.6], "devices": 2,
             "one_seed_times": [0.5, 0.6, 0.4, 0.3]},
            {"task": nb[0], "first": 10.0, "times": [10.0], "total": 10.0, "models": 5},
            {"task": nb[1], "first": 5.0, "times": [5.0], "total": 5.0, "models": 5}]},
        "keras_tf": {"results": [
            {"task": rs[0], "unsupported": True},
            {"task": nb[0], "first": 2.0, "times": [1.0], "total": 15.0, "models": 5,
             "estimated": True, "measured_epochs": 1},
            {"task": nb[1], "first": 2.0, "times": [1.0], "total": 45.0, "models": 5,
             "estimated": True, "measured_epochs": 1}]},
    }
    r = report.reuters_seeds_summary(outputs, rs)["reuters_seeds"]
    assert r["devices"] == 2
    assert r["per_seeds"]["1"]["models_per_second"] == pytest.approx(2.5)
    assert r["per_seeds"]["2"]["models_per_second"] == pytest.approx(2 / 0.55)
    assert r["per_seeds"]["2"]["vs_1"] == pytest.approx(0.55 / 0.4)
    assert r["per_seeds"]["5"]["vs_1"] == pytest.approx(1.5 / 0.45)
    text = report.format_reuters_seeds({"reuters_seeds": r})
    assert "2 seeds: epoch 0.550 s, 3.64 models/s, epoch(2)/epoch(1) 1.38" in text
    assert "epoch(5)/epoch(1) 3.33 (one seed beside it: 0.450 s)" in text
    nt = report.notebook_table_summary(outputs, nb)["notebook_table"]
    assert nt["rnn_jax_fit"]["total_seconds"] == pytest.approx(15.0)
    assert nt["keras_tf"]["models"] == 10
    assert nt["speedup_vs_keras_tf"] == pytest.approx(4.0)
    text = report.format_notebook_table({"notebook_table": nt})
    assert "estimated from 1 measured epochs" in text and "4.00x" in text
    assert report.reuters_seeds_summary({}, rs) == {} == report.notebook_table_summary({}, nb)
