"""Datasets: the notebooks' toy digit tasks, Reuters newswires (`reuters`, as Keras'), and
helpers equal to Keras' utilities."""

from rnn_jax.datasets import digits, reuters
from rnn_jax.datasets.utils import pad_sequences, to_categorical

__all__ = ["digits", "pad_sequences", "reuters", "to_categorical"]
