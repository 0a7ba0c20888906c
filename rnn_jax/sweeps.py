"""Sweeps in one program: optimizer hyperparameters vmapped together with the seeds.

    result = rnn_jax.fit(make_model, x, y, loss="mse", optimizer="adam",
                         learning_rate=[1e-3, 3e-3, 1e-2], seed=0, num_seeds=16)
    result.num_members                           # 48 = 3 values x 16 seeds
    result.members[17]                           # {'seed': 1, 'learning_rate': 0.003}
    result.history["val_loss"]                   # (48, epochs): one row per member
    result.member_indices(learning_rate=3e-3)    # [16, ..., 31]

Member layout: a sweep is a grid of value combinations, the cross product of
the swept names in the order given (the last name varies fastest), and
`M = len(grid) * num_seeds` members. Member `m` has combination
`m // num_seeds` and seed index `m % num_seeds`: it trains from
`jax.random.key(seed + m % num_seeds)`, so every combination sees the same
initial weights and the same shuffles (a paired comparison), and member `m`
trains what a separate `fit` with `seed + m % num_seeds` and that
combination's values trains.

The swept values live in the optimizer state, not in the program: the
optimizer is `optax.inject_hyperparams(<the named optimizer>)`
(`rnn_jax.optimizers.injected`), each member's values are written into its
`opt_state.hyperparams` at init, and the one compiled epoch program runs
every member. Only shape-free scalars of a named optimizer can be swept
(`rnn_jax.optimizers.hyperparameters`); an optax transformation given as
`optimizer` cannot be rebuilt with other values, so a sweep of its values
refuses it.

A sweep may also name a keyword argument of the model factory, such as an
initializer scale the user asks for:

    def make_model(rngs, init_scale=1.0):
        init = rnn_jax.initializers.variance_scaling(init_scale, "fan_avg", "uniform")
        return rnn_jax.Sequential([rnn_jax.SimpleRNN(4, kernel_initializer=init,
                                                     rngs=rngs), ...], input_shape=(3, 1))

    rnn_jax.fit(make_model, ..., sweep={"init_scale": [0.5, 1.0, 2.0]})

Each member's factory is called as `make_model(rngs, init_scale=v)` with `v`
a float32 scalar (traced: the factory must use it arithmetically, not in
Python control flow or shapes). Names of the optimizer come first: a name
both the optimizer and the factory have is the optimizer's.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
from typing import Sequence

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rnn_jax import optimizers as optimizers_lib

# The values a swept hyperparameter may take (names of `optimizers.hyperparameters`).
_RANGES = {
    "learning_rate": ("> 0", lambda v: v > 0),
    "epsilon": ("> 0", lambda v: v > 0),
    "beta_1": ("in [0, 1)", lambda v: 0 <= v < 1),
    "beta_2": ("in [0, 1)", lambda v: 0 <= v < 1),
    "rho": ("in [0, 1)", lambda v: 0 <= v < 1),
    "momentum": ("in [0, 1)", lambda v: 0 <= v < 1),
}


@dataclasses.dataclass(frozen=True)
class Grid:
    """The value combinations of a sweep.

    Attributes:
      optimizer: the named optimizer (`'adam'`, `'sgd'`, `'rmsprop'`).
      names: the swept hyperparameters, in the order given.
      combinations: one tuple of values (floats, in `names` order) per grid
        point, in grid order (cross product, the last name fastest).
      model_names: the names among `names` that are keyword arguments of the
        model factory (the others are the optimizer's).
    """

    optimizer: str
    names: tuple
    combinations: tuple
    model_names: tuple = ()

    def __len__(self) -> int:
        return len(self.combinations)

    def members(self, seed: int, num_seeds: int) -> list[dict]:
        """One dict per member, in member order: `{'seed': seed + m % num_seeds,
        name: value, ...}`."""
        return [{"seed": seed + i, **dict(zip(self.names, combo))}
                for combo in self.combinations for i in range(num_seeds)]

    def member_values(self, num_seeds: int) -> dict:
        """name -> float32 `(M,)`: every member's value of each swept name."""
        return {name: np.repeat(np.asarray([c[j] for c in self.combinations], np.float32),
                                num_seeds)
                for j, name in enumerate(self.names)}


def members(seed: int, num_seeds: int, grid: Grid | None = None) -> list[dict]:
    """`fit`'s members: `{'seed': seed + i}` for each seed without a sweep, else
    `grid.members(seed, num_seeds)`."""
    if grid is None:
        return [{"seed": seed + i} for i in range(num_seeds)]
    return grid.members(seed, num_seeds)


def make_grid(optimizer, learning_rate=None, sweep: dict | None = None,
              model=None) -> tuple[optax.GradientTransformation, Grid | None]:
    """`fit`'s optimizer and its sweep grid (None without a sweep) from `fit`'s
    `optimizer`, `learning_rate`, `sweep` and `model` arguments.

    - `learning_rate`: None (the optimizer's own default), a float, or a
      sequence of floats, which is shorthand for `sweep={'learning_rate': [...]}`
      (and then comes first in the grid).
    - `sweep`: name -> sequence of values, for hyperparameters of the named
      `optimizer` (`rnn_jax.optimizers.hyperparameters`) or keyword arguments
      of the `model` factory (`model_keywords`).

    Without a sweep the optimizer is `optimizers.get(optimizer, learning_rate)`,
    exactly as before. Raises ValueError for a sweep of an optax transformation,
    an unknown name, an empty list, a duplicate value, a value out of its
    range (learning rate and epsilon > 0, betas, rho and momentum in [0, 1)), or
    the learning rate given both ways.
    """
    swept: dict = {}
    fixed_lr = None
    if learning_rate is not None:
        if _is_sequence(learning_rate):
            swept["learning_rate"] = learning_rate
        else:
            fixed_lr = _number("learning_rate", learning_rate)
    if sweep is not None:
        if not isinstance(sweep, dict):
            raise ValueError(f"sweep must be a dict name -> list of values, got "
                             f"{type(sweep).__name__}")
        if not sweep:
            raise ValueError("sweep is empty: name at least one hyperparameter, e.g. "
                             "sweep={'learning_rate': [1e-3, 1e-2]}")
        if "learning_rate" in sweep and learning_rate is not None:
            raise ValueError("learning_rate is given both as an argument and in sweep")
        swept.update(sweep)
    config = {}  # a Keras optimizer object's own values (Adam(0.02, beta_1=0.8))
    if isinstance(optimizer, optimizers_lib.Optimizer):
        config = dict(optimizer.config)
        if fixed_lr is not None:
            config["learning_rate"] = fixed_lr
        if not swept:
            return type(optimizer)(**config).transform(), None
        optimizer = optimizer.keras_name
    if not swept:
        return optimizers_lib.get(optimizer, fixed_lr), None
    named = not isinstance(optimizer, optax.GradientTransformation)
    name = str(optimizer).lower() if named else "the optax optimizer"
    known = optimizers_lib.hyperparameters(name) if named else {}  # raises for unknown names
    keywords = model_keywords(model)
    values = {}
    for key, vals in swept.items():
        if key == "seed":
            raise ValueError("cannot sweep 'seed': it names each member's seed (use num_seeds)")
        if key not in known and key not in keywords:
            if not named and any(key in optimizers_lib.hyperparameters(n)
                                 for n in optimizers_lib.NAMES):
                raise ValueError(
                    f"a sweep of {key!r} needs a named optimizer ("
                    f"{', '.join(map(repr, optimizers_lib.NAMES))}): an optax transformation "
                    "cannot be rebuilt with other values")
            raise ValueError(f"cannot sweep {key!r}: {name} has no such hyperparameter"
                             + (f" (its hyperparameters: {', '.join(known)})" if named else "")
                             + " and the model factory takes no such keyword")
        if not _is_sequence(vals):
            raise ValueError(f"sweep {key!r}: give a list of values, got {vals!r}")
        vals = [_number(key, v) for v in vals]
        if not vals:
            raise ValueError(f"sweep {key!r}: the list of values is empty")
        as_f32 = np.asarray(vals, np.float32)
        if len(set(as_f32.tolist())) < len(vals):
            dup = next(v for i, v in enumerate(vals) if as_f32[i] in as_f32[:i])
            raise ValueError(f"sweep {key!r}: the value {dup} is given twice (as float32)")
        values[key] = vals
    names = tuple(values)
    model_names = tuple(k for k in names if k not in known)
    grid = Grid(name, names, tuple(itertools.product(*(values[k] for k in names))), model_names)
    opt_names = tuple(k for k in names if k in known)
    if not opt_names:
        return optimizers_lib.get(optimizer, fixed_lr), grid
    start = {k: v for k, v in config.items() if k not in opt_names}
    start.update({k: v for k, v in zip(names, grid.combinations[0]) if k in known})
    if fixed_lr is not None:
        start["learning_rate"] = fixed_lr
    return optimizers_lib.injected(name, start, opt_names), grid


def model_keywords(model) -> set:
    """The names a model factory `rngs -> Module` takes as keyword arguments
    (its named parameters after the first); none for a built module."""
    if model is None or isinstance(model, nnx.Module) or not callable(model):
        return set()
    try:
        params = list(inspect.signature(model).parameters.values())
    except (TypeError, ValueError):
        return set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in params[1:] if p.kind in kinds}


def split_values(grid: Grid, values: dict) -> tuple[dict, dict]:
    """name -> values  ->  (the optimizer's, the model factory's)."""
    opt = {k: v for k, v in values.items() if k not in grid.model_names}
    return opt, {k: v for k, v in values.items() if k in grid.model_names}


def set_values(opt_state, values: dict):
    """An `optax.inject_hyperparams` state with `values` (name -> scalar, traced
    or not) as its hyperparameters, each in the dtype the state holds it in."""
    hyperparams = dict(opt_state.hyperparams)
    for name, value in values.items():
        hyperparams[name] = jnp.asarray(value, hyperparams[name].dtype)
    return opt_state._replace(hyperparams=hyperparams)


def _is_sequence(value) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _number(name: str, value) -> float:
    """A swept or given hyperparameter value as a float, checked against its range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    what, ok = _RANGES.get(name, ("finite", lambda v: True))
    if not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name} must be {what}, got {value}")
    return value
