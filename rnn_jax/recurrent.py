"""Recurrent layers: `RNN` (one `jax.lax.scan` over time), `SimpleRNN`, `GRU`,
`LSTM` and `Bidirectional`, with Keras' arguments and semantics.

How a call runs (inputs `x` `(B, T, D)`):

1. the weights are read once into plain arrays (`cell.params()`);
2. the input projection `x_t @ kernel + b_x` (`cell.project`) is computed
   either for all `T` steps in one matmul before the loop (on GPU/TPU), or
   one step at a time inside it (on CPU, where it measured faster: XLA's CPU
   loop reading each step's `(B, G*U)` slice of the precomputed `(T, B, G*U)`
   array cost more than the small per-step matmul; forward pass of LSTM(64),
   batch 64, 100 steps: 22 -> 8 ms; Reuters LSTM epoch: 301 -> 241 ms; see
   `scan_cell(project_in_loop=)`);
3. `jax.lax.scan` runs the recurrent part (`cell.step`) over time, with
   Keras' masking rule: at a step where `mask[b, t]` is False the states of
   sequence `b` are kept and its output repeats the previous output (zeros
   with `zero_output_for_mask=True`, and zeros before the first kept step).
4. under `jax.grad`, JAX transposes that scan; on CPU an unmasked LSTM
   without active dropout (Keras' default activations) is instead
   differentiated by `lstm_scan`'s hand-written backward pass, which keeps
   half as many arrays a step and forms the weight gradients after the loop
   (Reuters LSTM epoch: 97 -> 85 ms; see `scan_cell(lstm_vjp=)`), and so is
   a SimpleRNN of more than one unit, by `simple_rnn_scan`'s.

`go_backwards=True` reads the sequence from the end and, as in Keras, returns
the output sequence in that reversed order. The layers are plain NNX modules:
use `nnx.split` / `nnx.merge` to `jax.jit` or `jax.vmap` them over parameter
sets.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_jax import activations
from rnn_jax.base import Layer, _Setting, _Switch, describe, is_traced
from rnn_jax.cells import (GRUCell, LSTMCell, LSTMState, RNNCellBase, SimpleRNNCell,
                           StackedRNNCells)


class RNNState(nnx.Variable):
    """Non-trainable variable holding a stateful layer's last states."""


def _check_states(states, cell, batch_size, what):
    """Raises if any state is not `(batch_size, units)` of its cell."""
    cells = cell.cells if isinstance(cell, StackedRNNCells) else [cell]
    per_cell = states if isinstance(cell, StackedRNNCells) else (states,)
    for c, st in zip(cells, per_cell):
        for s in st:
            if s.shape != (batch_size, c.units):
                raise ValueError(
                    f"{what}: expected a state of shape ({batch_size}, {c.units}), "
                    f"got {tuple(s.shape)}"
                )


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
        if not isinstance(cell, (RNNCellBase, StackedRNNCells)):
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

    def _weight_labels(self):
        return self.cell._weight_labels()

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

    def reset_state(self) -> None:
        """Zeroes the kept states of a stateful layer (Keras' `reset_state`)."""
        if self.states is not None:
            self.states.set_value(jax.tree.map(jnp.zeros_like, self.states.get_value()))

    reset_states = reset_state

    # -- the computation --------------------------------------------------------

    def __call__(self, inputs, initial_state=None, mask=None, training: bool = False, key=None):
        x = self.cast_inputs(inputs)
        name = describe(self)
        if x.ndim != 3:
            raise ValueError(
                f"{name} expects inputs of shape (batch, time, features), got shape {x.shape}"
            )
        batch, steps, features = x.shape
        if steps == 0:
            raise ValueError(f"{name}: inputs have no time steps (shape {x.shape})")
        self.maybe_build(x.shape, traced=is_traced(x))
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
            states = self.cell._as_states(initial_state)
            _check_states(states, self.cell, batch, f"{name} initial_state")
        elif self.stateful:
            states = self.states.get_value()
            _check_states(states, self.cell, batch,
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


def time_major(z, mask=None, go_backwards=False):
    """The scan's inputs: `z` `(B, T, F)` -> `(T, B, F)` and `mask` `(B, T)` ->
    `(T, B, 1)` (or None), both in processing order (reversed with `go_backwards`)."""
    z_TxB = jnp.swapaxes(z, 0, 1)
    mask_TxBx1 = None if mask is None else jnp.swapaxes(mask, 0, 1)[:, :, None]
    if go_backwards:
        z_TxB = z_TxB[::-1]
        mask_TxBx1 = None if mask_TxBx1 is None else mask_TxBx1[::-1]
    return z_TxB, mask_TxBx1


def keep_where(m_t, new, old):
    """Keras' masking of states: `new` where `m_t` `(B, 1)` is True, else `old`
    (any state structure)."""
    return jax.tree.map(lambda n, o: jnp.where(m_t, n, o), new, old)


def scan_cell(cell, params, x, states, masks=None, *, mask=None, go_backwards=False,
              unroll=False, zero_output_for_mask=False, return_sequences=False,
              project_in_loop=None, lstm_vjp=None):
    """The whole recurrence as one `jax.lax.scan`; a pure function of arrays.

    Args:
      cell: the cell (only its static configuration and pure methods are used).
      params: `cell.params()`.
      x: inputs `(B, T, D)`.
      states: initial states (the cell's structure, each `(B, U)`).
      masks: dropout masks from `cell.dropout_masks`, or None.
      mask: boolean `(B, T)` or None.
      project_in_loop: compute the input projection `x_t W + b_x` inside the
        loop, one step at a time (True), or for all steps in one matmul before
        it (False). Default: inside on CPU, before on other backends (see the
        module docstring).
      lstm_vjp: differentiate an LSTM through `lstm_scan`'s hand-written
        backward pass, and a SimpleRNN through `simple_rnn_scan`'s (True), or
        either through JAX's transpose of the scan (False). Used only where
        it applies (`lstm_vjp_applies`: an `LSTMCell` with Keras' default
        activations; `simple_rnn_vjp_applies`: a `SimpleRNNCell` of more than
        one unit with a `tanh`, linear or `relu` activation; both without a
        mask or active dropout); the forward values are the same either way. Default: on CPU, where it measured
        faster, unless `jax_lstm_gradients()` is on; elsewhere it is
        unmeasured, so off.

    Returns:
      `(final_states, last_output (B, U), outputs (B, T, U) or None)`.
    """
    if project_in_loop is None:
        project_in_loop = jax.default_backend() == "cpu"
    if lstm_vjp is None:
        lstm_vjp = jax.default_backend() == "cpu" and not _JAX_LSTM_GRADIENTS.value
    if lstm_vjp and mask is None and masks is None and lstm_vjp_applies(cell):
        return lstm_scan(cell, params, x, states, go_backwards=go_backwards, unroll=unroll,
                         return_sequences=return_sequences, project_in_loop=project_in_loop)
    if lstm_vjp and mask is None and masks is None and simple_rnn_vjp_applies(cell):
        return simple_rnn_scan(cell, params, x, states, go_backwards=go_backwards,
                               unroll=unroll, return_sequences=return_sequences,
                               project_in_loop=project_in_loop)
    # z_t = x_t W + b_x inside the loop from x, or (B, T, G*U) in one matmul before it
    z_TxB, mask_TxBx1 = time_major(x if project_in_loop else cell.project(params, x, masks),
                                   mask, go_backwards)
    unroll_arg = _unroll_arg(unroll, x.shape[1])
    advance = _advance(cell, params, masks, project_in_loop)

    if mask is None and x.shape[1] > 0 and (
            return_sequences or cell.output_from_states(states) is not None):
        # Without a mask the last output is the last step's (the stacked outputs'
        # last row, or read from the final states), so the loop carries the
        # states alone: one (B, U) buffer less a step (LSTM, batch 1: 0.256 ->
        # 0.218 ms a forward call).
        final_states, outs_TxB, _ = _scan_states(advance, z_TxB, states, unroll_arg=unroll_arg,
                                                 return_sequences=return_sequences)
        last_output = (outs_TxB[-1] if return_sequences
                       else cell.output_from_states(final_states))
    else:
        # A masked step keeps the states and repeats the previous output (or
        # zeros), so the output is carried too.
        zeros_BxU = jnp.zeros((x.shape[0], cell.output_size), x.dtype)

        def body(carry, inp):
            st, prev_out = carry
            z_t, m_t = inp
            out, new_st, _ = advance(st, z_t)
            if m_t is not None:
                out = jnp.where(m_t, out, zeros_BxU if zero_output_for_mask else prev_out)
                new_st = keep_where(m_t, new_st, st)
            return (new_st, out), (out if return_sequences else None)

        (final_states, last_output), outs_TxB = jax.lax.scan(
            body, (states, zeros_BxU), (z_TxB, mask_TxBx1), unroll=unroll_arg)
    outputs = None if outs_TxB is None else jnp.swapaxes(outs_TxB, 0, 1)
    return final_states, last_output, outputs


_JAX_LSTM_GRADIENTS = _Switch()  # set by jax_lstm_gradients()



class jax_lstm_gradients(_Setting):
    """Differentiates LSTM and SimpleRNN layers by JAX's own transpose of the
    scan instead of the hand-written backward passes of `lstm_scan` and
    `simple_rnn_scan` (default: off, so on CPU the hand-written ones run
    where they apply).

        rnn_jax.jax_lstm_gradients()        # from now on
        with rnn_jax.jax_lstm_gradients():  # inside the block only
            jac = jax.jacfwd(f)(x)

    Both are `jax.custom_vjp`s, which JAX can differentiate in reverse mode
    only (`grad`, `vjp`, `jacrev`); forward mode (`jvp`, `jacfwd`,
    `hessian`, `linearize`) through an LSTM or SimpleRNN layer on CPU needs
    this switch, or JAX refuses it ("can't apply forward-mode autodiff (jvp)
    to a custom_vjp function"). Values and gradients are the same either way
    to float rounding. Like `check_inputs`, the switch is process-wide, read
    when a layer is traced, and part of `jax.jit`'s cache key.

    Args:
      enabled: True for JAX's transpose, False for the hand-written pass.
    """

    _switch = _JAX_LSTM_GRADIENTS


def _unroll_arg(unroll, steps):
    """`jax.lax.scan`'s `unroll` from the layer's: True -> all steps, False -> 1."""
    return steps if unroll is True else (1 if unroll is False else unroll)


def _advance(cell, params, masks, project_in_loop):
    """One step from the scan's input `z_t` (`x_t` when `project_in_loop`):
    `(states, z_t) -> (output, new_states, gates)`."""
    def advance(st, z_t):
        if project_in_loop:
            z_t = cell.project(params, z_t, masks)
        return cell.step_with_gates(params, z_t, st, masks)

    return advance


def _scan_states(advance, z_TxB, states, *, unroll_arg, return_sequences, keep=None):
    """The unmasked scan, carrying the states alone.

    Returns `(final_states, outputs (T, B, U) or None, kept or None)`, where
    `kept` stacks `keep(states_in, gates)` of every step when `keep` is given.
    """
    def body(st, z_t):
        out, new_st, gates = advance(st, z_t)
        return new_st, (out if return_sequences else None,
                        None if keep is None else keep(st, gates))

    final_states, (outs_TxB, kept) = jax.lax.scan(body, states, z_TxB, unroll=unroll_arg)
    return final_states, outs_TxB, kept


def _lstm_residuals(states, gates):
    """What `lstm_scan`'s backward pass reads of a step: `i, f, g, o, c_{t-1}, h_{t-1}`."""
    return gates["i"], gates["f"], gates["g"], gates["o"], states.c, states.h


def lstm_vjp_applies(cell) -> bool:
    """Whether `lstm_scan`'s backward pass is this cell's: an `LSTMCell`
    (not a subclass) with `activation='tanh'` and
    `recurrent_activation='sigmoid'`, whose derivatives it writes out."""
    return (type(cell) is LSTMCell and cell.activation is activations.get("tanh")
            and cell.recurrent_activation is activations.get("sigmoid"))


def _weight_gradients(params, x_TxB, hprev_TxB, dz_TxB):
    r"""The gradients of a cell's weights and inputs from the pre-activation
    cotangents :math:`\delta z_t` `(T, B, G*U)` of every step, each one matmul
    over all steps and the batch: :math:`\bar W = \sum_t x_t^\top \delta z_t`,
    :math:`\bar U = \sum_t h_{t-1}^\top \delta z_t`,
    :math:`\bar b = \sum_{t,b} \delta z_t`, :math:`\bar x_t = \delta z_t W^\top`.

    Returns `(d_params, dx (T, B, D))`.
    """
    dz_N = dz_TxB.reshape(-1, dz_TxB.shape[-1])  # (T*B, G*U)

    def summed_outer(a_TxBxF):  # contract the (T*B) axis
        return jax.lax.dot_general(a_TxBxF.reshape(dz_N.shape[0], -1), dz_N,
                                   (((0,), (0,)), ((), ())))

    d_params = {"kernel": summed_outer(x_TxB), "recurrent_kernel": summed_outer(hprev_TxB)}
    if "bias" in params:
        # A matvec, not `sum(axis=0)`: XLA's CPU backend turns that sum
        # into a windowed reduction that took 10 ms (40x one seed's) for
        # 5 seeds of a Reuters batch under vmap.
        d_params["bias"] = jnp.ones((dz_N.shape[0],), dz_N.dtype) @ dz_N
    dx_TxB = (dz_N @ params["kernel"].T).reshape(x_TxB.shape)
    return d_params, dx_TxB


# The derivative f'(a) of a SimpleRNN activation, written in its output h = f(a).
_DERIVATIVE_FROM_OUTPUT = {
    "tanh": lambda h: 1 - h * h,
    "linear": None,  # f' = 1
    "relu": lambda h: (h > 0).astype(h.dtype),
}


def simple_rnn_vjp_applies(cell) -> bool:
    """Whether `simple_rnn_scan`'s backward pass is this cell's: a
    `SimpleRNNCell` (not a subclass) whose activation is `tanh`, linear or
    `relu` (derivatives written in the outputs) and with more than one unit
    (for one unit JAX's transpose measured faster: see `simple_rnn_scan`)."""
    return type(cell) is SimpleRNNCell and cell.units > 1 and any(
        cell.activation is activations.get(name) for name in _DERIVATIVE_FROM_OUTPUT)


def _activation_name(cell) -> str:
    return next(n for n in _DERIVATIVE_FROM_OUTPUT if cell.activation is activations.get(n))


def simple_rnn_scan(cell, params, x, states, *, go_backwards=False, unroll=False,
                    return_sequences=False, project_in_loop=True):
    r"""An unmasked SimpleRNN without dropout as one `jax.lax.scan`, with a
    hand-written backward pass (as `lstm_scan`); the same values as
    `scan_cell`'s scan.

    The forward loop keeps, per step, :math:`h_{t-1}` and :math:`h_t`, each
    `(T, B, U)`. The backward loop carries :math:`\delta h` back from the
    last step, adding the outputs' cotangent :math:`\bar y_t`:

    .. math::

        \delta h \mathrel{+}= \bar y_t, \quad
        \delta a_t = \delta h \, f'(a_t), \quad
        \delta h_{t-1} = \delta a_t U^\top

    with :math:`f'` written in :math:`h_t = f(a_t)` (`tanh`: :math:`1 - h_t^2`),
    and stacks :math:`\delta a_t`; the weight gradients are then one matmul
    each over all steps and the batch (`_weight_gradients`).

    Why: JAX's transpose of the scan accumulates :math:`\bar U` inside the
    backward loop, a `(B, U)^\top (B, U)` dot with a transposed operand and
    an add every step; under `vmap` over 5 seeds that dot took 128 us a step
    (14 us for one seed) for notebook 004's SimpleRNN(50).

    Args: as `lstm_scan`, for a `SimpleRNNCell` for which `simple_rnn_vjp_applies`.

    Returns:
      `(final_states, last_output (B, U), outputs (B, T, U) or None)`.
    """
    x_TxB, _ = time_major(x, None, go_backwards)
    unroll_arg = _unroll_arg(unroll, x.shape[1])
    derivative = _DERIVATIVE_FROM_OUTPUT[_activation_name(cell)]

    def forward(params, x_TxB, states, keep):
        """`((final_states, outputs (T, B, U)), kept h_{t-1} or None)`."""
        z_TxB = x_TxB if project_in_loop else cell.project(params, x_TxB)
        final, outs, kept = _scan_states(
            _advance(cell, params, None, project_in_loop), z_TxB, states,
            unroll_arg=unroll_arg, return_sequences=return_sequences or keep,
            keep=(lambda st, gates: st[0]) if keep else None)
        return (final, outs), kept

    @jax.custom_vjp
    def run(params, x_TxB, states):
        return forward(params, x_TxB, states, keep=False)[0]

    def run_fwd(params, x_TxB, states):
        (final, outs), hprev_s = forward(params, x_TxB, states, keep=True)
        return (final, outs if return_sequences else None), (params, x_TxB, hprev_s, outs)

    def run_bwd(saved, cotangents):
        params, x_TxB, hprev_s, h_s = saved
        (d_final_h,), d_outs = cotangents
        rk_T = params["recurrent_kernel"].T

        def body(dh, step):
            h, dy = step
            if dy is not None:
                dh = dh + dy
            da = dh if derivative is None else dh * derivative(h)
            return da @ rk_T, da

        dh0, da_TxB = jax.lax.scan(body, d_final_h, (h_s, d_outs), reverse=True,
                                   unroll=unroll_arg)
        d_params, dx_TxB = _weight_gradients(params, x_TxB, hprev_s, da_TxB)
        return d_params, dx_TxB, (dh0,)

    run.defvjp(run_fwd, run_bwd)
    final_states, outs_TxB = run(params, x_TxB, tuple(states))
    outputs = None if outs_TxB is None else jnp.swapaxes(outs_TxB, 0, 1)
    return final_states, final_states[0], outputs


def lstm_scan(cell, params, x, states, *, go_backwards=False, unroll=False,
              return_sequences=False, project_in_loop=True):
    r"""An unmasked LSTM without dropout as one `jax.lax.scan`, with a
    hand-written backward pass; the same values as `scan_cell`'s scan.

    The forward loop runs `cell.step_with_gates` (the cell's own math) and
    keeps, per step, the gates :math:`i_t, f_t, g_t, o_t` and the incoming
    states :math:`c_{t-1}, h_{t-1}`, each `(T, B, U)`. The backward loop
    carries :math:`(\delta h, \delta c)` back from the last step, adding the
    outputs' cotangent :math:`\bar y_t` (with `return_sequences`):

    .. math::

        \delta h &\mathrel{+}= \bar y_t, \quad
        c_t = f_t c_{t-1} + i_t g_t, \quad
        \delta c \mathrel{+}= \delta h \, o_t (1 - \tanh^2 c_t) \\
        \delta z_t &= [\delta c \, g_t \, i_t (1 - i_t),\;
                      \delta c \, c_{t-1} f_t (1 - f_t),\;
                      \delta c \, i_t (1 - g_t^2),\;
                      \delta h \tanh(c_t) \, o_t (1 - o_t)] \\
        \delta h_{t-1} &= \delta z_t U^\top, \quad
        \delta c_{t-1} = \delta c \, f_t

    and stacks :math:`\delta z_t` `(T, B, 4U)`. The weight gradients are then
    one matmul each over all steps and the batch,
    :math:`\bar U = \sum_t h_{t-1}^\top \delta z_t`,
    :math:`\bar W = \sum_t x_t^\top \delta z_t`,
    :math:`\bar b = \sum_{t,b} \delta z_t`, and the inputs' cotangent is
    :math:`\bar x_t = \delta z_t W^\top`; the initial states get the
    carried :math:`(\delta h, \delta c)`.

    JAX's own transpose of the scan stores twice as many `(B, U)` arrays a
    step and accumulates :math:`\bar U` and :math:`\bar W` inside the
    backward loop, one small matmul and add each per step. On CPU this one
    measured faster: a Reuters LSTM epoch (batch 50, 49 steps, 50 units)
    97 -> 85 ms. Gradients agree with JAX's to float rounding (their sums
    run in another order).

    Args:
      cell: an `LSTMCell` for which `lstm_vjp_applies`.
      params: `cell.params()`.
      x: inputs `(B, T, D)`.
      states: initial `LSTMState(h, c)`, each `(B, U)`.
      go_backwards, unroll, return_sequences, project_in_loop: as `scan_cell`.

    Returns:
      `(final_states, last_output (B, U), outputs (B, T, U) or None)`.
    """
    x_TxB, _ = time_major(x, None, go_backwards)
    unroll_arg = _unroll_arg(unroll, x.shape[1])

    def forward(params, x_TxB, states, keep):
        """`((final_states, outputs (T, B, U) or None), residuals or None)`."""
        z_TxB = x_TxB if project_in_loop else cell.project(params, x_TxB)
        final, outs, kept = _scan_states(
            _advance(cell, params, None, project_in_loop), z_TxB, states,
            unroll_arg=unroll_arg, return_sequences=return_sequences,
            keep=_lstm_residuals if keep else None)
        return (final, outs), kept

    @jax.custom_vjp
    def run(params, x_TxB, states):
        return forward(params, x_TxB, states, keep=False)[0]

    def run_fwd(params, x_TxB, states):
        out, kept = forward(params, x_TxB, states, keep=True)
        return out, (params, x_TxB, kept)

    def run_bwd(saved, cotangents):
        params, x_TxB, (i_s, f_s, g_s, o_s, cprev_s, hprev_s) = saved
        d_final, d_outs = cotangents
        rk_T = params["recurrent_kernel"].T

        def body(carry, step):
            dh, dc = carry
            i, f, g, o, c_prev, dy = step
            if dy is not None:
                dh = dh + dy
            tc = jnp.tanh(f * c_prev + i * g)
            dc = dc + dh * o * (1 - tc * tc)
            dz = jnp.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                                  dc * i * (1 - g * g), dh * tc * o * (1 - o)], axis=-1)
            return (dz @ rk_T, dc * f), dz

        (dh0, dc0), dz_TxB = jax.lax.scan(
            body, (d_final.h, d_final.c), (i_s, f_s, g_s, o_s, cprev_s, d_outs),
            reverse=True, unroll=unroll_arg)
        d_params, dx_TxB = _weight_gradients(params, x_TxB, hprev_s, dz_TxB)
        return d_params, dx_TxB, LSTMState(dh0, dc0)

    run.defvjp(run_fwd, run_bwd)
    final_states, outs_TxB = run(params, x_TxB, LSTMState(*states))
    outputs = None if outs_TxB is None else jnp.swapaxes(outs_TxB, 0, 1)
    return final_states, final_states.h, outputs


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
                 bias_initializer="zeros", dropout=0.0, recurrent_dropout=0.0,
                 return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False, *,
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
                 recurrent_initializer="orthogonal", bias_initializer="zeros",
                 dropout=0.0, recurrent_dropout=0.0, reset_after=True,
                 return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False, *,
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
                 unit_forget_bias=True, dropout=0.0, recurrent_dropout=0.0,
                 return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False, *,
                 name=None, **kwargs):
        cell = LSTMCell(units, activation=activation, recurrent_activation=recurrent_activation,
                        use_bias=use_bias, kernel_initializer=kernel_initializer,
                        recurrent_initializer=recurrent_initializer,
                        bias_initializer=bias_initializer, unit_forget_bias=unit_forget_bias,
                        dropout=dropout, recurrent_dropout=recurrent_dropout, **kwargs)
        super().__init__(cell, return_sequences, return_state, go_backwards, stateful,
                         unroll, zero_output_for_mask, name=name)


def clone_layer(layer: RNN, rngs: nnx.Rngs | None, **overrides) -> RNN:
    """A new layer with `layer`'s configuration and fresh weights from `rngs`."""
    flags = {**RNN.get_config(layer), **overrides}
    if isinstance(layer, _CellLayer):
        new = type(layer)(**layer.cell.constructor_args(), **flags, dtype=layer.dtype, rngs=rngs)
    else:
        stacked = isinstance(layer.cell, StackedRNNCells)
        cells = [type(c)(**c.constructor_args(), dtype=c.dtype, rngs=rngs)
                 for c in (layer.cell.cells if stacked else [layer.cell])]
        new = RNN(StackedRNNCells(cells) if stacked else cells[0], **flags)
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
        `layer` was given).

    Call: as `RNN`; `initial_state` is the forward states followed by the
    backward states; with `return_state` the result is
    `(output, *forward_states, *backward_states)`.
    """

    def __init__(self, layer: RNN, merge_mode: str | None = "concat", backward_layer: RNN | None = None,
                 *, rngs: nnx.Rngs | None = None, name: str | None = None):
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
            key_source = rngs
            if key_source is None:
                first = layer.cell.cells[0] if isinstance(layer.cell, StackedRNNCells) else layer.cell
                key_source = first._rngs
            if key_source is None:
                raise ValueError(
                    "Bidirectional needs rngs=nnx.Rngs(seed) to draw the backward layer's "
                    "weights (the wrapped layer has no key stream left)"
                )
            backward_layer = clone_layer(layer, key_source, go_backwards=not layer.go_backwards)
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

    def _weight_labels(self):
        return ([f"forward.{n}" for n in self.forward_layer._weight_labels()]
                + [f"backward.{n}" for n in self.backward_layer._weight_labels()])

    def build(self, input_shape):
        self.forward_layer.maybe_build(input_shape)
        self.backward_layer.maybe_build(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        b, t = input_shape[0], input_shape[1]
        return (b, t, self.output_size) if self.return_sequences else (b, self.output_size)

    def reset_state(self):
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    def get_config(self):
        return {"merge_mode": self.merge_mode}

    def __call__(self, inputs, initial_state=None, mask=None, training: bool = False, key=None):
        x = self.cast_inputs(inputs)
        if x.ndim != 3:
            raise ValueError(
                f"Bidirectional expects inputs of shape (batch, time, features), got {x.shape}"
            )
        self.maybe_build(x.shape, traced=is_traced(x))
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
