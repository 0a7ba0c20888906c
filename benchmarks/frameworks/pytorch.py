"""PyTorch (float32, eager), written the way a PyTorch user would.

On the GPU when `torch.cuda.is_available()` (as the JAX frameworks run on
JAX's default device, the GPU where there is one), else on the CPU with all
its cores. On the GPU every timing ends with `torch.cuda.synchronize()`.

What is timed (`time.perf_counter`, seconds; data conversion and model
building outside the timing):

- `sum3`: a whole training run (all epochs: reshuffled minibatches with
  `zero_grad/backward/step`, then the validation MSE under `no_grad`), each
  on a fresh model. The linear cell is a hand-written module with a Python
  loop over the 3 steps, since `nn.RNN` has only tanh and relu.
- `reuters`: each epoch of one training run, `nn.LSTM` or `nn.RNN` (tanh)
  -> last step -> `nn.Linear`, cross-entropy on logits. `first` is epoch 1.
- `forward`: one call of `nn.RNN`/`nn.GRU`/`nn.LSTM` under `inference_mode`,
  the last step's output `(B, U)` as a NumPy array.

Eager PyTorch compiles nothing, so `first` differs from `times` only by
one-off warm-up (allocations, kernel selection).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch
from torch import nn

from benchmarks import workloads

torch.set_num_threads(os.cpu_count())
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

CELLS = {"simple_rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
KERNELS_NOTE = ("torch's own fused kernels: cuDNN's RNNs on the GPU; on the CPU nn.LSTM "
                "through oneDNN (mkldnn_rnn_layer), nn.RNN/nn.GRU as native ATen loops over "
                "per-step GEMMs")


def versions() -> dict:
    device = ("cpu" if DEVICE.type == "cpu"
              else f"{DEVICE.type} ({torch.cuda.get_device_name(DEVICE)})")
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": device}


def _sync() -> None:
    """Waits for the GPU's queued work (nothing to wait for on the CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


class LinearRNN(nn.Module):
    """`h_t = x_t W + h_{t-1} U + b` with no activation; returns the last `h`."""

    def __init__(self, features: int = 1, units: int = 1):
        super().__init__()
        limit = math.sqrt(6.0 / (features + units))
        self.W = nn.Parameter(torch.empty(features, units).uniform_(-limit, limit))
        self.U = nn.Parameter(nn.init.orthogonal_(torch.empty(units, units)))
        self.b = nn.Parameter(torch.zeros(units))

    def forward(self, x):
        h = x.new_zeros(x.shape[0], self.U.shape[0])
        for t in range(x.shape[1]):
            h = x[:, t] @ self.W + h @ self.U + self.b
        return h


def _train_epoch(model, opt, loss_fn, x, y, batch_size):
    perm = torch.randperm(len(x), device=x.device)
    for i in range(0, len(x), batch_size):
        idx = perm[i:i + batch_size]
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()


def sum3(num_samples, epochs, batch_size, repeats):
    """Notebook 000: whole training runs, each on a fresh model."""
    x, y = workloads.sum3_data(num_samples)
    (xt, yt), (xv, yv) = workloads.split(x, y, 0.2)
    xt, yt, xv, yv = (torch.from_numpy(np.ascontiguousarray(a)).to(DEVICE)
                      for a in (xt, yt, xv, yv))
    loss_fn = nn.MSELoss()

    def run(seed):
        torch.manual_seed(seed)
        model = LinearRNN().to(DEVICE)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
        _sync()
        t0 = time.perf_counter()
        for _ in range(epochs):
            model.train()
            _train_epoch(model, opt, loss_fn, xt, yt, batch_size)
            model.eval()
            with torch.no_grad():
                loss_fn(model(xv), yv).item()
        return time.perf_counter() - t0

    first = run(0)
    times = [run(r) for r in range(1, repeats + 1)]
    return {"first": first, "times": times,
            "note": "whole training run of a fresh model; the linear cell is a hand-written "
                    "nn.Module with a Python loop over 3 steps (nn.RNN has no linear activation)"}


class _Classifier(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        self.out = nn.Linear(50, 46)

    def forward(self, x):
        h, _ = self.rnn(x)
        return self.out(h[:, -1])


def reuters(model, repeats, data_path=None):
    """Notebook 004: the wall time of each of `1 + repeats` epochs."""
    x, y = workloads.reuters_data(data_path)
    x = torch.tensor(x, device=DEVICE)  # a copy: the cached data are read-only
    labels = torch.from_numpy(np.argmax(y, axis=1).astype(np.int64)).to(DEVICE)
    torch.manual_seed(0)
    rnn = (nn.LSTM(x.shape[-1], 50, batch_first=True) if model == "lstm"
           else nn.RNN(x.shape[-1], 50, batch_first=True))
    net = _Classifier(rnn).to(DEVICE)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    epoch_times = []
    for _ in range(1 + repeats):
        _sync()
        t0 = time.perf_counter()
        _train_epoch(net, opt, loss_fn, x, labels, 50)
        _sync()
        epoch_times.append(time.perf_counter() - t0)
    return {"first": epoch_times[0], "times": epoch_times[1:],
            "note": f"per-epoch wall time; CrossEntropyLoss on logits; {KERNELS_NOTE}"}


def forward(cell, batch, steps, units, features, repeats, min_seconds=0.0):
    """One forward call `(B, T, D) -> (B, U)` under `torch.inference_mode()`."""
    torch.manual_seed(0)
    layer = CELLS[cell](features, units, batch_first=True).eval().to(DEVICE)
    x = torch.from_numpy(workloads.forward_input(batch, steps, features)).to(DEVICE)

    def call():
        _sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out, _ = layer(x)
            out[:, -1].cpu().numpy()  # waits for the result, as the other workers do
        return time.perf_counter() - t0

    first = call()
    times = workloads.repeat_calls(call, repeats, min_seconds)
    return {"first": first, "times": times, "note": f"eager, inference_mode; {KERNELS_NOTE}"}
