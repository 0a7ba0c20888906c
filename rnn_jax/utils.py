"""Keras' `keras.utils` names: `to_categorical`, `pad_sequences` (also in
`keras.preprocessing.sequence`), `set_random_seed` and `clear_session`, so that a notebook's
`from keras.utils import to_categorical` becomes
`from rnn_jax.utils import to_categorical`."""

from rnn_jax.base import clear_session, set_random_seed
from rnn_jax.datasets.utils import pad_sequences, to_categorical

__all__ = ["clear_session", "pad_sequences", "set_random_seed", "to_categorical"]
