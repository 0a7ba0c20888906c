"""Datasets: the notebooks' toy digit tasks, the generated tasks of RNN-dynamics studies
(`tasks`: flip-flop, integrator, adding problem, delayed recall, parity), Reuters newswires
(`reuters`, as Keras'), and helpers equal to Keras' utilities."""

from rnn_jax.datasets import digits, reuters, tasks
from rnn_jax.datasets.utils import pad_sequences, to_categorical

__all__ = ["digits", "pad_sequences", "reuters", "tasks", "to_categorical"]
