"""Keras LSTM weights in cuDNN's layout (`rnn_jax.cudnn`), checked on CPU.

`jax.experimental.rnn.lstm` (cuDNN) runs on NVIDIA GPUs only. Here it is
stood in for by its CPU twin: the same flat weights unpacked by JAX's own
`unpack_lstm_weights` into `jax.experimental.rnn.lstm_ref` (`cudnn_on_cpu`),
so `rnn_jax.cudnn.lstm` itself runs, layout, lengths and initial state
included, and is checked against the numpy LSTM of `tests/reference.py` and
against `rnn_jax.LSTM`. The speed and the GPU parity are
`python -m benchmarks.cudnn_lstm`'s (on a GPU).
"""

import inspect
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from conftest import ROOT
from flax import nnx
from jax.experimental import rnn

import rnn_jax
from benchmarks import cudnn_lstm
from rnn_jax import cudnn


def _lstm_by_ref(x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers,
                 dropout, bidirectional, precision=None):
    """`jax.experimental.rnn.lstm`'s contract computed by its CPU reference."""
    assert weights.shape == (rnn.get_num_params_in_lstm(input_size, hidden_size, num_layers,
                                                        bidirectional),)
    unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers,
                                       bidirectional)
    return rnn.lstm_ref(x, h_0, c_0, *unpacked, seq_lengths, input_size, hidden_size,
                        num_layers, dropout, bidirectional)


@pytest.fixture
def cudnn_on_cpu(monkeypatch):
    """`jax.experimental.rnn.lstm` replaced by `_lstm_by_ref` (same parameters)."""
    assert (list(inspect.signature(_lstm_by_ref).parameters)
            == list(inspect.signature(rnn.lstm).parameters))
    monkeypatch.setattr(rnn, "lstm", _lstm_by_ref)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
def test_cudnn_layout_computes_keras_lstm(rng, cudnn_on_cpu, use_bias, with_state):
    b, t, d, u = 4, 7, 3, 5
    x = rng.normal(size=(b, t, d)).astype(np.float32)
    weights = [rng.normal(scale=0.5, size=s).astype(np.float32)
               for s in ((d, 4 * u), (u, 4 * u), (4 * u,))[:3 if use_bias else 2]]
    lengths = np.array([7, 5, 1, 7])  # right-padded, as cuDNN takes them
    mask = np.arange(t)[None, :] < lengths[:, None]
    state = ([rng.normal(size=(b, u)).astype(np.float32) for _ in range(2)]
             if with_state else None)

    y, h, c = cudnn.lstm(x, *(weights if use_bias else weights + [None]), initial_state=state,
                         lengths=lengths)
    want_y, (want_h, want_c) = reference.rnn_forward(
        "lstm", weights, x, mask=mask, initial_state=state, return_sequences=True,
        zero_output_for_mask=True)
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c, want_c, rtol=1e-5, atol=1e-5)


def test_cudnn_layout_of_a_trained_layer(rng, cudnn_on_cpu):
    """The weights of an `rnn_jax.LSTM` (forget bias 1), full-length sequences:
    the same last output as the layer's own scan."""
    layer = rnn_jax.LSTM(6, input_shape=(9, 2), rngs=nnx.Rngs(3))
    x = rng.normal(size=(5, 9, 2)).astype(np.float32)
    _, h, _ = cudnn.lstm(x, *layer.get_weights())
    np.testing.assert_allclose(h, np.asarray(layer(jnp.asarray(x))), rtol=1e-5, atol=1e-5)


def test_cudnn_weights_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="mismatched shapes"):
        cudnn.to_cudnn_weights(np.zeros((3, 20)), np.zeros((4, 20)))
    with pytest.raises(ValueError, match=r"bias of shape \(16,\), want \(20,\)"):
        cudnn.to_cudnn_weights(np.zeros((3, 20)), np.zeros((5, 20)), np.zeros(16))


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN needs an NVIDIA GPU")
def test_cudnn_lstm_equals_the_scan_on_gpu(rng):
    layer = rnn_jax.LSTM(8, return_sequences=True, input_shape=(6, 3), rngs=nnx.Rngs(0))
    x = rng.normal(size=(4, 6, 3)).astype(np.float32)
    y, _, _ = cudnn.lstm(x, *layer.get_weights(), precision=jax.lax.Precision.HIGHEST)
    with jax.default_matmul_precision("highest"):
        want = layer(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_cudnn_benchmark_measures_parity_and_speed(monkeypatch, tmp_path, cudnn_on_cpu):
    """`benchmarks.cudnn_lstm.run_sizes` end to end on CPU, cuDNN's LSTM stood in
    for by its CPU reference: parity near float rounding, every timing recorded; a
    size that fails is recorded with its error and the next one still runs."""

    def failing_at_batch_2(x, *args, **kwargs):
        if x.shape[0] == 2:
            raise RuntimeError("out of memory (a stand-in failure)")
        return _lstm_by_ref(x, *args, **kwargs)

    monkeypatch.setattr(rnn, "lstm", failing_at_batch_2)
    out, lines = tmp_path / "cudnn.json", []
    status = cudnn_lstm.run_sizes([(2, 4, 3), (3, 5, 4)], features=2, repeats=2, out=str(out),
                                  progress=lines.append)
    assert status == 1
    failed, rec = json.loads(out.read_text())["results"]
    assert failed == {"batch": 2, "steps": 4, "units": 3,
                      "error": "RuntimeError: out of memory (a stand-in failure)"}
    assert "2:4:3 failed: RuntimeError" in lines[1]
    assert rec["parity"]["forward"] < 1e-5 and rec["parity"]["grad"] < 1e-5, rec["parity"]
    for name in ("scan_forward", "cudnn_forward", "scan_train", "cudnn_train"):
        assert rec[name]["runs"] == 2 and rec[name]["min"] > 0 and rec[name]["compile"] > 0
    assert rec["forward_speedup"] > 0 and rec["train_speedup"] > 0


def test_cudnn_benchmark_refuses_bad_sizes_and_cpu():
    assert cudnn_lstm.parse_size("64:100:256") == (64, 100, 256)
    for bad in ("64:100", "64:x:3", "0:1:1"):
        with pytest.raises(ValueError, match=f"{bad!r} is not B:T:U"):
            cudnn_lstm.parse_size(bad)
    if jax.default_backend() == "gpu":
        return
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cudnn_lstm"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cuDNN's LSTM needs an NVIDIA GPU" in proc.stderr, proc.stderr[-2000:]
