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
