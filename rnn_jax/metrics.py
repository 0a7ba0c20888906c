"""Keras' accuracy metrics, per sample.

Each metric maps `(y_true, y_pred)` to one value per sample, shape `(B,)`;
the training engine sums them and divides by the number of samples, as
Keras' `MeanMetricWrapper` does.

`'accuracy'` (or `'acc'`) resolves like Keras' `compile`: binary accuracy
when the model has one output unit, sparse categorical accuracy when the
labels are class ids, categorical accuracy otherwise.
"""

from __future__ import annotations

import jax.numpy as jnp

from rnn_jax.losses import same_rank


def binary_accuracy(y_true, y_pred, threshold: float = 0.5):
    """`mean(y_true == (y_pred > threshold), axis=-1)`, `(B,)`."""
    y_true, y_pred = same_rank(y_true, y_pred)
    return jnp.mean((y_true == (y_pred > threshold).astype(y_pred.dtype)).astype(y_pred.dtype),
                    axis=-1)


def categorical_accuracy(y_true, y_pred):
    """`argmax(y_true) == argmax(y_pred)`, `(B,)`."""
    y_true, y_pred = same_rank(y_true, y_pred)
    return (jnp.argmax(y_true, -1) == jnp.argmax(y_pred, -1)).astype(y_pred.dtype)


def sparse_categorical_accuracy(y_true, y_pred):
    """`y_true == argmax(y_pred)` for class ids `(B,)` or `(B, 1)`, `(B,)`."""
    y_pred = jnp.asarray(y_pred)
    ids = jnp.asarray(y_true)
    if ids.ndim == y_pred.ndim and ids.shape[-1] == 1:
        ids = ids[..., 0]
    return (ids.astype(jnp.int32) == jnp.argmax(y_pred, -1)).astype(y_pred.dtype)


_METRICS = {
    "binary_accuracy": binary_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
}
NAMES = ("accuracy", *_METRICS)


def resolve_accuracy(y_true_shape, y_pred_shape):
    """The accuracy Keras' `compile(metrics=['accuracy'])` picks for these shapes."""
    if y_pred_shape[-1] == 1:
        return binary_accuracy
    if len(y_true_shape) < len(y_pred_shape) or (y_true_shape[-1] == 1 and y_pred_shape[-1] > 1):
        return sparse_categorical_accuracy
    return categorical_accuracy


def get(identifier, y_true_shape=None, y_pred_shape=None):
    """A metric by Keras name; `'accuracy'`/`'acc'` needs the label and output shapes."""
    if callable(identifier):
        return identifier
    if identifier in ("accuracy", "acc"):
        if y_true_shape is None or y_pred_shape is None:
            raise ValueError("'accuracy' needs the label and prediction shapes to resolve")
        return resolve_accuracy(tuple(y_true_shape), tuple(y_pred_shape))
    if identifier not in _METRICS:
        raise ValueError(f"unknown metric {identifier!r}; known: {', '.join(NAMES)}")
    return _METRICS[identifier]
