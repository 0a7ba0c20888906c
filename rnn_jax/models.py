"""`Sequential`: a chain of layers that hands masks along as Keras does."""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from flax import nnx

from rnn_jax.base import Layer, describe
from rnn_jax.core import Merge
from rnn_jax.recurrent import RNN, Bidirectional


def apply_layer(layer, x, mask=None, training: bool = False, key=None):
    """One layer of a chain with Keras' mask passing: `(outputs, mask for the next layer)`.

    The layer's own `compute_mask(inputs, mask)` says what its output carries
    (`Embedding(mask_zero=True)` and `Masking` make a `(B, T)` mask; `Flatten`,
    `RepeatVector` and the poolings drop it); a recurrent layer consumes it and
    passes it on only when it returns sequences; a layer without
    `compute_mask` passes it through unchanged.
    """
    y = layer(x, mask=mask, training=training, key=key)
    if isinstance(layer, (RNN, Bidirectional)):
        return y, (mask if layer.return_sequences else None)
    compute_mask = getattr(layer, "compute_mask", None)
    return y, (mask if compute_mask is None else compute_mask(x, mask))


class Sequential(Layer):
    """Keras' `Sequential`: `y = layer_n(... layer_1(x))`.

    Masks follow Keras: `Embedding(mask_zero=True)` and `Masking` make a
    `(B, T)` mask; recurrent layers consume it and pass it on only when they
    return sequences; `Dense` and `Activation` pass it through unchanged.

    Args:
      layers: the layers, first to last.
      input_shape: optional input shape without the batch axis (`(T,)` for
        ids into an `Embedding`, `(T, D)` for features) to build every layer
        now, as `keras.Input(shape=...)` does.

    Call: `model(x, mask=None, training=False, key=None)`; `key` is split
    among the layers that use dropout when `training=True`.
    """

    def __init__(self, layers: Sequence[Layer] = (), *, input_shape=None, name: str | None = None):
        layers = list(layers)
        for layer in layers:
            if not isinstance(layer, Layer) or isinstance(layer, Sequential):
                raise ValueError(
                    f"Sequential: unsupported layer {type(layer).__name__}; supported: "
                    "Embedding, Masking, SimpleRNN, GRU, LSTM, RNN, Bidirectional, Dense, "
                    "Activation, Dropout, Flatten, RepeatVector, TimeDistributed, "
                    "GlobalAveragePooling1D, GlobalMaxPooling1D"
                )
            if isinstance(layer, Merge):
                raise ValueError(
                    f"Sequential: {describe(layer)} merges a list of inputs and cannot be "
                    "chained; build a functional model instead"
                )
            if isinstance(layer, (RNN, Bidirectional)) and layer.return_state:
                raise ValueError(
                    "Sequential: a recurrent layer with return_state=True has several "
                    "outputs and cannot be chained"
                )
        super().__init__(dtype=layers[0].dtype if layers else "float32", rngs=None, name=name)
        self.layers = nnx.List(layers)
        self.built = all(layer.built for layer in layers)
        if input_shape is not None:
            self.build((None, *input_shape))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.layers:
            layer.maybe_build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.compute_output_shape(shape)
        return shape

    @property
    def weights(self):
        return [w for layer in self.layers for w in layer.weights]

    def weight_labels(self):
        return [f"layers[{i}] ({describe(layer)}).{n}" for i, layer in enumerate(self.layers)
                for n in layer.weight_labels()]

    def reset_state(self):
        for layer in self.layers:
            if hasattr(layer, "reset_state"):
                layer.reset_state()

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        x = inputs
        for i, layer in enumerate(self.layers):
            k = None if key is None else jax.random.fold_in(key, i)
            x, mask = apply_layer(layer, x, mask, training=training, key=k)
        if not self.built:  # the layers built themselves on this first call
            self.built = all(layer.built for layer in self.layers)
        return x

    def get_weights(self):
        return [np.asarray(w[...]) for w in self.weights]
