"""A run's directory: the flags it ran with, its metrics and history, its
checkpoint, its report and plots. Every file is written atomically by
`atomic_write` (to a temporary name in the same directory, then `os.replace`),
so a reader never sees half a file.

Layout of `<workdir>/`:

- `run.json`: the flags that define the run's results (a rerun with other
  values is refused unless it overwrites);
- `flags.txt`: the flags of the run, one per line (a valid `--flagfile`);
- `metrics.json`: the final value of every history entry under Keras' names
  (`loss`, `val_loss`, `accuracy`, `val_accuracy`; a list with one value per
  seed when `num_seeds > 1`, per member of a sweep, in the order of its
  `members` entry) plus the run's own results; only computed values, so a
  resumed run writes the same file, bitwise;
- `timing.json`: compile, training and wall-clock seconds of the last command;
- `history.jsonl`: one JSON object per epoch (`{"epoch": 1, "loss": ...}`);
- `checkpoints/<epoch>/`: the training state every `--checkpoint_every`
  epochs and at the end (Orbax; see `rnn_jax.checkpoints.RunCheckpoints`);
  a damaged one found on resuming is moved aside to `<epoch>.damaged/`;
- `report.txt` and `*.png`: what the experiment read out of the weights.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import tempfile

import numpy as np


def _jsonable(value):
    """numpy scalars/arrays -> floats/ints/lists; non-finite floats stay (NaN, Infinity)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def create(path: str) -> str:
    """Make `path` a run directory: create it and its missing parents, and
    check that a file can be written in it; returns the absolute path.

    All or nothing, so that a refused directory leaves no trace: when a
    directory cannot be made, or no file can be written in it, the
    directories made here are removed again and an OSError is raised whose
    `filename` is the directory at fault and `strerror` the OS reason.
    """
    path = os.path.abspath(path)
    missing = []
    existing = path
    while not os.path.lexists(existing):
        missing.append(existing)
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), existing)
    made = []
    try:
        for directory in reversed(missing):
            os.mkdir(directory)
            made.append(directory)
        try:
            with tempfile.TemporaryFile(dir=path):  # unnamed where the OS allows it
                pass
        except OSError as e:
            raise OSError(e.errno, f"{e.strerror} (writing a file in it)", path) from None
    except OSError:
        for directory in reversed(made):
            try:
                os.rmdir(directory)
            except OSError:
                pass
        raise
    return path


@contextlib.contextmanager
def atomic_write(path, mode: str = "w"):
    """`with atomic_write(path, "wb") as f: ...` writes `f` in place of `path`, atomically.

    `f` is a new file beside `path` (named `.tmp-<random>-<name>`), opened
    with `mode` (`"w"` or `"wb"`) and created with the usual permissions
    (0666 less the process umask: 0644 under umask 022), so that other users
    and the host of a Docker volume can read a run's files. When the block
    ends without an error, `f` is flushed, fsynced and renamed over `path`
    (`os.replace`), so a reader sees the old file or the whole new one, never
    half of it; when it raises, the temporary file is removed and `path` is
    left as it was. The directory must exist.
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(directory, f".tmp-{secrets.token_hex(4)}-{name}")
        try:
            fd = os.open(tmp, flags, 0o666)  # the umask applies, as for open(path, "w")
            break
        except FileExistsError:
            continue
    try:
        try:
            f = os.fdopen(fd, mode)
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str, text: str) -> str:
    """Write `text` to `path` atomically (see `atomic_write`), making its
    directory if missing; returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        f.write(text)
    return path


def write_json(path: str, obj) -> str:
    """Write `obj` (numpy values allowed) as indented JSON, atomically."""
    return write_text(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def history_line(epoch: int, logs: dict, num_seeds: int = 1) -> str:
    """One epoch's JSON line, `{"epoch": 1, "loss": ...}`, from `fit`'s per-epoch
    logs (`(num_seeds,)` arrays: a list per seed when `num_seeds > 1`). For a
    sweep pass the number of members: the lists are then per member, in
    `FitResult.members` order."""
    row = {"epoch": epoch}
    for k, v in logs.items():
        v = np.asarray(v).reshape(-1)
        row[k] = v if num_seeds > 1 else v[0]
    return json.dumps(_jsonable(row)) + "\n"


def final_metrics(history: dict, num_seeds: int = 1) -> dict:
    """The last epoch's value of every history entry (a list per seed when many)."""
    return {k: (np.asarray(v)[..., -1] if num_seeds > 1 else float(np.asarray(v)[-1]))
            for k, v in history.items()}
