r"""Recurrent cells with Keras' names, weight layout and equations.

A cell computes one time step, `cell(inputs, states) -> (output, new_states)`,
exactly as the Keras cell of the same name. For speed inside `RNN`, each cell
splits its step into two pure functions of its weights:

- `project(params, x, masks)`: the part that does not depend on the previous
  state, `x @ kernel + b_x`, done for all time steps in one matmul before the
  scan (`x`: `(batch, time, input_dim)` or `(batch, input_dim)`);
- `step(params, z_t, states, masks)`: the recurrent part, inside the scan.

`step` is `step_with_gates` with the gates dropped: the math of a cell lives
once, in `step_with_gates(params, z_t, states, masks) -> (output, new_states,
gates)`, where `gates` is a dict of `(B, U)` arrays (SimpleRNN `{}`; GRU `z`,
`r`, `h_tilde`; LSTM `i`, `f`, `g`, `o`, `c`). The gates are intermediate
values the step needs anyway, so `step` runs the same operations as before;
`rnn_jax.readout` records them at every step.

`params = cell.params()` reads the weights once (a dict of arrays), so the scan
body touches only arrays. Dropout is Keras' variational dropout: one mask per
sequence from `dropout_masks(key, batch_size, training)`, reused at every step.

Shapes: `B` batch, `T` time, `D` input features, `U = units`, `G` gates
(SimpleRNN 1, GRU 3, LSTM 4). `kernel` is `(D, G*U)`, `recurrent_kernel`
`(U, G*U)`, `bias` `(G*U,)` (GRU with `reset_after=True`: `(2, 3U)`, row 0 for
the input, row 1 for the recurrent projection). Gates are laid side by side in
Keras' order: LSTM `i, f, c, o`; GRU `z, r, h`. The steps cut them apart
with `jnp.split`, not basic slicing: the gradient of a split is one
concatenate, where the gradients of column slices are pads summed inside the
backward scan, which XLA's CPU backend runs as one slow loop fusion.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_jax import activations, initializers
from rnn_jax.base import Layer, as_float, describe


def materialize(tree):
    """`tree` as it is, computed into buffers of its own on CPU (an XLA
    `optimization_barrier`; elsewhere the identity).

    Why: XLA's CPU backend fuses an elementwise op into each of its consumers,
    and a loop fusion that reads column blocks of a `(B, G*U)` array (a
    cell's gates) and applies `sigmoid` or `tanh` to them is compiled to
    scalar code. Computing the gate pre-activations and then their
    activations over whole arrays first keeps those loops vectorised
    (figures: docs/performance.md).
    """
    if jax.default_backend() != "cpu":
        return tree
    return jax.lax.optimization_barrier(tree)


class LSTMState(NamedTuple):
    """State of an `LSTMCell`: hidden state `h` and carry `c`, each `(B, U)`.

    A tuple, so `h, c = state` works as with Keras' `[h, c]` list.
    """

    h: jax.Array
    c: jax.Array


class DropoutMasks(NamedTuple):
    """Variational dropout masks of one cell for one batch of sequences.

    inputs: `(M, B, D)` multiplied into the inputs, `M = 1` (one mask for all
      gates) or `M = G` (one per gate, Keras' `implementation=1`); or None.
    recurrent: `(M, B, U)` multiplied into the previous hidden state; or None.
    Entries are `0` or `1 / (1 - rate)` (inverted dropout), as in Keras.
    """

    inputs: jax.Array | None
    recurrent: jax.Array | None


def _check_rate(cls, name, rate):
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{cls}: {name} must be in [0, 1), got {rate}")
    return rate


def _dropout_mask(key, rate, count, shape, dtype):
    keep = jax.random.bernoulli(key, 1.0 - rate, (count, *shape))
    return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)


def _mask_for(x, mask):
    """`mask` `(B, F)` broadcast against `x` `(B, F)` or `(B, T, F)`."""
    return mask[:, None, :] if x.ndim == 3 else mask


def _gate_matmul(x, w, masks, gates):
    """`x @ w` with per-gate dropout: `concat_g((x * m_g) @ w_g)`.

    x: `(B, F)` or `(B, T, F)`; w: `(F, G*U)`; masks: None or `(M, B, F)`.
    """
    if masks is None:
        return x @ w
    if masks.shape[0] == 1:
        return (x * _mask_for(x, masks[0])) @ w
    parts = jnp.split(w, gates, axis=-1)
    return jnp.concatenate(
        [(x * _mask_for(x, masks[g])) @ parts[g] for g in range(gates)], axis=-1
    )


class RNNCellBase(Layer):
    """What every cell is to `RNN`, `rnn_jax.scan` and the read-outs: one time
    step `step_with_gates(params, z_t, states) -> (output, new_states, gates)`
    of pure functions of arrays, plus what it takes to run it over a sequence.
    Keras' cells (`GatedCell`: `SimpleRNNCell`, `GRUCell`, `LSTMCell`) and
    `StackedRNNCells` implement it alike, so no caller asks which it has
    (as Haiku's `DeepRNN` is itself an `RNNCore`).

    A subclass provides `state_size`, `output_size`, `input_dim`, `build`,
    `params`, `get_initial_state`, `dropout_masks`, `project`,
    `step_with_gates`, `as_states`, `clone` and `get_config`; a cell made
    of others (stacked) also overrides `cells`, `per_cell` and
    `cell_outputs`. `step`, `check_states` and the Keras-style call
    `cell(inputs, states)` are shared.
    """

    auto_named = False  # see `Layer.auto_named`: the scan's programs are cached per cell

    def step_with_gates(self, params, z_t, states, masks=None):
        """One recurrent step, also returning the gate values.

        Args:
          params: `self.params()`.
          z_t: `(B, G*U)`, the input projection `x_t W + b_x` from `project`.
          states: the previous states (`(h,)`, `LSTMState(h, c)`, or one such
            per cell of a stack), each `(B, U)`.
          masks: dropout masks from `dropout_masks`, or None.

        Returns:
          `(output (B, U), new_states, gates)`, `gates` a dict of `(B, U)`
          arrays (one dict per cell of a stack).
        """
        raise NotImplementedError

    def as_states(self, states):
        """User-given `states` (lists, tuples, bare arrays) as the cell's state
        structure, cast to its dtype; ValueError if they do not fit it."""
        raise NotImplementedError

    def clone(self, rngs: nnx.Rngs | None) -> "RNNCellBase":
        """A cell of the same configuration with fresh weights drawn from `rngs`."""
        raise NotImplementedError

    @property
    def cells(self) -> tuple:
        """The single cells this cell runs, in order: `(self,)`, or a stack's."""
        return (self,)

    def per_cell(self, tree) -> tuple:
        """A value of this cell's structure (states, gates) split into one entry
        per cell of `cells`: `(tree,)` for a single cell."""
        return (tree,)

    def cell_outputs(self, states, output) -> tuple:
        """Every cell's output at a step, from the step's new `states` and its
        `output` (the last cell's): `(output,)` for a single cell."""
        return (output,)

    def step(self, params, z_t, states, masks=None):
        """`step_with_gates` without the gates: `(output (B, U), new_states)`."""
        output, new_states, _ = self.step_with_gates(params, z_t, states, masks)
        return output, new_states

    def output_from_states(self, states):
        """The step's output read back from the states it returned, or None
        where a cell cannot say (the scan then carries the output too)."""
        return None

    def check_states(self, states, batch_size: int, what: str) -> None:
        """Raises ValueError, starting with `what`, unless every state of every
        cell is `(batch_size, units)` of its cell."""
        for cell, cell_states in zip(self.cells, self.per_cell(states)):
            for s in cell_states:
                if s.shape != (batch_size, cell.units):
                    raise ValueError(f"{what}: expected a state of shape ({batch_size}, "
                                     f"{cell.units}), got {tuple(s.shape)}")

    def __call__(self, inputs, states, training: bool = False, key=None):
        """One time step, as Keras' cell call.

        Args:
          inputs: `(B, D)` inputs at this step.
          states: the previous states: `(h,)` / `[h]` / `h` for SimpleRNN and
            GRU, `(h, c)` for LSTM, a list of those for stacked cells; each
            `(B, U)`.
          training: whether dropout is active.
          key: random key for the dropout masks (needed only when active).

        Returns:
          `(output, new_states)`, output `(B, U)`; new_states in the structure
          given (a bare array stays a bare array, as in Keras).
        """
        x = self.read_inputs(inputs, 2, "(batch, features)")
        if x.shape[-1] != self.input_dim:
            raise ValueError(
                f"{describe(self)}: inputs have {x.shape[-1]} features, the kernel "
                f"expects {self.input_dim}"
            )
        params = self.params()
        masks = self.dropout_masks(key, x.shape[0], training)
        out, new = self.step(params, self.project(params, x, masks), self.as_states(states),
                             masks)
        return out, self.like_given(states, new)

    def like_given(self, given, new):
        """New states in the structure the caller gave (a bare array stays a bare
        array, as in Keras)."""
        return new if isinstance(given, (list, tuple)) else new[0]


class GatedCell(RNNCellBase):
    """Keras' cells: a step made of `G` gate blocks of `x_t W + h_{t-1} U + b`
    (SimpleRNN 1, GRU 3, LSTM 4), with their arguments, weights, dropout and
    input projection; `SimpleRNNCell`, `GRUCell` and `LSTMCell` add their
    equations (`step_with_gates`). Their output is `h`, the first state."""

    gates = 1
    weight_names = ("kernel", "recurrent_kernel", "bias")

    def __init__(
        self,
        units: int,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        *,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        input_shape: Sequence[int] | None = None,
        dtype="float32",
        rngs: nnx.Rngs | None = None,
        name: str | None = None,
    ):
        super().__init__(dtype=dtype, rngs=rngs, name=name)
        cls = type(self).__name__
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"{cls}: units must be a positive integer, got {units!r}")
        self.units = units
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.dropout = _check_rate(cls, "dropout", dropout)
        self.recurrent_dropout = _check_rate(cls, "recurrent_dropout", recurrent_dropout)
        self.input_dim: int | None = None
        if input_shape is not None:
            self.build((None, *input_shape))

    # -- Keras-style description -------------------------------------------

    @property
    def state_size(self):
        return self.units

    @property
    def output_size(self) -> int:
        return self.units

    def constructor_args(self) -> dict[str, Any]:
        """The arguments that rebuild this cell (activations as callables)."""
        return {
            "units": self.units,
            "activation": self.activation,
            "recurrent_activation": self.recurrent_activation,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "recurrent_initializer": self.recurrent_initializer,
            "bias_initializer": self.bias_initializer,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
        }

    def get_config(self) -> dict[str, Any]:
        """Keras constructor arguments of this cell (for `to_keras`).

        Activations are written by Keras name; initializers are left out
        (the weights are copied). Raises ValueError for a custom activation.
        """
        config = self.constructor_args()
        for k in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
            del config[k]
        for k in ("activation", "recurrent_activation"):
            if k in config:
                config[k] = activations.serialize(config[k])
        return config

    # -- weights --------------------------------------------------------------

    def _bias_shape(self):
        return (self.gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"{type(self).__name__}: the last input dimension must be known")
        self.input_dim = int(input_dim)
        g_u = self.gates * self.units
        self.add_weight("kernel", (self.input_dim, g_u), self.kernel_initializer)
        self.add_weight("recurrent_kernel", (self.units, g_u), self.recurrent_initializer)
        if self.use_bias:
            self.add_weight("bias", self._bias_shape(), self._bias_initializer())
        else:
            self.bias = None
        self._done_building()

    def params(self) -> dict[str, jax.Array]:
        """The weights as plain arrays, read once (Keras names)."""
        self._check_built()
        p = {"kernel": self.kernel[...], "recurrent_kernel": self.recurrent_kernel[...]}
        if self.use_bias:
            p["bias"] = self.bias[...]
        return p

    # -- states and masks -----------------------------------------------------

    def get_initial_state(self, batch_size: int):
        """Zero states for `batch_size` sequences: `(h,)`, each `(B, U)`."""
        return (jnp.zeros((batch_size, self.units), self.dtype),)

    def _mask_count(self) -> int:
        # Keras' implementation=1 (one mask per gate) is switched on by
        # recurrent dropout in GRU and LSTM; SimpleRNN always has one mask.
        return self.gates if (self.gates > 1 and self.recurrent_dropout > 0) else 1

    def dropout_masks(self, key, batch_size: int, training: bool) -> DropoutMasks | None:
        """Masks for one batch (one per sequence, reused at every step).

        Returns None when not training or when both rates are zero.
        Raises ValueError when dropout is active and `key` is None.
        """
        if not training or (self.dropout == 0.0 and self.recurrent_dropout == 0.0):
            return None
        if key is None:
            raise ValueError(
                f"{type(self).__name__}: dropout is active (training=True) and needs a "
                "random key: call with key=jax.random.key(seed)"
            )
        self._check_built()
        k_in, k_rec = jax.random.split(key)
        count = self._mask_count()
        inputs = recurrent = None
        if self.dropout > 0:
            inputs = _dropout_mask(k_in, self.dropout, count, (batch_size, self.input_dim), self.dtype)
        if self.recurrent_dropout > 0:
            recurrent = _dropout_mask(
                k_rec, self.recurrent_dropout, count, (batch_size, self.units), self.dtype
            )
        return DropoutMasks(inputs, recurrent)

    # -- the computation --------------------------------------------------------

    def _input_bias(self, params):
        return params.get("bias")

    def project(self, params, x, masks: DropoutMasks | None = None):
        """`x @ kernel + b_x` for `x` `(B, T, D)` or `(B, D)`; returns `(..., G*U)`."""
        z = _gate_matmul(x, params["kernel"], None if masks is None else masks.inputs, self.gates)
        b = self._input_bias(params)
        return z if b is None else z + b

    def _recurrent(self, params, h, masks):
        """`h @ recurrent_kernel` with per-gate recurrent dropout; `(B, G*U)`."""
        return _gate_matmul(
            h, params["recurrent_kernel"], None if masks is None else masks.recurrent, self.gates
        )

    # Keras' three cells output `h`, their first state. A subclass that
    # redefines `step_with_gates` is not assumed to (unless it sets this).
    output_is_first_state = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "step_with_gates" in vars(cls) and "output_is_first_state" not in vars(cls):
            cls.output_is_first_state = False

    def output_from_states(self, states):
        """`h`, the first state, for Keras' cells; None for a subclass whose step
        may output something else."""
        return states[0] if self.output_is_first_state else None

    def as_states(self, states):
        """`states` (`(h,)`, `[h]` or a bare `h`) as the cell's state tuple."""
        if isinstance(states, (list, tuple)):
            return tuple(as_float(s, self.dtype) for s in states)
        return (as_float(states, self.dtype),)

    def clone(self, rngs: nnx.Rngs | None):
        """A cell of the same configuration with fresh weights drawn from `rngs`."""
        return type(self)(**self.constructor_args(), dtype=self.dtype, rngs=rngs)


class SimpleRNNCell(GatedCell):
    r"""Keras' `SimpleRNNCell`: a fully connected recurrent step.

    .. math::

        h_t = f(x_t W + h_{t-1} U + b)

    with `W = kernel` `(D, U)`, `U = recurrent_kernel` `(U, U)`, `b = bias`
    `(U,)`, `f = activation`. The output is `h_t`, also the single state.

    Example::

        cell = SimpleRNNCell(2, activation=None, rngs=nnx.Rngs(0))
        out, (h1,) = cell(x_BxD, (h0_BxU,))

    Args:
      units: `U`, the size of the state.
      activation: `f`, default `'tanh'` (`None` is linear).
      use_bias: whether to add `b`.
      kernel_initializer: default `'glorot_uniform'`.
      recurrent_initializer: default `'orthogonal'`.
      bias_initializer: default `'zeros'`.
      dropout: rate of the input mask (variational, training only).
      recurrent_dropout: rate of the mask on `h_{t-1}`.
      input_shape: optional `(D,)` (or `(T, D)`) to build immediately.
      dtype: weight and compute dtype, default `'float32'`.
      rngs: `nnx.Rngs` drawn for the initial weights.
    """

    gates = 1
    output_is_first_state = True

    def __init__(self, units, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", *, dropout=0.0, recurrent_dropout=0.0, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=None,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer, dropout=dropout,
                         recurrent_dropout=recurrent_dropout, **kwargs)

    def constructor_args(self):
        args = super().constructor_args()
        del args["recurrent_activation"]
        return args

    def step_with_gates(self, params, z_t, states, masks=None):
        """`h_t = f(z_t + h_{t-1} U)`, `z_t = x_t W + b` from `project`; no gates (`{}`)."""
        h = self.activation(z_t + self._recurrent(params, states[0], masks))
        return h, (h,), {}


class GRUCell(GatedCell):
    r"""Keras' `GRUCell` (gated recurrent unit), both `reset_after` variants.

    With `reset_after=True` (Keras' default, cuDNN-compatible):

    .. math::

        z_t &= \sigma(x_t W_z + b^x_z + h_{t-1} U_z + b^h_z) \\
        r_t &= \sigma(x_t W_r + b^x_r + h_{t-1} U_r + b^h_r) \\
        \tilde h_t &= f(x_t W_h + b^x_h + r_t \odot (h_{t-1} U_h + b^h_h)) \\
        h_t &= z_t \odot h_{t-1} + (1 - z_t) \odot \tilde h_t

    With `reset_after=False` there is one bias `b` and the reset gate acts
    before the matmul: :math:`\tilde h_t = f(x_t W_h + b_h + (r_t \odot h_{t-1}) U_h)`.

    `W = kernel` `(D, 3U)` = `[W_z | W_r | W_h]`, `U = recurrent_kernel`
    `(U, 3U)`, `bias` `(2, 3U)` = `[b^x; b^h]` (`(3U,)` when
    `reset_after=False`); `sigma = recurrent_activation` (default
    `'sigmoid'`), `f = activation` (default `'tanh'`). The state is `(h,)`.

    Args: as `SimpleRNNCell`, plus `recurrent_activation` and `reset_after`.
    """

    gates = 3
    output_is_first_state = True

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", *,
                 dropout=0.0, recurrent_dropout=0.0, reset_after=True, **kwargs):
        self.reset_after = bool(reset_after)
        super().__init__(units, activation=activation,
                         recurrent_activation=recurrent_activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer,
                         recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer, dropout=dropout,
                         recurrent_dropout=recurrent_dropout, **kwargs)

    def constructor_args(self):
        return {**super().constructor_args(), "reset_after": self.reset_after}

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _input_bias(self, params):
        b = params.get("bias")
        if b is None:
            return None
        return b[0] if self.reset_after else b

    def step_with_gates(self, params, z_t, states, masks=None):
        """One GRU step from `z_t = x_t W + b^x` (see the class equations).

        Gates, each `(B, U)`: `z` (update), `r` (reset), `h_tilde` (the
        candidate :math:`\\tilde h_t`).
        """
        h = states[0]
        rk = params["recurrent_kernel"]
        rk_zr, rk_h = jnp.split(rk, [2 * self.units], axis=-1)
        rk_z, rk_r = jnp.split(rk_zr, 2, axis=-1)
        rec_masks = None if masks is None else masks.recurrent
        xz, xr, xh = jnp.split(z_t, 3, axis=-1)
        rb = params["bias"][1] if (self.use_bias and self.reset_after) else None
        if rec_masks is None:
            h_z = h_r = h_h = h
        else:
            h_z, h_r, h_h = h * rec_masks[0], h * rec_masks[1], h * rec_masks[2]
        if self.reset_after:
            if rec_masks is None:
                inner = h @ rk
            else:
                inner = jnp.concatenate([h_z @ rk_z, h_r @ rk_r, h_h @ rk_h], axis=-1)
            if rb is not None:
                inner = inner + rb
            rz, rr, rh = jnp.split(inner, 3, axis=-1)
        else:
            if rec_masks is None:
                rz, rr = jnp.split(h @ rk_zr, 2, axis=-1)
            else:
                rz, rr = h_z @ rk_z, h_r @ rk_r
        z = self.recurrent_activation(xz + rz)
        r = self.recurrent_activation(xr + rr)
        if self.reset_after:
            hh = self.activation(xh + r * rh)
        else:
            hh = self.activation(xh + (r * h_h) @ rk_h)
        h_new = z * h + (1 - z) * hh
        return h_new, (h_new,), {"z": z, "r": r, "h_tilde": hh}


class LSTMCell(GatedCell):
    r"""Keras' `LSTMCell` (long short-term memory).

    .. math::

        i_t &= \sigma(x_t W_i + h_{t-1} U_i + b_i) \\
        f_t &= \sigma(x_t W_f + h_{t-1} U_f + b_f) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g(x_t W_c + h_{t-1} U_c + b_c) \\
        o_t &= \sigma(x_t W_o + h_{t-1} U_o + b_o) \\
        h_t &= o_t \odot g(c_t)

    `W = kernel` `(D, 4U)` = `[W_i | W_f | W_c | W_o]`, `U = recurrent_kernel`
    `(U, 4U)`, `b = bias` `(4U,)`; `sigma = recurrent_activation` (default
    `'sigmoid'`), `g = activation` (default `'tanh'`). The output is `h_t`;
    the state is `LSTMState(h, c)`.

    Forget-gate bias: with `unit_forget_bias=True` (default) `b_f` starts at 1
    and the other parts from `bias_initializer`, as in Keras.

    Args: as `SimpleRNNCell`, plus `recurrent_activation`, `unit_forget_bias`.
    """

    gates = 4
    output_is_first_state = True

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, *, dropout=0.0, recurrent_dropout=0.0, **kwargs):
        self.unit_forget_bias = bool(unit_forget_bias)
        super().__init__(units, activation=activation,
                         recurrent_activation=recurrent_activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer,
                         recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer, dropout=dropout,
                         recurrent_dropout=recurrent_dropout, **kwargs)

    @property
    def state_size(self):
        return [self.units, self.units]

    def constructor_args(self):
        return {**super().constructor_args(), "unit_forget_bias": self.unit_forget_bias}

    def _bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        base = initializers.get(self.bias_initializer)
        u = self.units

        def init(key, shape, dtype):
            k1, k2 = jax.random.split(key)
            return jnp.concatenate(
                [base(k1, (u,), dtype), jnp.ones((u,), dtype), base(k2, (2 * u,), dtype)])

        return init

    def get_initial_state(self, batch_size: int) -> LSTMState:
        """`LSTMState(h=0, c=0)`, each `(B, U)`."""
        zeros = jnp.zeros((batch_size, self.units), self.dtype)
        return LSTMState(zeros, zeros)

    def as_states(self, states):
        if not isinstance(states, (list, tuple)) or len(states) != 2:
            raise ValueError("LSTMCell states must be (h, c)")
        return LSTMState(*(as_float(s, self.dtype) for s in states))

    def step_with_gates(self, params, z_t, states, masks=None):
        """One LSTM step from `z_t = x_t W + b` (see the class equations).

        Gates, each `(B, U)`: `i`, `f`, `o`, the candidate
        `g = g(x_t W_c + h_{t-1} U_c + b_c)` and `c`, the new cell state `c_t`.
        """
        h, c = states
        z = materialize(z_t + self._recurrent(params, h, masks))
        # sigma over the whole (B, 4U) array (its g block unused), f over the g block.
        sigma_z, g = materialize((self.recurrent_activation(z),
                                  self.activation(jnp.split(z, 4, axis=-1)[2])))
        i, f, _, o = jnp.split(sigma_z, 4, axis=-1)
        c_new = f * c + i * g
        h_new = o * self.activation(c_new)
        return h_new, LSTMState(h_new, c_new), {"i": i, "f": f, "g": g, "o": o, "c": c_new}


class StackedRNNCells(RNNCellBase):
    """Keras' `StackedRNNCells`: several cells acting as one per time step.

    The output of cell `k` is the input of cell `k+1` at the same step; the
    state is the tuple of the cells' states; the output is the last cell's.
    Only the first cell's input projection can be done before the scan. It
    is a cell like the others (`RNNCellBase`), so `RNN`, the scan and the
    read-outs run it as they run one cell.

    Args:
      cells: a sequence of cells (`SimpleRNNCell`, `GRUCell`, `LSTMCell`).
    """

    cells = ()  # shadows `RNNCellBase.cells`: set per instance to the stacked cells

    def __init__(self, cells: Sequence[GatedCell], *, name: str | None = None):
        cells = list(cells)
        if not cells:
            raise ValueError("StackedRNNCells needs at least one cell")
        for c in cells:
            if not isinstance(c, GatedCell):
                raise ValueError(
                    f"StackedRNNCells: unsupported cell {type(c).__name__}; supported: "
                    "SimpleRNNCell, GRUCell, LSTMCell"
                )
        super().__init__(dtype=cells[0].dtype, rngs=None, name=name)
        self.cells = nnx.List(cells)
        self.built = all(c.built for c in cells)

    def per_cell(self, tree) -> tuple:
        """States or gates of the stack: already one entry per cell."""
        return tuple(tree)

    def cell_outputs(self, states, output) -> tuple:
        """Cell `k < last` outputs its new states' output (its `h`), the last `output`."""
        return tuple(c.output_from_states(s) for c, s in zip(self.cells[:-1], states[:-1])) + (
            output,)

    @property
    def state_size(self):
        return [c.state_size for c in self.cells]

    @property
    def output_size(self) -> int:
        return self.cells[-1].output_size

    @property
    def input_dim(self):
        return self.cells[0].input_dim

    @property
    def weight_rngs(self):
        return self.cells[0].weight_rngs

    def build(self, input_shape):
        shape = tuple(input_shape)
        for c in self.cells:
            if not c.built:
                c.build(shape)
            shape = (shape[0], c.output_size)
        self.built = True

    @property
    def weights(self):
        return [w for c in self.cells for w in c.weights]

    def weight_labels(self):
        return [f"cells[{k}].{n}" for k, c in enumerate(self.cells) for n in c.weight_labels()]

    def params(self):
        return tuple(c.params() for c in self.cells)

    def get_initial_state(self, batch_size: int):
        return tuple(c.get_initial_state(batch_size) for c in self.cells)

    def dropout_masks(self, key, batch_size, training):
        if not training or all(c.dropout == 0 and c.recurrent_dropout == 0 for c in self.cells):
            return None
        keys = [None] * len(self.cells) if key is None else list(jax.random.split(key, len(self.cells)))
        return tuple(c.dropout_masks(k, batch_size, training) for c, k in zip(self.cells, keys))

    def project(self, params, x, masks=None):
        return self.cells[0].project(params[0], x, None if masks is None else masks[0])

    def step_with_gates(self, params, z_t, states, masks=None):
        """Steps every cell; cell `k > 0` projects cell `k-1`'s output itself.

        Returns `(output (B, U_last), per-cell new states, per-cell gate dicts)`.
        """
        new_states, gates = [], []
        out = None
        for k, cell in enumerate(self.cells):
            m = None if masks is None else masks[k]
            if k > 0:
                z_t = cell.project(params[k], out, m)
            out, s, g = cell.step_with_gates(params[k], z_t, states[k], m)
            new_states.append(s)
            gates.append(g)
        return out, tuple(new_states), tuple(gates)

    def output_from_states(self, states):
        """The last cell's output, from its states (None if it cannot say)."""
        return self.cells[-1].output_from_states(states[-1])

    def as_states(self, states):
        if not isinstance(states, (list, tuple)) or len(states) != len(self.cells):
            raise ValueError(
                f"StackedRNNCells with {len(self.cells)} cells needs one state per cell"
            )
        return tuple(c.as_states(s) for c, s in zip(self.cells, states))

    def like_given(self, given, new):
        """One entry per cell, each as that cell's states were given: Keras'
        `[h1, h2]` back for `[h1_0, h2_0]` (a list for a list)."""
        out = [c.like_given(g, n) for c, g, n in zip(self.cells, given, new)]
        return out if isinstance(given, list) else tuple(out)

    def clone(self, rngs: nnx.Rngs | None) -> "StackedRNNCells":
        return StackedRNNCells([c.clone(rngs) for c in self.cells])

    def get_config(self):
        return {"cells": [c.get_config() for c in self.cells]}
