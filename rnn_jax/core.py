"""The layers around the recurrent ones, with Keras' names, weights and mask
rules: `Embedding`, `Dense`, `Activation`, `Masking` (the notebooks' models),
and those Keras' RNN tutorials use: `Dropout`, `Flatten`, `RepeatVector`,
`TimeDistributed`, the merges `Concatenate` and `Add` (called on a list of
arrays), `GlobalAveragePooling1D` and `GlobalMaxPooling1D`.

Each layer's `compute_mask(inputs, mask)` is the mask its output carries, as
Keras' is: made (`Embedding(mask_zero=True)`, `Masking`), passed through
(`Dense`, `Dropout`, `TimeDistributed`, ...), combined (the merges: `mask` is
then a list, one entry per input, None for an unmasked one) or dropped
(`Flatten`, `RepeatVector`, the poolings).
"""

from __future__ import annotations

import math
import numbers

import jax
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


# -- the layers around the recurrent ones in Keras' RNN tutorials --------------------


def _data_format(cls: str, data_format) -> str:
    """`'channels_last'` (also for None, Keras' default) or `'channels_first'`."""
    value = "channels_last" if data_format is None else str(data_format).lower()
    if value not in ("channels_last", "channels_first"):
        raise ValueError(f"{cls}: data_format must be 'channels_last' or 'channels_first', "
                         f"got {data_format!r}")
    return value


def _check_mask(layer, mask, shape, what: str):
    """`mask` as a bool array, refused unless its shape is `shape` (a tuple;
    `what` says what it is, e.g. `'(batch, steps)'`)."""
    mask = jnp.asarray(mask)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{describe(layer)}: mask must have shape {what} = {tuple(shape)}, "
                         f"got {tuple(mask.shape)}")
    return mask.astype(bool)


class Dropout(Layer):
    """Keras' `Dropout`: inverted dropout when `training=True`, else the identity.

    `y = where(keep, x / (1 - rate), 0)` with `keep ~ Bernoulli(1 - rate)`
    drawn from the call's `key` in the shape `noise_shape` (its None entries
    take the input's sizes) and broadcast against `x` `(B, ...)`. So the
    expected value of `y` is `x`. A mask passes through unchanged.

    Args:
      rate: the fraction of inputs dropped, in `[0, 1)`.
      noise_shape: None (one draw per input value), or the shape of the keep
        mask, broadcast against the input: `(None, 1, None)` on `(B, T, D)`
        inputs drops the same features at every step.
      seed: Keras' layer seed, kept for `get_config` and `to_keras` only: the
        masks come from each call's `key` (there is no hidden key).
      dtype, name: as for every layer.

    Call: `layer(inputs, mask=None, training=False, key=None)`; with
    `training=True` and `rate > 0` a `key` is required (a ValueError
    otherwise); `keep_mask(key, shape)` is the mask such a call draws.
    """

    def __init__(self, rate: float, noise_shape=None, seed=None, *, dtype="float32",
                 name: str | None = None):
        super().__init__(dtype=dtype, rngs=None, name=name)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
            raise ValueError(f"Dropout: rate must be a number in [0, 1), got {rate!r}")
        if noise_shape is not None:
            noise_shape = tuple(noise_shape)
            if any(d is not None and (isinstance(d, bool) or not isinstance(d, int) or d <= 0)
                   for d in noise_shape):
                raise ValueError(f"Dropout: noise_shape must hold positive integers or None, "
                                 f"got {noise_shape!r}")
        self.rate = float(rate)
        self.noise_shape = noise_shape
        self.seed = seed
        self.built = True

    def get_config(self):
        return {"rate": self.rate, "noise_shape": self.noise_shape, "seed": self.seed}

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        return mask

    def _mask_shape(self, shape) -> tuple[int, ...]:
        """`noise_shape` with its None entries filled from `shape`, checked to
        broadcast against it."""
        if self.noise_shape is None:
            return tuple(shape)
        noise = tuple(s if d is None else d for d, s in zip(self.noise_shape, shape))
        if len(self.noise_shape) != len(shape) or any(
                d not in (1, s) for d, s in zip(noise, shape)):
            raise ValueError(f"{describe(self)}: noise_shape {self.noise_shape} does not "
                             f"broadcast against inputs of shape {tuple(shape)}")
        return noise

    def keep_mask(self, key, shape) -> jax.Array:
        """The bool mask of kept values a training call on inputs of `shape`
        with `key` draws: `noise_shape` (filled from `shape`), True with
        probability `1 - rate`."""
        return jax.random.bernoulli(key, 1.0 - self.rate, self._mask_shape(shape))

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        x = self.cast_inputs(inputs)
        if not training or self.rate == 0:
            return x
        if key is None:
            raise ValueError(f"{describe(self)}: dropout is active (training=True) and needs "
                             "a random key: call with key=jax.random.key(seed)")
        keep = self.keep_mask(key, x.shape)
        return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros((), x.dtype))


class Flatten(Layer):
    """Keras' `Flatten`: `(B, d1, ..., dk)` -> `(B, d1 * ... * dk)`; `(B,)` -> `(B, 1)`.

    With `data_format='channels_first'` the channels axis (axis 1) is moved
    last before flattening, as Keras does. A mask is dropped (Keras' Flatten
    does not support masking).
    """

    def __init__(self, data_format="channels_last", *, dtype="float32",
                 name: str | None = None):
        super().__init__(dtype=dtype, rngs=None, name=name)
        self.data_format = _data_format("Flatten", data_format)
        self.built = True

    def get_config(self):
        return {"data_format": self.data_format}

    def compute_output_shape(self, input_shape):
        rest = tuple(input_shape)[1:]
        size = None if any(d is None for d in rest) else math.prod(rest)
        return (input_shape[0], size)

    def compute_mask(self, inputs, mask=None):
        return None

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        x = self.cast_inputs(inputs)
        if x.ndim < 1:
            raise ValueError(f"{describe(self)} expects inputs of shape (batch, ...), got "
                             f"shape {tuple(x.shape)}")
        if self.data_format == "channels_first" and x.ndim > 2:
            x = jnp.moveaxis(x, 1, -1)
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))


class RepeatVector(Layer):
    """Keras' `RepeatVector`: `(B, D)` -> `(B, n, D)`, the input at every step.

    A mask is dropped (Keras' RepeatVector does not support masking).
    """

    def __init__(self, n: int, *, dtype="float32", name: str | None = None):
        super().__init__(dtype=dtype, rngs=None, name=name)
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"RepeatVector: n must be a positive integer, got {n!r}")
        self.n = n
        self.built = True

    def get_config(self):
        return {"n": self.n}

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n, input_shape[1])

    def compute_mask(self, inputs, mask=None):
        return None

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        x = self.read_inputs(inputs, 2, "(batch, features)")
        return jnp.broadcast_to(x[:, None, :], (x.shape[0], self.n, x.shape[1]))


class TimeDistributed(Layer):
    """Keras' `TimeDistributed`: `layer` applied to every time step.

    Inputs `(B, T, ...)`: the wrapped layer sees each step's `(B, ...)` (all
    steps at once, as one batch of `B * T`) and the outputs are stacked back
    to `(B, T, ...)`. The weights are the wrapped layer's (`weights`,
    `get_weights`, `set_weights` are its own), shared by every step. The
    input's mask passes through unchanged; a mask with more axes than
    `(B, T)` (one per step and inner position) reaches the wrapped layer,
    step by step, as in Keras (a `(B, T)` mask does not: a step's mask of
    `(B,)` says nothing about what is inside the step).

    Args:
      layer: the rnn_jax layer to wrap (one output; not a merge).
      name: as for every layer.

    Call: `layer(inputs, mask=None, training=False, key=None)`; `training`
    and `key` go to the wrapped layer (one draw for all steps).
    """

    def __init__(self, layer: Layer, *, name: str | None = None):
        if not isinstance(layer, Layer) or isinstance(layer, Merge):
            raise ValueError(f"TimeDistributed wraps a single-input rnn_jax layer, got "
                             f"{type(layer).__name__}")
        if getattr(layer, "return_state", False):
            raise ValueError("TimeDistributed: the wrapped layer must return one array, "
                             f"{describe(layer)} has return_state=True")
        super().__init__(dtype=layer.dtype, rngs=None, name=name)
        self.layer = layer
        self.built = layer.built

    @property
    def weights(self):
        return self.layer.weights

    def weight_labels(self):
        return [f"layer.{n}" for n in self.layer.weight_labels()]

    def _step_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 3:
            raise ValueError(f"{describe(self)} expects inputs of shape (batch, time, ...) "
                             f"with at least 3 axes, got shape {input_shape}")
        return (input_shape[0], *input_shape[2:])

    def build(self, input_shape):
        self.layer.maybe_build(self._step_shape(input_shape))
        self.built = True

    def compute_output_shape(self, input_shape):
        inner = tuple(self.layer.compute_output_shape(self._step_shape(input_shape)))
        return (inner[0], input_shape[1], *inner[1:])

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        return {"layer": {"class_name": type(self.layer).__name__,
                          "config": self.layer.get_config()}}

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        x = jnp.asarray(inputs)  # the wrapped layer casts and checks them
        batch, steps = self._step_shape(x.shape)[0], x.shape[1]
        inner_mask = None
        if mask is not None:
            mask = jnp.asarray(mask)
            if mask.ndim < 2 or tuple(mask.shape[:2]) != (batch, steps):
                raise ValueError(f"{describe(self)}: mask must have shape (batch, time, ...) = "
                                 f"{(batch, steps)}, got {tuple(mask.shape)}")
            if mask.ndim > 2:
                inner_mask = mask.reshape(batch * steps, *mask.shape[2:])
        y = self.layer(x.reshape(batch * steps, *x.shape[2:]), mask=inner_mask,
                       training=training, key=key)
        if not self.built:  # the wrapped layer built itself on this first call
            self.built = self.layer.built
        return y.reshape(batch, steps, *y.shape[1:])


class Merge(Layer):
    """The base of the merge layers: `layer([a, b, ...])` merges a list of arrays.

    `compute_mask(inputs, mask)` takes the list of inputs and a list of their
    masks (None, or None for an unmasked input); for `Add` (Keras' `Merge`)
    the output is masked only if every input is, with the masks or-ed.
    """

    def __init__(self, *, dtype="float32", name: str | None = None):
        super().__init__(dtype=dtype, rngs=None, name=name)
        self.built = True

    def get_config(self):
        return {}

    def read_list(self, inputs) -> list[jax.Array]:
        """The inputs (a list or tuple of arrays, each with a batch axis) cast,
        refused unless they agree on the batch size."""
        if not isinstance(inputs, (list, tuple)) or not inputs:
            shape = getattr(inputs, "shape", None)
            raise ValueError(f"{describe(self)} merges a list of inputs (layer([a, b])), got "
                             + (f"one array of shape {tuple(shape)}" if shape is not None
                                else repr(type(inputs).__name__)))
        xs = [self.cast_inputs(x) for x in inputs]
        shapes = [tuple(x.shape) for x in xs]
        if any(x.ndim < 1 for x in xs) or len({s[0] for s in shapes}) > 1:
            raise ValueError(f"{describe(self)}: inputs must share the batch axis, got shapes "
                             f"{', '.join(map(str, shapes))}")
        return xs

    def _masks(self, inputs, mask):
        """`mask` as a list, one entry per input (None when there is none at all)."""
        if mask is None:
            return None
        if not isinstance(mask, (list, tuple)) or not isinstance(inputs, (list, tuple)):
            raise ValueError(f"{describe(self)}: inputs and mask must be lists, one mask (or "
                             "None) per input")
        if len(mask) != len(inputs):
            raise ValueError(f"{describe(self)}: {len(inputs)} inputs but {len(mask)} masks")
        return list(mask)

    def compute_mask(self, inputs, mask=None):
        masks = self._masks(inputs, mask)
        if masks is None or any(m is None for m in masks):
            return None
        out = jnp.asarray(masks[0], bool)
        for m in masks[1:]:
            out = out | jnp.asarray(m, bool)
        return out


class Concatenate(Merge):
    """Keras' `Concatenate`: joins a list of arrays along `axis`.

    Inputs of the same rank and the same sizes except on `axis` (default the
    features, `-1`). The output's mask (`compute_mask`) is Keras': each
    input's mask broadcast to the input's shape (all True for an unmasked
    input), concatenated along `axis`, then any-ed over the last axis. So
    joining features of a masked and an unmasked sequence unmasks every step,
    and joining along time (`axis=1`) joins the time masks.
    """

    def __init__(self, axis: int = -1, *, dtype="float32", name: str | None = None):
        super().__init__(dtype=dtype, name=name)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"Concatenate: axis must be an integer, got {axis!r}")
        self.axis = axis

    def get_config(self):
        return {"axis": self.axis}

    def _check_shapes(self, shapes):
        ranks = {len(s) for s in shapes}
        rank = len(shapes[0])
        ok = len(ranks) == 1 and -rank <= self.axis < rank
        if ok:
            axis = self.axis % rank
            rest = {tuple(d for i, d in enumerate(s) if i != axis) for s in shapes}
            ok = len(rest) == 1
        if not ok:
            raise ValueError(f"{describe(self)}: inputs must have the same rank and the same "
                             f"sizes except on axis {self.axis}, got shapes "
                             f"{', '.join(str(tuple(s)) for s in shapes)}")

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        out = list(shapes[0])
        sizes = [s[self.axis] for s in shapes]
        out[self.axis] = None if any(d is None for d in sizes) else sum(sizes)
        return tuple(out)

    def compute_mask(self, inputs, mask=None):
        masks = self._masks(inputs, mask)
        if masks is None or all(m is None for m in masks):
            return None
        full = []
        for x, m in zip(inputs, masks):
            shape = jnp.shape(x)
            if m is None:
                full.append(jnp.ones(shape, bool))
            else:
                m = jnp.asarray(m, bool)
                full.append(m[..., None] | jnp.zeros(shape, bool) if m.ndim < len(shape) else m)
        return jnp.any(jnp.concatenate(full, axis=self.axis), axis=-1)

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        xs = self.read_list(inputs)
        self._check_shapes([x.shape for x in xs])
        return jnp.concatenate(xs, axis=self.axis)


class Add(Merge):
    """Keras' `Add`: the elementwise sum of a list of arrays.

    Inputs of the same shape; as in Keras, sizes of 1 broadcast, and an input
    of lower rank gets axes of size 1 after the batch axis (`(B, D)` added to
    `(B, T, D)` is added at every step). Masks: see `Merge`.
    """

    def __init__(self, *, dtype="float32", name: str | None = None):
        super().__init__(dtype=dtype, name=name)

    def _aligned(self, shapes):
        """The shapes with Keras' axes inserted after the batch axis, and the
        broadcast output shape; ValueError if they do not broadcast."""
        rank = max(len(s) for s in shapes)
        aligned = [(s[0], *(1,) * (rank - len(s)), *s[1:]) for s in shapes]
        out = [aligned[0][0]]
        for i in range(1, rank):
            sizes = {s[i] for s in aligned} - {1}
            if len(sizes - {None}) > 1:
                raise ValueError(f"{describe(self)}: inputs must have the same shape (sizes of "
                                 f"1 broadcast), got shapes "
                                 f"{', '.join(str(tuple(s)) for s in shapes)}")
            out.append(None if None in sizes else (sizes.pop() if sizes else 1))
        return aligned, tuple(out)

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        batch = {s[0] for s in shapes} - {None}
        out = self._aligned(shapes)[1]
        return (batch.pop() if len(batch) == 1 else None, *out[1:])

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        xs = self.read_list(inputs)
        aligned, _ = self._aligned([tuple(x.shape) for x in xs])
        out = xs[0].reshape(aligned[0])
        for x, shape in zip(xs[1:], aligned[1:]):
            out = out + x.reshape(shape)
        return out


class _GlobalPooling1D(Layer):
    """`(B, T, D)` (`'channels_last'`) or `(B, D, T)` (`'channels_first'`) ->
    `(B, D)` (`(B, 1, D)` / `(B, D, 1)` with `keepdims`), pooled over time."""

    def __init__(self, data_format="channels_last", keepdims: bool = False, *,
                 dtype="float32", name: str | None = None):
        super().__init__(dtype=dtype, rngs=None, name=name)
        self.data_format = _data_format(type(self).__name__, data_format)
        self.keepdims = bool(keepdims)
        self.built = True

    @property
    def steps_axis(self) -> int:
        return 1 if self.data_format == "channels_last" else 2

    def get_config(self):
        return {"data_format": self.data_format, "keepdims": self.keepdims}

    def compute_output_shape(self, input_shape):
        b, a, c = tuple(input_shape)
        if self.data_format == "channels_last":
            return (b, 1, c) if self.keepdims else (b, c)
        return (b, a, 1) if self.keepdims else (b, a)

    def compute_mask(self, inputs, mask=None):
        return None

    def read(self, inputs):
        expected = ("(batch, steps, features)" if self.data_format == "channels_last"
                    else "(batch, features, steps)")
        return self.read_inputs(inputs, 3, expected)


class GlobalAveragePooling1D(_GlobalPooling1D):
    """Keras' `GlobalAveragePooling1D`: the mean over time steps.

    With a mask `(B, T)` it is the mean over the unmasked steps, as Keras
    computes it (sum of the kept steps / their count: a fully masked sample
    gives NaN, 0 / 0, in Keras too). The output carries no mask.

    Args:
      data_format: `'channels_last'` (inputs `(B, T, D)`, Keras' default) or
        `'channels_first'` (`(B, D, T)`).
      keepdims: keep the time axis, of size 1.
      dtype, name: as for every layer.
    """

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        x = self.read(inputs)
        axis = self.steps_axis
        if mask is None:
            return jnp.mean(x, axis=axis, keepdims=self.keepdims)
        mask = _check_mask(self, mask, (x.shape[0], x.shape[axis]), "(batch, steps)")
        mask = jnp.expand_dims(mask, 2 if axis == 1 else 1)
        total = jnp.sum(jnp.where(mask, x, jnp.zeros((), x.dtype)), axis=axis,
                        keepdims=self.keepdims)
        return total / jnp.sum(mask.astype(x.dtype), axis=axis, keepdims=self.keepdims)


class GlobalMaxPooling1D(_GlobalPooling1D):
    """Keras' `GlobalMaxPooling1D`: the maximum over time steps.

    Keras' layer does not support masking: a mask is ignored (masked steps
    count in the maximum) and dropped, and so it is here. Arguments as
    `GlobalAveragePooling1D`.
    """

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        x = self.read(inputs)
        return jnp.max(x, axis=self.steps_axis, keepdims=self.keepdims)
