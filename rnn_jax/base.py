"""The base of every `rnn_jax` layer: Keras-style building and weight I/O.

A layer is a Flax NNX module whose weights are `nnx.Param`s named as Keras
names them (`kernel`, `recurrent_kernel`, `bias`, `embeddings`). As in Keras,
a layer may be built lazily: its weight shapes depend on the input's last
dimension, which is known either from `input_shape` at construction or from
the first call. Building draws the initial weights from the `rngs` given at
construction (`nnx.Rngs`); there is no hidden default key.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_jax import initializers


class Layer(nnx.Module):
    """Base class: lazy `build`, `get_weights` / `set_weights` in Keras order.

    Subclasses set `weight_names` (Keras' order of `get_weights()`) and
    implement `build(input_shape)`, creating each weight with `add_weight`.
    """

    weight_names: tuple[str, ...] = ()

    def __init__(self, *, dtype="float32", rngs: nnx.Rngs | None = None, name: str | None = None):
        self.dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(self.dtype, jnp.floating):
            raise ValueError(f"{type(self).__name__}: dtype must be a float dtype, got {dtype!r}")
        self.name = name
        self.built = False
        self._rngs = rngs

    # -- building -----------------------------------------------------------

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Creates the weights for inputs of `input_shape` (batch first)."""
        self.built = True

    def maybe_build(self, input_shape: Sequence[int | None], traced: bool = False) -> None:
        """Builds on first use; refuses to build inside `jit` / `vmap` / `grad`."""
        if self.built:
            return
        if traced:
            raise RuntimeError(
                f"{type(self).__name__} is not built yet and was called under a JAX "
                "transformation; call it once eagerly, call build(input_shape), or "
                "pass input_shape=... at construction before jit/vmap/grad"
            )
        self.build(tuple(input_shape))

    def add_weight(self, name: str, shape: Sequence[int], initializer) -> None:
        """Creates `nnx.Param` `name` of `shape` drawn from `initializer`."""
        init = initializers.get(initializer)
        if self._rngs is None:
            raise ValueError(
                f"{type(self).__name__} needs rngs=nnx.Rngs(seed) at construction "
                "to draw its initial weights"
            )
        value = init(self._rngs.params(), tuple(shape), self.dtype)
        setattr(self, name, nnx.Param(jnp.asarray(value, self.dtype)))

    def _done_building(self) -> None:
        self.built = True
        self._rngs = None  # the key stream is not part of the trained state

    # -- weights ------------------------------------------------------------

    def _check_built(self) -> None:
        if not self.built:
            raise ValueError(
                f"{type(self).__name__} has no weights yet: call it once or call "
                "build(input_shape) first"
            )

    @property
    def weights(self) -> list[nnx.Param]:
        """The weight variables in Keras' `get_weights()` order."""
        self._check_built()
        return [getattr(self, n) for n in self.weight_names if getattr(self, n, None) is not None]

    def get_weights(self) -> list[np.ndarray]:
        """The weights as numpy arrays, in the order Keras' `get_weights()` uses."""
        return [np.asarray(w[...]) for w in self.weights]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Sets the weights from arrays in Keras' order; shapes must match exactly."""
        own = self.weights
        if len(weights) != len(own):
            raise ValueError(
                f"{type(self).__name__} has {len(own)} weights "
                f"({', '.join(self._weight_labels())}), got {len(weights)} arrays"
            )
        for label, var, value in zip(self._weight_labels(), own, weights):
            value = np.asarray(value)
            if value.shape != var[...].shape:
                raise ValueError(
                    f"{type(self).__name__}: weight {label!r} has shape "
                    f"{var[...].shape}, got an array of shape {value.shape}"
                )
            var.set_value(jnp.asarray(value, self.dtype))

    def _weight_labels(self) -> list[str]:
        return [n for n in self.weight_names if getattr(self, n, None) is not None]

    def count_params(self) -> int:
        """Number of scalar weights (Keras' `count_params`); works on abstract
        modules from `nnx.eval_shape` too (it reads only the shapes)."""
        return int(sum(np.prod(w.get_value().shape) for w in self.weights))


def is_traced(x) -> bool:
    """True when `x` is an abstract value inside a JAX transformation."""
    return isinstance(x, jax.core.Tracer)


def as_float(x, dtype) -> jax.Array:
    """Casts float inputs to the layer's dtype, as Keras' autocasting does."""
    x = jnp.asarray(x)
    if x.dtype != dtype:
        x = x.astype(dtype)
    return x
