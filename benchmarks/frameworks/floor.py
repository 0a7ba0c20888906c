"""The floor: minimal hand-written `jax.lax.scan` loops, no framework around them.

Plain `jax.numpy` + `optax`, the cells written from Keras' equations (LSTM
gates `i, f, c, o`; GRU `z, r, h` with `reset_after=True`), the input
projection `x W + b` done for all steps in one matmul before the time scan.
This is what the hardware gives for the work in `benchmarks.workloads`.

Every function is traced and compiled ahead of time (`jax.jit(f).lower(...)
.compile()`, reported as "compile"); "first" is that plus the first call,
"times" the later calls. Every timed call ends with `jax.block_until_ready`.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import workloads

GATES = {"simple_rnn": 1, "gru": 3, "lstm": 4}
OPT = optax.adam(1e-3, eps=1e-7)  # Keras' Adam defaults


def versions():
    return {"jax": jax.__version__, "optax": optax.__version__, "device": workloads.jax_device()}


# -- cells (Keras' equations) -------------------------------------------------


def init_cell(key, cell, features, units):
    """Keras' initial weights: glorot-uniform kernel, orthogonal recurrent
    kernel, zero bias (LSTM forget bias 1; GRU bias `(2, 3U)`)."""
    g = GATES[cell]
    k1, k2 = jax.random.split(key)
    p = {"W": jax.nn.initializers.glorot_uniform()(k1, (features, g * units)),
         "U": jax.nn.initializers.orthogonal()(k2, (units, g * units)),
         "b": jnp.zeros((2, 3 * units) if cell == "gru" else (g * units,))}
    if cell == "lstm":
        p["b"] = p["b"].at[units:2 * units].set(1.0)
    return p


def last_output(cell, p, x, activation=jnp.tanh):
    """`(B, T, D) -> (B, U)`: the last output of `cell` with weights `p`."""
    b = p["b"][0] if cell == "gru" else p["b"]
    zs = jnp.einsum("btd,dg->tbg", x, p["W"]) + b  # hoisted: all steps at once, time-major
    units = p["U"].shape[0]
    h0 = jnp.zeros((x.shape[0], units), x.dtype)

    def simple_rnn(h, z):
        h = activation(z + h @ p["U"])
        return h, None

    def gru(h, z):  # reset_after=True
        xz, xr, xh = jnp.split(z, 3, axis=-1)
        rz, rr, rh = jnp.split(h @ p["U"] + p["b"][1], 3, axis=-1)
        zg, r = jax.nn.sigmoid(xz + rz), jax.nn.sigmoid(xr + rr)
        h = zg * h + (1 - zg) * jnp.tanh(xh + r * rh)
        return h, None

    def lstm(hc, z):
        h, c = hc
        i, f, g, o = jnp.split(z + h @ p["U"], 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return (jax.nn.sigmoid(o) * jnp.tanh(c), c), None

    if cell == "lstm":
        (h, _), _ = jax.lax.scan(lstm, (h0, h0), zs)
    else:
        h, _ = jax.lax.scan({"simple_rnn": simple_rnn, "gru": gru}[cell], h0, zs)
    return h


# -- training pieces ----------------------------------------------------------


def _batches(key, n, batch_size):
    """A shuffled epoch: indices and weights `(num_batches, batch_size)`; the last
    partial batch is padded with sample 0 at weight 0, so every shape is static."""
    nb = -(-n // batch_size)
    pad = nb * batch_size - n
    idx = jnp.concatenate([jax.random.permutation(key, n), jnp.zeros(pad, jnp.int32)])
    w = jnp.concatenate([jnp.ones(n), jnp.zeros(pad)])
    return idx.reshape(nb, batch_size), w.reshape(nb, batch_size)


def _train_epoch(loss_fn, params, opt_state, key, x, y, batch_size):
    """One epoch, a `lax.scan` over minibatches; returns the new params, optimizer
    state and the epoch's training loss (mean over the real samples)."""

    def step(carry, batch):
        params, opt_state = carry
        i, w = batch
        loss, grads = jax.value_and_grad(loss_fn)(params, x[i], y[i], w)
        updates, opt_state = OPT.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss * w.sum()

    (params, opt_state), losses = jax.lax.scan(
        step, (params, opt_state), _batches(key, x.shape[0], batch_size))
    return params, opt_state, losses.sum() / x.shape[0]


# -- notebook 000: sum3 -------------------------------------------------------


def _sum3_predict(p, x):
    """Linear `SimpleRNN(1)`: `h_t = x_t W + h_{t-1} U + b`, `h_0 = 0`; returns `h_3`."""
    return last_output("simple_rnn", p, x, activation=lambda z: z)


def _sum3_loss(p, x, y, w):
    """MSE, the mean over the samples of weight 1."""
    return jnp.sum(w * jnp.mean((_sum3_predict(p, x) - y) ** 2, axis=-1)) / jnp.sum(w)


def _sum3_run(key, xt, yt, xv, yv, epochs, batch_size):
    """The whole fit: init, then `epochs` x (shuffled epoch + validation MSE).
    Returns `(params, losses (epochs, 2))`, each row `(train, validation)`."""
    k_init, k_epochs = jax.random.split(key)
    params = init_cell(k_init, "simple_rnn", 1, 1)
    opt_state = OPT.init(params)

    def epoch(carry, k):
        params, opt_state = carry
        params, opt_state, loss = _train_epoch(_sum3_loss, params, opt_state, k, xt, yt,
                                               batch_size)
        val = jnp.mean((_sum3_predict(params, xv) - yv) ** 2)
        return (params, opt_state), jnp.stack([loss, val])

    (params, _), losses = jax.lax.scan(epoch, (params, opt_state),
                                       jax.random.split(k_epochs, epochs))
    return params, losses


def _sum3_compiled(num_samples, epochs, batch_size, num_seeds=None):
    """The whole run compiled as one program of the key(s): `(run, key, compile_s)`."""
    (xt, yt), (xv, yv) = workloads.split(*workloads.sum3_data(num_samples), 0.2)
    data = tuple(jnp.asarray(a) for a in (xt, yt, xv, yv))

    def run(key, *data):
        return _sum3_run(key, *data, epochs, batch_size)

    key = jax.random.key(0)
    if num_seeds is not None:
        run = jax.vmap(run, in_axes=(0, None, None, None, None))
        key = jax.random.split(key, num_seeds)
    exe, compile_s = workloads.compile_timed(run, key, *data)
    return (lambda key: exe(key, *data)), key, compile_s


def sum3(num_samples, epochs, batch_size, repeats):
    """Notebook 000, the whole run (all epochs, validation included) as ONE jitted
    function of a key. "first": compile + the first run; "times": `repeats` more
    runs with other keys."""
    run, key, compile_s = _sum3_compiled(num_samples, epochs, batch_size)
    (_, losses), first = workloads.call_timed(run, key)
    times = [workloads.call_timed(run, jax.random.key(r + 1))[1] for r in range(repeats)]
    val = np.round(np.asarray(losses[:, 1]), 4).tolist()
    return workloads.compiled_result(compile_s, first, times,
                                     f"val MSE per epoch (first run): {val}")


def seeds(num_seeds, num_samples, epochs, batch_size, repeats):
    """`num_seeds` independent sum3 runs (own init and shuffling each), `jax.vmap`
    over the keys, one jitted program. "first"/"times" as `sum3`."""
    run, keys, compile_s = _sum3_compiled(num_samples, epochs, batch_size, num_seeds)
    (_, losses), first = workloads.call_timed(run, keys)
    times = [workloads.call_timed(run, jax.random.split(jax.random.key(r + 1), num_seeds))[1]
             for r in range(repeats)]
    final = np.asarray(losses[:, -1, 1])
    return workloads.compiled_result(
        compile_s, first, times,
        f"final val MSE over seeds: median {np.median(final):.4g}, max {final.max():.4g}")


# -- notebook 004: Reuters ----------------------------------------------------


def reuters(model, repeats, data_path=None):
    """Notebook 004, `LSTM(50)` or `SimpleRNN(50)` -> `Dense(46)` -> softmax
    cross-entropy, Adam, batch 50 shuffled (28 minibatches, the last padded).
    One epoch is one jitted `epoch(state, key) -> (state, loss)` (a scan over the
    minibatches). "first": compile + epoch 1; "times": `repeats` more epochs."""
    x, y = (jnp.asarray(a) for a in workloads.reuters_data(data_path))
    k_cell, k_dense = jax.random.split(jax.random.key(0))
    params = {"cell": init_cell(k_cell, model, x.shape[-1], 50),
              "W": jax.nn.initializers.glorot_uniform()(k_dense, (50, y.shape[-1])),
              "b": jnp.zeros(y.shape[-1])}

    def loss_fn(p, xb, yb, w):
        logits = last_output(model, p["cell"], xb) @ p["W"] + p["b"]
        return -jnp.sum(w * jnp.sum(yb * jax.nn.log_softmax(logits), -1)) / jnp.sum(w)

    def epoch(state, key, x, y):
        params, opt_state = state
        params, opt_state, loss = _train_epoch(loss_fn, params, opt_state, key, x, y, 50)
        return (params, opt_state), loss

    state = (params, OPT.init(params))
    exe, compile_s = workloads.compile_timed(epoch, state, jax.random.key(0), x, y,
                                             donate_argnums=0)
    (state, loss0), first = workloads.call_timed(exe, state, jax.random.key(0), x, y)
    times, loss = [], loss0
    for r in range(repeats):
        (state, loss), t = workloads.call_timed(exe, state, jax.random.key(r + 1), x, y)
        times.append(t)
    note = f"train loss epoch 1 {float(loss0):.4f}, epoch {repeats + 1} {float(loss):.4f}"
    return workloads.compiled_result(compile_s, first, times, note)


# -- forward ------------------------------------------------------------------


def forward(cell, batch, steps, units, features, repeats, min_seconds=0.0):
    """One jitted forward pass `(B, T, D) -> (B, U)` (the last output) of `cell`
    with random weights. "first": compile + the first call; "times": the later
    calls (`workloads.repeat_calls`)."""
    x = jnp.asarray(workloads.forward_input(batch, steps, features))
    params = init_cell(jax.random.key(0), cell, features, units)
    exe, compile_s = workloads.compile_timed(lambda p, x: last_output(cell, p, x), params, x)
    _, first = workloads.call_timed(exe, params, x)
    times = workloads.repeat_calls(lambda: workloads.call_timed(exe, params, x)[1], repeats,
                                   min_seconds)
    return workloads.compiled_result(compile_s, first, times)
