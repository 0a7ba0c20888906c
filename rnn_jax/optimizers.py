"""Keras' optimizers with Keras' defaults, as `optax` gradient transformations.

- `adam(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7)`: Keras'
  Adam. Keras puts epsilon outside the bias correction,

  .. math::

      m_t = m_{t-1} + (g_t - m_{t-1})(1 - \\beta_1), \\quad
      v_t = v_{t-1} + (g_t^2 - v_{t-1})(1 - \\beta_2) \\\\
      \\theta_t = \\theta_{t-1} - \\eta \\frac{\\sqrt{1 - \\beta_2^t}}{1 - \\beta_1^t}
                  \\frac{m_t}{\\sqrt{v_t} + \\epsilon}

  which differs from `optax.adam` (epsilon added to the bias-corrected
  `sqrt(v_hat)`), so it is written here on optax's interfaces.
- `sgd(learning_rate=0.01, momentum=0.0, nesterov=False)`: `optax.sgd`, which
  equals Keras' SGD (with momentum too).
- `rmsprop(learning_rate=1e-3, rho=0.9, momentum=0.0, epsilon=1e-7,
  centered=False)`: `optax.rmsprop` with epsilon inside the square root,
  as Keras has it.

`Adam`, `SGD` and `RMSprop` are Keras' optimizer classes with Keras'
arguments (`Adam(0.02)`, and Keras 2's `lr=` too), for code written for
`keras.optimizers`; `get` turns them into these transformations.

`get(name, learning_rate=None)` takes a Keras name, with Keras' default
learning rate when none is given. `hyperparameters(name)` lists a named
optimizer's numeric hyperparameters (what `fit`'s sweeps may vary) and
`injected(name, values, swept)` builds it with `optax.inject_hyperparams`,
the `swept` ones held in its state (`state.hyperparams[name]`) rather than
in the program, so that each `vmap`-ed member can have its own.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax


class KerasAdamState(NamedTuple):
    count: jax.Array  # int32 step count t
    mu: optax.Updates  # m
    nu: optax.Updates  # v


def adam(learning_rate: float | optax.Schedule = 1e-3, beta_1: float = 0.9,
         beta_2: float = 0.999, epsilon: float = 1e-7) -> optax.GradientTransformation:
    """Keras' Adam, as an optax transformation (see the module docstring)."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return KerasAdamState(jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: m + (g - m) * (1 - beta_1), state.mu, grads)
        nu = jax.tree.map(lambda v, g: v + (jnp.square(g) - v) * (1 - beta_2), state.nu, grads)

        def step(m, v):
            t = count.astype(m.dtype)
            alpha = jnp.asarray(lr, m.dtype) * jnp.sqrt(1 - jnp.asarray(beta_2, m.dtype) ** t) / (
                1 - jnp.asarray(beta_1, m.dtype) ** t)
            return -(m * alpha) / (jnp.sqrt(v) + jnp.asarray(epsilon, m.dtype))

        return jax.tree.map(step, mu, nu), KerasAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def sgd(learning_rate: float | optax.Schedule = 0.01, momentum: float = 0.0,
        nesterov: bool = False) -> optax.GradientTransformation:
    """Keras' SGD: `optax.sgd` (the same update, momentum and Nesterov included)."""
    return optax.sgd(learning_rate, momentum=_momentum(momentum), nesterov=nesterov)


def rmsprop(learning_rate: float | optax.Schedule = 1e-3, rho: float = 0.9,
            momentum: float = 0.0, epsilon: float = 1e-7,
            centered: bool = False) -> optax.GradientTransformation:
    """Keras' RMSprop: `optax.rmsprop` with `eps_in_sqrt=True`."""
    return optax.rmsprop(learning_rate, decay=rho, eps=epsilon, eps_in_sqrt=True,
                         centered=centered, momentum=_momentum(momentum))


def _momentum(momentum):
    """optax's momentum argument: None (no momentum trace) for a Python zero; an
    array (a swept value, held in the optimizer state) always keeps the trace,
    which with momentum 0 is the plain update (`g + 0 * t = g`)."""
    if isinstance(momentum, (int, float)) and momentum == 0:
        return None
    return momentum


_OPTIMIZERS = {"adam": adam, "sgd": sgd, "rmsprop": rmsprop}
NAMES = tuple(_OPTIMIZERS)


class Optimizer:
    """A Keras optimizer object: its name and arguments; `transform()` is the
    optax transformation that `fit` runs. Arguments Keras has and rnn_jax
    does not (weight decay, clipping, EMA, ...) are refused unless left at
    their defaults."""

    keras_name = ""
    _UNSUPPORTED = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema",
                    "loss_scale_factor", "gradient_accumulation_steps")

    def __init__(self, config: dict, lr=None, name=None, **kwargs):
        if lr is not None:  # Keras 2's name of learning_rate
            config["learning_rate"] = lr
        unknown = [k for k, v in kwargs.items()
                   if not (k in self._UNSUPPORTED + ("ema_momentum", "ema_overwrite_frequency")
                           and v in (None, False, 0.99))]
        if unknown:
            raise ValueError(f"{type(self).__name__}: unsupported argument(s) "
                             f"{', '.join(sorted(unknown))}")
        lr_value = config["learning_rate"]
        if not callable(lr_value) and not lr_value > 0:
            raise ValueError(f"{type(self).__name__}: learning_rate must be > 0, got {lr_value}")
        self.config = config
        self.name = name or self.keras_name

    @property
    def learning_rate(self):
        return self.config["learning_rate"]

    def get_config(self) -> dict:
        return {"name": self.name, **self.config}

    def transform(self) -> optax.GradientTransformation:
        return _OPTIMIZERS[self.keras_name](**self.config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"


class Adam(Optimizer):
    """Keras' `Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)` (`adam`)."""

    keras_name = "adam"

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, **kwargs):
        if amsgrad:
            raise ValueError("Adam: amsgrad=True is not supported")
        super().__init__(dict(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                              epsilon=epsilon), **kwargs)


class SGD(Optimizer):
    """Keras' `SGD(learning_rate=0.01, momentum=0.0, nesterov=False)` (`sgd`)."""

    keras_name = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(dict(learning_rate=learning_rate, momentum=momentum,
                              nesterov=nesterov), **kwargs)


class RMSprop(Optimizer):
    """Keras' `RMSprop(learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
    centered=False)` (`rmsprop`)."""

    keras_name = "rmsprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False, **kwargs):
        super().__init__(dict(learning_rate=learning_rate, rho=rho, momentum=momentum,
                              epsilon=epsilon, centered=centered), **kwargs)


def get(identifier, learning_rate: float | None = None) -> optax.GradientTransformation:
    """An optimizer by Keras name (`'adam'`, `'sgd'`, `'rmsprop'`), a Keras
    optimizer object (`Adam(0.02)`), or an optax one as is."""
    if isinstance(identifier, Optimizer):
        identifier = identifier.transform()
    if isinstance(identifier, optax.GradientTransformation):
        if learning_rate is not None:
            raise ValueError("learning_rate applies to optimizers given by name")
        return identifier
    key = str(identifier).lower()
    if key not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {identifier!r}; known: {', '.join(NAMES)}")
    if learning_rate is None:
        return _OPTIMIZERS[key]()
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    return _OPTIMIZERS[key](learning_rate)


def hyperparameters(identifier) -> dict:
    """The numeric hyperparameters of a named optimizer and their Keras defaults,
    e.g. `{'learning_rate': 0.001, 'beta_1': 0.9, 'beta_2': 0.999, 'epsilon': 1e-07}`
    for `'adam'` (flags such as `nesterov` are not among them)."""
    key = str(identifier).lower()
    if key not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {identifier!r}; known: {', '.join(NAMES)}")
    return {name: p.default for name, p in inspect.signature(_OPTIMIZERS[key]).parameters.items()
            if isinstance(p.default, float)}


def injected(identifier, values: dict, swept: Sequence[str]) -> optax.GradientTransformation:
    """The named optimizer with `values` (name -> float; the others Keras'
    defaults), built by `optax.inject_hyperparams` with the `swept` names in its
    state: `init` returns an `optax.InjectStatefulHyperparamsState` whose
    `hyperparams[name]` (float32 scalars) `update` reads; change them there to
    train with other values. The other hyperparameters are constants of the
    program, as in `get`.
    """
    key = str(identifier).lower()
    known = hyperparameters(key)
    unknown = sorted(set(swept) - set(known))
    if unknown:
        raise ValueError(f"{key} has no hyperparameter {', '.join(map(repr, unknown))}; "
                         f"its hyperparameters: {', '.join(known)}")
    factory = _OPTIMIZERS[key]
    static = [name for name in inspect.signature(factory).parameters if name not in swept]
    return optax.inject_hyperparams(factory, static_args=static)(**values)
