"""Keras' models: `Sequential`, a chain of layers, and `Model`, a functional
model over any graph of layer calls (`rnn_jax.functional`). Both hand masks
along as Keras does and have Keras' model methods (`compile`, `fit`,
`evaluate`, `predict`, `summary`, `get_layer`, ...: `rnn_jax.trainer`)."""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from flax import nnx

from rnn_jax import functional
from rnn_jax.base import Layer, describe, unique_name
from rnn_jax.core import Activation, Dense, Dropout, Embedding, Masking, Merge
from rnn_jax.functional import Input, InputLayer, KerasTensor
from rnn_jax.recurrent import RNN, Bidirectional
from rnn_jax.trainer import Trainer

__all__ = ["Input", "InputLayer", "Model", "Sequential", "apply_layer", "inferred_input_shape"]


def apply_layer(layer, x, mask=None, training: bool = False, key=None):
    """One layer of a chain with Keras' mask passing: `(outputs, mask for the next layer)`.

    The layer's own `compute_mask(inputs, mask)` says what its output carries
    (`Embedding(mask_zero=True)` and `Masking` make a `(B, T)` mask; `Flatten`,
    `RepeatVector` and the poolings drop it); a recurrent layer consumes it and
    passes it on only when it returns sequences; a layer without
    `compute_mask` passes it through unchanged.
    """
    y = layer(x, mask=mask, training=training, key=key)
    return y, layer.compute_mask(x, mask)


def inferred_input_shape(layers):
    """The input shape `(None, ...)` that built layers were built for, the time
    axis unknown (None): read off the first layer that says (an `Embedding`
    takes ids `(None, None)`; shape-keeping layers before it are skipped)."""
    for layer in layers:
        if isinstance(layer, (Masking, Activation, Dropout)):
            continue  # shape-preserving: the next layer tells the feature size
        if isinstance(layer, Embedding):
            return (None, None)
        if isinstance(layer, (RNN, Bidirectional)) and layer.built:
            return (None, None, layer.input_dim)
        if isinstance(layer, Dense) and layer.built:
            return (None, layer.input_dim)
        break
    raise ValueError("cannot tell the model's input shape; pass input_shape=... (without the "
                     "batch axis), or call the model once")


class Sequential(Trainer, Layer):
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
        if layers and isinstance(layers[0], KerasTensor):  # Sequential([Input(shape), ...])
            if input_shape is not None:
                raise ValueError("Sequential: give an Input first or input_shape, not both")
            input_shape, layers = layers[0].shape[1:], layers[1:]
        for layer in layers:
            self._check_layer(layer)
        super().__init__(dtype=layers[0].dtype if layers else "float32", rngs=None, name=name)
        self.layers = nnx.List(layers)
        self.built = bool(layers) and all(layer.built for layer in layers)
        self.input_shape_given = None if input_shape is None else tuple(input_shape)
        if input_shape is not None and layers:
            self.build((None, *input_shape))

    @staticmethod
    def _check_layer(layer):
        """Refuses what cannot be a link of a chain, naming it."""
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

    def add(self, layer) -> None:
        """Appends a layer (Keras' `Sequential.add`); an `Input` first sets the
        input shape."""
        if isinstance(layer, KerasTensor):
            if len(self.layers):
                raise ValueError("Sequential.add: an Input can only come first")
            self.input_shape_given = layer.shape[1:]
            return
        self._check_layer(layer)
        if not len(self.layers):
            self.dtype = layer.dtype
        self.layers.append(layer)
        self.built = all(x.built for x in self.layers)
        if not self.built:  # as Keras: built as soon as the input shape is known
            if self.input_shape_given is not None:
                self.build((None, *self.input_shape_given))
            else:
                try:
                    shape = inferred_input_shape(self.layers)
                except ValueError:
                    return  # built on the first call
                self.build(shape)

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


class Model(Trainer, Layer):
    """Keras' functional `Model(inputs, outputs, name=None)`: the layer calls
    recorded between symbolic `inputs` (from `Input`) and `outputs`, any
    directed acyclic graph of them (several inputs and outputs, layers
    returning states, states fed as another layer's `initial_state`, merges,
    a layer called several times sharing its weights).

        x = Input(shape=(3, 1))
        model = Model(x, SimpleRNN(1, activation="linear")(x))
        model(np.ones((2, 3, 1)))          # (2, 1)

    A `Model` is an NNX module like `Sequential` (`nnx.split` / `merge`,
    `jit`, `vmap`), and has Keras' model methods (`rnn_jax.trainer`).

    Args:
      inputs: a KerasTensor from `Input`, or a list (or a dict name -> tensor)
        of them.
      outputs: a KerasTensor computed from them, or a list of them.
      name: default `functional`, `functional_1`, ...

    Call: `model(inputs, mask=None, training=False, key=None)`: `inputs` an
    array, a list of arrays in the order of `inputs`, or a dict by input
    name; returns an array, or a list when `outputs` was a list. `key` is
    folded in per layer call for the layers that use dropout.
    """

    def __init__(self, inputs=None, outputs=None, name: str | None = None, **kwargs):
        if kwargs:
            raise ValueError(f"Model: unsupported argument(s) {', '.join(sorted(kwargs))}")
        if inputs is None or outputs is None:
            raise ValueError("Model needs inputs and outputs: Model(inputs=x, outputs=y), "
                             "from x = Input(shape) and y = layers called on x")
        layers, graph = functional.record_graph(inputs, outputs)
        super().__init__(dtype="float32", rngs=None,
                         name=name if name is not None else unique_name("functional"))
        self.layers = nnx.List(layers)
        self.graph = graph
        self.symbolic = (tuple(inputs.values()) if isinstance(inputs, dict) else
                         tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,),
                         tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,))
        self.built = True

    @property
    def inputs(self) -> list:
        """The model's symbolic inputs (Keras' `model.inputs`)."""
        return list(self.symbolic[0])

    @property
    def outputs(self) -> list:
        """The model's symbolic outputs (Keras' `model.outputs`)."""
        return list(self.symbolic[1])

    @property
    def weights(self):
        return [w for layer in self.layers for w in layer.weights]

    def weight_labels(self):
        return [f"{layer.name}.{n}" for layer in self.layers for n in layer.weight_labels()]

    def get_weights(self):
        return [np.asarray(w[...]) for w in self.weights]

    def build(self, input_shape):
        self.built = True

    def compute_output_shape(self, input_shape=None):
        shapes = [t.shape for t in self.symbolic[1]]
        return shapes if self.graph.outputs_list else shapes[0]

    def compute_mask(self, inputs, mask=None):
        return None

    def reset_state(self):
        for layer in self.layers:
            if hasattr(layer, "reset_state"):
                layer.reset_state()

    def summary_rows(self) -> list[dict]:
        """One dict per layer (`name`, `type`, `output_shape`, `params`,
        `connected_to`), in the order of `layers`, as Keras' summary lists them."""
        shapes, sources = {}, {}
        number_to_layer = {i: self.layers[i].name for i in self.graph.inputs}
        for node in self.graph.nodes:
            name = self.layers[node.layer].name
            out = node.output_shapes
            shapes.setdefault(node.layer, out[0] if len(out) == 1 else list(out))
            refs = [r for r in jax.tree.leaves((node.args, node.kwargs),
                                               is_leaf=lambda a: isinstance(a, functional.Ref))
                    if isinstance(r, functional.Ref)]
            sources.setdefault(node.layer, [number_to_layer[r.i] for r in refs])
            for ref in node.outputs:
                number_to_layer[ref] = name
        rows = []
        for i, layer in enumerate(self.layers):
            is_input = isinstance(layer, InputLayer)
            rows.append({"name": layer.name, "type": type(layer).__name__,
                         "output_shape": layer.batch_shape if is_input else shapes[i],
                         "params": int(layer.count_params()),
                         "connected_to": [] if is_input else sources[i]})
        return rows

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        return functional.run_graph(self.layers, self.graph, inputs, mask=mask,
                                    training=training, key=key)
