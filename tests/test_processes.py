"""Training over several processes with JAX's distributed runtime (Gloo for the
CPU collectives), on localhost: two processes train what one process trains,
per seed; Orbax writes and reads their checkpoints together; an experiment
whose process was killed resumes, after both are restarted, to the same
`metrics.json` as an unbroken run. Every process runs as a subprocess with a
timeout, so that a hang fails the test instead of stalling the suite."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

TIMEOUT = 240  # seconds for one group of processes
FAST = {"xla_backend_optimization_level": 0,  # compiles faster
        "xla_llvm_disable_expensive_passes": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argvs, logs):
    """Start one subprocess per argv (stdout and stderr to a log file each)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=open(log, "w"),
                             stderr=subprocess.STDOUT) for argv, log in zip(argvs, logs)]


def finish(procs, logs, timeout=TIMEOUT):
    """Wait for every process; kill them all and fail, with their logs, when one
    takes longer than `timeout` seconds in all. Returns the exit statuses."""
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise AssertionError("processes hung (killed after %d s):\n%s" % (
            timeout, "\n".join(f"--- {log}\n{tail(log)}" for log in logs))) from None


def tail(log, chars=3000):
    with open(log) as f:
        return f.read()[-chars:]


WORKER = r"""
import sys
import numpy as np
import rnn_jax

process_id, port, out, ckpt = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
rnn_jax.use_cpu_cores(int(sys.argv[5]))
from experiments.common import use_compilation_cache
use_compilation_cache(sys.argv[6])  # the second start reads the programs from there
assert rnn_jax.use_processes(f"127.0.0.1:{port}", num_processes=2, process_id=process_id) == 2
import jax
from experiments.reuters import make_model_fn

rng = np.random.default_rng(0)  # Reuters-like: word ids as a scalar feature, 46 topics
x = rng.integers(1, 300, (120, 8, 1)).astype(np.float32)
y = np.eye(46, dtype=np.float32)[(x[:, 0, 0] % 46).astype(int)]
kw = dict(loss="categorical_crossentropy", metrics=["accuracy"], batch_size=20, epochs=3,
          validation_split=0.25, seed=4, num_seeds=NUM_SEEDS, verbose=0, checkpoint_dir=ckpt,
          checkpoint_every=2, compiler_options=FAST)
result = rnn_jax.fit(make_model_fn("lstm", "raw", 8, units=6), x, y, **kw)
leaf = jax.tree.leaves(result.state.params)[0]
params = [np.concatenate([np.ravel(a) for a in jax.tree.leaves(result.params(i))])
          for i in range(NUM_SEEDS)]
np.savez(out, params=np.stack(params), devices=len(leaf.sharding.device_set),
         local=len(jax.local_devices()),
         **{k: np.asarray(v) for k, v in result.history.items()})
"""


def run_two_processes(tmp_path, name, num_seeds, cpu_devices):
    """Both processes of `WORKER`; returns their saved results and the checkpoint dir."""
    port, ckpt = free_port(), tmp_path / f"{name}-ckpt"
    script = WORKER.replace("NUM_SEEDS", str(num_seeds)).replace("FAST", repr(FAST))
    argvs = [[sys.executable, "-c", script, str(i), str(port), str(tmp_path / f"{name}{i}.npz"),
              str(ckpt), str(cpu_devices), str(tmp_path / "xla-cache")] for i in range(2)]
    logs = [str(tmp_path / f"{name}{i}.log") for i in range(2)]
    statuses = finish(start(argvs, logs), logs)
    assert statuses == [0, 0], "\n".join(tail(log) for log in logs)
    return [dict(np.load(tmp_path / f"{name}{i}.npz")) for i in range(2)], ckpt


def one_process_fit(num_seeds, epochs=3):
    import rnn_jax
    from experiments.reuters import make_model_fn

    rng = np.random.default_rng(0)
    x = rng.integers(1, 300, (120, 8, 1)).astype(np.float32)
    y = np.eye(46, dtype=np.float32)[(x[:, 0, 0] % 46).astype(int)]
    return rnn_jax.fit(make_model_fn("lstm", "raw", 8, units=6), x, y,
                       loss="categorical_crossentropy", metrics=["accuracy"], batch_size=20,
                       epochs=epochs, validation_split=0.25, seed=4, num_seeds=num_seeds,
                       verbose=0, compiler_options=FAST)


def test_two_processes_train_what_one_process_trains(tmp_path):
    # 5 seeds over 2 processes of 2 devices each: 8 slots, 3 repeating the first
    # seeds. (8 seeds over 2 processes of 1 device: the test below.)
    num_seeds, cpu_devices, devices = 5, 2, 4
    outs, ckpt = run_two_processes(tmp_path, "run", num_seeds, cpu_devices)
    import jax

    one = one_process_fit(num_seeds)
    assert len(jax.devices()) == 1  # the reference: every seed on one device
    ref = np.stack([np.concatenate([np.ravel(a) for a in jax.tree.leaves(one.params(i))])
                    for i in range(num_seeds)])
    for out in outs:  # each process gets every seed's results
        assert int(out["devices"]) == devices and int(out["local"]) == cpu_devices
        assert out["params"].shape == ref.shape
        # per seed what one process trains, up to float rounding (the seeds of a
        # device are vmapped together: other batch sizes of the same dots)
        np.testing.assert_allclose(out["params"], ref, rtol=0, atol=1e-5)
        for k, v in one.history.items():
            np.testing.assert_allclose(out[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    # Orbax wrote one checkpoint directory for both processes: epochs 2 and 3,
    # holding the real seeds only.
    assert sorted(n for n in os.listdir(ckpt) if n.isdigit()) == ["2", "3"]
    # This process alone reads that checkpoint back, seed by seed.
    from flax import nnx

    from experiments.reuters import make_model_fn
    from rnn_jax import checkpoints

    for i in range(num_seeds):
        model = checkpoints.load_weights(make_model_fn("lstm", "raw", 8, units=6)(nnx.Rngs(0)),
                                         str(ckpt), seed_index=i)
        flat = np.concatenate([np.ravel(a) for a in jax.tree.leaves(nnx.state(model, nnx.Param))])
        np.testing.assert_array_equal(flat, outs[0]["params"][i])
    with pytest.raises(IndexError):
        checkpoints.load_weights(model, str(ckpt), seed_index=num_seeds)

    # (Restoring across processes: the test below.)


def sum3(workdir, *extra):
    return [sys.executable, "-m", "experiments.sum3", "--flagfile=experiments/flags/sum3.flags",
            "--num_seeds=8", "--num_samples=2000", "--epochs=12", "--checkpoint_every=1",
            f"--compilation_cache={workdir.parent / 'xla-cache'}", "--cpu_devices=1",
            f"--workdir={workdir}", *extra]


def test_killed_process_resumes_to_the_same_metrics(tmp_path):
    # The reference: one process, unbroken.
    ref_log = str(tmp_path / "one.log")
    assert finish(start([sum3(tmp_path / "one")], [ref_log]), [ref_log]) == [0], tail(ref_log)
    reference = json.loads((tmp_path / "one" / "metrics.json").read_text())

    workdir = tmp_path / "two"

    def two(tag):
        port = free_port()
        argvs = [sum3(workdir, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                      f"--process_id={i}", "--heartbeat_timeout=5") for i in range(2)]
        logs = [str(tmp_path / f"{tag}{i}.log") for i in range(2)]
        return start(argvs, logs), logs

    procs, logs = two("killed")
    deadline = time.monotonic() + TIMEOUT
    while not (workdir / "checkpoints" / "2").is_dir():  # epoch 2 is saved
        assert all(p.poll() is None for p in procs), "\n".join(tail(log) for log in logs)
        if time.monotonic() > deadline:
            finish(procs, logs, timeout=1)
        time.sleep(0.01)
    procs[1].send_signal(signal.SIGKILL)
    # The survivor notices (a failed collective, then the heartbeat timeout) and
    # exits with an error instead of waiting for its peer forever.
    statuses = finish(procs, logs, timeout=120)
    assert statuses[0] != 0 and statuses[1] == -signal.SIGKILL, statuses
    assert not (workdir / "metrics.json").exists()

    procs, logs = two("restarted")
    assert finish(procs, logs) == [0, 0], "\n".join(tail(log) for log in logs)
    out = tail(logs[0], 100000)
    assert "resumed from" in out, out[-2000:]
    assert json.loads((workdir / "metrics.json").read_text()) == reference
    # process 0 writes the outputs and prints the run; process 1 prints nothing of it
    assert "wrote" in out and "wrote" not in tail(logs[1], 100000)
    history = (workdir / "history.jsonl").read_text().splitlines()
    assert history == (tmp_path / "one" / "history.jsonl").read_text().splitlines()


@pytest.mark.parametrize("kwargs, message", [
    (dict(coordinator_address="127.0.0.1:1234"), "together"),
    (dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=2),
     "process_id must be in [0, 2)"),
    (dict(coordinator_address="127.0.0.1:1234", num_processes=0, process_id=0),
     "num_processes must be a positive integer"),
])
def test_use_processes_refuses_incomplete_or_bad_arguments(kwargs, message):
    import rnn_jax

    with pytest.raises(ValueError) as err:  # before anything starts
        rnn_jax.use_processes(**kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize("flags, message", [
    (["--num_processes=2", "--process_id=0"], "need --coordinator_address, --num_processes "
     "and --process_id together"),
    (["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=2"],
     "--process_id=2 must be < --num_processes=2"),
    (["--distributed", "--num_processes=2"], "--distributed reads the process flags"),
])
def test_experiment_refuses_inconsistent_process_flags(tmp_path, flags, message):
    proc = subprocess.run([sys.executable, "-m", "experiments.sum3",
                           "--flagfile=experiments/flags/sum3.flags", "--epochs=1",
                           f"--workdir={tmp_path}", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "run.json").exists()
