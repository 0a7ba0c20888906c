"""Training over several devices (a `('seeds', 'batch')` mesh) equals the
one-device run, and by default host CPU devices get whole seeds only (the
seed slots padded to a multiple of the devices). Runs
in a subprocess with 4 forced host CPU devices."""

import json
import os
import subprocess
import sys

import numpy as np

from conftest import ROOT

SCRIPT = r"""
import json
import jax, numpy as np
import rnn_jax
from rnn_jax.training import default_devices, device_mesh

assert len(jax.devices()) == 4, jax.devices()
x, y, _ = rnn_jax.datasets.digits.sum_of_digits(300, seed=1)
yc = rnn_jax.datasets.to_categorical((y[:, 0] > 13).astype(int), 2)

def make(rngs):
    return rnn_jax.Sequential([rnn_jax.LSTM(6, rngs=rngs), rnn_jax.Dense(2, rngs=rngs),
                               rnn_jax.Activation("softmax")], input_shape=(3, 1))

FAST = {"xla_backend_optimization_level": 0,  # compiles faster
        "xla_llvm_disable_expensive_passes": True}
out = []
for num_seeds, batch in ((1, 12), (2, 10), (3, 8), (4, 16)):
    kw = dict(loss="categorical_crossentropy", metrics=["accuracy"], batch_size=batch, epochs=2,
              validation_split=0.2, seed=3, num_seeds=num_seeds, verbose=0,
              compiler_options=FAST)
    many = rnn_jax.fit(make, x, yc, devices=jax.devices(), **kw)
    one = rnn_jax.fit(make, x, yc, devices=jax.devices()[:1], **kw)
    mesh = device_mesh(jax.devices(), num_seeds)
    leaf = jax.tree.leaves(many.state.params)[0]
    out.append({
        "num_seeds": num_seeds, "mesh": dict(mesh.shape),
        "devices_used": len(leaf.sharding.device_set),
        "param_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                          for a, b in zip(jax.tree.leaves(many.state.params),
                                          jax.tree.leaves(one.state.params))),
        "loss_diff": float(np.max(np.abs(many.history["loss"] - one.history["loss"]))),
        "acc_diff": float(np.max(np.abs(many.history["val_accuracy"]
                                        - one.history["val_accuracy"]))),
        "one_device_set": len(jax.tree.leaves(one.state.params)[0].sharding.device_set),
    })
# Without devices=: on host CPU devices, min(num_seeds, 4) of them, whole seeds each,
# the seed slots padded to a multiple of the devices (5 seeds: 8 slots).
default, compiled, padded = {}, {}, {}
for num_seeds in (1, 2, 4, 5):
    lines = []
    kw = dict(loss="categorical_crossentropy", batch_size=12, epochs=2, validation_split=0.2,
              seed=3, num_seeds=num_seeds, compiler_options=FAST)
    res = rnn_jax.fit(make, x, yc, verbose=1, print_fn=lines.append, **kw)
    default[num_seeds] = len(jax.tree.leaves(res.state.params)[0].sharding.device_set)
    compiled[num_seeds] = lines[0]
    if num_seeds == 5:
        one = rnn_jax.fit(make, x, yc, verbose=0, devices=jax.devices()[:1], **kw)
        padded = {
            "history_shape": list(res.history["val_loss"].shape),
            "state_seeds": int(jax.tree.leaves(res.state.params)[0].shape[0]),
            "param_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                              for a, b in zip(jax.tree.leaves(res.state.params),
                                              jax.tree.leaves(one.state.params))),
            "loss_diff": float(np.max(np.abs(res.history["loss"] - one.history["loss"]))),
        }
        # the seeds of each device one at a time (shard_map, then lax.map)
        mapped = rnn_jax.fit(make, x, yc, verbose=1, print_fn=lines.append, seed_chunk=1, **kw)
        compiled["5_mapped"] = [l for l in lines if l.startswith("compiled")][-1]
        padded["mapped_param_diff"] = max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(mapped.state.params),
                            jax.tree.leaves(one.state.params)))
        padded["mapped_loss_diff"] = float(np.max(np.abs(mapped.history["loss"]
                                                         - one.history["loss"])))
default[3] = len(default_devices(3))
out.append({"default_devices_used": default, "compiled_lines": compiled, "padded": padded})
print(json.dumps(out))
"""


def test_fit_on_four_devices_equals_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    default = results.pop()
    assert default["default_devices_used"] == {"1": 1, "2": 2, "3": 3, "4": 4, "5": 4}
    # fit's compile line names the mesh when there is one, and the padding.
    lines = default["compiled_lines"]
    assert "devices" not in lines["1"], lines
    assert lines["2"].endswith("on 2 devices: 2 x 1 (seeds x batch))"), lines
    assert lines["4"].endswith("on 4 devices: 4 x 1 (seeds x batch))"), lines
    assert lines["5"].endswith("on 4 devices: 4 x 1 (seeds x batch); 3 seed slots repeat "
                               "the first seeds)"), lines
    # 5 seeds in 8 slots: only the 5 come back, and they train what one device trains.
    padded = default["padded"]
    assert padded["history_shape"] == [5, 2] and padded["state_seeds"] == 5, padded
    assert padded["param_diff"] < 1e-5 and padded["loss_diff"] < 1e-5, padded
    assert padded["mapped_param_diff"] < 1e-5 and padded["mapped_loss_diff"] < 1e-5, padded
    assert lines["5_mapped"].endswith("3 seed slots repeat the first seeds; a device's seeds "
                                      "one at a time)"), lines
    meshes = {r["num_seeds"]: r["mesh"] for r in results}
    # devices=jax.devices(): gcd(num_seeds, 4) rows of seeds; each minibatch over the rest.
    assert meshes == {1: {"seeds": 1, "batch": 4}, 2: {"seeds": 2, "batch": 2},
                      3: {"seeds": 1, "batch": 4}, 4: {"seeds": 4, "batch": 1}}
    for r in results:
        assert r["devices_used"] == 4 and r["one_device_set"] == 1, r
        # Same training up to float rounding (sums reduced across devices).
        assert r["param_diff"] < 1e-5, r
        assert r["loss_diff"] < 1e-5, r
        assert r["acc_diff"] <= 1 / 60 + 1e-9, r  # at most one borderline sample flips


HANG_SCRIPT = r"""
import faulthandler, sys
faulthandler.dump_traceback_later(150, exit=True)  # a hang: print the stacks, exit 1
import jax, numpy as np
import rnn_jax

assert len(jax.devices()) == 2, jax.devices()
rng = np.random.default_rng(0)
x = rng.integers(0, 100, (60, 5, 1)).astype(np.float32)
y = np.eye(4, dtype=np.float32)[np.arange(60) % 4]

def make(rngs):  # LSTM(50): its (50, 200) recurrent kernel's QR is big enough to
    # be split over XLA's thread pool by jaxlib's batched LAPACK kernels
    return rnn_jax.Sequential([rnn_jax.LSTM(50, rngs=rngs), rnn_jax.Dense(4, rngs=rngs),
                               rnn_jax.Activation("softmax")], input_shape=(5, 1))

res = rnn_jax.fit(make, x, y, loss="categorical_crossentropy", batch_size=30, epochs=1,
                  num_seeds=4, verbose=0,
                  compiler_options={"xla_backend_optimization_level": 0,
                                    "xla_llvm_disable_expensive_passes": True})
assert len(jax.tree.leaves(res.state.params)[0].sharding.device_set) == 2
print("ok", res.history["loss"].shape)
"""


def test_fit_two_seeds_per_host_device_does_not_hang():
    # 4 seeds of an LSTM(50) on 2 host CPU devices hung at 0% CPU in the init
    # program (batched QR of the orthogonal initializer, both threads of a
    # 2-core machine's XLA pool blocked in jaxlib's ParallelBatchMap). In a
    # subprocess, so that a hang fails the test (faulthandler, then timeout).
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    try:
        proc = subprocess.run([sys.executable, "-c", HANG_SCRIPT], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"fit hung (killed after {err.timeout} s)") from None
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok (4, 1)", proc.stdout[-2000:]


SWEEP_SCRIPT = r"""
import json
import jax, numpy as np
import rnn_jax

assert len(jax.devices()) == 4, jax.devices()
x, y, _ = rnn_jax.datasets.digits.sum_of_digits(200, seed=1)

def make(rngs):
    return rnn_jax.Sequential([rnn_jax.SimpleRNN(3, rngs=rngs), rnn_jax.Dense(1, rngs=rngs)],
                              input_shape=(3, 1))

FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
out = {}
# 5 members on the default 4 host devices: 8 slots, 3 repeating the first members;
# 6 members on a 2 x 2 (members x batch) mesh.
for name, lrs, num_seeds, devices in (("padded", [1e-3, 3e-3, 1e-2, 3e-2, 1e-1], 1, None),
                                      ("mesh", [1e-2, 3e-2, 1e-1], 2, jax.devices())):
    kw = dict(loss="mse", batch_size=10, epochs=2, validation_split=0.2, seed=3,
              num_seeds=num_seeds, learning_rate=lrs, compiler_options=FAST)
    lines = []
    many = rnn_jax.fit(make, x, y, devices=devices, print_fn=lines.append, **kw)
    one = rnn_jax.fit(make, x, y, devices=jax.devices()[:1], verbose=0, **kw)
    out[name] = {
        "line": lines[0], "history_shape": list(many.history["loss"].shape),
        "lr_state": np.asarray(many.state.opt_state.hyperparams["learning_rate"]).tolist(),
        "param_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                          for a, b in zip(jax.tree.leaves(many.state.params),
                                          jax.tree.leaves(one.state.params))),
        "loss_rel_diff": float(np.max(np.abs(many.history["loss"] - one.history["loss"])
                                      / np.abs(one.history["loss"]))),
        "distinct": bool(not np.allclose(many.history["loss"][0], many.history["loss"][-1])),
    }
print(json.dumps(out))
"""


def test_sweep_on_four_devices_equals_one_device():
    """A sweep's members spread over devices (padded slots repeat the first
    members, values included) train what one device trains."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SWEEP_SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    padded, mesh = results["padded"], results["mesh"]
    assert padded["line"].endswith("on 4 devices: 4 x 1 (seeds x batch); 3 seed slots repeat "
                                   "the first seeds)"), padded["line"]
    assert "5 members: 5 values of learning_rate x 1 seed" in padded["line"]
    assert padded["history_shape"] == [5, 2]
    assert mesh["line"].endswith("on 4 devices: 2 x 2 (seeds x batch))"), mesh["line"]
    assert mesh["history_shape"] == [6, 2]
    np.testing.assert_allclose(padded["lr_state"], [1e-3, 3e-3, 1e-2, 3e-2, 1e-1], rtol=1e-7)
    np.testing.assert_allclose(mesh["lr_state"], [1e-2, 1e-2, 3e-2, 3e-2, 1e-1, 1e-1],
                               rtol=1e-7)
    for r in (padded, mesh):
        # Same training up to float rounding (the mesh's sums are reduced across devices).
        assert r["param_diff"] < 1e-5 and r["loss_rel_diff"] < 1e-5, r
        assert r["distinct"], r
