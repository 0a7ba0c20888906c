"""Helpers equal to `keras.utils`' (same arguments, same results)."""

from __future__ import annotations

import numpy as np


def to_categorical(x, num_classes: int | None = None) -> np.ndarray:
    """Keras' `to_categorical`: class ids `(...)` -> one-hot `(..., num_classes)` float32.

    A trailing axis of size 1 is dropped first, as Keras does. `num_classes`
    defaults to `max(x) + 1`; ids outside `[0, num_classes)` are an error.
    """
    ids = np.asarray(x)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        if not np.all(np.equal(np.mod(ids, 1), 0)):
            raise ValueError("to_categorical needs integer class ids")
    ids = ids.astype(np.int64)
    if ids.ndim > 1 and ids.shape[-1] == 1:
        ids = ids.reshape(ids.shape[:-1])
    if num_classes is None:
        num_classes = int(ids.max()) + 1 if ids.size else 0
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(f"class ids must be in [0, {num_classes}), got min {ids.min()} and "
                         f"max {ids.max()}")
    out = np.zeros(ids.shape + (num_classes,), np.float32)
    np.put_along_axis(out, ids[..., None], 1.0, axis=-1)
    return out
