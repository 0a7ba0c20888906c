"""Checkpoints with Orbax: trained weights (and training state) on disk and back.

Two layouts, both read by `load_weights`:

- a run's checkpoints, written by `fit(checkpoint_dir=...)` (`RunCheckpoints`):
  an Orbax `CheckpointManager` directory with one subdirectory per saved
  epoch, `<dir>/<epoch>/default/`, each holding

      {"params": <the model's nnx.Param values as a pure dict>,
       "opt_state": <the optimizer state>, "key": <uint32 key data>,
       "epoch": int, "diverged_at": (epoch, step),
       "history": {"loss": (num_seeds, epoch), ...}}

  plus `history["_stopped_at"]`, `(1,)` int32 the epoch, in the checkpoint
  of a run that a callback stopped (`fit` resumes it without training);

- a single checkpoint directory (`save_train_state`, `save_weights`).

With `num_seeds > 1` every array of the training state has a leading seed
axis. Orbax writes into a temporary directory and renames it when complete,
so a checkpoint directory that exists is a whole checkpoint; a temporary one
left by a killed process is ignored (and removed by the next run). A complete
checkpoint whose files were damaged since (a bad disk, a partial copy) is
told apart from one of another run setup: `RunCheckpoints.restore` sets the
damaged one aside with a warning and resumes from the newest intact one, or
raises `DamagedCheckpointError` when none is intact, and raises
`CheckpointMismatchError` for a readable checkpoint that does not fit.

    rnn_jax.checkpoints.save_train_state(path, result.state)
    model = make_model(nnx.Rngs(0))                       # same architecture
    rnn_jax.checkpoints.load_weights(model, path, seed_index=3)
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from flax import nnx

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A run's checkpoints cannot be resumed from (see the subclasses)."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint of another run setup: its tree of arrays or their
    shapes differ from the run's (another model, optimizer or number of seeds)."""


class DamagedCheckpointError(CheckpointError):
    """Every checkpoint of a run is damaged: its files cannot be read back (a
    bad disk, a partial copy), so there is no intact one to resume from.

    Attributes:
      damaged: path of each damaged checkpoint -> why it cannot be read.
    """

    def __init__(self, directory: str, damaged: dict[str, str]):
        self.damaged = dict(damaged)
        them = "it" if len(damaged) == 1 else "them"
        super().__init__(
            f"no intact checkpoint in {directory}: "
            + "; ".join(f"{path} is damaged ({why})" for path, why in damaged.items())
            + f"; remove {them} to train from the start")


class _Unreadable(Exception):
    """Raised inside this module for a checkpoint whose files cannot be read."""


# What Orbax and TensorStore raise for files that cannot be read back: OSError
# (a missing file), ValueError (TensorStore's DATA_LOSS / NOT_FOUND statuses,
# JSON or UTF-8 that does not decode), KeyError / TypeError (JSON of another shape).
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError)


def _reason(e: BaseException) -> str:
    """An exception as one short line (TensorStore appends its whole spec)."""
    text = str(e).split(" [tensorstore_spec=")[0].strip()
    return (text.splitlines() or [type(e).__name__])[0]


def _check_readable(item: str) -> None:
    """Read every stored value of the checkpoint item `item` (`<epoch>/default`)
    once, one after another; raise `_Unreadable` naming the first failure.

    Orbax reads a checkpoint's arrays concurrently: when its files are damaged,
    the first failed read ends Orbax's event loop while TensorStore's other
    reads are still in flight, and each of those then prints an 'Event loop is
    closed' traceback to stderr. Read one at a time first, the same damage
    gives one quiet error.
    """
    try:
        with open(os.path.join(item, "_METADATA"), "rb") as f:
            metadata = json.load(f)
        if not (isinstance(metadata, dict) and metadata.get("use_ocdbt")):
            return  # written without OCDBT: Orbax's own reads tell
        if not os.path.isfile(os.path.join(item, "manifest.ocdbt")):
            raise _Unreadable(f"{os.path.join(item, 'manifest.ocdbt')} is missing")
        store = ts.KvStore.open(
            {"driver": "ocdbt", "base": {"driver": "file", "path": item + os.sep}}).result()
        for key in store.list().result():
            store.read(key).result()
    except (OSError, ValueError) as e:
        raise _Unreadable(_reason(e)) from None


def _saved(a):
    """A leaf as a checkpoint holds it: a `jax.Array` as it is (Orbax writes each
    process's own shards of an array spread over several processes), anything
    else as a numpy array."""
    return a if isinstance(a, jax.Array) else np.asarray(a)


def _pure(state):
    return jax.tree.map(_saved, nnx.to_pure_dict(state))


def _state_tree(state, history: dict | None = None) -> dict:
    """A `TrainState` (and history) as the plain nested dict a checkpoint holds."""
    tree = {
        "params": _pure(state.params),
        "opt_state": jax.tree.map(_saved, state.opt_state),
        "key": _saved(jax.random.key_data(state.key)),
        "epoch": _saved(state.epoch),
        "diverged_at": _saved(state.diverged_at),
    }
    if history is not None:
        tree["history"] = {k: np.asarray(v) for k, v in history.items()}
    return tree


def _on_host(a) -> np.ndarray:
    """The whole of an array as numpy, on every process (also for an array
    spread over several processes' devices)."""
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)


def _barrier(name: str) -> None:
    """Wait until every process gets here (nothing to wait for with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def save_train_state(path: str, state, *, force: bool = True) -> str:
    """Save a `TrainState` (params, optimizer state, key, epoch) to `path`."""
    return _save(path, _state_tree(state), force)


class RunCheckpoints:
    """The checkpoints of one training run: `<directory>/<epoch>/`, newest kept.

    `fit(checkpoint_dir=...)` uses it, as a context manager (closed on exit):
    `restore(template)` returns the newest intact checkpoint (state and
    history) or None, `save(state, history)` writes one synchronously. At
    most `max_to_keep` are kept (oldest removed first, after the new one is
    complete).
    """

    def __init__(self, directory: str, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise NotADirectoryError(f"checkpoint directory {self.directory} is a file")
        # A killed save leaves `<epoch>.orbax-checkpoint-tmp-*`: never read, removed
        # here (by process 0, when several processes share the directory).
        if os.path.isdir(self.directory) and jax.process_index() == 0:
            for name in os.listdir(self.directory):
                if ".orbax-checkpoint-tmp" in name:
                    shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        _barrier("rnn_jax.checkpoints: leftovers removed")
        self.manager = ocp.CheckpointManager(
            self.directory, item_handlers=ocp.StandardCheckpointHandler(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True))

    def close(self):
        """Finish Orbax's background work (call before the process exits)."""
        self.manager.close()

    def __enter__(self) -> "RunCheckpoints":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def latest_epoch(self) -> int | None:
        """The epoch of the newest complete checkpoint, or None."""
        return self.manager.latest_step()

    def save(self, state, history: dict) -> str:
        """Write `state` (a `TrainState`, seed axis first) and the history so far
        (name -> `(num_seeds, epochs)`) as the checkpoint of its epoch."""
        tree = _state_tree(state, history)
        epoch = int(np.max(_on_host(tree["epoch"])))
        self.manager.save(epoch, args=ocp.args.StandardSave(tree), force=True)
        self.manager.wait_until_finished()
        return os.path.join(self.directory, str(epoch))

    def restore(self, template):
        """`(state, history)` from the newest intact checkpoint, shaped like
        `template` (a `TrainState` of the same run setup), or None when there is none.

        A damaged checkpoint (files that cannot be read back) is moved aside to
        `<epoch>.damaged`, with a warning naming it, and the next older one is
        read, so that the run repeats the epochs since and saves that epoch
        anew. Raises `DamagedCheckpointError` (nothing moved) when every
        checkpoint is damaged, and `CheckpointMismatchError` when the newest
        readable one holds another run setup.
        """
        want = _state_tree(template)
        damaged = {}
        for epoch in sorted(self.manager.all_steps(), reverse=True):
            path = os.path.join(self.directory, str(epoch))
            try:
                tree = self._read(epoch, want)
                break
            except _Unreadable as e:
                damaged[path] = str(e)
        else:
            if damaged:
                raise DamagedCheckpointError(self.directory, damaged)
            return None
        if damaged:
            _barrier("rnn_jax.checkpoints: damaged ones found")  # every process has read
            for bad, why in damaged.items():
                aside = _free_name(bad + ".damaged")
                if jax.process_index() == 0:
                    os.rename(bad, aside)
                log.warning("checkpoint %s is damaged (%s): moved to %s; resuming from %s",
                            bad, why, aside, path)
            _barrier("rnn_jax.checkpoints: damaged ones moved")
            self.manager.reload()
        params = jax.tree.map(lambda a: a, template.params)
        nnx.replace_by_pure_dict(params, jax.tree.map(jax.numpy.asarray, tree["params"]))
        state = template._replace(
            params=params,
            opt_state=jax.tree.map(jax.numpy.asarray, tree["opt_state"]),
            key=jax.random.wrap_key_data(jax.numpy.asarray(tree["key"])),
            epoch=jax.numpy.asarray(tree["epoch"]),
            diverged_at=jax.numpy.asarray(tree["diverged_at"]))
        return state, dict(tree["history"])

    def _read(self, epoch: int, want: dict) -> dict:
        """The checkpoint of `epoch` as a tree like `want` (plus its history).

        Raises `_Unreadable` when its files cannot be read back, and
        `CheckpointMismatchError` when they can but hold other arrays or
        shapes than `want` (compared from the metadata, before any array is read).
        """
        path = os.path.join(self.directory, str(epoch))
        _check_readable(os.path.join(path, "default"))
        try:
            meta = self.manager.item_metadata(epoch)
        except _READ_ERRORS as e:
            raise _Unreadable(_reason(e)) from None
        if meta is None:
            raise _Unreadable("Orbax finds no readable item in it")
        got = ocp.tree.to_flat_dict(meta)
        history = {k[1]: v for k, v in got.items() if k[0] == "history"}
        got = {k: tuple(v.shape) for k, v in got.items() if k[0] != "history"}
        need = {k: np.shape(v) for k, v in
                ocp.tree.to_flat_dict(ocp.tree.serialize_tree(want)).items()}
        if got.keys() != need.keys():
            there, here = sorted(got.keys() - need.keys()), sorted(need.keys() - got.keys())
            raise CheckpointMismatchError(
                f"checkpoint {path} does not fit this run (different model, optimizer or "
                f"number of seeds?): other arrays ({_names(there)} there; {_names(here)} here)")
        for k in sorted(need, key=lambda k: k[0] != "params"):  # weights named first
            if got[k] != need[k]:
                raise CheckpointMismatchError(
                    f"checkpoint {path} does not fit this run (different model, optimizer or "
                    f"number of seeds?): {'/'.join(k)} has shape {got[k]} there, "
                    f"{need[k]} here")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, want)
        abstract["history"] = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
                               for k, v in history.items()}
        try:
            return self.manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
        except _READ_ERRORS as e:
            raise _Unreadable(_reason(e)) from None


def _names(keys, most: int = 3) -> str:
    """A few flat tree keys as `a/b/c` names ('none' for none)."""
    names = ["/".join(k) for k in keys[:most]]
    return (", ".join(names) + (", ..." if len(keys) > most else "")) or "none"


def _free_name(path: str) -> str:
    """`path`, or `path-1`, `path-2`, ...: the first that does not exist."""
    candidate, i = path, 0
    while os.path.exists(candidate):
        i += 1
        candidate = f"{path}-{i}"
    return candidate


def save_weights(path: str, model, *, force: bool = True) -> str:
    """Save a module's parameters to `path`."""
    return _save(path, {"params": _pure(nnx.state(model, nnx.Param))}, force)


def _save(path: str, tree: dict, force: bool) -> str:
    path = os.path.abspath(path)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, tree, force=force)
        ckptr.wait_until_finished()
    return path


def _flat_shapes(tree, prefix=()):
    """`{"layers/0/cell/kernel": shape}` for a nested dict (list indices as strings)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat_shapes(v, prefix + (str(k),)))
        else:
            out["/".join(prefix + (str(k),))] = tuple(np.shape(v))
    return out


def _item_metadata(path: str) -> dict:
    """The tree of array metadata (`.shape`, `.dtype`) of the checkpoint item at `path`.

    Read by the item's handler: a `Checkpointer` would also look for a step's
    `_CHECKPOINT_METADATA` in it, which an item of a run's checkpoint
    (`<epoch>/default`) does not hold (it is one level up), and log a warning
    that it is missing.
    """
    handler = ocp.StandardCheckpointHandler()
    try:
        return handler.metadata(pathlib.Path(path))
    finally:
        handler.close()


def checkpoint_path(path: str) -> str:
    """The Orbax item directory of the checkpoint `path` names: `path` itself,
    `path/default` (one epoch of a run), or the newest epoch's under a run's
    checkpoint directory (`path/<epoch>/default`)."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    if os.path.isdir(os.path.join(path, "default")):
        return os.path.join(path, "default")
    epochs = [int(n) for n in os.listdir(path)
              if n.isdigit() and os.path.isdir(os.path.join(path, n, "default"))]
    if epochs:
        return os.path.join(path, str(max(epochs)), "default")
    return path


def load_params(path: str) -> dict:
    """The raw `params` pure dict of a checkpoint (numpy arrays); `path` as in
    `checkpoint_path`."""
    path = checkpoint_path(path)
    if "params" not in _item_metadata(path):
        raise ValueError(f"{path} is not an rnn_jax checkpoint (no 'params')")
    return _read_on_this_process(path)["params"]


def _read_on_this_process(path: str) -> dict:
    """The whole tree of the checkpoint item at `path` as numpy arrays, read
    by this process alone, whatever devices and processes wrote it."""
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
                          _item_metadata(path))
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(path, target)
    return jax.tree.map(np.asarray, restored)


def load_weights(model, path: str, seed_index: int | None = None):
    """Load the parameters saved at `path` into `model` (built, same architecture).

    With a checkpoint of several seeds, `seed_index` picks one (required).
    Returns the model.
    """
    params = load_params(path)
    target = nnx.state(model, nnx.Param)
    want = _flat_shapes(nnx.to_pure_dict(target))
    got = _flat_shapes(params)
    if set(want) != set(got):
        raise ValueError(f"checkpoint {path} holds different weights than the model: "
                         f"{sorted(got)} vs {sorted(want)}")
    if any(got[k] != want[k] for k in want):
        if not all(got[k][1:] == want[k] for k in want):
            raise ValueError(f"checkpoint {path} weight shapes {got} do not match the "
                             f"model's {want}")
        n = next(iter(got.values()))[0]
        if seed_index is None and n > 1:
            raise ValueError(f"checkpoint {path} holds {n} seeds; pass seed_index")
        seed_index = seed_index or 0
        if not 0 <= seed_index < n:
            raise IndexError(f"seed_index {seed_index} out of range for {n} seeds")
        params = jax.tree.map(lambda a: a[seed_index], params)
    elif seed_index not in (None, 0):
        raise IndexError(f"checkpoint {path} holds one model; seed_index {seed_index}")
    nnx.replace_by_pure_dict(target, jax.tree.map(jax.numpy.asarray, params))
    nnx.update(model, target)
    return model
