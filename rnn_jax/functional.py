"""Keras' functional API: symbolic tensors, and the graph a model is made of.

    x = Input(shape=(3, 1), name="Input_Layer")       # a KerasTensor, (None, 3, 1)
    y = SimpleRNN(1, activation="linear")(x)           # records a node; (None, 1)
    model = rnn_jax.models.Model(inputs=x, outputs=y)  # runs the recorded graph

`Input(shape)` returns a `KerasTensor`: a shape (batch axis `None`, other
axes `None` where unknown), a dtype and the node that made it. Calling any
rnn_jax layer on KerasTensors (anywhere in its arguments: a list of them for
merges, `initial_state=[h, c]` from another layer's states) computes nothing:
it builds the layer for the input's shape, works out the outputs' shapes with
`jax.eval_shape` (twice, with two sizes for every unknown axis, so an output
axis that follows an unknown input axis is `None` too), and returns
KerasTensors that remember the call (`Node`). `rnn_jax.models.Model` walks
those nodes from its outputs back to its inputs and replays them on arrays.

Masks follow Keras: a tensor made by `Embedding(mask_zero=True)` or `Masking`
carries a mask; a layer whose call takes `mask` receives its first input's
mask; what it passes on is `layer.compute_mask(inputs, mask)` (the main
output's mask: the states a recurrent layer returns with `return_state`
carry none).

This module imports nothing of rnn_jax: `rnn_jax.base.Layer` routes calls on
symbolic tensors here (`symbolic_aware`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Two sizes for every unknown axis (first the batch's, then the others'):
# an output axis whose size differs between the two is unknown too.
_PROBES = ((5, 7), (6, 11))


class KerasTensor:
    """A symbolic tensor: what `Input` and a layer called on symbolic tensors
    return. It has Keras' `.shape` (`None` for the batch and unknown axes),
    `.dtype`, `.ndim` and `.name`; it holds no values.

    Attributes:
      node: the `Node` (layer call) that made it; `index`: which of that
        call's outputs it is (0 for a single output).
      has_mask: whether it carries a Keras mask (`(batch, time)`).
    """

    def __init__(self, shape, dtype, *, node=None, index: int = 0, has_mask: bool = False,
                 name: str | None = None):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.node = node
        self.index = index
        self.has_mask = has_mask
        self.name = name

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return (f"<KerasTensor shape={self.shape}, dtype={self.dtype.name}, "
                f"name={self.name}>")

    def __array__(self, *args, **kwargs):
        raise TypeError(
            f"{self!r} is symbolic (from Input): it has no values. Build a model with "
            "rnn_jax.models.Model(inputs, outputs) and call it on arrays")


@dataclasses.dataclass(eq=False)
class Node:
    """One recorded call: `layer(*args, **kwargs)` on symbolic tensors.

    Attributes:
      layer: the layer called.
      args, kwargs: the call's arguments, KerasTensors where tensors went.
      outputs: the KerasTensors it returned, flattened; `out_tree` the
        structure to rebuild (a tensor, or a tuple for `return_state`).
    """

    layer: Any
    args: tuple
    kwargs: dict
    outputs: tuple = ()
    out_tree: Any = None

    @property
    def inputs(self) -> list:
        """The KerasTensors among the call's arguments, in order."""
        return [a for a in jax.tree.leaves((self.args, self.kwargs), is_leaf=is_symbolic)
                if is_symbolic(a)]


def is_symbolic(x) -> bool:
    return isinstance(x, KerasTensor)


def _has_symbolic(args, kwargs) -> bool:
    return any(is_symbolic(a) for a in jax.tree.leaves((args, kwargs), is_leaf=is_symbolic))


def accepts(fn, name: str) -> bool:
    """Whether the callable `fn` takes a keyword argument `name`."""
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def symbolic_aware(call):
    """Wraps a layer's `__call__`: called with any KerasTensor among its
    arguments it records a node (`symbolic_call`); otherwise it is `call`."""
    @functools.wraps(call)
    def wrapper(self, *args, **kwargs):
        if _has_symbolic(args, kwargs):
            return symbolic_call(self, call, args, kwargs)
        return call(self, *args, **kwargs)

    wrapper.symbolic_aware = True
    return wrapper


def _probe_shape(shape, probe):
    batch, other = probe
    return tuple((batch if i == 0 else other) if d is None else d for i, d in enumerate(shape))


def _spec(t: KerasTensor, probe):
    # a float64 Input without 64-bit mode is fed as float32 (layers cast anyway)
    return jax.ShapeDtypeStruct(_probe_shape(t.shape, probe),
                                jax.dtypes.canonicalize_dtype(t.dtype))


def first_input(args):
    """The first argument of a call (a tensor, or a merge's list of tensors)."""
    return args[0] if args else None


def mask_argument(call, kwargs, first_masks):
    """Keras' rule for the `mask=` a layer call gets, the one rule of recording
    and of replaying a graph: a layer whose call takes `mask`, not given one
    explicitly, gets its first input's mask, or for a merge's list of inputs
    the list of their masks (None when none has one). `first_masks` is the
    call's first argument with each tensor replaced by its mask (or None)."""
    if "mask" in kwargs or not accepts(call, "mask"):
        return None
    if isinstance(first_masks, (list, tuple)):
        return None if all(m is None for m in first_masks) else list(first_masks)
    return first_masks


def output_mask(layer, inputs, mask):
    """The mask a layer's (main) output carries: `layer.compute_mask(inputs,
    mask)`."""
    compute = getattr(layer, "compute_mask", None)
    return None if compute is None else compute(inputs, mask)


def symbolic_call(layer, call, args, kwargs):
    """Records `layer(*args, **kwargs)` on KerasTensors: builds the layer,
    works out the outputs' shapes, and returns KerasTensors in the call's
    output structure.

    A layer that cannot take the tensors (a wrong rank or feature size) is
    refused here, when the model is built, with a ValueError naming the
    layer and the tensors' shapes, then the layer's own reason (the shape or
    feature size it takes).
    """
    first = first_input(args)
    if not layer.built:
        if not (is_symbolic(first) or isinstance(first, (list, tuple))):
            raise ValueError(f"{type(layer).__name__}: the first argument must be a tensor")
        if getattr(layer, "stateful", False) and is_symbolic(first) and first.shape[0] is None:
            raise ValueError(f"{type(layer).__name__} {layer.name!r} is stateful: give the "
                             "Input a batch size (Input(shape, batch_size=B))")
    try:
        return _record_call(layer, call, args, kwargs)
    except ValueError as err:
        raise ValueError(_call_error(layer, args, kwargs, str(err))) from None


def _call_error(layer, args, kwargs, reason: str) -> str:
    """The message refusing `layer(*args, **kwargs)` on KerasTensors for `reason`
    (the layer's own message, which saw stand-in sizes for the unknown axes:
    a tensor's stand-in shape is written back as its shape, `(None, 5)`)."""
    tensors = [t for t in jax.tree.leaves((args, kwargs), is_leaf=is_symbolic)
               if is_symbolic(t)]
    for t in tensors:
        for probe in _PROBES:
            reason = reason.replace(str(_probe_shape(t.shape, probe)), str(t.shape))
    who = describe(layer)
    for prefix in (f"{who}: ", f"{who} "):  # the layer names itself: once is enough
        if reason.startswith(prefix):
            reason = reason[len(prefix):]
            break

    def shapes(tree):
        return jax.tree.map(lambda t: t.shape if is_symbolic(t) else t, tree,
                            is_leaf=is_symbolic)

    got = f"inputs of shape {shapes(first_input(args))}"
    got += "".join(f" and {k}={shapes(v)}" for k, v in kwargs.items()
                   if any(is_symbolic(t) for t in jax.tree.leaves(v, is_leaf=is_symbolic)))
    return f"{who} cannot be called on {got}: {reason}"


def _record_call(layer, call, args, kwargs):
    """`symbolic_call`'s work: build, work out the shapes, make the KerasTensors."""
    from flax import nnx

    tensors = [t for t in jax.tree.leaves((args, kwargs), is_leaf=is_symbolic)
               if is_symbolic(t)]
    first = first_input(args)
    if not layer.built:
        if isinstance(first, (list, tuple)):
            shape = [_probe_shape(t.shape, _PROBES[0]) for t in first]
        else:
            shape = _probe_shape(first.shape, _PROBES[0])
        layer.maybe_build(shape)

    def mask_flag(t):  # stands for the mask a tensor will carry
        return True if is_symbolic(t) and t.has_mask else None

    wants_mask = mask_argument(call, kwargs, [mask_flag(t) for t in first]
                               if isinstance(first, (list, tuple)) else mask_flag(first))
    graphdef, state = nnx.split(layer)
    results, has_mask = [], []
    for probe in _PROBES:
        specs = {id(t): _spec(t, probe) for t in tensors}

        def run(state, specs=specs, probe=probe):
            module = nnx.merge(graphdef, state)
            a, kw = jax.tree.map(lambda t: _as_array(specs[id(t)]) if is_symbolic(t) else t,
                                 (args, kwargs), is_leaf=is_symbolic)
            if wants_mask is not None:
                kw = dict(kw, mask=_probe_mask(first, wants_mask, probe))
            out = call(module, *a, **kw)
            # whether the main output carries a mask: known while tracing
            has_mask.append(output_mask(module, a[0] if a else None, kw.get("mask")) is not None)
            return out

        results.append(jax.eval_shape(run, state))
    (out_a, out_b), has_mask = results, has_mask[0]
    leaves_a, tree = jax.tree.flatten(out_a)
    leaves_b = jax.tree.leaves(out_b)
    node = Node(layer, args, kwargs, out_tree=tree)
    outputs = []
    for i, (a, b) in enumerate(zip(leaves_a, leaves_b)):
        shape = tuple(da if da == db else None for da, db in zip(a.shape, b.shape))
        outputs.append(KerasTensor(shape, a.dtype, node=node, index=i,
                                   has_mask=bool(has_mask) and i == 0,
                                   name=f"{layer.name}/output_{i}" if len(leaves_a) > 1
                                   else layer.name))
    node.outputs = tuple(outputs)
    return jax.tree.unflatten(tree, outputs)


def _as_array(spec):
    """A traced stand-in for a symbolic input inside `jax.eval_shape`."""
    return jnp.zeros(spec.shape, spec.dtype)


def _probe_mask(first, wants, probe):
    """Stand-in masks `(batch, time)` for the inputs that carry one."""
    def one(t):
        return jnp.ones(_probe_shape(t.shape, probe)[:2], bool)

    if isinstance(first, (list, tuple)):
        return [None if w is None else one(t) for t, w in zip(first, wants)]
    return one(first)


def nodes_between(inputs, outputs) -> list:
    """The nodes that compute `outputs` from `inputs` (KerasTensors), in an
    order where every node comes after the nodes it reads from.

    Raises ValueError when an output depends on a symbolic tensor that is not
    one of `inputs` (an `Input` missing from the model's inputs).
    """
    input_ids = {id(t) for t in inputs}
    order, state = [], {}

    def visit(node):
        mark = state.get(id(node))
        if mark == "done":
            return
        if mark == "active":
            raise ValueError("the layers' calls form a cycle")
        state[id(node)] = "active"
        for t in node.inputs:
            if id(t) in input_ids:
                continue
            if t.node is None or t.node.layer is None or getattr(t.node, "is_input", False):
                raise ValueError(
                    f"the outputs depend on {t!r}, which is not among the model's inputs: "
                    "pass every Input the outputs are computed from")
            visit(t.node)
        state[id(node)] = "done"
        order.append(node)

    for t in outputs:
        if id(t) in input_ids:
            continue
        if t.node is None or getattr(t.node, "is_input", False):
            raise ValueError(f"{t!r} is not computed from the model's inputs")
        visit(t.node)
    return order


def keras_layer_order(inputs, outputs) -> list:
    """The layers that compute `outputs` from `inputs` (KerasTensors), their
    InputLayers included, in the order of Keras' `Model.layers` (and so of
    its weights and summary; `keras.src.ops.function.map_graph`): deepest
    first, a layer's depth being the longest path from any of its calls to
    an output; layers of equal depth in the order that a depth-first walk
    from the outputs, through each call's tensors in argument order, first
    reaches them; an input that no output reads comes first among depth 0."""
    def layer_of(node):
        return node.input_layer if getattr(node, "is_input", False) else node.layer

    first_reached, finished, walked = {}, set(), []

    def walk(t):
        node = t.node
        if id(node) in finished:
            return
        layer = layer_of(node)
        first_reached.setdefault(id(layer), (len(first_reached), layer))
        if not getattr(node, "is_input", False):
            for s in node.inputs:
                walk(s)
        finished.add(id(node))
        walked.append(node)  # after the nodes it reads from

    for t in outputs:
        walk(t)
    node_depth, layer_depth = {}, {}
    for node in reversed(walked):  # every node before the nodes it reads from
        layer = layer_of(node)
        depth = max(node_depth.get(id(node), 0), layer_depth.get(id(layer), 0))
        layer_depth[id(layer)] = depth
        if not getattr(node, "is_input", False):
            for s in node.inputs:
                node_depth[id(s.node)] = max(node_depth.get(id(s.node), 0), depth + 1)
    for t in inputs:
        layer = t.node.input_layer
        if id(layer) not in layer_depth:  # read by no output
            layer_depth[id(layer)] = 0
            first_reached[id(layer)] = (-1, layer)
    ranked = sorted(first_reached.items(), key=lambda kv: (-layer_depth[kv[0]], kv[1][0]))
    return [layer for _, (_, layer) in ranked]


# -- Input and Model ----------------------------------------------------------------

from rnn_jax.base import Layer, as_dtype, describe, unique_name  # noqa: E402


class InputLayer(Layer):
    """Keras' `InputLayer`: where a functional model's input enters (no
    weights; its output is the `KerasTensor` that `Input` returns).

    Args:
      shape: the input's shape without the batch axis (`None` for unknown
        sizes, e.g. the time axis).
      batch_size: a fixed batch size, or None.
      dtype: the dtype fed (default float32). Layers cast their inputs to
        their own dtype, as Keras' autocasting does, so a `float64` input
        needs no 64-bit mode.
      name: default `input_layer`, `input_layer_1`, ...
    """

    auto_named = False

    def __init__(self, shape=None, batch_size=None, dtype=None, *, batch_shape=None,
                 name: str | None = None):
        if batch_shape is None:
            if shape is None:
                raise ValueError("Input needs a shape (without the batch axis), e.g. "
                                 "Input(shape=(3, 1))")
            shape = (shape,) if isinstance(shape, int) else tuple(shape)
            batch_shape = (batch_size, *shape)
        batch_shape = tuple(batch_shape)
        for d in batch_shape:
            if d is not None and (isinstance(d, bool) or not isinstance(d, (int, np.integer))
                                  or d <= 0):
                raise ValueError(f"Input: every size must be a positive integer or None, got "
                                 f"shape {batch_shape[1:]}")
        fed = as_dtype(dtype, "Input: dtype", x64_required=False)
        super().__init__(dtype="float32", rngs=None,
                         name=name if name is not None else unique_name("input_layer"))
        self.batch_shape = batch_shape
        self.input_dtype = fed
        self.built = True
        node = Node(None, (), {})
        node.is_input = True
        node.input_layer = self
        self.output = KerasTensor(batch_shape, fed, node=node, name=self.name)
        node.outputs = (self.output,)

    def compute_output_shape(self, input_shape):
        return self.batch_shape

    def get_config(self) -> dict:
        return {"batch_shape": self.batch_shape, "dtype": self.input_dtype.name,
                "name": self.name}

    def __call__(self, inputs, mask=None, training: bool = False, key=None):
        return jnp.asarray(inputs)


def Input(shape=None, batch_size=None, name=None, dtype=None, *, batch_shape=None):  # noqa: N802
    """Keras' `Input`: a symbolic tensor `(batch_size, *shape)` to build a
    functional model from (`rnn_jax.models.Model(inputs, outputs)`).

    Returns a `KerasTensor` with `.shape == (batch_size, *shape)` (`None` for
    an unknown batch size or axis)."""
    return InputLayer(shape, batch_size, dtype, batch_shape=batch_shape, name=name).output


@dataclasses.dataclass(frozen=True)
class Ref:
    """Tensor number `i` of a recorded graph (a placeholder in a node's arguments)."""

    i: int


@dataclasses.dataclass(frozen=True)
class GraphNode:
    """A node of `Graph`: layer `layer` of the model called on the arguments
    `args`, `kwargs` (with `Ref`s for tensors), making tensors `outputs`."""

    layer: int
    args: Any
    kwargs: Any
    outputs: tuple
    out_tree: Any
    output_shapes: tuple


@dataclasses.dataclass(frozen=True)
class Graph:
    """A functional model's recorded calls, static (hashable), so that NNX keeps
    it in the model's graph definition: `inputs` and `outputs` are tensor
    numbers (input tensor `i` is the output of the InputLayer `layers[i]`),
    `nodes` run in order, `outputs_list` says whether the model returns a
    list."""

    inputs: tuple
    input_names: tuple
    nodes: tuple
    outputs: tuple
    outputs_list: bool
    inputs_given_as: str  # 'tensor', 'list' or 'dict'


def _freeze(tree):
    """Arguments of a call as hashable data: lists become tuples, dicts sorted tuples."""
    if isinstance(tree, dict):
        return ("__dict__", tuple(sorted((k, _freeze(v)) for k, v in tree.items())))
    if isinstance(tree, (list, tuple)):
        return (type(tree).__name__, tuple(_freeze(v) for v in tree))
    return tree


def thaw(tree, values):
    """`_freeze`'s data back as lists and dicts, `Ref`s replaced by `values`."""
    if isinstance(tree, Ref):
        return values[tree.i]
    if isinstance(tree, tuple) and len(tree) == 2 and tree[0] == "__dict__":
        return {k: thaw(v, values) for k, v in tree[1]}
    if isinstance(tree, tuple) and len(tree) == 2 and tree[0] in ("list", "tuple"):
        items = [thaw(v, values) for v in tree[1]]
        return items if tree[0] == "list" else tuple(items)
    return tree


def record_graph(inputs, outputs):
    """`(layers, Graph)` of the calls between KerasTensors `inputs` and
    `outputs` (single tensors, lists, or for inputs a dict name -> tensor)."""
    given = "dict" if isinstance(inputs, dict) else (
        "list" if isinstance(inputs, (list, tuple)) else "tensor")
    ins = list(inputs.values()) if given == "dict" else (
        list(inputs) if given == "list" else [inputs])
    outs_list = isinstance(outputs, (list, tuple))
    outs = list(outputs) if outs_list else [outputs]
    for what, ts in (("inputs", ins), ("outputs", outs)):
        bad = [t for t in ts if not is_symbolic(t)]
        if bad or not ts:
            raise ValueError(f"Model: {what} must be symbolic tensors (from Input and layers "
                             f"called on them), got {bad[0] if bad else 'none'!r}")
    for t in ins:
        if t.node is None or not getattr(t.node, "is_input", False):
            raise ValueError(f"Model: inputs must come from Input(...), got {t!r}")
    nodes = nodes_between(ins, outs)
    layers = keras_layer_order(ins, outs)
    index = {id(layer): i for i, layer in enumerate(layers)}
    # an input tensor is numbered as its InputLayer's position in `layers`,
    # the tensors the nodes make from len(layers) on
    number = {id(t): index[id(t.node.input_layer)] for t in ins}
    made = itertools.count(len(layers))
    graph_nodes = []
    for node in nodes:
        ref = lambda t: Ref(number[id(t)]) if is_symbolic(t) else t  # noqa: E731
        args, kwargs = jax.tree.map(ref, (node.args, node.kwargs), is_leaf=is_symbolic)
        for t in node.outputs:
            number[id(t)] = next(made)
        graph_nodes.append(GraphNode(index[id(node.layer)], _freeze(args), _freeze(kwargs),
                                     tuple(number[id(t)] for t in node.outputs), node.out_tree,
                                     tuple(t.shape for t in node.outputs)))
    names = tuple(inputs.keys()) if given == "dict" else tuple(t.name for t in ins)
    graph = Graph(tuple(number[id(t)] for t in ins), names, tuple(graph_nodes),
                  tuple(number[id(t)] for t in outs), outs_list, given)
    return layers, graph


def run_graph(layers, graph: Graph, inputs, *, mask=None, training: bool = False, key=None):
    """Replays `graph` on arrays: `inputs` as the model was given them (an
    array, a list, or a dict by input name), `mask` a mask for the (first)
    input or a list per input. Returns the outputs (an array or a list)."""
    if graph.inputs_given_as == "dict":
        if not isinstance(inputs, dict) or set(inputs) != set(graph.input_names):
            raise ValueError(f"the model takes a dict with keys {list(graph.input_names)}, "
                             f"got {list(inputs) if isinstance(inputs, dict) else type(inputs)}")
        xs = [inputs[n] for n in graph.input_names]
    elif isinstance(inputs, dict):
        xs = [inputs[n] for n in graph.input_names]
    elif len(graph.inputs) == 1 and not (isinstance(inputs, (list, tuple))
                                          and graph.inputs_given_as == "list"):
        xs = [inputs]
    else:
        xs = list(inputs)
    if len(xs) != len(graph.inputs):
        raise ValueError(f"the model has {len(graph.inputs)} inputs "
                         f"({', '.join(graph.input_names)}), got {len(xs)} arrays")
    masks_in = mask if isinstance(mask, (list, tuple)) else [mask] + [None] * (len(xs) - 1)
    values, masks = {}, {}
    for i, x, m in zip(graph.inputs, xs, masks_in):
        values[i] = layers[i](x)  # the InputLayer: an array
        masks[i] = m
    for k, node in enumerate(graph.nodes):
        layer = layers[node.layer]
        args = thaw(node.args, values)
        kwargs = dict(thaw(node.kwargs, values))
        call = type(layer).__call__
        m = mask_argument(call, kwargs, first_input(thaw(node.args, masks)))
        if m is not None:
            kwargs["mask"] = m
        if accepts(call, "training"):
            kwargs["training"] = training
        if key is not None and accepts(call, "key"):
            kwargs["key"] = jax.random.fold_in(key, k)
        out = layer(*args, **kwargs)
        leaves = jax.tree.leaves(out)
        out_mask = output_mask(layer, args[0] if args else None, kwargs.get("mask"))
        for j, (ref, v) in enumerate(zip(node.outputs, leaves)):
            values[ref] = v
            masks[ref] = out_mask if j == 0 else None
    outs = [values[i] for i in graph.outputs]
    return outs if graph.outputs_list else outs[0]

