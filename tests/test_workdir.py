"""Atomic writes of a run's files (`rnn_jax.workdir.atomic_write`): the usual
permissions under the process umask, so others can read a run directory; a
write that fails leaves the old file and no temporary file; fsync comes
before the rename."""

from __future__ import annotations

import os
import pathlib
import stat

import numpy as np
import pytest

from rnn_jax import plots, workdir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    """Runs the test under the given process umask, restored afterwards."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_get_the_usual_permissions_under_the_umask(tmp_path, umask):
    want = 0o666 & ~umask  # what open(path, "w") gives: 0644 under umask 022
    text = workdir.write_text(tmp_path / "report.txt", "report\n")
    data = workdir.write_json(str(tmp_path / "metrics.json"), {"loss": np.float32(0.5)})
    png = plots.plot_history({"loss": [1.0, 0.5]}, str(tmp_path / "history.png"))
    replaced = workdir.write_text(tmp_path / "report.txt", "again\n")  # over an existing file
    for path in (text, data, png, replaced):
        assert mode(path) == want, (path, oct(mode(path)), oct(want))
    with open(png, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.png", "metrics.json",
                                                          "report.txt"]


def test_a_write_that_raises_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    workdir.write_text(path, "old\n")
    with pytest.raises(RuntimeError, match="midway"):
        with workdir.atomic_write(path) as f:
            f.write("half of the new")
            f.flush()
            assert [p.name for p in tmp_path.iterdir() if p.name != "metrics.json"]  # written aside
            raise RuntimeError("midway")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_failed_fsync_leaves_the_old_text_and_png_and_no_temporary(tmp_path, monkeypatch):
    text = workdir.write_text(tmp_path / "report.txt", "old\n")
    png = plots.plot_history({"loss": [1.0, 0.5]}, str(tmp_path / "history.png"))
    with open(png, "rb") as f:
        old_png = f.read()

    def fsync(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="No space"):
        workdir.write_text(text, "new\n")
    with pytest.raises(OSError, match="No space"):
        plots.plot_history({"loss": [3.0, 2.0, 1.0]}, png)
    assert (tmp_path / "report.txt").read_text() == "old\n"
    with open(png, "rb") as f:
        assert f.read() == old_png
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.png", "report.txt"]


def test_fsync_comes_before_the_rename(tmp_path, monkeypatch):
    calls = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd):
        calls.append("fsync")
        return fsync(fd)

    def logged_replace(src, dst, *args, **kwargs):
        calls.append(("replace", os.path.basename(dst)))
        assert pathlib.Path(src).read_text() == "all of it\n"  # the whole file is there before the rename
        return replace(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    workdir.write_text(tmp_path / "flags.txt", "all of it\n")
    assert calls == ["fsync", ("replace", "flags.txt")]


def test_history_keeps_the_epochs_before_a_resume_and_metrics_json_comes_last(tmp_path,
                                                                              monkeypatch):
    """history.jsonl: one line per epoch, a resumed run keeping the lines of the
    epochs before the one it starts from (and dropping any written after its
    checkpoint); timing.json then metrics.json, whose existence marks a
    finished run."""
    import json

    history = workdir.History(str(tmp_path), num_members=2)
    for epoch in (1, 2, 3):
        history.append(epoch, {"loss": np.array([epoch, 10.0 * epoch], np.float32)})
    resumed = workdir.History(str(tmp_path), num_members=2)  # from epoch 2's checkpoint
    resumed.append(3, {"loss": np.array([30.0, 300.0], np.float32)})
    rows = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert rows == [{"epoch": 1, "loss": [1.0, 10.0]}, {"epoch": 2, "loss": [2.0, 20.0]},
                    {"epoch": 3, "loss": [30.0, 300.0]}]

    assert not workdir.is_finished(str(tmp_path))
    order = []
    replace = os.replace

    def logged_replace(src, dst, *args, **kwargs):
        order.append(os.path.basename(dst))
        return replace(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "replace", logged_replace)
    workdir.write_results(str(tmp_path), {"loss": np.float32(0.5)}, {"train_seconds": 1.0})
    assert order == ["timing.json", "metrics.json"]
    assert workdir.is_finished(str(tmp_path))
    assert workdir.read_metrics(str(tmp_path)) == {"loss": 0.5}
