"""Keras' loss functions, per sample, as `jax.numpy` functions.

Each loss maps `(y_true, y_pred)` to one value per sample, shape `(B,)`, by
Keras' formulas; the training engine averages them over a batch (Keras'
default reduction, `sum_over_batch_size`). `same_rank` first brings labels
and predictions to one shape (labels `(B,)` against predictions `(B, 1)`),
here and in `rnn_jax.metrics`.

- `mean_squared_error`: `mean((y_true - y_pred)**2, axis=-1)`.
- `binary_crossentropy`: on probabilities, `p` clipped to `[eps, 1 - eps]`
  (`eps = 1e-7`, Keras' `backend.epsilon()`), then
  `-mean(y log p + (1 - y) log(1 - p), axis=-1)`; with `from_logits=True`
  the stable `-mean(y log sigmoid(z) + (1 - y) log sigmoid(-z))`.
- `categorical_crossentropy`: on probabilities, `p` renormalised to sum to 1,
  clipped to `[eps, 1 - eps]`, then `-sum(y log p, axis=-1)`; with
  `from_logits=True`, `-sum(y log_softmax(z), axis=-1)`.
- `sparse_categorical_crossentropy`: the same with integer class ids (as
  Keras' JAX backend has it; its TF backend clips before normalising, which
  differs by more than ~1e-7 only for probability rows that do not sum to 1).

Note: Keras' TensorFlow backend, when `y_pred` is the output of a Keras
sigmoid/softmax op, silently takes the logits behind it instead of the
probabilities; its JAX backend does not. These functions compute what the
argument says (`from_logits`), like the JAX backend.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

EPSILON = 1e-7  # keras.backend.epsilon()

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def same_rank(y_true, y_pred):
    """`(y_true, y_pred)` brought to one shape, `y_true` cast to `y_pred`'s dtype.

    A trailing size-1 axis is added to whichever has one axis fewer (Keras'
    `squeeze_or_expand_to_same_rank`, so labels `(B,)` meet predictions
    `(B, 1)`); any other shape mismatch raises ValueError. Every loss here and
    every metric in `rnn_jax.metrics` starts with it.
    """
    y_true = jnp.asarray(y_true)
    y_pred = jnp.asarray(y_pred)
    if y_true.ndim == y_pred.ndim - 1 and y_pred.shape[-1] == 1:
        y_true = y_true[..., None]
    elif y_pred.ndim == y_true.ndim - 1 and y_true.shape[-1] == 1:
        y_pred = y_pred[..., None]
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must have the same "
                         "shape")
    return y_true.astype(y_pred.dtype), y_pred


def mean_squared_error(y_true, y_pred):
    """`(B, K), (B, K) -> (B,)`: `mean((y_true - y_pred)^2, axis=-1)`."""
    y_true, y_pred = same_rank(y_true, y_pred)
    return jnp.mean(jnp.square(y_true - y_pred), axis=-1)


def binary_crossentropy(y_true, y_pred, from_logits: bool = False):
    """`(B, K), (B, K) -> (B,)`: Keras' binary cross-entropy, mean over `K`."""
    y_true, y_pred = same_rank(y_true, y_pred)
    if from_logits:
        bce = -(y_true * jax.nn.log_sigmoid(y_pred) + (1 - y_true) * jax.nn.log_sigmoid(-y_pred))
    else:
        p = jnp.clip(y_pred, EPSILON, 1.0 - EPSILON)
        bce = -(y_true * jnp.log(p) + (1 - y_true) * jnp.log(1 - p))
    return jnp.mean(bce, axis=-1)


def categorical_crossentropy(y_true, y_pred, from_logits: bool = False):
    """`(B, K) one-hot, (B, K) -> (B,)`: Keras' categorical cross-entropy."""
    y_true, y_pred = same_rank(y_true, y_pred)
    if from_logits:
        log_p = jax.nn.log_softmax(y_pred, axis=-1)
    else:
        p = y_pred / jnp.sum(y_pred, axis=-1, keepdims=True)
        log_p = jnp.log(jnp.clip(p, EPSILON, 1.0 - EPSILON))
    return -jnp.sum(y_true * log_p, axis=-1)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits: bool = False):
    """`(B,) or (B, 1) class ids, (B, K) -> (B,)`: cross-entropy with integer labels."""
    y_pred = jnp.asarray(y_pred)
    ids = jnp.asarray(y_true)
    if ids.ndim == y_pred.ndim and ids.shape[-1] == 1:
        ids = ids[..., 0]
    if ids.shape != y_pred.shape[:-1]:
        raise ValueError(f"sparse labels {jnp.shape(y_true)} do not match predictions "
                         f"{y_pred.shape}")
    one_hot = jax.nn.one_hot(ids.astype(jnp.int32), y_pred.shape[-1], dtype=y_pred.dtype)
    return categorical_crossentropy(one_hot, y_pred, from_logits=from_logits)


_LOSSES = {
    "mean_squared_error": mean_squared_error,
    "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
}
_ALIASES = {"mse": "mean_squared_error"}
NAMES = tuple(_LOSSES)


def get(identifier, from_logits: bool = False) -> LossFn:
    """A loss by Keras name (`'mse'` too), or a callable `(y_true, y_pred) -> (B,)` as is."""
    if callable(identifier):
        return identifier
    name = _ALIASES.get(identifier, identifier)
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {identifier!r}; known: {', '.join(NAMES)}")
    fn = _LOSSES[name]
    if from_logits:
        if name == "mean_squared_error":
            raise ValueError("from_logits applies to the cross-entropy losses, not "
                             "mean_squared_error")

        def with_logits(y_true, y_pred):
            return fn(y_true, y_pred, from_logits=True)

        with_logits.__name__ = name
        return with_logits
    return fn
