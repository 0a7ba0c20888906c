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


class UnsupportedLayerError(ImportError):
    """A Keras layer name that `rnn_jax.layers` does not have."""


def __getattr__(name):
    # `from rnn_jax.layers import Conv1D` fails with the list of what there is. A
    # layer-like name raises an ImportError (an AttributeError would be turned
    # into Python's bare "cannot import name" by the import statement); other
    # names (dunders, probes by tools) the usual AttributeError.
    if name[:1].isupper():
        raise UnsupportedLayerError(f"rnn_jax.layers has no {name!r}; supported: "
                                    f"{', '.join(__all__)}")
    raise AttributeError(f"module 'rnn_jax.layers' has no attribute {name!r}")
