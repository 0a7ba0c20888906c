"""Keras LSTM weights in cuDNN's layout, and cuDNN's LSTM through `jax.experimental.rnn`.

cuDNN's LSTM (`jax.experimental.rnn.lstm`, NVIDIA GPUs only) takes one flat
float32 weight vector. For one layer, one direction it holds, in order:

    W_ih (4U, D), W_hh (4U, U), b_ih (4U,), b_hh (4U,)

each with its gates stacked in the order `i, f, g, o`, and computes

    i, f, g, o = split(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh, 4)
    c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g),   h_t = sigmoid(o) tanh(c_t)

which is Keras' `LSTMCell` with its default activations (`tanh`, `sigmoid`):
Keras' gates `i, f, c, o` are cuDNN's `i, f, g, o`, so `W_ih = kernel^T`,
`W_hh = recurrent_kernel^T`, `b_ih = bias` and `b_hh = 0`.

`jax.experimental.rnn.lstm` has no CPU lowering; on CPU,
`jax.experimental.rnn.lstm_ref` computes the same function from the unpacked
weights (`jax.experimental.rnn.unpack_lstm_weights`), which is how the layout
is tested without a GPU.

Not yet an option of `rnn_jax.LSTM` (its speed against the scan is
`benchmarks.cudnn_lstm`'s to measure, on a GPU). What Keras 3 does on its
TensorFlow backend with `use_cudnn='auto'` (keras/src/backend/tensorflow/
rnn.py, `lstm` and `_cudnn_lstm`), which an option here should match: cuDNN
only with `activation='tanh'`, `recurrent_activation='sigmoid'`,
`use_bias=True`, `unroll=False`, and (in the layer) no recurrent dropout; a
mask must be right-padded with no fully masked row (else an error naming
`use_cudnn=False`); the last output is the final `h` (not cuDNN's zeros past
a sequence's length), while `return_sequences=True` keeps cuDNN's zeros at
masked steps, unlike the scan, which repeats the previous output;
`go_backwards` reverses each sequence within its length before and after
cuDNN, then the whole time axis.
"""

from __future__ import annotations

import jax.numpy as jnp


def to_cudnn_weights(kernel, recurrent_kernel, bias=None):
    """Keras `LSTM` weights -> cuDNN's flat weight vector (one layer, one direction).

    Args:
      kernel: `(D, 4U)`, gates `[i | f | c | o]` (Keras' `kernel`).
      recurrent_kernel: `(U, 4U)` (Keras' `recurrent_kernel`).
      bias: `(4U,)` or None (`use_bias=False`).

    Returns:
      `(4U D + 4U U + 8U,)` float32: `W_ih = kernel^T`, `W_hh =
      recurrent_kernel^T`, `b_ih = bias`, `b_hh = 0` (see the module docstring).
    """
    kernel = jnp.asarray(kernel, jnp.float32)
    recurrent_kernel = jnp.asarray(recurrent_kernel, jnp.float32)
    units = recurrent_kernel.shape[0] if recurrent_kernel.ndim == 2 else -1
    g = 4 * units
    if kernel.ndim != 2 or kernel.shape[1] != g or recurrent_kernel.shape != (units, g):
        raise ValueError(f"LSTM weights of mismatched shapes: kernel {kernel.shape}, "
                         f"recurrent_kernel {recurrent_kernel.shape} (want (D, 4U), (U, 4U))")
    b_ih = jnp.zeros((g,), jnp.float32) if bias is None else jnp.asarray(bias, jnp.float32)
    if b_ih.shape != (g,):
        raise ValueError(f"LSTM bias of shape {b_ih.shape}, want ({g},)")
    return jnp.concatenate([kernel.T.ravel(), recurrent_kernel.T.ravel(), b_ih,
                            jnp.zeros((g,), jnp.float32)])


def lstm(x, kernel, recurrent_kernel, bias=None, initial_state=None, lengths=None,
         precision=None):
    """Keras' `LSTM` (tanh, sigmoid) over `x` by cuDNN: `(outputs, h, c)`.

    Args:
      x: `(B, T, D)` float32, batch-major.
      kernel, recurrent_kernel, bias: Keras' LSTM weights (`to_cudnn_weights`).
      initial_state: `(h_0, c_0)`, each `(B, U)`; zeros when None.
      lengths: `(B,)` int, the number of valid steps of each sequence, which
        must be right-padded (Keras' `mask` of a right-padded batch); all `T`
        when None.
      precision: the matmul precision (`jax.lax.Precision`); None lets cuDNN
        use TF32 on GPUs that have it, as JAX's own float32 matmuls do.

    Returns:
      `outputs (B, T, U)` (zero past each sequence's length), and `h`, `c`
      `(B, U)` at each sequence's last valid step.

    Needs a CUDA (or ROCm) device: `jax.experimental.rnn.lstm` has no CPU
    lowering.
    """
    from jax.experimental import rnn

    x = jnp.asarray(x, jnp.float32)
    b, t, d = x.shape
    units = recurrent_kernel.shape[0]
    if initial_state is None:
        h0 = c0 = jnp.zeros((1, b, units), jnp.float32)
    else:
        h0, c0 = (jnp.asarray(s, jnp.float32)[None] for s in initial_state)
    lengths = (jnp.full((b,), t, jnp.int32) if lengths is None
               else jnp.asarray(lengths, jnp.int32))
    weights = to_cudnn_weights(kernel, recurrent_kernel, bias)
    y, h, c = rnn.lstm(x, h0, c0, weights, lengths, input_size=d, hidden_size=units,
                       num_layers=1, dropout=0.0, bidirectional=False, precision=precision)
    return y, h[0], c[0]
