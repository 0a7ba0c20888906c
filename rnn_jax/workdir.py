"""A run's directory: the flags it ran with, its metrics and history, its
checkpoint, its report and plots; this module is where its layout is
written down and where it is made, written and read (the experiments'
`common.Run` calls it). Every file is written atomically by `atomic_write`
(to a temporary name in the same directory, then `os.replace`), so a reader
never sees half a file.

Layout of `<workdir>/`:

- `run.json`: the flags that define the run's results (`claim` writes it; a
  rerun with other values is refused unless it overwrites);
- `flags.txt`: the flags of the run, one per line (a valid `--flagfile`;
  `write_flags`);
- `metrics.json`: the final value of every history entry under Keras' names
  (`loss`, `val_loss`, `accuracy`, `val_accuracy`; a list with one value per
  seed when `num_seeds > 1`, per member of a sweep, in the order of its
  `members` entry) plus the run's own results; only computed values, so a
  resumed run writes the same file, bitwise. Written last (`write_results`),
  so a run whose metrics.json exists is finished (`is_finished`);
- `timing.json`: compile, training and wall-clock seconds of the last command;
- `history.jsonl`: one JSON object per epoch (`{"epoch": 1, "loss": ...}`;
  `History`);
- `checkpoints/<epoch>/`: the training state every `--checkpoint_every`
  epochs and at the end (Orbax; see `rnn_jax.checkpoints.RunCheckpoints`);
  a damaged one found on resuming is moved aside to `<epoch>.damaged/`;
- `tensorboard/`: TensorBoard event files of the per-epoch logs (a run per
  seed with several: `tensorboard/seed_<s>/train`, `.../validation`) and the
  run's flags as hyperparameters (`rnn_jax.callbacks.TensorBoard`; view with
  `tensorboard --logdir <workdir>/tensorboard`);
- `report.txt` (`write_report`) and `*.png`: what the experiment read out of
  the weights.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import tempfile

import numpy as np

TENSORBOARD = "tensorboard"  # the event files' directory in a run's directory

# What a run's directory holds, plots aside (`claim` removes them when it overwrites).
RUN_FILES = ("run.json", "flags.txt", "metrics.json", "timing.json", "history.jsonl",
             "report.txt", "checkpoints", "checkpoint", "tensorboard")


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


def checkpoint_dir(path: str) -> str:
    """The run's checkpoint directory, `<path>/checkpoints` (`fit`'s `checkpoint_dir`)."""
    return os.path.join(path, "checkpoints")


def claim(path: str, run_flags: dict, overwrite: bool) -> bool:
    """Make the directory `path` the run's whose results `run_flags` define
    (name -> value, as JSON reads them back), recorded in run.json: True when
    it already holds this run (same flags: resume it, or nothing to do when
    it `is_finished`), False when it is new or was overwritten.

    `overwrite` removes whatever run it holds (`RUN_FILES`; with the same
    flags too: the run starts over). Without it, a directory holding another
    run (other flags, or run files without a readable run.json) is refused
    with a ValueError naming why and both values of up to 4 differing flags;
    so is one that cannot be created or written in (naming the directory at
    fault and the OS reason; nothing is left behind: `create`). The messages
    use the experiments' flag names (`--workdir`, `--overwrite`).
    """
    now = run_flags
    record = os.path.join(path, "run.json")
    problem = None
    if os.path.exists(record):
        try:
            with open(record) as f:
                theirs = json.load(f)["flags"]
        except (ValueError, KeyError, TypeError):
            problem = "holds run outputs but an unreadable run.json"
        else:
            if theirs == now and not overwrite:
                return True
            diff = [f"--{k}={theirs.get(k, '(unset)')} there, {now.get(k, '(unset)')} here"
                    for k in sorted(set(now) | set(theirs))
                    if theirs.get(k, "(unset)") != now.get(k, "(unset)")]
            problem = (f"holds a run with other flags ({'; '.join(diff[:4])}"
                       f"{'; ...' if len(diff) > 4 else ''})")
    elif any(os.path.exists(os.path.join(path, n)) for n in RUN_FILES):
        problem = "holds run outputs but no run.json (a run of an older version, or not a run)"
    if problem is not None or overwrite:
        if not overwrite:
            raise ValueError(f"--workdir={path} {problem}: pass --overwrite to replace it, "
                             "or choose another --workdir")
        for n in RUN_FILES:
            p = os.path.join(path, n)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.unlink(p)
    try:
        create(path)
    except OSError as e:
        raise ValueError(f"cannot use --workdir={path}: {e.filename}: {e.strerror}") from None
    write_json(record, {"flags": now})
    return False


def is_finished(path: str) -> bool:
    """Whether the run in `path` is finished: its metrics.json, written last, exists."""
    return os.path.exists(os.path.join(path, "metrics.json"))


def read_metrics(path: str) -> dict:
    """The finished run's metrics.json."""
    with open(os.path.join(path, "metrics.json")) as f:
        return json.load(f)


def write_flags(path: str, flags_text: str) -> str:
    """flags.txt: the run's flags, one `--name=value` a line (a valid `--flagfile`)."""
    return write_text(os.path.join(path, "flags.txt"), flags_text)


def write_report(path: str, report: str) -> str:
    """report.txt: the read-outs the experiment printed."""
    return write_text(os.path.join(path, "report.txt"), report + "\n")


def write_results(path: str, metrics: dict, timing: dict) -> None:
    """timing.json, then metrics.json, last of a run's files: once it exists
    the run is finished (`is_finished`), so write it after everything else."""
    write_json(os.path.join(path, "timing.json"), timing)
    write_json(os.path.join(path, "metrics.json"), metrics)


class History:
    """history.jsonl of the run in `path`, one `history_line` per epoch,
    rewritten (atomically) after every epoch. A resumed run keeps the lines of
    the epochs before the one it starts from: they were written before the
    checkpoint it resumes from."""

    def __init__(self, path: str, num_members: int = 1):
        self.file = os.path.join(path, "history.jsonl")
        self.num_members = num_members
        self.lines: list[str] = []

    def append(self, epoch: int, logs: dict) -> None:
        """Add epoch `epoch` (1-based) with `fit`'s per-epoch logs."""
        if not self.lines and epoch > 1 and os.path.exists(self.file):
            with open(self.file) as f:  # resumed: the epochs before
                self.lines.extend(f.readlines()[:epoch - 1])
        self.lines.append(history_line(epoch, logs, self.num_members))
        write_text(self.file, "".join(self.lines))
