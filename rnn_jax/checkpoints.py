"""Checkpoints with Orbax: trained weights (and training state) on disk and back.

A checkpoint is an Orbax directory holding a plain nested dict:

    {"params": <the model's nnx.Param values as a pure dict>,
     "opt_state": ..., "key": <uint32 key data>, "epoch": int}   # when saved from a TrainState

With `num_seeds > 1` every array has a leading seed axis. Orbax writes into a
temporary directory and renames it when complete, so a directory that exists
is a whole checkpoint.

    rnn_jax.checkpoints.save_train_state(path, result.state)
    model = make_model(nnx.Rngs(0))                       # same architecture
    rnn_jax.checkpoints.load_weights(model, path, seed_index=3)
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx


def _pure(state):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(state))


def save_train_state(path: str, state, *, force: bool = True) -> str:
    """Save a `TrainState` (params, optimizer state, key, epoch) to `path`."""
    opt_state = jax.tree.map(np.asarray, state.opt_state,
                             is_leaf=lambda x: isinstance(x, nnx.Variable))
    return _save(path, {
        "params": _pure(state.params),
        "opt_state": opt_state,
        "key": np.asarray(jax.random.key_data(state.key)),
        "epoch": np.asarray(state.epoch),
    }, force)


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


def load_params(path: str) -> dict:
    """The raw `params` pure dict of a checkpoint (numpy arrays)."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(path)
        tree = meta.item_metadata if hasattr(meta, "item_metadata") else meta
        if "params" not in tree:
            raise ValueError(f"{path} is not an rnn_jax checkpoint (no 'params')")
        restored = ckptr.restore(path)
    return restored["params"]


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
