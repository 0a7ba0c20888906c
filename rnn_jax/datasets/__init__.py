"""Datasets: the notebooks' toy digit tasks, and helpers equal to Keras' utilities."""

from rnn_jax.datasets import digits
from rnn_jax.datasets.utils import to_categorical

__all__ = ["digits", "to_categorical"]
