"""Activation functions by their Keras names.

`get(identifier)` turns what a Keras user writes (`'tanh'`, `'linear'`,
`None`, a callable) into a JAX function with Keras' exact definition, and
`serialize(fn)` turns it back into the Keras name (for `to_keras`).

Definitions follow Keras 3 (`keras/src/activations/activations.py`), which
differ from `jax.nn` in places: `hard_sigmoid(x) = relu6(x + 3) / 6`,
`leaky_relu` has slope 0.2, and `gelu` is exact (not the tanh approximation).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]


def linear(x):
    """`f(x) = x` (Keras' `'linear'`, also what `None` means)."""
    return x


def hard_sigmoid(x):
    """`f(x) = relu6(x + 3) / 6`, Keras 3's piecewise-linear sigmoid."""
    return jax.nn.relu6(x + 3.0) / 6.0


def hard_silu(x):
    """`f(x) = x * hard_sigmoid(x)`."""
    return x * hard_sigmoid(x)


def leaky_relu(x):
    """`f(x) = x if x > 0 else 0.2 x` (Keras' default slope)."""
    return jax.nn.leaky_relu(x, negative_slope=0.2)


def gelu(x):
    """Exact GELU, `x * Phi(x)` (Keras' default, `approximate=False`)."""
    return jax.nn.gelu(x, approximate=False)


def softmax(x):
    """Softmax over the last axis."""
    return jax.nn.softmax(x, axis=-1)


def log_softmax(x):
    """Log-softmax over the last axis."""
    return jax.nn.log_softmax(x, axis=-1)


def hard_tanh(x):
    """`f(x) = clip(x, -1, 1)`."""
    return jnp.clip(x, -1.0, 1.0)


def mish(x):
    """`f(x) = x * tanh(softplus(x))`."""
    return x * jnp.tanh(jax.nn.softplus(x))


_BY_NAME: dict[str, Activation] = {
    "linear": linear,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "leaky_relu": leaky_relu,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "gelu": gelu,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "hard_silu": hard_silu,
    "hard_swish": hard_silu,
    "hard_tanh": hard_tanh,
    "mish": mish,
    "exponential": jnp.exp,
    "log_sigmoid": jax.nn.log_sigmoid,
    "softmax": softmax,
    "log_softmax": log_softmax,
}

# The name under which each function is written back (aliases resolve to the
# first name listed above).
_NAME_OF: dict[Activation, str] = {}
for _name, _fn in _BY_NAME.items():
    _NAME_OF.setdefault(_fn, _name)

NAMES = tuple(sorted(_BY_NAME))


def get(identifier: str | Activation | None) -> Activation:
    """Returns the activation function for a Keras name, `None` or a callable.

    Args:
      identifier: a Keras activation name (see `NAMES`), `None` (meaning
        `'linear'`, as in Keras) or a callable `f(x) -> y` applied elementwise.

    Raises:
      ValueError: for an unknown name, naming the known ones.
    """
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        try:
            return _BY_NAME[identifier]
        except KeyError:
            raise ValueError(
                f"Unknown activation {identifier!r}; known names: {', '.join(NAMES)}"
            ) from None
    if callable(identifier):
        return identifier
    raise ValueError(
        f"activation must be a name, None or a callable, got {identifier!r}"
    )


def serialize(fn: Activation) -> str:
    """Returns the Keras name of an activation from `get`.

    Raises:
      ValueError: for a user-supplied callable, which has no Keras name.
    """
    try:
        return _NAME_OF[fn]
    except KeyError:
        raise ValueError(
            f"activation {fn!r} is a custom callable with no Keras name; "
            f"use one of: {', '.join(NAMES)}"
        ) from None
