"""Keras' `keras.layers` names, so that `from keras.layers import SimpleRNN, Dense`
(or `tensorflow.keras.layers`) becomes `from rnn_jax.layers import SimpleRNN,
Dense`: the recurrent layers and cells, the layers around them, and `Input`
for the functional API (`rnn_jax.models.Model`)."""

from rnn_jax.cells import GRUCell, LSTMCell, SimpleRNNCell, StackedRNNCells
from rnn_jax.core import (Activation, Add, Concatenate, Dense, Dropout, Embedding, Flatten,
                          GlobalAveragePooling1D, GlobalMaxPooling1D, Masking, RepeatVector,
                          TimeDistributed)
from rnn_jax.functional import Input, InputLayer
from rnn_jax.recurrent import GRU, LSTM, RNN, Bidirectional, SimpleRNN

__all__ = [
    "Activation", "Add", "Bidirectional", "Concatenate", "Dense", "Dropout", "Embedding",
    "Flatten", "GRU", "GRUCell", "GlobalAveragePooling1D", "GlobalMaxPooling1D", "Input",
    "InputLayer", "LSTM", "LSTMCell", "Masking", "RNN", "RepeatVector", "SimpleRNN",
    "SimpleRNNCell", "StackedRNNCells", "TimeDistributed",
]


def get(name: str):
    """A layer class by Keras name; ValueError listing the supported ones."""
    if name not in __all__:
        raise ValueError(f"rnn_jax.layers has no {name!r}; supported: {', '.join(__all__)}")
    return globals()[name]


def __getattr__(name):
    # `from rnn_jax.layers import Conv1D` fails with the list of what there is.
    raise AttributeError(f"rnn_jax.layers has no {name!r} (Keras has it; rnn_jax supports: "
                         f"{', '.join(__all__)})")
