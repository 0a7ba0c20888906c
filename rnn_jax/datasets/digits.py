"""The notebooks' toy tasks on sequences of random digits 0-9.

- `sum_of_digits`: `y = x_0 + x_1 + ... + x_{T-1}` (notebook 000, T = 3).
- `contains_digit`: `y = 1` if the digit (4) occurs in the sequence, else 0
  (notebook 002).

Digits are drawn as the notebooks draw them, `randint(0, 10, (N, T))`, from
`numpy.random.RandomState(seed)`, so a seed gives the same data everywhere.
"""

from __future__ import annotations

import numpy as np

from rnn_jax.datasets.utils import to_categorical

ENCODINGS = ("ids", "scalar", "onehot")


def random_digits(num_samples: int, seq_len: int = 3, seed: int = 0) -> np.ndarray:
    """Digit ids `(N, T)` int32, uniform in 0..9."""
    if num_samples < 1 or seq_len < 1:
        raise ValueError(f"num_samples and seq_len must be >= 1, got {num_samples}, {seq_len}")
    return np.random.RandomState(seed).randint(0, 10, size=(num_samples, seq_len)).astype(np.int32)


def encode(ids_NxT: np.ndarray, encoding: str) -> np.ndarray:
    """`ids` `(N, T)` as the model input: `'ids'` `(N, T)` int32 (for an
    `Embedding`), `'scalar'` `(N, T, 1)` float32, `'onehot'` `(N, T, 10)` float32."""
    if encoding == "ids":
        return ids_NxT
    if encoding == "scalar":
        return ids_NxT[..., None].astype(np.float32)
    if encoding == "onehot":
        return to_categorical(ids_NxT, 10)
    raise ValueError(f"unknown encoding {encoding!r}; known: {', '.join(ENCODINGS)}")


def sum_of_digits(num_samples: int = 10000, seq_len: int = 3, seed: int = 0,
                  encoding: str = "scalar"):
    """`(x, y (N, 1) float32, ids (N, T))`: the sum of the digits of each sequence."""
    ids = random_digits(num_samples, seq_len, seed)
    return encode(ids, encoding), ids.sum(axis=1, keepdims=True).astype(np.float32), ids


def contains_digit(num_samples: int = 10000, seq_len: int = 3, digit: int = 4, seed: int = 0,
                   encoding: str = "ids"):
    """`(x, y (N, 1) float32, ids (N, T))`: 1 where `digit` occurs in the sequence."""
    ids = random_digits(num_samples, seq_len, seed)
    return encode(ids, encoding), np.any(ids == digit, axis=1, keepdims=True).astype(np.float32), ids
