"""Flax's own recurrent layers (`flax.nnx`): `nnx.RNN` around `nnx.SimpleCell`,
`nnx.GRUCell` or `nnx.OptimizedLSTMCell`, written as a Flax user would.

The model is split once (`nnx.split`), and a pure function of
`(params, other state, inputs)` that rebuilds it with `nnx.merge` is
`jax.jit`-ted (cheaper per call than `nnx.jit`); the gradient inside it is
`nnx.value_and_grad` of the merged model (`jax.value_and_grad` of a function
that merges raises TraceContextError: `nnx.RNN` advances its carry RngStream
on every call). Training is the Flax tutorial
loop: one jitted `train_step` per minibatch, called from Python over the
shuffled minibatches (NumPy shuffling and batching on the host).

Differences from Keras and from `floor` that change the work, not the timing
protocol: Flax's cells compute the input projection inside the time scan (no
hoisting); `nnx.GRUCell` has no recurrent bias (`n = tanh(x W_n + b_n + r *
(h U_n))`), so it is not Keras' `reset_after=True` GRU; initializers are
Flax's (lecun-normal kernels). The last output is taken as `outputs[:, -1]`:
`nnx.RNN(return_carry=True)` returns `(carry, outputs)`, the sequence is
stacked either way.

Every timed call ends with `jax.block_until_ready`.
"""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import workloads

CELLS = {"simple_rnn": nnx.SimpleCell, "gru": nnx.GRUCell, "lstm": nnx.OptimizedLSTMCell}
OPT = optax.adam(1e-3, eps=1e-7)  # Keras' Adam defaults
NOTE = ("nnx.RNN + nnx.OptimizedLSTMCell (Flax's faster LSTM: all four gates in one "
        "x-matmul and one h-matmul) / nnx.GRUCell / nnx.SimpleCell; input projection "
        "inside the scan; last output = outputs[:, -1]")


def versions():
    return {"flax": flax.__version__, "jax": jax.__version__, "device": workloads.jax_device()}


def _identity(x):  # module level, so every new model has the same graphdef
    return x


class Net(nnx.Module):
    """`nnx.RNN(cell)` -> last output -> `nnx.Linear` (logits or a regression)."""

    def __init__(self, cell, features, units, outputs, rngs, **cell_kw):
        self.rnn = nnx.RNN(CELLS[cell](features, units, rngs=rngs, **cell_kw))
        self.dense = nnx.Linear(units, outputs, rngs=rngs) if outputs else None

    def __call__(self, x):
        h = self.rnn(x)[:, -1]
        return h if self.dense is None else self.dense(h)


# -- jitted pure functions ------------------------------------------------------


@functools.lru_cache
def make_steps(graphdef, loss_name):
    """Jitted `(train_step, eval_step)` for models of structure `graphdef`; cached,
    so a new model of the same structure reuses the compiled code. The graphdef
    is closed over (not a static argument, whose hashing costs every call)."""

    def train_step(params, opt_state, rest, x, y):
        """One Adam step on one minibatch: `(params, opt_state, loss)`."""

        def loss_fn(model):
            return LOSSES[loss_name](model(x), y)

        loss, grads = nnx.value_and_grad(loss_fn)(nnx.merge(graphdef, params, rest))
        updates, opt_state = OPT.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def eval_step(params, rest, x, y):
        return LOSSES[loss_name](nnx.merge(graphdef, params, rest)(x), y)

    return jax.jit(train_step, donate_argnums=(0, 1)), jax.jit(eval_step)


LOSSES = {
    "mse": lambda pred, y: jnp.mean((pred - y) ** 2),
    "cce": lambda logits, y: optax.softmax_cross_entropy(logits, y).mean(),
}


def _fit_epoch(graphdef, loss_name, params, opt_state, rest, x, y, batch_size, rng):
    """One epoch in Python: shuffle, then `train_step` per minibatch (the last one
    partial, its own shape). Returns `(params, opt_state, mean train loss)`."""
    train_step, _ = make_steps(graphdef, loss_name)
    perm = rng.permutation(len(x))
    losses, sizes = [], []
    for s in range(0, len(x), batch_size):
        i = perm[s:s + batch_size]
        params, opt_state, loss = train_step(params, opt_state, rest, x[i], y[i])
        losses.append(loss)
        sizes.append(len(i))
    return params, opt_state, float(np.average(jax.device_get(losses), weights=sizes))


# -- notebook 000: sum3 -------------------------------------------------------


def sum3(num_samples, epochs, batch_size, repeats):
    """Notebook 000: `nnx.RNN(nnx.SimpleCell(1, 1, activation_fn=identity))` -> last
    output, MSE, Adam, batch `batch_size` shuffled every epoch, validation MSE
    every epoch; a jitted `train_step` per minibatch in a Python loop. "first":
    the first whole run (new model, compilation included); "times": `repeats`
    more whole runs, each a new model."""
    (xt, yt), (xv, yv) = workloads.split(*workloads.sum3_data(num_samples), 0.2)

    def run(seed):
        model = Net("simple_rnn", 1, 1, 0, nnx.Rngs(seed), activation_fn=_identity)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        opt_state = OPT.init(params)
        rng = np.random.default_rng(seed)
        val = []
        for _ in range(epochs):
            params, opt_state, _ = _fit_epoch(graphdef, "mse", params, opt_state, rest,
                                              xt, yt, batch_size, rng)
            val.append(float(make_steps(graphdef, "mse")[1](params, rest, xv, yv)))
        return params, val

    (_, val), first = workloads.call_timed(run, 0)
    times = [workloads.call_timed(run, r + 1)[1] for r in range(repeats)]
    return {"first": first, "times": times,
            "note": f"val MSE per epoch (first run): {np.round(val, 4).tolist()}"}


# -- notebook 004: Reuters ----------------------------------------------------


def reuters(model, repeats, data_path=None):
    """Notebook 004: `nnx.RNN(OptimizedLSTMCell(1, 50))` (or `SimpleCell`) -> last
    output -> `nnx.Linear(50, 46)`, softmax cross-entropy, Adam, batch 50 shuffled
    every epoch (the last batch of 45 its own shape); a jitted `train_step` per
    minibatch in a Python loop. "first": epoch 1 (compilation of both batch
    shapes included); "times": `repeats` more epochs."""
    x, y = workloads.reuters_data(data_path)
    net = Net(model, x.shape[-1], 50, y.shape[-1], nnx.Rngs(0))
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    opt_state = OPT.init(params)
    rng = np.random.default_rng(0)
    times, losses = [], []
    for _ in range(repeats + 1):
        (params, opt_state, loss), t = workloads.call_timed(
            _fit_epoch, graphdef, "cce", params, opt_state, rest, x, y, 50, rng)
        times.append(t)
        losses.append(loss)
    return {"first": times[0], "times": times[1:],
            "note": f"{NOTE}; train loss epoch 1 {losses[0]:.4f}, "
                    f"epoch {repeats + 1} {losses[-1]:.4f}"}


# -- forward ------------------------------------------------------------------


def forward(cell, batch, steps, units, features, repeats, min_seconds=0.0):
    """One jitted forward pass `(B, T, D) -> (B, U)` (`outputs[:, -1]`) of
    `nnx.RNN(cell)`. "first": the first call (tracing and compilation included);
    "times": the later calls (`workloads.repeat_calls`)."""
    x = jnp.asarray(workloads.forward_input(batch, steps, features))
    net = Net(cell, features, units, 0, nnx.Rngs(0))
    graphdef, state = nnx.split(net)
    fn = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    _, first = workloads.call_timed(fn, state, x)
    times = workloads.repeat_calls(lambda: workloads.call_timed(fn, state, x)[1], repeats,
                                   min_seconds)
    return {"first": first, "times": times, "note": NOTE}
