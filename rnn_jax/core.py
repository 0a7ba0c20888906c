"""Non-recurrent layers of the notebooks' models: `Embedding`, `Dense`,
`Activation` and `Masking`, with Keras' names, weights and mask rules."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from rnn_jax import activations
from rnn_jax.base import Layer, as_float, checking_inputs, describe, is_traced, refuse_where


class Embedding(Layer):
    """Keras' `Embedding`: integer ids `(B, T)` -> vectors `(B, T, output_dim)`.

    `y[b, t] = embeddings[ids[b, t]]`, `embeddings` `(input_dim, output_dim)`.
    With `mask_zero=True` id 0 is padding: `compute_mask(ids) = ids != 0`,
    which `Sequential` hands to the next layers (as Keras does).

    Args:
      input_dim: vocabulary size (ids are in `[0, input_dim)`).
      output_dim: size of each vector.
      embeddings_initializer: default `'uniform'` (`U(-0.05, 0.05)`).
      mask_zero: treat id 0 as padding.
      dtype, rngs, name: as for every layer.
    """

    weight_names = ("embeddings",)

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer="uniform", *,
                 mask_zero: bool = False, dtype="float32", rngs: nnx.Rngs | None = None,
                 name: str | None = None):
        super().__init__(dtype=dtype, rngs=rngs, name=name)
        for arg, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"Embedding: {arg} must be a positive integer, got {v!r}")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.embeddings_initializer = embeddings_initializer
        self.mask_zero = bool(mask_zero)
        self.build(None)

    def build(self, input_shape):
        self.add_weight("embeddings", (self.input_dim, self.output_dim), self.embeddings_initializer)
        self._done_building()

    def get_config(self):
        return {"input_dim": self.input_dim, "output_dim": self.output_dim,
                "mask_zero": self.mask_zero}

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def compute_mask(self, ids, mask=None):
        """`ids != 0` with `mask_zero`, else None (Keras drops an incoming mask)."""
        if not self.mask_zero:
            return None
        return jnp.asarray(ids) != 0

    def __call__(self, ids, mask=None, training: bool = False, key=None):
        """Looks up `ids` `(B, T)` (any shape) -> `(B, T, output_dim)`.

        Ids outside `[0, input_dim)` are refused with a ValueError when `ids`
        are concrete (an eager call). Under `jit` / `vmap` / `grad` a compiled
        program cannot raise: there an out-of-range id (negative ones too)
        looks up a vector of NaN, so the outputs and the loss turn NaN instead
        of silently reading another row (as `jnp.take` would clamp or wrap
        it); with `rnn_jax.check_inputs()` on, `checkify.checkify` reports
        the ids as the eager check does.
        """
        ids = jnp.asarray(ids)
        if jnp.issubdtype(ids.dtype, jnp.floating):
            ids = ids.astype(jnp.int32)  # Keras casts float ids to int32
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"{describe(self)} expects integer ids, got dtype {ids.dtype}")
        if ids.size:
            self._check_ids(ids)
        # out of range -> input_dim, which mode="fill" reads as a row of NaN
        safe = jnp.where(ids < 0, self.input_dim, ids)
        return jnp.take(self.embeddings[...], safe, axis=0, mode="fill", fill_value=jnp.nan)

    def _check_ids(self, ids):
        """Refuses ids outside `[0, input_dim)` (see `__call__`): always on
        concrete ids; under a transformation when `check_inputs()` is on."""
        if is_traced(ids) and not checking_inputs():
            return
        who = describe(self).replace("{", "{{").replace("}", "}}")
        index = ", ".join(["{}"] * ids.ndim)
        message = (f"{who}: ids must be in [0, {self.input_dim}), got values in [{{}}, {{}}]; "
                   f"the first out of range at index ({index})")
        refuse_where((ids < 0) | (ids >= self.input_dim), message, jnp.min(ids), jnp.max(ids))


class Dense(Layer):
    """Keras' `Dense`: `y = activation(x @ kernel + bias)` on the last axis.

    x `(..., D)`, kernel `(D, units)`, bias `(units,)`, y `(..., units)`.
    A mask passes through unchanged (Keras' `supports_masking`).
    """

    weight_names = ("kernel", "bias")

    def __init__(self, units: int, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", *,
                 input_shape=None, dtype="float32", rngs: nnx.Rngs | None = None,
                 name: str | None = None):
        super().__init__(dtype=dtype, rngs=rngs, name=name)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"Dense: units must be a positive integer, got {units!r}")
        self.units = units
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.input_dim = None
        if input_shape is not None:
            self.build((None, *input_shape))

    def build(self, input_shape):
        self.input_dim = int(input_shape[-1])
        self.add_weight("kernel", (self.input_dim, self.units), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer)
        else:
            self.bias = None
        self._done_building()

    def get_config(self):
        return {"units": self.units, "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias}

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        x = self.cast_inputs(inputs)
        if x.ndim < 1:
            raise ValueError("Dense expects inputs with a feature axis")
        self.maybe_build(x.shape, traced=is_traced(x))
        if x.shape[-1] != self.input_dim:
            raise ValueError(
                f"{describe(self)}: inputs have {x.shape[-1]} features, the kernel expects "
                f"{self.input_dim}"
            )
        y = x @ self.kernel[...]
        if self.use_bias:
            y = y + self.bias[...]
        return self.activation(y)


class Activation(Layer):
    """Keras' `Activation`: applies an activation (by Keras name) elementwise."""

    def __init__(self, activation, *, dtype="float32", name: str | None = None):
        super().__init__(dtype=dtype, rngs=None, name=name)
        self.activation = activations.get(activation)
        self.built = True

    def get_config(self):
        return {"activation": activations.serialize(self.activation)}

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        return self.activation(self.cast_inputs(inputs))


class Masking(Layer):
    """Keras' `Masking`: a step whose features all equal `mask_value` is masked.

    `mask[b, t] = any(x[b, t, :] != mask_value)`; the output is `x * mask`.
    """

    def __init__(self, mask_value: float = 0.0, *, dtype="float32", name: str | None = None):
        super().__init__(dtype=dtype, rngs=None, name=name)
        self.mask_value = float(mask_value)
        self.built = True

    def get_config(self):
        return {"mask_value": self.mask_value}

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        return jnp.any(as_float(inputs, self.dtype) != self.mask_value, axis=-1)

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        x = self.cast_inputs(inputs)
        return x * self.compute_mask(x)[..., None].astype(x.dtype)
