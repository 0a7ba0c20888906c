"""cuDNN's LSTM (`jax.experimental.rnn`) against rnn_jax's scan, on an NVIDIA GPU.

    python -m benchmarks.cudnn_lstm                      # the default sizes
    python -m benchmarks.cudnn_lstm --sizes=64:100:256,1024:100:1024

For each size `B:T:U` (batch, steps, units; `D = U` input features unless
`--features`), with the same weights (an `rnn_jax.LSTM`'s, moved to cuDNN's
layout by `rnn_jax.cudnn.to_cudnn_weights`):

- parity: the last output and the gradient of `sum(last output ** 2)` with
  respect to `x` and to the three weights, cuDNN vs the scan, both at
  `Precision.HIGHEST` (float32 matmuls), as the largest absolute difference
  relative to the largest absolute value;
- speed, at JAX's default precision (which lets both use TF32 on GPUs that
  have it): `forward` (`(B, T, D) -> (B, U)`) and `train` (that gradient),
  each jitted and compiled ahead (compile time apart), median [min, max] of
  `--repeats` calls, each waited for; and the ratio scan / cuDNN.

Prints a table, writes `--out` (JSON, rewritten after every size; a size that
fails is recorded with its error and the others still run, exit status 1). Refuses
to run without a GPU:
`jax.experimental.rnn.lstm` has no CPU lowering.
"""

from __future__ import annotations

import functools
import platform

import jax
import jax.numpy as jnp
from absl import app, flags
from flax import nnx

import rnn_jax
from benchmarks import workloads
from benchmarks.report import stats
from rnn_jax import cudnn
from rnn_jax.workdir import write_json

FLAGS = flags.FLAGS
DEFAULT_SIZES = ["50:49:50", "64:100:256", "256:100:512", "64:1000:256", "1024:100:1024",
                 "4096:100:256"]


def define_flags():
    """The command's flags (defined when it runs, not on import, so that the
    tests can import `measure` beside the other benchmarks' flags)."""
    flags.DEFINE_list("sizes", DEFAULT_SIZES, "sizes B:T:U (batch, steps, units)")
    flags.DEFINE_integer("features", 0, "input features D (0: D = U)", lower_bound=0)
    flags.DEFINE_integer("repeats", 20, "timed calls per measurement", lower_bound=1)
    flags.DEFINE_string("out", "benchmarks/results/cudnn_lstm.json", "where the JSON results go")


def parse_size(text: str) -> tuple[int, int, int]:
    """`'B:T:U'` -> `(B, T, U)`, each a positive integer."""
    parts = text.split(":")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"--sizes: {text!r} is not B:T:U (three positive integers)")
    return size


def _cudnn_forward(weights, x, precision=None):
    """The last output `(B, U)` by cuDNN, `weights = (kernel, recurrent_kernel, bias)`."""
    return cudnn.lstm(x, *weights, precision=precision)[1]


def _grad(forward):
    """`(weights, x) -> (d weights, d x)` of `sum(forward(weights, x) ** 2)`."""
    return jax.grad(lambda w, x: jnp.sum(forward(w, x) ** 2), argnums=(0, 1))


def _timed(fn, args, repeats) -> dict:
    """Compile time and steady-state stats of `jax.jit(fn)(*args)` (one warm-up call)."""
    exe, compile_s = workloads.compile_timed(fn, *args)
    workloads.call_timed(exe, *args)
    times = workloads.repeat_calls(lambda: workloads.call_timed(exe, *args)[1], repeats)
    return {"compile": compile_s, **stats(times)}


def _rel_diff(a, b) -> float:
    a, b = jax.tree.leaves(a), jax.tree.leaves(b)
    scale = max(float(jnp.max(jnp.abs(y))) for y in b) or 1.0
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(a, b)) / scale


def measure(batch, steps, units, features, repeats) -> dict:
    """Parity and timings of one size (see the module docstring)."""
    layer = rnn_jax.LSTM(units, input_shape=(steps, features), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(layer)

    def scan_forward(params, x):  # the layer's own scan, its weights an argument
        return nnx.merge(graphdef, params)(x)

    def keras_order(params):  # (kernel, recurrent_kernel, bias) of a params-like State
        return tuple(jnp.asarray(w) for w in nnx.merge(graphdef, params).get_weights())

    weights = keras_order(params)
    x = jax.device_put(workloads.forward_input(batch, steps, features))
    with jax.default_matmul_precision("highest"):
        out_s = jax.jit(scan_forward)(params, x)
        g_params, g_x = jax.jit(_grad(scan_forward))(params, x)
    g_s = (keras_order(g_params), g_x)
    cudnn_hi = functools.partial(_cudnn_forward, precision=jax.lax.Precision.HIGHEST)
    out_c = jax.jit(cudnn_hi)(weights, x)
    g_c = jax.jit(_grad(cudnn_hi))(weights, x)
    rec = {"batch": batch, "steps": steps, "units": units, "features": features,
           "parity": {"forward": _rel_diff(out_c, out_s), "grad": _rel_diff(g_c, g_s)}}
    for name, fn, w in (("scan_forward", scan_forward, params),
                        ("cudnn_forward", _cudnn_forward, weights),
                        ("scan_train", _grad(scan_forward), params),
                        ("cudnn_train", _grad(_cudnn_forward), weights)):
        rec[name] = _timed(fn, (w, x), repeats)
    for kind in ("forward", "train"):
        rec[f"{kind}_speedup"] = (rec[f"scan_{kind}"]["median"]
                                  / rec[f"cudnn_{kind}"]["median"])
    return rec


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        sizes = [parse_size(s) for s in FLAGS.sizes]
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    if jax.default_backend() != "gpu":
        raise SystemExit("benchmarks.cudnn_lstm: cuDNN's LSTM needs an NVIDIA GPU; JAX's "
                         f"default backend here is {jax.default_backend()!r}")
    return run_sizes(sizes, FLAGS.features, FLAGS.repeats, FLAGS.out)


def run_sizes(sizes, features, repeats, out, progress=None) -> int:
    """`measure` for each `(B, T, U)`, a table line each, the JSON at `out`
    rewritten after every size (a run stopped early keeps what it measured).
    A size that fails (out of memory, a cuDNN error) is recorded with its
    error and the others still run; returns the exit status (1 if any failed)."""
    progress = progress or functools.partial(print, flush=True)
    records = []
    progress(f"{'B:T:U':>16} {'scan fwd':>10} {'cuDNN fwd':>10} {'x':>6} {'scan train':>11} "
             f"{'cuDNN train':>11} {'x':>6}  parity fwd / grad   (ms; x: scan / cuDNN)")
    for b, t, u in sizes:
        label = f"{b}:{t}:{u}"
        try:
            rec = measure(b, t, u, features or u, repeats)
        except Exception as e:  # recorded; the other sizes go on
            rec = {"batch": b, "steps": t, "units": u, "error": f"{type(e).__name__}: {e}"}
            progress(f"{label:>16} failed: {rec['error'][:300]}")
        else:
            ms = {k: rec[k]["median"] * 1e3 for k in
                  ("scan_forward", "cudnn_forward", "scan_train", "cudnn_train")}
            progress(f"{label:>16} {ms['scan_forward']:10.3f} {ms['cudnn_forward']:10.3f} "
                     f"{rec['forward_speedup']:6.2f} {ms['scan_train']:11.3f} "
                     f"{ms['cudnn_train']:11.3f} {rec['train_speedup']:6.2f}  "
                     f"{rec['parity']['forward']:.1e} / {rec['parity']['grad']:.1e}")
        records.append(rec)
        write_json(out, {
            "device": str(jax.devices()[0]), "jax": jax.__version__,
            "python": platform.python_version(), "rnn_jax": rnn_jax.__version__,
            "repeats": repeats, "results": records})
    progress(f"wrote {out}")
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
