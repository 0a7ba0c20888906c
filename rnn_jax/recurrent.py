"""Recurrent layers: `RNN` (a cell run over time by `rnn_jax.scan.scan_cell`),
`SimpleRNN`, `GRU`, `LSTM` and `Bidirectional`, with Keras' arguments and
semantics.

A call reads the cell's weights once into plain arrays (`cell.params()`) and
runs the whole sequence as one compiled `jax.lax.scan` (`rnn_jax.scan`, which
also says how masks and gradients are handled). `go_backwards=True` reads
the sequence from the end and, as in Keras, returns the output sequence in
that reversed order. The layers are plain NNX modules: use `nnx.split` /
`nnx.merge` to `jax.jit` or `jax.vmap` them over parameter sets.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_jax.base import Layer, describe, is_traced, next_rngs
from rnn_jax.cells import GRUCell, LSTMCell, RNNCellBase, SimpleRNNCell, StackedRNNCells
from rnn_jax.scan import scan_cell


class RNNState(nnx.Variable):
    """Non-trainable variable holding a stateful layer's last states."""


class RNN(Layer):
    """Keras' `RNN`: runs a cell over the time axis of `(B, T, D)` inputs.

    Args:
      cell: a cell (`SimpleRNNCell`, `GRUCell`, `LSTMCell`, `StackedRNNCells`)
        or a list of cells (stacked).
      return_sequences: return the output at every step, `(B, T, U)`, instead
        of the last output `(B, U)`.
      return_state: also return the final states: `(output, *states)`.
      go_backwards: process the sequence from the end (outputs come back in
        processing order, as in Keras).
      stateful: keep the final states in a non-trainable `RNNState` variable
        and start the next call from them; `reset_state()` zeroes them. The
        batch size is then fixed by the first call.
      unroll: `False` (a rolled scan), `True` (fully unrolled) or an int, the
        `unroll` of `jax.lax.scan`.
      zero_output_for_mask: output zeros at masked steps instead of repeating
        the previous output.

    Call: `layer(inputs, initial_state=None, mask=None, training=False, key=None)`
      inputs `(B, T, D)`; initial_state the cell's state structure (each
      `(B, U)`); mask a boolean `(B, T)` (True = keep the step); key a random
      key for dropout when `training=True`.
    """

    def __init__(self, cell, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool | int = False,
                 zero_output_for_mask: bool = False, *, name: str | None = None):
        if isinstance(cell, (list, tuple)):
            cell = StackedRNNCells(cell)
        if not isinstance(cell, RNNCellBase):
            raise ValueError(
                f"RNN: unsupported cell {type(cell).__name__}; supported: SimpleRNNCell, "
                "GRUCell, LSTMCell, StackedRNNCells or a list of these"
            )
        super().__init__(dtype=cell.dtype, rngs=None, name=name)
        self.cell = cell
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        if not isinstance(unroll, (bool, int)) or (not isinstance(unroll, bool) and unroll < 1):
            raise ValueError(f"RNN: unroll must be a bool or a positive int, got {unroll!r}")
        self.unroll = unroll
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.states = nnx.data(None)  # a data attribute: later set to an RNNState
        self.built = cell.built

    # -- Keras-style description ---------------------------------------------

    @property
    def units(self) -> int:
        return self.cell.output_size

    @property
    def input_dim(self):
        return self.cell.input_dim

    @property
    def weights(self):
        return self.cell.weights

    def weight_labels(self):
        return self.cell.weight_labels()

    def get_config(self) -> dict[str, Any]:
        return {
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "zero_output_for_mask": self.zero_output_for_mask,
        }

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if not self.cell.built:
            self.cell.build((input_shape[0], input_shape[-1]))
        if self.stateful and self.states is None and input_shape[0] is not None:
            self.states = RNNState(self.cell.get_initial_state(input_shape[0]))
        self.built = True

    def compute_output_shape(self, input_shape):
        b, t = input_shape[0], input_shape[1]
        return (b, t, self.units) if self.return_sequences else (b, self.units)

    def compute_mask(self, inputs, mask=None):
        """The output sequence keeps the input's mask; a last output has none."""
        return mask if self.return_sequences else None

    def reset_state(self) -> None:
        """Zeroes the kept states of a stateful layer (Keras' `reset_state`)."""
        if self.states is not None:
            self.states.set_value(jax.tree.map(jnp.zeros_like, self.states.get_value()))

    reset_states = reset_state

    # -- the computation --------------------------------------------------------

    def __call__(self, inputs, initial_state=None, mask=None, training: bool = False, key=None):
        x = self.read_inputs(inputs, 3, "(batch, time, features)")
        name = describe(self)
        batch, steps, features = x.shape
        if steps == 0:
            raise ValueError(f"{name}: inputs have no time steps (shape {x.shape})")
        if self.stateful and self.states is None:
            if is_traced(x):
                raise RuntimeError(f"{name}: call a stateful layer once eagerly before jit")
            self.states = RNNState(self.cell.get_initial_state(batch))
        if features != self.cell.input_dim:
            raise ValueError(
                f"{name}: inputs have {features} features but the layer's kernel expects "
                f"{self.cell.input_dim}"
            )
        if mask is not None:
            mask = jnp.asarray(mask)
            if mask.shape != (batch, steps):
                raise ValueError(
                    f"{name}: mask must have shape (batch, time) = {(batch, steps)}, got "
                    f"{tuple(mask.shape)}"
                )
            mask = mask.astype(bool)

        if initial_state is not None:
            states = self.cell.as_states(initial_state)
            self.cell.check_states(states, batch, f"{name} initial_state")
        elif self.stateful:
            states = self.states.get_value()
            self.cell.check_states(states, batch,
                                   f"{name} (stateful, batch size fixed by the first call)")
        else:
            states = self.cell.get_initial_state(batch)

        masks = self.cell.dropout_masks(key, batch, training)
        graphdef, cell_state = nnx.split(self.cell)
        final_states, last_output, outputs = _compiled_scan(
            graphdef, cell_state, x, states, masks, mask,
            go_backwards=self.go_backwards, unroll=self.unroll,
            zero_output_for_mask=self.zero_output_for_mask,
            return_sequences=self.return_sequences)

        if self.stateful:
            self.states.set_value(final_states)
        output = outputs if self.return_sequences else last_output
        if self.return_state:
            return (output, *final_states)
        return output



@functools.partial(jax.jit, static_argnames=(
    "graphdef", "go_backwards", "unroll", "zero_output_for_mask", "return_sequences"))
def _compiled_scan(graphdef, cell_state, x, states, masks, mask, **static):
    """`scan_cell` compiled once per cell configuration and input shapes.

    Keyed on the cell's NNX graphdef (its static configuration), so eager
    calls of equally configured layers reuse one compiled program; under an
    outer `jit` / `vmap` / `grad` it is simply inlined.
    """
    cell = nnx.merge(graphdef, cell_state)
    return scan_cell(cell, cell.params(), x, states, masks, mask=mask, **static)


class _CellLayer(RNN):
    """`RNN` over one cell of a fixed type, with the cell's arguments."""

    cell_class: type = RNNCellBase

    def get_config(self):
        return {**self.cell.get_config(), **super().get_config()}

    def __getattr__(self, name):
        # Keras exposes the cell's settings on the layer (layer.units, ...).
        if name in ("activation", "recurrent_activation", "use_bias", "dropout",
                    "recurrent_dropout", "reset_after", "unit_forget_bias", "kernel_initializer",
                    "recurrent_initializer", "bias_initializer"):
            return getattr(self.cell, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class SimpleRNN(_CellLayer):
    """Keras' `SimpleRNN`: `RNN(SimpleRNNCell(...))`, `h_t = f(x_t W + h_{t-1} U + b)`.

    Arguments: those of `SimpleRNNCell` (`units`, `activation='tanh'`, ...)
    and of `RNN` (`return_sequences`, `return_state`, `go_backwards`,
    `stateful`, `unroll`, `zero_output_for_mask`), plus `input_shape`
    (`(T, D)`, to build now), `dtype`, `rngs`, `name`.
    """

    cell_class = SimpleRNNCell

    def __init__(self, units, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", *, dropout=0.0, recurrent_dropout=0.0,
                 return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False,
                 name=None, **kwargs):
        cell = SimpleRNNCell(units, activation=activation, use_bias=use_bias,
                             kernel_initializer=kernel_initializer,
                             recurrent_initializer=recurrent_initializer,
                             bias_initializer=bias_initializer, dropout=dropout,
                             recurrent_dropout=recurrent_dropout, **kwargs)
        super().__init__(cell, return_sequences, return_state, go_backwards, stateful,
                         unroll, zero_output_for_mask, name=name)


class GRU(_CellLayer):
    """Keras' `GRU`: `RNN(GRUCell(...))`; see `GRUCell` for the equations.

    Arguments: those of `GRUCell` (`units`, `activation='tanh'`,
    `recurrent_activation='sigmoid'`, `reset_after=True`, ...) and of `RNN`.
    """

    cell_class = GRUCell

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", *,
                 dropout=0.0, recurrent_dropout=0.0, reset_after=True,
                 return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False,
                 name=None, **kwargs):
        cell = GRUCell(units, activation=activation, recurrent_activation=recurrent_activation,
                       use_bias=use_bias, kernel_initializer=kernel_initializer,
                       recurrent_initializer=recurrent_initializer,
                       bias_initializer=bias_initializer, dropout=dropout,
                       recurrent_dropout=recurrent_dropout, reset_after=reset_after, **kwargs)
        super().__init__(cell, return_sequences, return_state, go_backwards, stateful,
                         unroll, zero_output_for_mask, name=name)


class LSTM(_CellLayer):
    """Keras' `LSTM`: `RNN(LSTMCell(...))`; see `LSTMCell` for the equations.

    Arguments: those of `LSTMCell` (`units`, `activation='tanh'`,
    `recurrent_activation='sigmoid'`, `unit_forget_bias=True`, ...) and of
    `RNN`. With `return_state=True` a call returns `(output, h, c)`.
    """

    cell_class = LSTMCell

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, *, dropout=0.0, recurrent_dropout=0.0,
                 return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False,
                 name=None, **kwargs):
        cell = LSTMCell(units, activation=activation, recurrent_activation=recurrent_activation,
                        use_bias=use_bias, kernel_initializer=kernel_initializer,
                        recurrent_initializer=recurrent_initializer,
                        bias_initializer=bias_initializer, unit_forget_bias=unit_forget_bias,
                        dropout=dropout, recurrent_dropout=recurrent_dropout, **kwargs)
        super().__init__(cell, return_sequences, return_state, go_backwards, stateful,
                         unroll, zero_output_for_mask, name=name)


def clone_layer(layer: RNN, rngs: nnx.Rngs | None, name: str | None = None,
                **overrides) -> RNN:
    """A new layer with `layer`'s configuration and fresh weights from `rngs`
    (named `name`, else Keras' next automatic name)."""
    flags = {**RNN.get_config(layer), **overrides}
    if isinstance(layer, _CellLayer):  # SimpleRNN, GRU, LSTM take their cell's arguments
        new = type(layer)(**layer.cell.constructor_args(), **flags, dtype=layer.dtype, rngs=rngs,
                          name=name)
    else:
        new = RNN(layer.cell.clone(rngs), **flags, name=name)
    if layer.built and layer.input_dim is not None:
        new.build((None, None, layer.input_dim))
    return new


MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional(Layer):
    """Keras' `Bidirectional` wrapper: a forward and a backward recurrent layer.

    The backward layer (by default a copy of `layer`'s configuration with
    fresh weights and `go_backwards` flipped) reads the sequence from the end;
    with `return_sequences` its outputs are flipped back to forward time
    before merging, so step `t` of the result sees the whole sequence.
    As in Keras, both layers output zeros at masked steps when returning
    sequences (`zero_output_for_mask = return_sequences`).

    Args:
      layer: an `RNN` layer (its weights become the forward direction).
      merge_mode: `'concat'` (default, `(..., 2U)`), `'sum'`, `'mul'`,
        `'ave'`, or None (returns the pair `(forward, backward)`).
      backward_layer: an explicit backward `RNN` layer (it must have the
        opposite `go_backwards` and the same `return_sequences`,
        `return_state` and `stateful`).
      rngs: `nnx.Rngs` for the backward copy's weights (default: the ones
        `layer` was given if it is not built yet, else the process-wide seed
        stream). The copy is named `backward_<layer's name>`, as in Keras.

    Call: as `RNN`; `initial_state` is the forward states followed by the
    backward states; with `return_state` the result is
    `(output, *forward_states, *backward_states)`.
    """

    def __init__(self, layer: RNN, merge_mode: str | None = "concat", *,
                 backward_layer: RNN | None = None, rngs: nnx.Rngs | None = None,
                 name: str | None = None):
        if not isinstance(layer, RNN):
            raise ValueError(
                f"Bidirectional wraps a recurrent layer (RNN, SimpleRNN, GRU, LSTM); got "
                f"{type(layer).__name__}"
            )
        if merge_mode not in MERGE_MODES:
            raise ValueError(
                f"Bidirectional: invalid merge_mode {merge_mode!r}; expected one of {MERGE_MODES}"
            )
        super().__init__(dtype=layer.dtype, rngs=None, name=name)
        if backward_layer is None:
            # the wrapped layer's key stream if it has one left, else the seed stream
            key_source = (rngs if rngs is not None else layer.cell.weight_rngs
                          if layer.cell.weight_rngs is not None else next_rngs())
            backward_layer = clone_layer(layer, key_source, name=f"backward_{layer.name}",
                                         go_backwards=not layer.go_backwards)
        elif not isinstance(backward_layer, RNN):
            raise ValueError(
                f"Bidirectional: backward_layer must be a recurrent layer, got "
                f"{type(backward_layer).__name__}"
            )
        if layer.go_backwards == backward_layer.go_backwards:
            raise ValueError(
                "Bidirectional: the forward and backward layers must have different "
                f"go_backwards, both have {layer.go_backwards}"
            )
        for attr in ("stateful", "return_sequences", "return_state"):
            if getattr(layer, attr) != getattr(backward_layer, attr):
                raise ValueError(
                    f"Bidirectional: forward and backward layers differ in {attr}: "
                    f"{getattr(layer, attr)} vs {getattr(backward_layer, attr)}"
                )
        for sub in (layer, backward_layer):
            sub.zero_output_for_mask = sub.return_sequences
        self.forward_layer = layer
        self.backward_layer = backward_layer
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = layer.stateful
        self.built = layer.built and backward_layer.built

    @property
    def input_dim(self):
        return self.forward_layer.input_dim

    @property
    def units(self) -> int:
        return self.forward_layer.units

    @property
    def output_size(self) -> int:
        u = self.forward_layer.units
        return 2 * u if self.merge_mode == "concat" else u

    @property
    def weights(self):
        return self.forward_layer.weights + self.backward_layer.weights

    def weight_labels(self):
        return ([f"forward.{n}" for n in self.forward_layer.weight_labels()]
                + [f"backward.{n}" for n in self.backward_layer.weight_labels()])

    def build(self, input_shape):
        self.forward_layer.maybe_build(input_shape)
        self.backward_layer.maybe_build(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        b, t = input_shape[0], input_shape[1]
        return (b, t, self.output_size) if self.return_sequences else (b, self.output_size)

    def compute_mask(self, inputs, mask=None):
        """The output sequence keeps the input's mask; a last output has none."""
        return mask if self.return_sequences else None

    def reset_state(self):
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    def get_config(self):
        return {"merge_mode": self.merge_mode}

    def __call__(self, inputs, initial_state=None, mask=None, training: bool = False, key=None):
        x = self.read_inputs(inputs, 3, "(batch, time, features)")
        fwd_state = bwd_state = None
        if initial_state is not None:
            initial_state = list(initial_state)
            half = len(initial_state) // 2
            if len(initial_state) % 2:
                raise ValueError(
                    "Bidirectional: initial_state must list the forward states then the "
                    f"backward states (an even number), got {len(initial_state)}"
                )
            fwd_state, bwd_state = initial_state[:half], initial_state[half:]
        k_f = k_b = None
        if key is not None:
            k_f, k_b = jax.random.split(key)
        y = self.forward_layer(x, initial_state=fwd_state, mask=mask, training=training, key=k_f)
        y_rev = self.backward_layer(x, initial_state=bwd_state, mask=mask, training=training,
                                    key=k_b)
        states = ()
        if self.return_state:
            states = tuple(y[1:]) + tuple(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = jnp.flip(y_rev, axis=1)
        if self.merge_mode == "concat":
            output = jnp.concatenate([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            output = y + y_rev
        elif self.merge_mode == "ave":
            output = (y + y_rev) / 2
        elif self.merge_mode == "mul":
            output = y * y_rev
        else:
            output = (y, y_rev)
        if self.return_state:
            if self.merge_mode is None:
                return output + states
            return (output,) + states
        return output
