"""Moving trained weights between Keras 3 and `rnn_jax`, both ways.

`from_keras(obj)` takes a built Keras layer, cell, `Sequential` or
functional `Model` (any graph of supported layers: several inputs and
outputs, layers returning states, merges, shared layers) and returns the
`rnn_jax` module with the same configuration and weights; `to_keras(module)`
does the inverse. A functional model is converted by replaying its layer
calls, tensor by tensor, on the other side's `Input`s. Weight arrays are copied as they are: both sides use
Keras' layout (`kernel`, `recurrent_kernel`, `bias`; LSTM gates `i, f, c, o`,
GRU `z, r, h`). Keras is imported only when these functions are called.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

from rnn_jax import activations
from rnn_jax.base import Layer, describe
from rnn_jax.cells import GRUCell, LSTMCell, RNNCellBase, SimpleRNNCell, StackedRNNCells
from rnn_jax.core import (Activation, Add, Concatenate, Dense, Dropout, Embedding, Flatten,
                          GlobalAveragePooling1D, GlobalMaxPooling1D, Masking, RepeatVector,
                          TimeDistributed)
from rnn_jax import functional
from rnn_jax.models import Model, Sequential
from rnn_jax.recurrent import GRU, LSTM, RNN, Bidirectional, RNNState, SimpleRNN

SUPPORTED = (
    "SimpleRNN, GRU, LSTM, RNN (with SimpleRNNCell, GRUCell, LSTMCell, StackedRNNCells or a "
    "list of cells), Bidirectional, Embedding, Dense, Activation, Masking, Dropout, Flatten, "
    "RepeatVector, TimeDistributed, Concatenate, Add, GlobalAveragePooling1D, "
    "GlobalMaxPooling1D, InputLayer, and Sequential or functional models made of these"
)


# Layers without weights, by class name (the same in Keras): the rnn_jax class and
# its constructor arguments, which Keras' `get_config` holds under the same names.
WEIGHTLESS = {
    "Dropout": (Dropout, ("rate", "noise_shape", "seed")),
    "Flatten": (Flatten, ("data_format",)),
    "RepeatVector": (RepeatVector, ("n",)),
    "Concatenate": (Concatenate, ("axis",)),
    "Add": (Add, ()),
    "GlobalAveragePooling1D": (GlobalAveragePooling1D, ("data_format", "keepdims")),
    "GlobalMaxPooling1D": (GlobalMaxPooling1D, ("data_format", "keepdims")),
}


class UnsupportedKerasObject(ValueError):
    """A Keras layer, cell or topology that `from_keras` cannot convert."""


def _keras():
    try:
        import keras
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Keras interop needs Keras 3: pip install 'rnn_jax[test]' (or keras and tensorflow)"
        ) from e
    return keras


def _unsupported(obj, why=""):
    return UnsupportedKerasObject(
        f"cannot convert Keras {type(obj).__name__}{' (' + why + ')' if why else ''}; "
        f"supported: {SUPPORTED}"
    )


def _act_name(fn, owner) -> str:
    keras = _keras()
    name = keras.activations.serialize(fn)
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    if not isinstance(name, str) or name not in activations.NAMES:
        raise _unsupported(owner, f"activation {name!r}")
    return name


def _dtype(layer) -> str:
    return str(np.dtype(layer.dtype)) if layer.dtype else "float32"


# -- Keras -> rnn_jax ------------------------------------------------------------


def _weights_from_keras(layer, kl, weights) -> None:
    """`layer.set_weights(weights)` with Keras `kl`'s weights; a weight of the wrong
    shape raises ValueError naming the Keras layer, the weight and both shapes."""
    try:
        layer.set_weights(weights)
    except ValueError as err:
        raise ValueError(f"from_keras: Keras {type(kl).__name__} {kl.name!r}: {err}") from None


def _cell_kwargs(kc) -> dict[str, Any]:
    """Constructor arguments of the `rnn_jax` cell matching Keras cell `kc`."""
    keras = _keras()
    kw: dict[str, Any] = dict(
        units=kc.units, use_bias=kc.use_bias, dropout=kc.dropout,
        recurrent_dropout=kc.recurrent_dropout, activation=_act_name(kc.activation, kc),
        dtype=_dtype(kc), rngs=nnx.Rngs(0))
    if type(kc) in (keras.layers.GRUCell, keras.layers.LSTMCell):
        kw["recurrent_activation"] = _act_name(kc.recurrent_activation, kc)
    if type(kc) is keras.layers.GRUCell:
        kw["reset_after"] = kc.reset_after
    if type(kc) is keras.layers.LSTMCell:
        kw["unit_forget_bias"] = kc.unit_forget_bias
    return kw


def _cell_from_keras(kc):
    keras = _keras()
    kind = type(kc)
    if kind is keras.layers.StackedRNNCells:
        return StackedRNNCells([_cell_from_keras(c) for c in kc.cells])
    classes = {keras.layers.SimpleRNNCell: SimpleRNNCell, keras.layers.GRUCell: GRUCell,
               keras.layers.LSTMCell: LSTMCell}
    if kind not in classes:
        raise _unsupported(kc, "cell type")
    if not kc.built:
        raise _unsupported(kc, "not built: call it once so it has weights")
    cell = classes[kind](**_cell_kwargs(kc))
    weights = kc.get_weights()
    cell.build((None, weights[0].shape[0]))
    _weights_from_keras(cell, kc, weights)
    return cell


def _rnn_from_keras(kl):
    keras = _keras()
    flags = dict(return_sequences=kl.return_sequences, return_state=kl.return_state,
                 go_backwards=kl.go_backwards, stateful=kl.stateful, unroll=kl.unroll,
                 zero_output_for_mask=kl.zero_output_for_mask, name=kl.name)
    kind = type(kl)
    wrappers = {keras.layers.SimpleRNN: SimpleRNN, keras.layers.GRU: GRU,
                keras.layers.LSTM: LSTM}
    if not kl.built:
        raise _unsupported(kl, "not built: call it once so it has weights")
    if kind in wrappers:
        layer = wrappers[kind](**_cell_kwargs(kl.cell), **flags)
        weights = kl.get_weights()
        layer.build((None, None, weights[0].shape[0]))
        _weights_from_keras(layer, kl, weights)
    elif kind is keras.layers.RNN:
        layer = RNN(_cell_from_keras(kl.cell), **flags)
    else:
        raise _unsupported(kl)
    cell = layer.cell
    if kl.stateful and kl.states is not None:
        values = [np.asarray(v.numpy() if hasattr(v, "numpy") else v)
                  for v in keras.tree.flatten(kl.states)]  # Keras' ListWrapper is no JAX pytree
        batch = values[0].shape[0]
        template = cell.get_initial_state(batch)
        leaves, treedef = jax.tree.flatten(template)
        layer.states = RNNState(jax.tree.unflatten(
            treedef, [np.asarray(v, cell.dtype) for v in values[:len(leaves)]]))
    return layer


def _layer_from_keras(kl):
    keras = _keras()
    kind = type(kl)
    L = keras.layers
    if kind in (L.SimpleRNN, L.GRU, L.LSTM, L.RNN):
        return _rnn_from_keras(kl)
    if kind is L.Bidirectional:
        return Bidirectional(_rnn_from_keras(kl.forward_layer), merge_mode=kl.merge_mode,
                             backward_layer=_rnn_from_keras(kl.backward_layer), name=kl.name)
    if kind is L.Embedding:
        layer = Embedding(kl.input_dim, kl.output_dim, mask_zero=kl.mask_zero,
                          dtype=_dtype(kl), rngs=nnx.Rngs(0), name=kl.name)
        _weights_from_keras(layer, kl, kl.get_weights())
        return layer
    if kind is L.Dense:
        w = kl.get_weights()
        layer = Dense(kl.units, activation=_act_name(kl.activation, kl), use_bias=kl.use_bias,
                      input_shape=(w[0].shape[0],), dtype=_dtype(kl), rngs=nnx.Rngs(0),
                      name=kl.name)
        _weights_from_keras(layer, kl, w)
        return layer
    if kind is L.Activation:
        return Activation(_act_name(kl.activation, kl), dtype=_dtype(kl), name=kl.name)
    if kind is L.Masking:
        return Masking(kl.mask_value, dtype=_dtype(kl), name=kl.name)
    if kind is L.TimeDistributed:
        return TimeDistributed(_layer_from_keras(kl.layer), name=kl.name)
    if kind.__name__ in WEIGHTLESS and kind is getattr(L, kind.__name__):
        cls, keys = WEIGHTLESS[kind.__name__]
        config = kl.get_config()
        return cls(**{k: config[k] for k in keys}, dtype=_dtype(kl), name=kl.name)
    if kind in (L.SimpleRNNCell, L.GRUCell, L.LSTMCell, L.StackedRNNCells):
        return _cell_from_keras(kl)
    raise _unsupported(kl)


def _graph_from_keras(model):
    """A functional Keras model as an rnn_jax `Model`: its layers converted once
    each (a shared layer stays shared), their calls replayed on rnn_jax
    `Input`s in the order Keras made them."""
    keras = _keras()
    ours: dict[int, Any] = {}  # id(Keras tensor) -> rnn_jax KerasTensor
    converted: dict[int, Any] = {}  # id(Keras layer) -> rnn_jax layer
    inputs = []
    for kt in model.inputs:
        t = functional.Input(batch_shape=tuple(kt.shape), dtype=str(kt.dtype),
                             name=kt._keras_history[0].name)
        ours[id(kt)] = t
        inputs.append(t)
    done: set[int] = set()

    def tensor(kt):
        if id(kt) not in ours:
            make(kt._keras_history[0]._inbound_nodes[kt._keras_history[1]])
        return ours[id(kt)]

    def make(node):
        if id(node) in done:
            return
        layer = node.operation
        if not isinstance(layer, keras.layers.Layer):
            raise UnsupportedKerasObject(
                f"cannot convert the operation {layer.name!r} ({type(layer).__name__}, e.g. `+` "
                f"on tensors) of Keras {type(model).__name__} {model.name!r}: write it as a layer "
                "(keras.layers.Add, Concatenate, ...)")
        if isinstance(layer, keras.layers.InputLayer):
            raise _unsupported(model, f"{layer.name!r} is an Input not among the model's inputs")
        if id(layer) not in converted:
            converted[id(layer)] = _layer_from_keras(layer)
        args, kwargs = node.arguments.args, dict(node.arguments.kwargs)
        first = args[0] if args else None
        own = getattr(first, "_keras_mask", None)
        if "mask" in kwargs and (kwargs["mask"] is None or kwargs["mask"] is own):
            del kwargs["mask"]  # the input's own mask: the rnn_jax graph passes it on itself
        for k in ("training",):
            kwargs.pop(k, None)
        mapped = keras.tree.map_structure(
            lambda a: tensor(a) if isinstance(a, keras.KerasTensor) else a, (args, kwargs))
        out = converted[id(layer)](*mapped[0], **mapped[1])
        for kt, t in zip(node.outputs, jax.tree.leaves(out)):
            ours[id(kt)] = t
        done.add(id(node))

    outputs = [tensor(kt) for kt in model.outputs]
    single_in = len(inputs) == 1 and not isinstance(model._inputs_struct, (list, tuple, dict))
    single_out = len(outputs) == 1 and not isinstance(model._outputs_struct, (list, tuple))
    return Model(inputs[0] if single_in else inputs, outputs[0] if single_out else outputs,
                 name=model.name)


def from_keras(obj) -> Layer:
    """Returns the `rnn_jax` module equivalent to a built Keras object.

    Args:
      obj: a Keras 3 layer or cell listed in `SUPPORTED`, a `keras.Sequential`
        (returned as `Sequential`), or a functional `keras.Model` of such
        layers (returned as `rnn_jax.models.Model`).

    Returns:
      The module, holding copies of the Keras weights; calling it as the
      Keras object is called gives the same outputs.

    Raises:
      UnsupportedKerasObject: for any other layer or topology (named).
    """
    keras = _keras()
    if isinstance(obj, keras.Sequential):
        layers = [l for l in obj.layers if not isinstance(l, keras.layers.InputLayer)]
        return Sequential([_layer_from_keras(l) for l in layers], name=obj.name)
    if isinstance(obj, keras.Model):
        if type(obj) is not keras.Model and not getattr(obj, "_is_graph_network", True):
            raise _unsupported(obj, "subclassed models")
        if not hasattr(obj, "inputs") or obj.inputs is None:
            raise _unsupported(obj, "subclassed models")
        return _graph_from_keras(obj)
    if isinstance(obj, keras.layers.Layer):
        return _layer_from_keras(obj)
    raise UnsupportedKerasObject(f"from_keras expects a Keras layer or model, got {type(obj).__name__}")


# -- rnn_jax -> Keras ------------------------------------------------------------


def _weights_to_keras(kl, module) -> None:
    """`kl.set_weights(module.get_weights())`; a weight of the wrong shape raises
    ValueError naming both layers (Keras' message gives both shapes)."""
    try:
        kl.set_weights(module.get_weights())
    except ValueError as err:
        raise ValueError(f"to_keras: {describe(module)} -> Keras {type(kl).__name__} "
                         f"{kl.name!r}: {err}") from None


def _keras_cell(cell):
    keras = _keras()
    if isinstance(cell, StackedRNNCells):
        return keras.layers.StackedRNNCells([_keras_cell(c) for c in cell.cells],
                                            dtype=str(cell.dtype))  # else float32 states
    cls = {SimpleRNNCell: keras.layers.SimpleRNNCell, GRUCell: keras.layers.GRUCell,
           LSTMCell: keras.layers.LSTMCell}[type(cell)]
    return cls(**cell.get_config(), dtype=str(cell.dtype))


def _keras_layer(layer):
    keras = _keras()
    L = keras.layers
    if isinstance(layer, (SimpleRNN, GRU, LSTM)):
        cls = {SimpleRNN: L.SimpleRNN, GRU: L.GRU, LSTM: L.LSTM}[type(layer)]
        return cls(**layer.get_config(), dtype=str(layer.dtype), name=layer.name)
    if isinstance(layer, RNN):
        return L.RNN(_keras_cell(layer.cell), **layer.get_config(), dtype=str(layer.dtype),
                     name=layer.name)
    if isinstance(layer, Bidirectional):
        return L.Bidirectional(_keras_layer(layer.forward_layer), merge_mode=layer.merge_mode,
                               backward_layer=_keras_layer(layer.backward_layer),
                               dtype=str(layer.dtype), name=layer.name)
    if isinstance(layer, Embedding):
        return L.Embedding(**layer.get_config(), dtype=str(layer.dtype), name=layer.name)
    if isinstance(layer, Dense):
        return L.Dense(**layer.get_config(), dtype=str(layer.dtype), name=layer.name)
    if isinstance(layer, Activation):
        return L.Activation(**layer.get_config(), dtype=str(layer.dtype), name=layer.name)
    if isinstance(layer, TimeDistributed):
        return L.TimeDistributed(_keras_layer(layer.layer), name=layer.name)
    if isinstance(layer, Masking):
        return L.Masking(**layer.get_config(), dtype=str(layer.dtype), name=layer.name)
    if type(layer).__name__ in WEIGHTLESS:
        return getattr(L, type(layer).__name__)(**layer.get_config(), dtype=str(layer.dtype),
                                                name=layer.name)
    raise ValueError(f"to_keras: unsupported module {type(layer).__name__}")


def _stateful_batch(module):
    layers = module.layers if isinstance(module, Sequential) else [module]
    for layer in layers:
        sub = [layer.forward_layer, layer.backward_layer] if isinstance(layer, Bidirectional) else [layer]
        for s in sub:
            if isinstance(s, RNN) and s.stateful:
                if s.states is None:
                    raise ValueError("to_keras: call the stateful layer once so its batch size is known")
                return jax.tree.leaves(s.states.get_value())[0].shape[0]
    return None


def _own_input_shape(layer):
    """A layer's input shape without the batch axis as its weights tell it
    (None: they do not), the time axis None."""
    if isinstance(layer, (RNN, Bidirectional, RNNCellBase)):
        return (None, layer.input_dim)
    if isinstance(layer, Dense):
        return (layer.input_dim,)
    if isinstance(layer, TimeDistributed):
        inner = _own_input_shape(layer.layer)
        return None if inner is None else (None, *inner)
    return None


def _shape_before(layer, shape):
    """The input shape (without the batch axis) of a weightless `layer` whose
    output has `shape` (time axes None)."""
    if isinstance(layer, RepeatVector):
        return shape[1:]
    if isinstance(layer, (GlobalAveragePooling1D, GlobalMaxPooling1D)):
        if layer.data_format == "channels_last":
            return (None, shape[-1])
        return (shape[0], None)
    return shape  # Activation, Masking, Dropout keep the shape


def _input_spec(module, input_shape=None):
    """Keras input shape (without batch) and dtype for the module's inputs:
    `input_shape` if given, else read off the first layer with weights and
    traced back through the weightless layers before it."""
    layers = list(module.layers) if isinstance(module, Sequential) else [module]
    first = layers[0]
    dtype = "int32" if isinstance(first, Embedding) else str(first.dtype)
    if input_shape is not None:
        return tuple(input_shape), dtype
    if any(isinstance(layer, Flatten) for layer in layers):
        # Keras' Flatten needs every axis known to build the layers after it
        raise ValueError("to_keras: the model has a Flatten, whose Keras layer needs the "
                         "number of time steps; pass input_shape=(...) without the batch axis")
    if isinstance(first, Embedding):
        return (None,), dtype
    for i, layer in enumerate(layers):
        shape = _own_input_shape(layer)
        if shape is not None:
            for before in reversed(layers[:i]):
                shape = _shape_before(before, shape)
            return shape, dtype
    raise ValueError("to_keras: cannot tell the input shape (no layer with weights); pass "
                     "input_shape=(...) without the batch axis")


def _copy_states(keras_layer, layer):
    keras_layers = [keras_layer]
    ours = [layer]
    if isinstance(layer, Bidirectional):
        keras_layers = [keras_layer.forward_layer, keras_layer.backward_layer]
        ours = [layer.forward_layer, layer.backward_layer]
    for kl, ol in zip(keras_layers, ours):
        if isinstance(ol, RNN) and ol.stateful and ol.states is not None:
            for kv, v in zip(_keras().tree.flatten(kl.states),
                             jax.tree.leaves(ol.states.get_value()), strict=True):
                kv.assign(np.asarray(v))


def _graph_to_keras(model: Model):
    """An rnn_jax `Model` as a functional `keras.Model`: its recorded calls
    replayed on `keras.Input`s with Keras layers (one per rnn_jax layer), then
    the weights copied."""
    keras = _keras()
    graph = model.graph
    values = {}
    kinputs = []
    for i in graph.inputs:
        layer = model.layers[i]
        dtype = layer.input_dtype.name
        kt = keras.Input(batch_shape=layer.batch_shape, dtype=dtype, name=layer.name)
        values[i] = kt
        kinputs.append(kt)
    klayers = {}
    for node in graph.nodes:
        layer = model.layers[node.layer]
        if node.layer not in klayers:
            klayers[node.layer] = (_keras_cell(layer) if isinstance(layer, RNNCellBase)
                                   else _keras_layer(layer))
        args = functional.thaw(node.args, values)
        kwargs = dict(functional.thaw(node.kwargs, values))
        out = klayers[node.layer](*args, **kwargs)
        for ref, kt in zip(node.outputs, keras.tree.flatten(out)):
            values[ref] = kt
    for index, klayer in klayers.items():
        _weights_to_keras(klayer, model.layers[index])
        _copy_states(klayer, model.layers[index])
    kouts = [values[i] for i in graph.outputs]
    named = graph.inputs_given_as == "dict"
    return keras.Model(dict(zip(graph.input_names, kinputs)) if named else
                       kinputs if graph.inputs_given_as == "list" else kinputs[0],
                       kouts if graph.outputs_list else kouts[0], name=model.name)


def to_keras(module: Layer, input_shape=None):
    """Returns a built Keras 3 object with `module`'s configuration and weights.

    `Sequential` becomes a `keras.Sequential` starting with a `keras.Input`, a
    functional `Model` a functional `keras.Model`;
    a single layer becomes the Keras layer, built for the module's input size
    (a layer without weights, e.g. `Dropout` or `Concatenate`, is returned
    unbuilt: Keras builds it on its first call). The module must be built
    (called once, or built with `input_shape`).

    Args:
      module: an rnn_jax layer or `Sequential`.
      input_shape: the input shape without the batch axis; needed only when
        the model has a `Flatten` (Keras then needs the number of time
        steps) or no layer with weights. By default it is read off the
        first layer with weights, the time axis None.
    """
    keras = _keras()
    if not module.built:
        raise ValueError("to_keras: the module has no weights yet; call it once or build it")
    if isinstance(module, Model):
        return _graph_to_keras(module)
    if not isinstance(module, Sequential) and type(module).__name__ in WEIGHTLESS:
        return _keras_layer(module)
    shape, dtype = _input_spec(module, input_shape)
    batch = _stateful_batch(module)
    if isinstance(module, Sequential):
        kin = keras.Input(batch_shape=(batch, *shape), dtype=dtype)
        kmodel = keras.Sequential([kin] + [_keras_layer(l) for l in module.layers], name=module.name)
        for kl, layer in zip(kmodel.layers, module.layers):
            _weights_to_keras(kl, layer)
            _copy_states(kl, layer)
        return kmodel
    if isinstance(module, RNNCellBase):
        kcell = _keras_cell(module)
        kcell.build((None, module.input_dim))
        _weights_to_keras(kcell, module)
        return kcell
    klayer = _keras_layer(module)
    klayer.build((batch, *shape))
    _weights_to_keras(klayer, module)
    _copy_states(klayer, module)
    return klayer
