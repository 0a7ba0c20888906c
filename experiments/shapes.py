"""Notebook 001: the shapes N, T, D, M, K and the forward pass redone by hand.

Builds `SimpleRNN(M) + Dense(K)` for inputs `(N, T, D)`, prints every weight
with its shape, recomputes the output with a plain numpy loop over time
(`h_t = tanh(x_t W + h_{t-1} U + b)`, `y = h_T W_o + b_o`) for N = 1 and for
N > 1, and checks it equals the model's jit-compiled output.

    python -m experiments.shapes --flagfile=experiments/flags/shapes.flags
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from absl import app, flags, logging
from flax import nnx

import rnn_jax

FLAGS = flags.FLAGS
flags.DEFINE_integer("N", 4, "number of samples (batch)", lower_bound=1)
flags.DEFINE_integer("T", 10, "sequence length", lower_bound=1)
flags.DEFINE_integer("D", 3, "input features", lower_bound=1)
flags.DEFINE_integer("M", 5, "hidden units", lower_bound=1)
flags.DEFINE_integer("K", 2, "output units", lower_bound=1)
flags.DEFINE_integer("seed", 0, "seed of the weights and the data")
flags.DEFINE_string("workdir", None, "if set, results.json is written here")


def forward_by_hand(x_NxTxD, W, U, b, Wo, bo):
    """The SimpleRNN + Dense forward pass as a numpy loop over time."""
    h_NxM = np.zeros((x_NxTxD.shape[0], U.shape[0]), x_NxTxD.dtype)
    for t in range(x_NxTxD.shape[1]):
        h_NxM = np.tanh(x_NxTxD[:, t] @ W + h_NxM @ U + b)
    return h_NxM @ Wo + bo


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    n, t, d, m, k = FLAGS.N, FLAGS.T, FLAGS.D, FLAGS.M, FLAGS.K
    rngs = nnx.Rngs(FLAGS.seed)
    model = rnn_jax.Sequential(
        [rnn_jax.SimpleRNN(m, rngs=rngs), rnn_jax.Dense(k, rngs=rngs)], input_shape=(t, d))
    x_NxTxD = np.random.default_rng(FLAGS.seed).standard_normal((n, t, d)).astype(np.float32)

    print(f"N={n} samples, T={t} steps, D={d} features, M={m} hidden units, K={k} outputs")
    W, U, b = model.layers[0].get_weights()
    Wo, bo = model.layers[1].get_weights()
    for name, w in (("W (kernel)", W), ("U (recurrent_kernel)", U), ("b (bias)", b),
                    ("W_o (dense kernel)", Wo), ("b_o (dense bias)", bo)):
        print(f"  {name:22s} shape {w.shape}")
    print(f"  parameters: SimpleRNN M(M+D)+M = {m * (m + d) + m}, "
          f"Dense MK+K = {m * k + k}; counted {model.count_params()}")

    graphdef, state = nnx.split(model)
    predict = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    t0 = time.perf_counter()
    y_model = np.asarray(jax.block_until_ready(predict(state, x_NxTxD)))
    compile_s = time.perf_counter() - t0  # first call: trace + compile + run

    results = {"N": n, "T": t, "D": d, "M": m, "K": k, "compile_seconds": compile_s}
    for label, x in (("N = 1", x_NxTxD[:1]), (f"N = {n}", x_NxTxD)):
        y_hand = forward_by_hand(x, W, U, b, Wo, bo)
        y_jax = np.asarray(predict(state, x))
        err = float(np.max(np.abs(y_hand - y_jax)))
        print(f"{label}: model output {y_jax.shape}, by hand {y_hand.shape}, "
              f"max |difference| = {err:.2e}")
        results[f"max_abs_diff_{label.replace(' ', '').replace('=', '')}"] = err
        if err > 1e-5:
            raise SystemExit(f"the hand-written forward pass differs from the model by {err}")
    print(f"first prediction: {np.round(y_model[0], 6)}   (compile {compile_s:.2f} s)")
    if FLAGS.workdir:
        os.makedirs(FLAGS.workdir, exist_ok=True)
        path = os.path.join(FLAGS.workdir, "results.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, path)
        logging.info("wrote %s", path)


if __name__ == "__main__":
    app.run(main)
