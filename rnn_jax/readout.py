r"""What a network learned: its layers, its states and gates over time, its weights.

- `summary(model, input_shape=None)`: Keras' table of layers, output shapes and
  parameter counts (`summary_rows` gives the rows as dicts).
- `trace_states(model, x, mask=None)`: runs a model on a batch and records, for
  every recurrent layer (every cell of a stack, both directions of a
  `Bidirectional`), the hidden state and every gate at every time step.
- `input_weights_per_token(model)`: the effective input weight of each token of
  `Embedding + SimpleRNN` (`W_embd W + b`) or of a `SimpleRNN` fed one-hot
  vectors (`W + b`), the numbers notebooks 000 and 002 read out.

Shapes: `B` batch, `T` time, `D` input features, `U` units, `V` vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_jax.base import Layer
from rnn_jax.cells import LSTMState, SimpleRNNCell
from rnn_jax.core import Embedding
from rnn_jax.models import Sequential, apply_layer, inferred_input_shape
from rnn_jax.recurrent import RNN, Bidirectional
from rnn_jax.scan import scan_cell

# -- names and the summary table ------------------------------------------------------


def _layers_of(model, what: str) -> list[Layer]:
    if isinstance(model, Sequential):
        return list(model.layers)
    if isinstance(model, Layer):
        return [model]
    raise ValueError(f"{what} expects an rnn_jax Sequential or layer, got {type(model).__name__}")


def summary_rows(model, input_shape=None) -> list[dict]:
    """One dict per layer: `name`, `type` (class name), `output_shape`, `params`.

    Args:
      model: a `Sequential` or a single layer.
      input_shape: the input shape without the batch axis (`(T,)` of ids for
        an `Embedding`, `(T, D)` of features). An unbuilt model is built for
        it (drawing its weights). Without it the model must be built and the
        time axis shows as None.

    Returns:
      `[{"name": "simple_rnn", "type": "SimpleRNN", "output_shape": (None, 5),
      "params": 45}, ...]`, output shapes with the batch axis as None.
    """
    if hasattr(model, "summary_rows"):  # a functional Model knows its own
        return model.summary_rows()
    layers = _layers_of(model, "summary")
    if input_shape is not None:
        shape = (None, *tuple(input_shape))
        model.maybe_build(shape)
    elif not model.built:
        raise ValueError(
            f"summary: {type(model).__name__} is not built; pass input_shape=... "
            "(without the batch axis) or call it once"
        )
    else:
        shape = inferred_input_shape(layers)
    rows = []
    for layer in layers:
        name = layer.name
        shape = tuple(layer.compute_output_shape(shape))
        rows.append({"name": name, "type": type(layer).__name__, "output_shape": shape,
                     "params": int(layer.count_params())})
    return rows


def summary(model, input_shape=None) -> str:
    """Keras' `model.summary()` as a string (see `summary_rows` for the arguments).

    Example (`SimpleRNN(5) + Dense(2)` on `(T, D) = (10, 3)`)::

        Model: "sequential"
        Layer (type)            Output Shape    Param #
        ===================================================
        simple_rnn (SimpleRNN)  (None, 5)       45
        dense (Dense)           (None, 2)       12
        ===================================================
        Total params: 57
        Trainable params: 57
        Non-trainable params: 0
    """
    rows = summary_rows(model, input_shape)
    table = [("Layer (type)", "Output Shape", "Param #")] + [
        (f"{r['name']} ({r['type']})", str(r["output_shape"]), str(r["params"])) for r in rows]
    widths = [max(len(line[c]) for line in table) for c in range(3)]
    fmt = "{:<%d}  {:<%d}  {}" % (widths[0], widths[1])
    rule = "=" * (widths[0] + widths[1] + widths[2] + 4)
    total = sum(r["params"] for r in rows)
    title = model.name
    lines = [f'Model: "{title}"', fmt.format(*table[0]), rule]
    lines += [fmt.format(*line) for line in table[1:]]
    lines += [rule, f"Total params: {total}", f"Trainable params: {total}",
              "Non-trainable params: 0"]
    return "\n".join(lines)


# -- the state tracer -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerTrace:
    """The states and gates of one cell of one recurrent layer, at every step.

    Every array is numpy with time in *input order*: index `t` is input
    position `t`, also for a `go_backwards` layer (which processed `t = T-1`
    first) and for the backward half of a `Bidirectional`.

    Attributes:
      name: the layer's name (as in `summary`).
      layer_index: the layer's position in the model (0 for a single layer).
      cell_index: the cell's position in a `StackedRNNCells` (else 0).
      direction: `'forward'` or `'backward'` (the half of a `Bidirectional`,
        or `go_backwards` of a plain layer).
      outputs: `(B, T, U)` the cell's output at each step under Keras' mask
        rule (a masked step repeats the previous output, or is zero with
        `zero_output_for_mask`, as inside a `Bidirectional` returning
        sequences).
      states: `{"h": (B, T, U)}`, plus `"c"` for an LSTM cell: the states
        after each step (kept unchanged at masked steps, as Keras does).
      gates: `(B, T, U)` arrays: GRU `z`, `r`, `h_tilde`; LSTM `i`, `f`, `g`
        (the candidate), `o`, `c` (the cell state `c_t` the step computed);
        SimpleRNN none. At a masked step they are what the cell computed from
        the kept state and then discarded (so there the LSTM's gate `c` and
        `states["c"]` differ).
      mask: `(B, T)` bool, the mask the layer was given (True = step used),
        or None.
    """

    name: str
    layer_index: int
    cell_index: int
    direction: str
    outputs: np.ndarray
    states: dict
    gates: dict
    mask: np.ndarray | None = None


def trace_cell(cell, params, x, states, *, mask=None, go_backwards=False,
               zero_output_for_mask=False):
    """Every step of `cell` over `x`: `rnn_jax.scan.scan_cell` with `record=True`
    (the layers' own scan and mask rule, no dropout), time put back in input
    order. A pure function of arrays, so it composes with `jit` and `vmap`.

    Args:
      cell: a cell (`StackedRNNCells` too).
      params: `cell.params()`.
      x: `(B, T, D)` inputs.
      states: initial states in the cell's structure, each `(B, U)`.
      mask: `(B, T)` bool or None; a masked step keeps the states.
      go_backwards: process `t = T-1, ..., 0`.
      zero_output_for_mask: output zeros (instead of the previous output) at
        masked steps.

    Returns:
      `(outputs, states, gates)`, each a tuple with one entry per cell
      (one for a plain cell): outputs `(B, T, U_k)`, states the cell's state
      structure with leaves `(B, T, U_k)`, gates a dict of `(B, T, U_k)`;
      time in input order.
    """
    _, _, recorded = scan_cell(cell, params, x, states, mask=mask, go_backwards=go_backwards,
                               zero_output_for_mask=zero_output_for_mask, record=True)
    if go_backwards:
        recorded = jax.tree.map(lambda a: jnp.flip(a, axis=1), recorded)
    return recorded


@functools.partial(jax.jit, static_argnames=("graphdef", "go_backwards", "zero_output_for_mask"))
def _compiled_trace(graphdef, cell_state, x, states, mask, go_backwards, zero_output_for_mask):
    """`trace_cell` compiled once per cell configuration and input shapes."""
    cell = nnx.merge(graphdef, cell_state)
    return trace_cell(cell, cell.params(), x, states, mask=mask, go_backwards=go_backwards,
                      zero_output_for_mask=zero_output_for_mask)


# the cells' gate order (pytrees come back with their keys sorted)
_GATE_ORDER = ("z", "r", "h_tilde", "i", "f", "g", "o", "c")


def _gate_dict(gates) -> dict[str, np.ndarray]:
    order = {g: k for k, g in enumerate(_GATE_ORDER)}
    keys = sorted(gates, key=lambda g: (order.get(g, len(order)), g))
    return {g: np.asarray(gates[g]) for g in keys}


def _state_dict(state) -> dict[str, np.ndarray]:
    if isinstance(state, LSTMState):
        return {"h": np.asarray(state.h), "c": np.asarray(state.c)}
    return {"h": np.asarray(state[0])}


def _trace_rnn(layer: RNN, x, mask, name, layer_index, direction) -> list[LayerTrace]:
    """Traces every cell of one `RNN` layer on `x` `(B, T, D)` (built layer)."""
    cell = layer.cell
    if layer.stateful and layer.states is not None:
        states = layer.states.get_value()  # start where the stateful layer stands
    else:
        states = cell.get_initial_state(x.shape[0])
    graphdef, cell_state = nnx.split(cell)
    outputs, states_t, gates = _compiled_trace(
        graphdef, cell_state, x, states, mask, go_backwards=layer.go_backwards,
        zero_output_for_mask=layer.zero_output_for_mask)
    mask_np = None if mask is None else np.asarray(mask)
    return [
        LayerTrace(name=name, layer_index=layer_index, cell_index=k, direction=direction,
                   outputs=np.asarray(outputs[k]), states=_state_dict(states_t[k]),
                   gates=_gate_dict(gates[k]), mask=mask_np)
        for k in range(len(outputs))
    ]


def _trace_layer(layer, x, mask, name, index) -> list[LayerTrace]:
    x = layer.cast_inputs(x)
    if x.ndim != 3:
        raise ValueError(
            f"trace_states: {type(layer).__name__} expects inputs (batch, time, features), "
            f"got shape {x.shape}"
        )
    layer.maybe_build(x.shape)
    if mask is not None:
        mask = jnp.asarray(mask).astype(bool)
        if mask.shape != x.shape[:2]:
            raise ValueError(f"trace_states: mask must have shape {x.shape[:2]}, got {mask.shape}")
    if isinstance(layer, Bidirectional):
        return (_trace_rnn(layer.forward_layer, x, mask, name, index, "forward")
                + _trace_rnn(layer.backward_layer, x, mask, name, index, "backward"))
    return _trace_rnn(layer, x, mask, name, index, "backward" if layer.go_backwards else "forward")


def trace_states(model, x, mask=None) -> list[LayerTrace]:
    """Hidden states and gates of every recurrent layer at every time step.

    Runs the model's layers in order on `x` (inference: no dropout), handing
    masks along as `Sequential` does (`Embedding(mask_zero=True)` and
    `Masking` make one; a recurrent layer passes it on only when it returns
    sequences), and traces every recurrent layer (`RNN`, `SimpleRNN`, `GRU`,
    `LSTM`, stacked cells; `Bidirectional` gives a forward and a backward
    trace) with one `jax.lax.scan` over `cell.step_with_gates`, from zero
    initial states (a stateful layer starts from its kept states and is
    left unchanged).

    Args:
      model: a `Sequential`, or a single `RNN` / `Bidirectional` layer.
      x: the model's input batch: ids `(B, T)` for an `Embedding` first,
        else features `(B, T, D)`.
      mask: optional `(B, T)` bool mask given to the first layer.

    Returns:
      A list of `LayerTrace`, in layer order, then cell order, then forward
      before backward. Time runs in input order in every trace, also for
      `go_backwards` layers and the backward half of a `Bidirectional`:
      `trace.states["h"][:, t]` is the state after reading input position `t`.
    """
    layers = _layers_of(model, "trace_states")
    if not any(isinstance(layer, (RNN, Bidirectional)) for layer in layers):
        raise ValueError("trace_states: the model has no recurrent layer to trace")
    traces = []
    for i, layer in enumerate(layers):
        name = layer.name
        if isinstance(layer, (RNN, Bidirectional)):
            traces += _trace_layer(layer, x, mask, name, i)
            if getattr(layer, "stateful", False):
                layer = nnx.clone(layer)  # leave the kept states as they were
        x, mask = apply_layer(layer, x, mask)
    return traces


# -- effective input weights ------------------------------------------------------------


def _simple_rnn_cell(layer):
    if isinstance(layer, RNN) and isinstance(layer.cell, SimpleRNNCell):
        return layer.cell
    return None


def input_weights_per_token(model) -> np.ndarray:
    r"""The effective input weight of each token, `(V, U)`.

    For `Sequential([Embedding(V, E), SimpleRNN(U) or RNN(SimpleRNNCell(U)), ...])`
    token `v` adds :math:`e_v W + b` to the pre-activation at its step, so
    row `v` is `W_embd[v] @ W + b` (`W_embd` `(V, E)`, `W = kernel` `(E, U)`).
    For a `SimpleRNN` fed one-hot vectors of size `V` (first layer of a
    `Sequential`, or the layer itself) row `v` is `W[v] + b`. Without a bias,
    `b = 0`.

    Raises:
      ValueError: for any other model (gated cells, stacked cells,
        `Bidirectional`, or an `Embedding` not followed by a SimpleRNN).
    """
    layers = _layers_of(model, "input_weights_per_token")
    if isinstance(layers[0], Embedding):
        cell = _simple_rnn_cell(layers[1]) if len(layers) > 1 else None
        if cell is None:
            raise ValueError(
                "input_weights_per_token: the Embedding must be followed by a SimpleRNN "
                "(or RNN(SimpleRNNCell)); got "
                + (type(layers[1]).__name__ if len(layers) > 1 else "nothing"))
        embed = np.asarray(layers[0].embeddings[...])
    else:
        cell = _simple_rnn_cell(layers[0])
        if cell is None:
            raise ValueError(
                "input_weights_per_token expects Sequential([Embedding, SimpleRNN, ...]) or a "
                "SimpleRNN (or RNN(SimpleRNNCell)) fed one-hot vectors first; got "
                f"{type(layers[0]).__name__}"
                + (f" with {type(layers[0].cell).__name__}" if isinstance(layers[0], RNN) else ""))
        embed = None
    p = cell.params()
    W = np.asarray(p["kernel"])
    b = np.asarray(p["bias"]) if "bias" in p else np.zeros(W.shape[1], W.dtype)
    return (W if embed is None else embed @ W) + b
