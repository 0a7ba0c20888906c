r"""The recurrence as pure functions of arrays: one `jax.lax.scan` over time.

`scan_cell(cell, params, x, states, ...)` runs any cell (its `project` and
`step_with_gates`) over `(B, T, D)` inputs with Keras' masking rule and
returns the final states, the last output and, when asked, every step's
output; with `record=True` it also returns every step's states and gates
(what `rnn_jax.readout.trace_states` shows). The recurrent layers
(`rnn_jax.recurrent`) call it on their cell's weights.

How a call runs (inputs `x` `(B, T, D)`):

1. the input projection `x_t W + b_x` (`cell.project`) is computed either
   for all `T` steps in one matmul before the loop (GPU/TPU), or one step
   at a time inside it (CPU, where it measured faster; `project_in_loop`);
2. `jax.lax.scan` runs the recurrent part (`cell.step_with_gates`) over
   time. At a step where `mask[b, t]` is False the states of sequence `b`
   are kept and its output repeats the previous output (zeros with
   `zero_output_for_mask=True`, and zeros before the first kept step);
3. under `jax.grad`, JAX transposes that scan, except on CPU for an
   unmasked LSTM or SimpleRNN without active dropout (Keras' default
   activations; see `lstm_vjp_applies`, `simple_rnn_vjp_applies`): those
   are differentiated by the hand-written backward passes of `lstm_scan`
   and `simple_rnn_scan`, which keep fewer arrays a step and form the
   weight gradients after the loop (measured figures: docs/performance.md).
   `jax_lstm_gradients()` switches them off, for forward-mode autodiff.

`go_backwards=True` reads the sequence from the end and, as in Keras, returns
the outputs in that reversed (processing) order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax import activations
from rnn_jax.base import Setting, Switch
from rnn_jax.cells import LSTMCell, LSTMState, SimpleRNNCell


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
              project_in_loop=None, lstm_vjp=None, record=False):
    """The whole recurrence as one `jax.lax.scan`; a pure function of arrays.

    Keras' masking rule lives here, once: at a step where `mask[b, t]` is
    False the states of sequence `b` are kept and its output repeats the
    previous one (zeros with `zero_output_for_mask`, and before the first
    kept step); every cell of a stack follows it with its own output.

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
        mask or active dropout); the forward values are the same either
        way. Default: on CPU, where it measured faster, unless
        `jax_lstm_gradients()` is on; elsewhere it is unmeasured, so off.
      record: also record every step (for `rnn_jax.readout.trace_states`):
        then the third result is `(outputs, states, gates)`, each a tuple
        with one entry per cell of `cell.cells`: outputs `(B, T, U_k)` under
        the mask rule, the states after each step (the cell's state
        structure, leaves `(B, T, U_k)`), the gates a dict of `(B, T, U_k)`;
        time in processing order (reversed with `go_backwards`).

    Returns:
      `(final_states, last_output (B, U), outputs (B, T, U) or None)`, or
      with `record`, `(final_states, last_output, (outputs, states, gates))`.
    """
    if project_in_loop is None:
        project_in_loop = jax.default_backend() == "cpu"
    if lstm_vjp is None:
        lstm_vjp = jax.default_backend() == "cpu" and not _JAX_LSTM_GRADIENTS.value
    hand_written = lstm_vjp and mask is None and masks is None and not record
    if hand_written and lstm_vjp_applies(cell):
        return lstm_scan(cell, params, x, states, go_backwards=go_backwards, unroll=unroll,
                         return_sequences=return_sequences, project_in_loop=project_in_loop)
    if hand_written and simple_rnn_vjp_applies(cell):
        return simple_rnn_scan(cell, params, x, states, go_backwards=go_backwards,
                               unroll=unroll, return_sequences=return_sequences,
                               project_in_loop=project_in_loop)
    # z_t = x_t W + b_x inside the loop from x, or (B, T, G*U) in one matmul before it
    z_TxB, mask_TxBx1 = time_major(x if project_in_loop else cell.project(params, x, masks),
                                   mask, go_backwards)
    unroll_arg = _unroll_arg(unroll, x.shape[1])
    advance = _advance(cell, params, masks, project_in_loop)

    if not record and mask is None and x.shape[1] > 0 and (
            return_sequences or cell.output_from_states(states) is not None):
        # Without a mask the last output is the last step's (the stacked outputs'
        # last row, or read from the final states), so the loop carries the
        # states alone: one (B, U) buffer less a step.
        final_states, outs_TxB, _ = _scan_states(advance, z_TxB, states, unroll_arg=unroll_arg,
                                                 return_sequences=return_sequences)
        last_output = (outs_TxB[-1] if return_sequences
                       else cell.output_from_states(final_states))
    else:
        # A masked step keeps the states and repeats the previous output (or
        # zeros), so the outputs are carried too: the layer's, or with
        # `record` every cell's (the last one's is the layer's).
        outputs_of = cell.cell_outputs if record else (lambda new_st, out: (out,))
        zeros = tuple(jnp.zeros((x.shape[0], c.output_size), x.dtype)
                      for c in (cell.cells if record else (cell,)))

        def body(carry, inp):
            st, prev_outs = carry
            z_t, m_t = inp
            out, new_st, gates = advance(st, z_t)
            outs = outputs_of(new_st, out)
            if m_t is not None:
                outs = tuple(jnp.where(m_t, o, zero if zero_output_for_mask else prev)
                             for o, prev, zero in zip(outs, prev_outs, zeros))
                new_st = keep_where(m_t, new_st, st)
            kept = ((outs, cell.per_cell(new_st), cell.per_cell(gates)) if record
                    else outs[-1] if return_sequences else None)
            return (new_st, outs), kept

        (final_states, last_outs), outs_TxB = jax.lax.scan(
            body, (states, zeros), (z_TxB, mask_TxBx1), unroll=unroll_arg)
        last_output = last_outs[-1]
        if record:
            return final_states, last_output, jax.tree.map(
                lambda a: jnp.swapaxes(a, 0, 1), outs_TxB)
    outputs = None if outs_TxB is None else jnp.swapaxes(outs_TxB, 0, 1)
    return final_states, last_output, outputs


_JAX_LSTM_GRADIENTS = Switch()  # set by jax_lstm_gradients()



class jax_lstm_gradients(Setting):
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
        # A matvec, not `sum(axis=0)`: under vmap XLA's CPU backend turns
        # that sum into a slow windowed reduction.
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
    an add every step, slow on CPU and slower still under `vmap` over seeds
    (figures: docs/performance.md).

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
    measured faster (figures: docs/performance.md). Gradients agree with
    JAX's to float rounding (their sums run in another order).

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
