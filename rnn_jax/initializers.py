"""Weight initializers by their Keras names.

`get(identifier)` returns a JAX initializer `init(key, shape, dtype) -> array`
with Keras 3's distribution for that name (the draws differ, the laws are the
same). Fan sizes follow Keras' `compute_fans`: for a `(fan_in, fan_out)`
matrix they are its two dimensions, for a vector both are its length.

Known names and their laws (`n = fan_in`, `m = fan_out`):

- `zeros`, `ones`; a number `v` means the constant `v`.
- `glorot_uniform`: `U(-l, l)`, `l = sqrt(6 / (n + m))` (Keras' kernel default).
- `glorot_normal`: truncated normal, std `sqrt(2 / (n + m))`.
- `he_uniform` / `he_normal`: scale 2 on `n`; `lecun_uniform` / `lecun_normal`:
  scale 1 on `n`.
- `orthogonal`: an orthogonal matrix from the QR decomposition of a normal
  draw, signs fixed by `diag(R)` (Keras' recurrent-kernel default).
- `identity`: the identity matrix (2-D only).
- `random_normal` / `normal`: `N(0, 0.05^2)`; `random_uniform` / `uniform`:
  `U(-0.05, 0.05)` (Keras' `Embedding` default); `truncated_normal`:
  truncated `N(0, 0.05^2)`.
- `variance_scaling`: scale 1, fan_in, truncated normal.

A callable is taken in either form: JAX's `init(key, shape, dtype)`, or
Keras' `init(shape, dtype=None)` (a Keras initializer object, or a function
of the shape returning an array, as notebook code writes them; it draws
from its own generator, not from the layer's key).
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def _fans(shape):
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = 1
    for dim in shape[:-2]:
        receptive *= dim
    return shape[-2] * receptive, shape[-1] * receptive


def variance_scaling(scale: float, mode: str, distribution: str) -> Initializer:
    """Keras' `VarianceScaling(scale, mode, distribution)`."""

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(shape)
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / max(1.0, n)
        if distribution == "uniform":
            limit = jnp.sqrt(3.0 * variance)
            return jax.random.uniform(key, shape, dtype, -limit, limit)
        if distribution == "truncated_normal":
            # std of a unit normal truncated to [-2, 2]
            stddev = jnp.sqrt(variance) / 0.87962566103423978
            return stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
        return jnp.sqrt(variance) * jax.random.normal(key, shape, dtype)

    return init


def constant(value: float) -> Initializer:
    """Every entry equal to `value`."""

    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.full(tuple(shape), value, dtype)

    return init


def orthogonal(gain: float = 1.0) -> Initializer:
    """Keras' `Orthogonal(gain)`: flattened to `(prod(shape[:-1]), shape[-1])`."""
    base = jax.nn.initializers.orthogonal(scale=gain, column_axis=-1)

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(f"orthogonal initializer needs a matrix shape, got {shape}")
        return base(key, shape, dtype)

    return init


def identity(gain: float = 1.0) -> Initializer:
    """`gain * I` for a 2-D shape (rectangular allowed, as in Keras)."""

    def init(key, shape, dtype=jnp.float32):
        del key
        if len(shape) != 2:
            raise ValueError(f"identity initializer needs a 2-D shape, got {tuple(shape)}")
        return gain * jnp.eye(shape[0], shape[1], dtype=dtype)

    return init


def random_normal(mean=0.0, stddev=0.05) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
        return mean + stddev * jax.random.normal(key, tuple(shape), dtype)

    return init


def random_uniform(minval=-0.05, maxval=0.05) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, tuple(shape), dtype, minval, maxval)

    return init


def truncated_normal(mean=0.0, stddev=0.05) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
        return mean + stddev * jax.random.truncated_normal(key, -2.0, 2.0, tuple(shape), dtype)

    return init


_BY_NAME: dict[str, Callable[[], Initializer]] = {
    "zeros": lambda: constant(0.0),
    "ones": lambda: constant(1.0),
    "glorot_uniform": lambda: variance_scaling(1.0, "fan_avg", "uniform"),
    "glorot_normal": lambda: variance_scaling(1.0, "fan_avg", "truncated_normal"),
    "he_uniform": lambda: variance_scaling(2.0, "fan_in", "uniform"),
    "he_normal": lambda: variance_scaling(2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": lambda: variance_scaling(1.0, "fan_in", "uniform"),
    "lecun_normal": lambda: variance_scaling(1.0, "fan_in", "truncated_normal"),
    "variance_scaling": lambda: variance_scaling(1.0, "fan_in", "truncated_normal"),
    "orthogonal": orthogonal,
    "identity": identity,
    "random_normal": random_normal,
    "normal": random_normal,
    "random_uniform": random_uniform,
    "uniform": random_uniform,
    "truncated_normal": truncated_normal,
}

NAMES = tuple(sorted(_BY_NAME))


def _takes_key(fn) -> bool:
    """Whether `fn` is JAX's `init(key, shape, dtype)` (it takes three positional
    arguments) rather than Keras' `init(shape, dtype=None)`."""
    try:
        inspect.signature(fn).bind(None, (1,), jnp.float32)
    except TypeError:
        return False
    except ValueError:  # no signature to read: assume JAX's form
        return True
    return True


def _keras_form(fn) -> Initializer:
    """Keras' `init(shape, dtype=None)` as `init(key, shape, dtype)` (the key unused)."""
    def init(key, shape, dtype):
        try:
            inspect.signature(fn).bind((1,), dtype)
            value = fn(tuple(shape), dtype)
        except TypeError:
            value = fn(tuple(shape))
        value = jnp.asarray(value, dtype)
        if value.shape != tuple(shape):
            raise ValueError(f"initializer {getattr(fn, '__name__', fn)!r} returned shape "
                             f"{value.shape} for a weight of shape {tuple(shape)}")
        return value

    init.keras_initializer = fn
    return init


def get(identifier: str | float | int | Initializer) -> Initializer:
    """Returns the initializer for a Keras name, a constant or a callable.

    Args:
      identifier: a Keras initializer name (see `NAMES`), a number (a constant
        fill), or a callable `init(key, shape, dtype) -> array`.

    Raises:
      ValueError: for an unknown name, naming the known ones.
    """
    if isinstance(identifier, str):
        try:
            return _BY_NAME[identifier]()
        except KeyError:
            raise ValueError(
                f"Unknown initializer {identifier!r}; known names: {', '.join(NAMES)}"
            ) from None
    if isinstance(identifier, (int, float)) and not isinstance(identifier, bool):
        return constant(float(identifier))
    if callable(identifier):
        return identifier if _takes_key(identifier) else _keras_form(identifier)
    raise ValueError(
        f"initializer must be a name, a number or a callable, got {identifier!r}"
    )
