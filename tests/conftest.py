"""Test setup: Keras on the TensorFlow backend, quiet TensorFlow, shared paths."""

import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def keras():
    """Keras 3 with the TensorFlow backend (the parity reference)."""
    import keras as keras_module

    assert keras_module.backend.backend() == "tensorflow", keras_module.backend.backend()
    return keras_module


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def compilation_cache_of_the_commands():
    """JAX's persistent compilation cache where the experiment commands keep it
    (`--compilation_cache`'s default), for a module's in-process runs, as a
    command has it; JAX's settings restored after the module."""
    import jax

    from experiments import common

    before = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
    common.use_compilation_cache(common.FLAGS["compilation_cache"].default)
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


def train_in_process(module, *args, workdir=None) -> dict:
    """What `python -m experiments.NAME ARGS --workdir=WORKDIR` computes, run in
    this process (`module` is `experiments.NAME`): the config parsed from
    `args` as the command parses them (a `--flagfile=` path relative to the
    repository root), then `train_and_evaluate(config, workdir)`; returns
    its metrics. It runs on this process's JAX as it is (the command would
    first set up its devices and processes: `experiments.common.setup`)."""
    from experiments import common

    args = [a.replace("--flagfile=", f"--flagfile={ROOT}/", 1)
            if a.startswith("--flagfile=experiments/") else a for a in args]
    config = common.parse_config(module.define_flags, args)
    return module.train_and_evaluate(config, None if workdir is None else str(workdir))


def assert_flag_error(proc, flag: str, value: str | None = None):
    """A finished `python -m experiments.NAME` refused its flags as absl does: a
    non-zero exit status, no traceback, and one error line naming the flag (and
    its value when given)."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "Flags parsing error" in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    if value is None:  # absl: "Unknown command line flag 'NAME'"
        assert f"flag '{flag}'" in errors[0], errors[0]
    else:  # absl: "flag --NAME=VALUE: why"
        assert f"flag --{flag}={value}:" in errors[0], errors[0]


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` run only when asked for (`pytest -m slow`)."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: opt-in with pytest -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
