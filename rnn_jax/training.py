"""The training engine: Keras' `fit`, compiled whole, for one seed or many.

    import rnn_jax
    from flax import nnx

    def make_model(rngs):
        return rnn_jax.Sequential([rnn_jax.SimpleRNN(1, activation="linear", rngs=rngs)],
                                  input_shape=(3, 1))

    result = rnn_jax.fit(make_model, x_Nx3x1, y_Nx1, loss="mean_squared_error",
                         optimizer="adam", batch_size=4, epochs=5,
                         validation_split=0.2, seed=0, num_seeds=64)
    result.history["val_loss"]      # (64, 5): one row per seed
    model = result.model(3)          # the trained model of seed 3

What runs where:

- One epoch is one compiled program: `jax.lax.scan` over the minibatches
  (forward, loss, gradient, optimizer update, metric sums), then the
  validation pass, also a scan. The host sees each epoch once: to show
  progress, call the callbacks (`rnn_jax.callbacks`) and save checkpoints.
- A run is a pure function of a key: `key -> (init_key, train_key)`; the
  initial weights come from `init_key`, the shuffle order and dropout masks
  of epoch `e` from `fold_in(train_key, e)`. Seed `i` of a run with
  `num_seeds=N` uses `key(seed + i)`, so it trains what a separate run with
  `seed + i` trains; the N runs are one program (`jax.vmap` over keys).
- A sweep (`learning_rate=[...]`, `sweep={...}`; `rnn_jax.sweeps`) adds
  optimizer (or model-factory) values to the vmapped axis: member `m` has
  value combination `m // num_seeds` and key `seed + m % num_seeds`, its
  optimizer values held in its optimizer state (`optax.inject_hyperparams`).
- Keras' `fit` semantics: `validation_split` takes the last fraction of the
  samples, before any shuffling (`split_at = floor(N * (1 - split))`); the
  training samples are shuffled every epoch (`shuffle=True`); a last partial
  batch is trained on (it is padded to the batch shape with zero-weight
  samples, and its loss is the mean over its real samples); the epoch's
  `loss` and metrics are means over the epoch's samples, each taken at the
  weights of its step, as Keras' progress bar reports them; `val_*` are
  computed with the weights at the end of the epoch.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rnn_jax import callbacks as callbacks_lib
from rnn_jax import losses as losses_lib
from rnn_jax import metrics as metrics_lib
from rnn_jax import optimizers as optimizers_lib
from rnn_jax import sweeps as sweeps_lib
from rnn_jax.base import check_finite_data


class TrainState(NamedTuple):
    """Everything a run carries from epoch to epoch (a pytree)."""

    params: nnx.State         # the model's `nnx.Param`s
    opt_state: optax.OptState
    key: jax.Array            # the run's training key; epoch e uses fold_in(key, e)
    epoch: jax.Array          # int32, epochs completed
    diverged_at: jax.Array    # int32 (2,): (epoch, step) of the first non-finite loss or
                              # gradient (epoch from 1, step from 0); (-1, -1) while finite


class NonFiniteLossError(FloatingPointError):
    """Every seed of a `fit` met a non-finite loss or gradient.

    Attributes:
      diverged: seed index -> `(epoch, step)` of its first non-finite value.
      result: the `FitResult` so far: the history (NaN for the epoch that
        diverged), each seed's weights as before the epoch it diverged in.
      last_checkpoint: the newest checkpoint directory (the last good state)
        when `fit` was given `checkpoint_dir`, else None.
    """

    def __init__(self, message: str, diverged: dict, result, last_checkpoint=None):
        super().__init__(message)
        self.diverged = diverged
        self.result = result
        self.last_checkpoint = last_checkpoint


def as_inputs(x):
    """A model's inputs as host arrays: one array, or, for a model with several
    inputs (`rnn_jax.models.Model`), a list (or dict by input name) of arrays
    with the same number of samples."""
    if isinstance(x, dict):
        return {k: np.asarray(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [np.asarray(v) for v in x]
    return np.asarray(x)


def num_samples(x, what: str = "x") -> int:
    """The number of samples (first axis) of inputs `x` (see `as_inputs`);
    ValueError when its arrays disagree."""
    sizes = [np.shape(a)[0] if np.ndim(a) else None for a in jax.tree.leaves(x)]
    if not sizes or None in sizes:
        raise ValueError(f"{what} must hold arrays with a sample axis, got {x!r:.80}")
    if len(set(sizes)) > 1:
        raise ValueError(f"the arrays of {what} have different numbers of samples: {sizes}")
    return sizes[0]


def rows(x, index):
    """`a[index]` of every array of inputs `x` (a slice, or indices as `jnp.take`)."""
    if isinstance(index, slice):
        return jax.tree.map(lambda a: a[index], x)
    return jax.tree.map(lambda a: jnp.take(a, index, axis=0), x)


def per_sample(values):
    """Losses or metrics `(B, ...)` as one value per sample `(B,)`: the mean over
    the other axes (a sequence output's steps), so that the batch mean is Keras'
    mean over every element."""
    if values.ndim <= 1:
        return values
    return jnp.mean(values.reshape(values.shape[0], -1), axis=1)


def train_validation_split(n: int, validation_split: float) -> int:
    """Keras' split point: samples `[:split_at]` train, `[split_at:]` validate."""
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
    split_at = int(math.floor(n * (1.0 - validation_split)))
    if validation_split > 0 and (split_at == 0 or split_at == n):
        raise ValueError(f"validation_split={validation_split} of {n} samples leaves "
                         f"{split_at} for training and {n - split_at} for validation")
    return split_at


def shuffled_order(key, n: int) -> jax.Array:
    """A random permutation of `range(n)`, int32 `(n,)`, from `key`.

    `jax.random.permutation` sorts (key, value) pairs over several rounds,
    and XLA's CPU sort is slow (under `vmap` over many seeds, slower than
    training sum3 itself; figures in docs/performance.md). So:

    - `n <= 2048`: exactly uniform, by sorting. Each round sorts ONE uint32
      array, random high bits with the position packed into the low
      `b = bit_length(n - 1)` bits; ties in the random bits keep their order,
      and `ceil(3b / (32 - b))` rounds make a pair tied in every round at
      most `n**-3` likely, the bound `jax.random.permutation` keeps.
    - `n > 2048`: a keyed pseudo-random permutation, no sort: position `i`
      gets `P(i)`, where `P` is an 8-round Feistel network on `b`-bit
      integers (round function: an integer hash of one half, xor-ed into
      the other, with two random uint32 round keys), walked again while
      the value is `>= n` ("cycle walking", so the result is a permutation
      of `range(n)`). This is the construction behind TensorFlow's
      `random_index_shuffle` and Grain's index shuffle. Elementwise work
      only; `fit` takes it in two parts (`_order_and_tail`). It is not exactly uniform (no keyed
      shuffle reaches all `n!` orders), but tests find no bias: every item's
      position is uniform and neighbouring items are ordered either way
      half the time.
    """
    return _resolve_order(*_order_and_tail(key, n), n)


def _resolve_order(order, tail, n: int) -> jax.Array:
    """Entries of `_order_and_tail`'s order (any shape) as positions in `range(n)`."""
    if tail is None:
        return order
    out = order >= n
    return jnp.where(out, tail[jnp.where(out, order - n, 0)], order)


def _order_and_tail(key, n: int):
    """`shuffled_order(key, n)` in two parts, `(order (n,) int32, tail)`: the
    order, except that the Feistel path leaves each value `v >= n` of its
    first pass in place, to stand for `tail[v - n]`, the end of its cycle walk
    (`tail` is None when no value needs it). `_resolve_order` maps them.

    Why: under `vmap` a walk over the whole array repeats the slowest seed's
    walk for every seed (3 to 4 passes for 64 seeds of 8,000), and looking
    the few values up in the table for the whole array is a gather that XLA's
    CPU backend runs slowly. `fit` looks them up one gathered chunk of
    minibatches at a time instead (the same orders).
    """
    b = max(1, (n - 1).bit_length())
    if b <= 11:
        return _sorted_order(key, n, b), None
    round_keys = jax.random.bits(key, (_FEISTEL_ROUNDS, 2), jnp.uint32)

    def permute(v):  # a bijection of [0, 2**b)
        r = b // 2  # bits of the low half; the halves swap sizes each round
        for k in range(_FEISTEL_ROUNDS):
            lo, hi = v & jnp.uint32((1 << r) - 1), v >> r
            f = _hash_u32(lo, round_keys[k])
            v = (lo << (b - r)) | ((hi ^ f) & jnp.uint32((1 << (b - r)) - 1))
            r = b - r
        return v

    order = permute(jnp.arange(n, dtype=jnp.uint32)).astype(jnp.int32)
    m = (1 << b) - n  # the values a first pass can land on outside range(n)
    if not m:
        return order, None
    # The cycle walk of each of those m values, once: `tail[j]` is the first of
    # P(n+j), P(P(n+j)), ... below n. A value whose cycle lies wholly in
    # [n, 2**b) comes back to itself; no position reaches it, so it stops there.
    start = jnp.arange(n, 1 << b, dtype=jnp.uint32)

    def walking(v):
        return (v >= n) & (v != start)

    tail = jax.lax.while_loop(lambda v: jnp.any(walking(v)),
                              lambda v: jnp.where(walking(v), permute(v), v),
                              permute(start))
    return order, tail.astype(jnp.int32)


_FEISTEL_ROUNDS = 8

# XLA's CPU runtime runs a loop body on one thread when all of its buffers are
# at most this many bytes (`ThunkExecutor::Options`, not configurable).
SMALL_BUFFER_BYTES = 512


def default_chunk_bytes(num_seeds: int = 1) -> int:
    """`Engine.chunk_bytes` for one device: `SMALL_BUFFER_BYTES` shared by the
    seeds on CPU (under `vmap` each seed gathers its own chunk), else 0."""
    return SMALL_BUFFER_BYTES // num_seeds if jax.default_backend() == "cpu" else 0


def _hash_u32(x, key):
    """An integer hash of uint32 `x` keyed by two uint32s (multiply-xorshift)."""
    x = (x ^ key[0]) * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = (x + key[1]) * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _sorted_order(key, n: int, b: int) -> jax.Array:
    """Exactly uniform permutation of `range(n)` by packed uint32 sorts (`b` index bits)."""
    rounds = -(-3 * b // (32 - b))
    positions = jnp.arange(n, dtype=jnp.uint32)
    order = None
    for k in jax.random.split(key, rounds):
        packed = (jax.random.bits(k, (n,), jnp.uint32) << b) | positions
        shuffled = jax.lax.sort(packed) & jnp.uint32((1 << b) - 1)
        order = shuffled if order is None else order[shuffled]
    return order.astype(jnp.int32)


def chunk_steps(num_batches: int, batch_bytes: int, chunk_bytes: int) -> int:
    """The largest divisor `k` of `num_batches` with `k * batch_bytes <= chunk_bytes`
    (at least 1): how many minibatches `Engine._scan_batches` gathers at a time."""
    most = min(num_batches, chunk_bytes // max(1, batch_bytes))
    return max([d for d in range(1, most + 1) if num_batches % d == 0] or [1])


def epoch_batches(n: int, batch_size: int, order):
    """An epoch's minibatches: `order (n,)` -> sample indices `(nb, bs)` and
    weights `(nb, bs)`, `bs = min(batch_size, n)`; the last batch is padded
    with samples from the start of `order` at weight 0, so every batch has one
    static shape."""
    bs = min(batch_size, n)
    nb = -(-n // bs)
    pad = nb * bs - n
    idx = jnp.concatenate([order, order[:pad]]).reshape(nb, bs)
    w = (jnp.arange(nb * bs) < n).reshape(nb, bs)
    return idx, w


@dataclasses.dataclass(frozen=True, eq=False)
class Engine:
    """The pure functions of one training setup; `fit` jits and vmaps them.

    Attributes:
      graphdef, rest: the model's NNX graph and its non-parameter state.
      loss: `(y_true, y_pred) -> (B,)`.
      metrics: name -> `(y_true, y_pred) -> (B,)`.
      optimizer: an optax transformation.
      batch_size, validation_batch_size, shuffle: as in Keras' `fit`.
      init_params: `key -> nnx.State` of fresh parameters (or fixed ones).
    """

    graphdef: Any
    rest: Any
    loss: Callable
    metrics: dict
    optimizer: optax.GradientTransformation
    batch_size: int
    validation_batch_size: int
    shuffle: bool
    init_params: Callable
    batch_sharding: Any = None  # NamedSharding of a minibatch's sample axis, or None
    # Gather this many bytes of minibatches at a time (0: one minibatch at a
    # time); see `_scan_batches`.
    chunk_bytes: int = 0

    @property
    def num_params(self) -> int:
        """The number of parameters of one model."""
        shapes = jax.eval_shape(self.init_params, jax.random.key(0))
        return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))

    def _shard(self, b):
        """A minibatch array, sharded over the mesh's batch axis when there is one."""
        if self.batch_sharding is not None:
            b = jax.lax.with_sharding_constraint(b, self.batch_sharding)
        return b

    def _scan_batches(self, body, carry, x, y, idx, w, tail=None):
        """`jax.lax.scan` of `body(carry, (x_b, y_b, w_b, step)) -> (carry, out)`
        over the minibatches `idx`, `w` `(nb, bs)`; returns `(carry, out)` with
        `out` stacked over the `nb` steps. `idx` holds sample indices, or
        values that `_resolve_order(idx, tail, n)` maps to them.

        The minibatches are gathered `k` at a time (an outer scan over
        `nb / k` chunks, an inner one over the `k` steps of a chunk), `k` the
        largest divisor of `nb` whose chunk of `x` or `y` rows fits in
        `chunk_bytes`. Why: XLA's CPU runtime runs a loop body's kernels on
        one thread only when every buffer they touch is small (512 bytes);
        otherwise it spreads them over the cores, which for a tiny model's
        step costs more in hand-offs than the kernels themselves.
        A step that reads its minibatch out of the whole `x` touches a large
        buffer; one that reads it out of a small gathered chunk does not.
        The steps, their order and their keys are the same for every `k`.
        """
        nb, bs = idx.shape
        row = max(a.dtype.itemsize * math.prod(a.shape[1:]) for a in jax.tree.leaves((x, y)))
        k = chunk_steps(nb, bs * row, self.chunk_bytes)
        n = num_samples(x)

        def chunk(carry, inp):
            idx_k, w_k, step_k = inp
            idx_k = _resolve_order(idx_k, tail, n)
            xs = (rows(x, idx_k), jnp.take(y, idx_k, axis=0), w_k, step_k)
            return jax.lax.scan(body, carry, xs)

        def by_chunk(a):
            return a.reshape(nb // k, k, *a.shape[1:])

        steps = jnp.arange(nb, dtype=jnp.int32)
        carry, out = jax.lax.scan(chunk, carry, (by_chunk(idx), by_chunk(w), by_chunk(steps)))
        return carry, jax.tree.map(lambda o: o.reshape(nb, *o.shape[2:]), out)

    def apply(self, params, x, training=False, key=None):
        """The model's forward pass with these parameters."""
        model = nnx.merge(self.graphdef, params, self.rest)
        return model(x, training=training, key=key)

    def init(self, key, hyperparams: dict | None = None,
             model_values: dict | None = None) -> TrainState:
        """A fresh `TrainState` from the run's key; a sweep member's values
        (name -> scalar, `rnn_jax.sweeps`): `hyperparams` are written into the
        optimizer state of an `optax.inject_hyperparams` optimizer,
        `model_values` passed to the model factory as keyword arguments."""
        init_key, train_key = jax.random.split(key)
        params = self.init_params(init_key, **(model_values or {}))
        opt_state = self.optimizer.init(params)
        if hyperparams:
            opt_state = sweeps_lib.set_values(opt_state, hyperparams)
        return TrainState(params, opt_state, train_key,
                          jnp.zeros((), jnp.int32), jnp.full((2,), -1, jnp.int32))

    def _sums(self, y, y_pred, per_sample_loss, w):
        w = w.astype(per_sample_loss.dtype)
        sums = {"loss": jnp.sum(per_sample_loss * w)}
        for name, fn in self.metrics.items():
            sums[name] = jnp.sum(per_sample(fn(y, y_pred)) * w)
        sums["count"] = jnp.sum(w)
        return sums

    def train_step(self, params, opt_state, x_B, y_B, w_B, key):
        """One minibatch: gradient of the mean loss over the real samples, one update.

        Returns `(params, opt_state, sums, finite)`: the batch's loss and metric
        sums over its real samples and their `count`, and whether the mean loss
        and every gradient entry are finite.
        """
        def mean_loss(p):
            y_pred = self.apply(p, x_B, training=True, key=key)
            per = per_sample(self.loss(y_B, y_pred))
            wf = w_B.astype(per.dtype)
            return jnp.sum(per * wf) / jnp.sum(wf), (per, y_pred)

        (loss, (per, y_pred)), grads = jax.value_and_grad(mean_loss, has_aux=True)(params)
        finite = jnp.isfinite(loss)
        for g in jax.tree.leaves(grads):
            finite &= jnp.all(jnp.isfinite(g))
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, self._sums(y_B, y_pred, per, w_B), finite

    def train_epoch(self, state: TrainState, x, y):
        """One epoch of minibatch steps (`_scan_batches`); returns `(state, sums)`.

        Every step checks its loss and gradient. When one is not finite, the
        epoch's updates are dropped: the parameters and optimizer state stay
        those at the start of the epoch (the last good state, the one a
        per-epoch checkpoint holds), `state.diverged_at` records `(epoch,
        step)` of the first bad step, and the following epochs leave the state
        as it is. (The check is one scalar per step and one select per epoch;
        freezing at the step itself cost 15-35% of sum3's training time.)
        """
        n = num_samples(x)
        epoch_key = jax.random.fold_in(state.key, state.epoch)
        shuffle_key, dropout_key = jax.random.split(epoch_key)
        order, tail = _order_and_tail(shuffle_key, n) if self.shuffle else (jnp.arange(n), None)
        idx, w = epoch_batches(n, self.batch_size, order)

        def body(carry, inp):
            params, opt_state, bad_step = carry
            x_b, y_b, w_b, step = inp
            params, opt_state, sums, finite = self.train_step(
                params, opt_state, self._shard(x_b), self._shard(y_b), self._shard(w_b),
                jax.random.fold_in(dropout_key, step))
            bad_step = jnp.where((bad_step < 0) & ~finite, step, bad_step)
            return (params, opt_state, bad_step), sums

        (params, opt_state, bad_step), step_sums = self._scan_batches(
            body, (state.params, state.opt_state, jnp.int32(-1)), x, y, idx, w, tail)
        sums = jax.tree.map(lambda s: jnp.sum(s, axis=0), step_sums)
        before = state.diverged_at[0] >= 0
        now = ~before & (bad_step >= 0)
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(before | now, old, new),
            (params, opt_state), (state.params, state.opt_state))
        diverged_at = jnp.where(now, jnp.stack([state.epoch + 1, bad_step]), state.diverged_at)
        return state._replace(params=params, opt_state=opt_state, epoch=state.epoch + 1,
                              diverged_at=diverged_at), sums

    def evaluate_sums(self, params, x, y):
        """Loss and metric sums over `(x, y)` in batches (inference mode)."""
        n = num_samples(x)
        idx, w = epoch_batches(n, self.validation_batch_size, jnp.arange(n))

        def body(_, inp):
            x_b, y_b, w_b, _step = inp
            x_b, y_b, w_b = self._shard(x_b), self._shard(y_b), self._shard(w_b)
            y_pred = self.apply(params, x_b)
            return None, self._sums(y_b, y_pred, per_sample(self.loss(y_b, y_pred)), w_b)

        _, batch_sums = self._scan_batches(body, None, x, y, idx, w)
        return jax.tree.map(lambda s: jnp.sum(s, axis=0), batch_sums)

    def run_epoch(self, state: TrainState, x, y, x_val=None, y_val=None):
        """Train one epoch, then validate; returns `(state, logs)` with Keras' names.

        The logs of a seed that met a non-finite loss or gradient (this epoch
        or before) are NaN.
        """
        state, sums = self.train_epoch(state, x, y)
        logs = _means(sums)
        if x_val is not None:
            logs.update(_means(self.evaluate_sums(state.params, x_val, y_val), prefix="val_"))
        diverged = state.diverged_at[0] >= 0
        logs = {k: jnp.where(diverged, jnp.nan, v) for k, v in logs.items()}
        return state, logs


def _means(sums: dict, prefix: str = "") -> dict:
    """Sums plus a `count` -> means, named `prefix + name`."""
    return {prefix + k: v / sums["count"] for k, v in sums.items() if k != "count"}


def _metric_fns(metrics, y_shape, y_pred_shape) -> dict:
    """History name -> per-sample metric function; a metric asked for as `'acc'`
    is logged as `'acc'` (`val_acc`), as Keras 3 logs it."""
    def name(m):
        return m if isinstance(m, str) else m.__name__
    return {name(m): metrics_lib.get(m, y_shape, y_pred_shape) for m in metrics}


def stack_history(per_epoch: dict, num_seeds: int) -> dict:
    """name -> list of per-epoch `(num_seeds,)` arrays  ->  name -> `(num_seeds, E)`
    array, or `(E,)` for one seed (`fit`'s history layout)."""
    hist = {k: np.stack(v, axis=-1) for k, v in per_epoch.items()}
    return hist if num_seeds > 1 else {k: v[0] for k, v in hist.items()}


@dataclasses.dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
      history: Keras' history names -> per-epoch values, `(epochs,)`, or
        `(num_members, epochs)` when there is more than one member.
      state: the final `TrainState`, every leaf with a leading member axis.
      num_seeds: the seeds per value combination, as `fit` was given them.
      num_members: how many models were trained: `num_seeds` times the number
        of value combinations of a sweep (`rnn_jax.sweeps`), else `num_seeds`.
      members: one dict per member, in member order: `{'seed': s}`, plus the
        swept values in a sweep (`{'seed': s, 'learning_rate': 0.003}`).
        Member `m` has value combination `m // num_seeds` and seed
        `seed + m % num_seeds`; without a sweep, member `i` is seed index `i`.
      compile_seconds: time to compile the epoch program.
      train_seconds: time spent running epochs (after compilation).
      epoch_seconds: the wall time of each epoch run by this call (its program
        and the logs' copy to the host).
      diverged: seed index -> `(epoch, step)` of the first non-finite loss or
        gradient, for the seeds that met one (their weights are those before
        that epoch, their history NaN from that epoch on).
      initial_epoch: the epoch this call started from (> 0 when it resumed
        from a checkpoint).
      stopped_epoch: the epoch (from 1) after which a callback stopped the
        run (`stop_training`, e.g. `callbacks.EarlyStopping`), or None when
        it ran to `epochs`. The history then ends there.
    """

    history: dict
    state: TrainState
    engine: Engine
    num_seeds: int
    compile_seconds: float
    train_seconds: float
    epoch_seconds: list = dataclasses.field(default_factory=list)
    diverged: dict = dataclasses.field(default_factory=dict)
    initial_epoch: int = 0
    num_members: int = 0  # 0: num_seeds
    members: list = dataclasses.field(default_factory=list)
    stopped_epoch: int | None = None

    def __post_init__(self):
        self.num_members = self.num_members or self.num_seeds
        if not self.members:
            self.members = [{"seed": i} for i in range(self.num_members)]

    @functools.cached_property
    def _host_params(self):
        return _to_host(self.state.params)  # fetched once for all the members

    def params(self, seed_index: int = 0) -> nnx.State:
        """The trained parameters of one member (`seed_index` is the member
        index; without a sweep, the seed index)."""
        if not 0 <= seed_index < self.num_members:
            what = "seeds" if self.num_members == self.num_seeds else "members"
            raise IndexError(f"seed_index {seed_index} out of range for {self.num_members} "
                             f"{what}")
        return jax.tree.map(lambda a: jnp.asarray(a[seed_index]), self._host_params)

    def model(self, seed_index: int = 0):
        """The trained model of one member (index as in `params`), as a module."""
        return nnx.merge(self.engine.graphdef, self.params(seed_index), self.engine.rest)

    def member_indices(self, **values) -> list[int]:
        """The members with these values, in member order: e.g.
        `member_indices(learning_rate=3e-3)` (the `num_seeds` members of that
        value) or `member_indices(seed=5)` (that seed under every value). A
        value matches as float32 (as the optimizer state holds it). Raises
        ValueError for a name that is not swept, or a value no member has."""
        names = set(self.members[0])
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"no member has {', '.join(unknown)}; members have "
                             f"{', '.join(sorted(names))}")

        def same(a, b):
            return np.float32(a) == np.float32(b) if isinstance(b, float) else a == b

        out = [m for m, member in enumerate(self.members)
               if all(same(v, member[k]) for k, v in values.items())]
        if not out:
            raise ValueError(f"no member has {values}")
        return out

    def evaluate(self, x, y) -> dict:
        """Loss and metrics of every member's trained model on `(x, y)` (Keras'
        `evaluate`, in batches of the validation batch size): name -> `(num_members,)`
        numpy array."""
        x, y = as_inputs(x), np.asarray(y)
        if num_samples(x) != y.shape[0] or y.shape[0] == 0:
            raise ValueError(f"evaluate: x has {num_samples(x)} samples and y {y.shape[0]}")
        sums = jax.jit(seed_vmap(self.engine.evaluate_sums, in_axes=(0, None, None)))(
            self.state.params, jax.tree.map(jnp.asarray, x), jnp.asarray(y))
        return {k: np.asarray(v) for k, v in _means(_to_host(sums)).items()}


class FitRun:
    """The run a callback sees as `self.model` during `fit` (`rnn_jax.callbacks`).

    Attributes:
      stop_training: set it to True to stop `fit` after the current epoch
        (`FitResult.stopped_epoch` says where; a `checkpoint_dir` gets that
        epoch's checkpoint, and a rerun does not train on from it).
      num_seeds, num_members, members: as in `FitResult`.
      printer: where `fit` prints (`callbacks.Printer`).

    Weights are the `jax.tree.leaves` of the members' parameters, numpy
    arrays with a leading member axis (Keras' `get_weights` has none: this
    holds every seed's).
    """

    def __init__(self, loop: "_EpochLoop"):
        self._loop = loop
        self.stop_training = False
        self.num_seeds = loop.num_seeds
        self.num_members = loop.layout.num_seeds
        self.members = loop.members
        self.printer = loop.printer

    @property
    def state(self) -> TrainState:
        """The training state now, every leaf with a leading member axis."""
        return self._loop.layout.real(self._loop.state)

    def params(self, seed_index: int = 0) -> nnx.State:
        """Member `seed_index`'s parameters now (numpy)."""
        return jax.tree.map(lambda a: np.asarray(a)[seed_index], _to_host(self.state.params))

    def model(self, seed_index: int = 0):
        """Member `seed_index`'s model now, as a module."""
        engine = self._loop.engine
        return nnx.merge(engine.graphdef, jax.tree.map(jnp.asarray, self.params(seed_index)),
                         engine.rest)

    def get_weights(self) -> list:
        """Every member's parameters: numpy arrays, leading axis the members."""
        return [np.asarray(a) for a in jax.tree.leaves(_to_host(self.state.params))]

    def named_weights(self) -> dict:
        """`{'layers/0/cell/kernel': (num_members, ...) array}`."""
        flat = nnx.to_flat_state(_to_host(self.state.params))
        return {"/".join(map(str, path)): np.asarray(v.get_value() if hasattr(v, "get_value")
                                                     else v) for path, v in flat}

    def set_weights(self, weights) -> None:
        """Replace every member's parameters (as `get_weights` gives them)."""
        loop = self._loop
        old = jax.tree.leaves(loop.state.params)
        treedef = jax.tree.structure(loop.state.params)
        if len(weights) != len(old):
            raise ValueError(f"set_weights: {len(weights)} arrays for {len(old)} parameters")
        new = []
        for w, o in zip(weights, old):
            w = np.asarray(w, o.dtype)
            if loop.layout.pad:
                w = np.concatenate([w, w[:loop.layout.pad]])
            if w.shape != o.shape:
                raise ValueError(f"set_weights: an array of shape {w.shape[1:]} for a parameter "
                                 f"of shape {o.shape[1:]} (with {loop.layout.num_seeds} members)")
            new.append(jax.make_array_from_callback(w.shape, o.sharding, lambda i, w=w: w[i]))
        loop.state = loop.state._replace(params=jax.tree.unflatten(treedef, new))

    def get_state(self) -> list:
        """The leaves of the training state (the key as its uint32 key data),
        numpy, leading axis the members (what `save(state=...)` takes)."""
        state = self.state
        return [np.asarray(a) for a in jax.tree.leaves(
            _to_host(state._replace(key=jax.random.key_data(state.key))))]

    def save_weights(self, filepath: str, overwrite: bool = True, weights=None) -> str:
        """Save the parameters (`weights`, default the current ones) with
        `rnn_jax.checkpoints.save_weights`: one member's as the model's, several
        with a leading member axis (`load_weights(..., seed_index=i)`)."""
        from rnn_jax import checkpoints
        weights = self.get_weights() if weights is None else weights
        if self.num_members == 1:
            weights = [np.asarray(w)[0] for w in weights]
        engine = self._loop.engine
        params = jax.tree.unflatten(jax.tree.structure(self.state.params), list(weights))
        return checkpoints.save_weights(filepath, nnx.merge(engine.graphdef, params, engine.rest),
                                        force=overwrite)

    def save(self, filepath: str, overwrite: bool = True, state=None) -> str:
        """Save the training state (`state`: `get_state`'s leaves, default the
        current ones) with `rnn_jax.checkpoints.save_train_state`."""
        from rnn_jax import checkpoints
        template = self.state._replace(key=jax.random.key_data(self.state.key))
        leaves = self.get_state() if state is None else state
        tree = jax.tree.unflatten(jax.tree.structure(template), list(leaves))
        tree = tree._replace(key=jax.random.wrap_key_data(jnp.asarray(tree.key)))
        return checkpoints.save_train_state(filepath, tree, force=overwrite)

    def print_msg(self, text: str) -> None:
        """Print a line where `fit` prints (after ending a progress bar line)."""
        self.printer.line(text)


def _model_parts(model, num_seeds):
    """graphdef, rest and `key -> params` from a module or a `rngs -> module` factory."""
    if isinstance(model, nnx.Module):
        if num_seeds != 1:
            raise ValueError("num_seeds > 1 needs a model factory `rngs -> model` that draws "
                             "fresh weights per seed; got a built module")
        if hasattr(model, "built") and not model.built:
            raise ValueError(f"{type(model).__name__} is not built: give it input_shape= or "
                             "call it once before fit")
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        return graphdef, rest, lambda key, **values: params
    if not callable(model):
        raise TypeError(f"model must be an nnx.Module or a callable rngs -> Module, got "
                        f"{type(model).__name__}")
    abstract = nnx.eval_shape(lambda: model(nnx.Rngs(0)))
    if hasattr(abstract, "built") and not abstract.built:
        raise ValueError("the model factory must build its model (pass input_shape=)")
    graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise ValueError("fit trains models whose state is parameters only (no stateful "
                         "layers)")

    def init_params(key, **values):  # values: a sweep's model-factory keywords
        return nnx.split(model(nnx.Rngs(key), **values), nnx.Param, ...)[1]

    return graphdef, rest, init_params


def seed_vmap(fn, in_axes=0, **vmap_kw):
    """`jax.vmap(fn, in_axes, **vmap_kw)` over the leading seed axis, except that
    one seed (without a mesh axis name) calls `fn` on that seed's slice and
    adds the axis back to every output: the same function, computed without
    a batch dimension.

    Why: under `vmap` every dot of the step gets a size-1 batch dimension, and
    XLA's CPU backend then lays out the recurrent weight gradient transposed
    (a `(4U, U)` dot and a transposing add into the `(U, 4U)` accumulator at
    every step of the backward scan), which made one seed's epoch slower.
    """
    batched = jax.vmap(fn, in_axes=in_axes, **vmap_kw)

    @functools.wraps(fn)  # jit names the program after fn
    def call(*args):
        axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        mapped = [a for a, ax in zip(args, axes) if ax is not None]
        sizes = {leaf.shape[0] for a in mapped for leaf in jax.tree.leaves(a)}
        if vmap_kw or sizes != {1} or any(ax not in (0, None) for ax in axes):
            return batched(*args)
        one = [a if ax is None else jax.tree.map(lambda leaf: leaf[0], a)
               for a, ax in zip(args, axes)]
        return jax.tree.map(lambda leaf: leaf[None], fn(*one))

    return call


def init_program(init, mesh, num_seeds: int):
    """`keys (S,) -> TrainState` (leading seed axis) for `fit`'s init program
    (the input may be any pytree whose leaves have the leading slot axis):
    `init` of one seed at a time (`jax.lax.map`), on each device over its own
    seeds (`jax.shard_map` over the mesh's `seeds` axis), never `vmap`-ed.

    Why: under `vmap` the orthogonal initializer's QR (`jnp.linalg.qr`) is a
    batched LAPACK call, which jaxlib 0.10's CPU kernels split into tasks on
    XLA's intra-op thread pool while blocking the pool thread that waits for
    them; with one host CPU device per core both devices' threads block and
    `fit` deadlocks before its first epoch. One matrix per call runs inline,
    on the calling thread. The weights are the same, bitwise.
    """
    if num_seeds == 1 and mesh is None:
        return seed_vmap(init)  # one seed: already unbatched

    @functools.wraps(init)  # jit names the program after init
    def one_at_a_time(keys):
        return jax.lax.map(init, keys)

    if mesh is None:
        return one_at_a_time
    P = jax.sharding.PartitionSpec
    return jax.shard_map(one_at_a_time, mesh=mesh, in_specs=P("seeds"), out_specs=P("seeds"))


def mapped_seeds(run_epoch, mesh, seed_chunk: int):
    """`(state, *data) -> (state, logs)` over the leading seed axis, the seeds
    of each device (`jax.shard_map` over the mesh's `seeds` axis) run
    `seed_chunk` at a time: `jax.lax.map` over chunks, `vmap` within one (a
    chunk of 1 runs a seed's epoch unbatched).

    Why: for a model the size of notebook 004's, a device's seeds run one
    after another train faster than `vmap`-ed together, whose batched dots
    XLA's CPU backend lays out with the seed axis inside the time-stacked
    arrays and transposes for the weight gradients (`seed_chunks` has the
    figures).
    """
    @functools.wraps(run_epoch)
    def per_device(state, *data):
        return jax.lax.map(lambda st: run_epoch(st, *data), state,
                           batch_size=None if seed_chunk <= 1 else seed_chunk)

    if mesh is None:
        return per_device
    P = jax.sharding.PartitionSpec

    def call(state, *data):
        # check_vma=False: a scan's fresh initial carry (zeros) is not varying
        # over the seeds, its output is.
        return jax.shard_map(per_device, mesh=mesh, in_specs=(P("seeds"),) + (P(),) * len(data),
                             out_specs=P("seeds"), check_vma=False)(state, *data)

    return functools.wraps(run_epoch)(call)


# Seeds of a model with at least this many (parameters x batch size) run one
# at a time on each CPU device; smaller models vmap all of a device's seeds.
MAPPED_SEEDS_WORK = 100_000


def seed_chunks(num_params: int, batch_size: int, layout: "SeedLayout",
                requested: int | None = None) -> "SeedLayout":
    """The layout with its `seed_chunk`: `requested` if given (0: `vmap` all of a
    device's seeds), else 1 for a model of `num_params * batch_size >=
    MAPPED_SEEDS_WORK` with several seeds per device on CPU, else None (vmap).

    Why: on CPU a `vmap`-ed seed of a Reuters-size model (LSTM(50) or
    SimpleRNN(50), batch 50) costs more than the same seed run alone, while
    a tiny model's (sum3's SimpleRNN(1), batch 4) costs far less; chunks of
    2 or 4 were slower than 1 (figures: docs/performance.md, "Many seeds").
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
            raise ValueError(f"seed_chunk must be a non-negative integer, got {requested!r}")
        chunk = requested or None
    else:
        rows = 1 if layout.mesh is None else layout.mesh.shape["seeds"]
        per_device = layout.padded // rows
        chunk = (1 if jax.default_backend() == "cpu" and per_device > 1
                 and num_params * batch_size >= MAPPED_SEEDS_WORK else None)
    if chunk is not None and layout.mesh is not None and layout.mesh.shape["batch"] > 1:
        chunk = None  # minibatches split over devices: the seeds stay vmapped
    return dataclasses.replace(layout, seed_chunk=chunk)


def default_devices(num_seeds: int) -> list:
    """The devices `fit` trains on when it is given none: all of `jax.devices()`,
    except on host CPU devices in one process, where at most `num_seeds` of
    them (`seed_layout` then gives each whole seeds).

    Why: host CPU devices (`use_cpu_cores`, `jax_num_cpu_devices`, or XLA's
    `--xla_force_host_platform_device_count`) share one machine's cores, so
    splitting a minibatch over them adds no arithmetic units, only reductions
    across devices at every step; seeds spread over them need no reduction.
    With several processes every process's devices take part (each process
    runs the same program). (Measured figures: docs/performance.md.)
    """
    devices = jax.devices()
    if jax.default_backend() != "cpu" or jax.process_count() > 1:
        return devices
    return devices[:min(num_seeds, len(devices))]


def device_mesh(devices, num_seeds: int):
    """A `('seeds', 'batch')` mesh over `devices`: seeds spread over `gcd(num_seeds,
    len(devices))` rows, each minibatch over the rest; None for one device."""
    devices = list(devices)
    if len(devices) <= 1:
        return None
    rows = math.gcd(num_seeds, len(devices))
    return _mesh(np.array(devices).reshape(rows, len(devices) // rows))


def _mesh(devices_RxC):
    return jax.sharding.Mesh(devices_RxC, ("seeds", "batch"),
                             axis_types=(jax.sharding.AxisType.Auto,) * 2)


@dataclasses.dataclass(frozen=True)
class SeedLayout:
    """Where a run's seeds are trained.

    Attributes:
      num_seeds: the seeds asked for.
      mesh: a `('seeds', 'batch')` mesh, or None for one device.
      padded: the seed slots the programs run, a multiple of the mesh's
        `seeds` rows (`>= num_seeds`). Slot `num_seeds + j` repeats seed `j`
        (same key, same work), so that every row trains as many; all that
        `fit` returns, prints and saves holds the `num_seeds` real seeds only.
      seed_chunk: None: a device's seeds train `vmap`-ed together; k: k at a
        time, one chunk after another (`mapped_seeds`, `seed_chunks`).
    """

    num_seeds: int
    mesh: Any = None
    seed_chunk: int | None = None

    @property
    def padded(self) -> int:
        rows = 1 if self.mesh is None else self.mesh.shape["seeds"]
        return -(-self.num_seeds // rows) * rows

    @property
    def pad(self) -> int:
        return self.padded - self.num_seeds

    def describe(self) -> str:
        """`''`, or `', on D devices: R x C (seeds x batch)'` plus the padding,
        and how a device's seeds run when not all vmapped together."""
        at_a_time = ("" if self.seed_chunk is None else "; a device's seeds one at a time"
                     if self.seed_chunk == 1 else f"; a device's seeds {self.seed_chunk} at a time")
        if self.mesh is None:
            return at_a_time
        pad = ("" if not self.pad else "; 1 seed slot repeats the first seed" if self.pad == 1
               else f"; {self.pad} seed slots repeat the first seeds")
        return (f", on {self.mesh.devices.size} devices: {self.mesh.shape['seeds']} x "
                f"{self.mesh.shape['batch']} (seeds x batch){pad}{at_a_time}")

    def keys(self, seed: int, num_seeds: int | None = None) -> jax.Array:
        """The run keys of the `padded` slots: `key(seed + i % num_seeds)` for the
        real slots `i` (`num_seeds` defaults to all of them: `key(seed + i)`; a
        sweep's members repeat the seeds per value), then the first slots' again."""
        ids = seed + np.arange(self.num_seeds) % (num_seeds or self.num_seeds)
        return jax.vmap(jax.random.key)(jnp.asarray(np.concatenate([ids, ids[:self.pad]])))

    def real(self, tree):
        """The real seeds' part of a tree with a leading slot axis."""
        if not self.pad:
            return tree
        return jax.tree.map(lambda a: a[:self.num_seeds], tree)

    def padded_like(self, tree):
        """A tree of the real seeds (leading axis `num_seeds`) filled out to the
        `padded` slots, as `keys` fills them."""
        if not self.pad:
            return tree
        return jax.tree.map(lambda a: jnp.concatenate([a, a[:self.pad]]), tree)


def seed_layout(num_seeds: int, devices: Sequence | None = None, mesh=None) -> SeedLayout:
    """`fit`'s choice of where the seeds train.

    - `mesh` given: that `('seeds', 'batch')` mesh.
    - `devices` given: `device_mesh(devices, num_seeds)` (seeds over
      `gcd(num_seeds, n)` rows, each minibatch over the rest).
    - neither, on host CPU devices: the seeds over `default_devices(num_seeds)`,
      one row each, padded to a multiple of their number (5 seeds on 2
      devices run 3 + 3 slots; with several processes, every process's
      devices: 8 seeds on 2 processes of 2 devices run 2 per device);
    - neither, elsewhere: `device_mesh(jax.devices(), num_seeds)`.
    """
    if mesh is not None:
        if devices is not None:
            raise ValueError("give devices or mesh, not both")
        if tuple(mesh.axis_names) != ("seeds", "batch"):
            raise ValueError(f"mesh must have the axes ('seeds', 'batch'), got {mesh.axis_names}")
        return SeedLayout(num_seeds, mesh if mesh.devices.size > 1 else None)
    if devices is not None:
        return SeedLayout(num_seeds, device_mesh(devices, num_seeds))
    devices = default_devices(num_seeds)
    if jax.default_backend() != "cpu":
        return SeedLayout(num_seeds, device_mesh(devices, num_seeds))
    return SeedLayout(num_seeds,
                      _mesh(np.array(devices).reshape(-1, 1)) if len(devices) > 1 else None)


def use_cpu_cores(count: int | None = None) -> int:
    """Make JAX's CPU backend `count` host devices (default: the cores this
    process may run on), so that `fit` trains seeds on all of them at once;
    returns the count. Call it before JAX runs anything:

        import rnn_jax
        rnn_jax.use_cpu_cores()       # then fit(..., num_seeds=16) uses every core

    Raises RuntimeError when JAX's backends are already up with another count
    (the count is fixed when JAX starts).
    """
    if count is None:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _check_positive_int("count", count)
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX is up: fine if it already has that many
        have = len(jax.devices("cpu"))
        if have != count:
            raise RuntimeError(
                f"use_cpu_cores({count}): JAX already runs with {have} CPU "
                f"device{'s' if have > 1 else ''}; call it before JAX runs anything "
                "(the count is fixed when JAX starts)") from None
    return count


def use_processes(coordinator_address: str | None = None, num_processes: int | None = None,
                  process_id: int | None = None, *, heartbeat_timeout_seconds: int = 100) -> int:
    """Join this process to a run over several processes (hosts): JAX's
    distributed runtime, `jax.distributed.initialize`, with Gloo for the
    collectives between CPU devices; returns `jax.process_count()`. Call it
    before JAX runs anything, in every process, with the same arguments but
    `process_id`:

        rnn_jax.use_processes("host0:1234", num_processes=2, process_id=0)  # 1 on host 1
        rnn_jax.fit(make_model, x, y, ..., num_seeds=64)  # the seeds over every device

    With no arguments JAX reads them from the cluster's environment (SLURM's
    `srun`, Open MPI's `mpirun`, ...). Every process then runs the same
    program on its own devices: `fit` spreads the seeds over all devices of
    all processes, each process holds its seeds' shards, and Orbax checkpoints
    are written by every process for its shards into the one
    `checkpoint_dir` (a directory all processes see). A process that dies is
    noticed by the others within `heartbeat_timeout_seconds`: they exit with
    an error instead of waiting for it.
    """
    given = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in given) and any(v is None for v in given):
        raise ValueError("use_processes needs coordinator_address, num_processes and "
                         "process_id together (or none of them, to read them from the "
                         "cluster's environment)")
    if num_processes is not None:
        _check_positive_int("num_processes", num_processes)
        if not (isinstance(process_id, (int, np.integer)) and 0 <= process_id < num_processes):
            raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id!r}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               heartbeat_timeout_seconds=heartbeat_timeout_seconds)
    return jax.process_count()


def _to_host(tree):
    """numpy copies of (possibly multi-process) arrays."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def _diverged(state, num_seeds: int) -> dict:
    """seed index -> (epoch, step) of the real seeds whose `diverged_at` is set."""
    at = np.asarray(_to_host(state.diverged_at)).reshape(-1, 2)[:num_seeds]
    return {i: (int(e), int(s)) for i, (e, s) in enumerate(at) if e >= 0}


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class FitData(NamedTuple):
    """`fit`'s arrays after Keras' split: training `x`, `y`; validation `x_val`,
    `y_val` (None without validation)."""

    x: Any  # an array, or a list / dict of arrays for a model with several inputs
    y: np.ndarray
    x_val: Any
    y_val: np.ndarray | None

    def arrays(self) -> tuple:
        """The arrays the epoch program takes, in its argument order."""
        return tuple(a for a in self if a is not None)


def split_data(x, y, validation_split: float = 0.0, validation_data=None,
               check_inputs: bool = True) -> FitData:
    """Keras' `fit` data handling: check the arrays, then take the validation
    set from `validation_data` or the last `validation_split` of the samples."""
    x, y = as_inputs(x), np.asarray(y)
    if validation_data is not None:
        if not isinstance(validation_data, (list, tuple)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (x_val, y_val)")
        validation_data = (as_inputs(validation_data[0]), np.asarray(validation_data[1]))
    if check_inputs:
        check_finite_data(x=x if isinstance(x, np.ndarray) else tuple(jax.tree.leaves(x)),
                          y=y, validation_data=None if validation_data is None else
                          tuple(jax.tree.leaves(validation_data)))
    n = num_samples(x)
    if n != y.shape[0]:
        raise ValueError(f"x has {n} samples but y has {y.shape[0]}")
    if validation_data is not None:
        if validation_split:
            raise ValueError("give validation_split or validation_data, not both")
        x_val, y_val = validation_data
        if num_samples(x_val, "validation_data x") != y_val.shape[0]:
            raise ValueError("validation_data x and y have different numbers of samples")
        data = FitData(x, y, x_val, y_val)
    else:
        split_at = train_validation_split(n, validation_split)
        data = (FitData(rows(x, slice(None, split_at)), y[:split_at],
                        rows(x, slice(split_at, None)), y[split_at:])
                if validation_split else FitData(x, y, None, None))
    if num_samples(data.x) == 0:
        raise ValueError("no training samples")
    return data


def make_engine(model, data: FitData, *, loss, optimizer, metrics, batch_size: int,
                validation_batch_size: int | None, shuffle: bool, from_logits: bool,
                num_seeds: int) -> Engine:
    """The `Engine` of a `fit` call (its model, loss, metrics and optimizer)."""
    graphdef, rest, init_params = _model_parts(model, num_seeds)
    y_pred_shape = jax.eval_shape(
        lambda p: nnx.merge(graphdef, p, rest)(rows(data.x, slice(None, 1))),
        jax.eval_shape(init_params, jax.random.key(0))).shape
    return Engine(
        graphdef=graphdef, rest=rest, loss=losses_lib.get(loss, from_logits=from_logits),
        metrics=_metric_fns(metrics, data.y.shape, y_pred_shape),
        optimizer=optimizers_lib.get(optimizer), batch_size=batch_size,
        validation_batch_size=validation_batch_size or batch_size, shuffle=shuffle,
        init_params=init_params)


@dataclasses.dataclass
class Programs:
    """A run's two compiled programs and its initial state.

    Attributes:
      state: the `TrainState` of every seed slot, fresh from `init`.
      run_epoch: `(state, *data) -> (state, logs)`, the compiled epoch.
      place: a state of the real seeds -> the state of every slot (`padded_like`),
        where `run_epoch` takes it.
      data: the run's arrays on the devices.
      compile_seconds: the wall time to compile both and run `init`.
    """

    state: TrainState
    run_epoch: Callable
    place: Callable
    data: tuple
    compile_seconds: float


def compile_programs(engine: Engine, layout: SeedLayout, data: FitData, seed: int,
                     compiler_options: dict | None = None, num_seeds: int | None = None,
                     member_values: dict | None = None) -> tuple[Engine, Programs]:
    """Jit, shard and compile `engine.init` and `engine.run_epoch` over the
    layout's seed slots, and run `init`; returns the engine as configured for
    the layout and the `Programs`.

    A sweep's slots are its members: slot `m` trains from `key(seed + m %
    num_seeds)` with the values `member_values[arg][name][m]` (`engine.init`'s
    keyword `arg` -> name -> `(layout.num_seeds,)`), e.g.
    `{'hyperparams': {'learning_rate': lrs}}`.
    """
    mesh = layout.mesh
    if mesh is None:
        vmap_kw, seed_sh, rep_sh = {}, None, None
        engine = dataclasses.replace(engine, chunk_bytes=default_chunk_bytes(layout.padded))
    else:
        P = jax.sharding.PartitionSpec
        engine = dataclasses.replace(
            engine, batch_sharding=jax.sharding.NamedSharding(mesh, P("batch")))
        vmap_kw = {"spmd_axis_name": "seeds"}
        seed_sh = jax.sharding.NamedSharding(mesh, P("seeds"))
        rep_sh = jax.sharding.NamedSharding(mesh, P())
    arrays = data.arrays()
    on_devices = tuple(jax.tree.map(jnp.asarray, a) if rep_sh is None
                       else jax.device_put(a, rep_sh) for a in arrays)
    keys = layout.keys(seed, num_seeds)
    if member_values is None:
        init, inputs = engine.init, keys
    else:  # one input pytree: (keys, values), both with a leading slot axis
        init = functools.wraps(engine.init)(lambda kv: engine.init(kv[0], **kv[1]))
        inputs = (keys, layout.padded_like(jax.tree.map(jnp.asarray, member_values)))
    t0 = time.perf_counter()
    init_lowered = jax.jit(init_program(init, mesh, layout.padded),
                           in_shardings=seed_sh,
                           out_shardings=seed_sh).lower(inputs)
    if layout.seed_chunk is not None:  # each device maps over its seeds
        engine = dataclasses.replace(engine, batch_sharding=None,
                                     chunk_bytes=default_chunk_bytes(layout.seed_chunk))
        epoch_fn = mapped_seeds(engine.run_epoch, mesh, layout.seed_chunk)
    else:
        epoch_fn = seed_vmap(engine.run_epoch, in_axes=(0,) + (None,) * len(arrays), **vmap_kw)
    epoch_lowered = jax.jit(
        epoch_fn,
        in_shardings=None if mesh is None else (seed_sh,) + (rep_sh,) * len(arrays),
        out_shardings=None if mesh is None else (seed_sh, seed_sh),
        donate_argnums=0).lower(init_lowered.out_info, *on_devices)
    # XLA compiles outside the GIL: the two programs compile side by side.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        init_future = pool.submit(init_lowered.compile, compiler_options)
        run_epoch = epoch_lowered.compile(compiler_options)
        state = init_future.result()(inputs)
    jax.block_until_ready(state)
    compile_seconds = time.perf_counter() - t0

    # jit, not device_put: with several processes the state is a global array,
    # and the padded one is made and laid out across the processes by XLA.
    place = (layout.padded_like if seed_sh is None else
             jax.jit(layout.padded_like, out_shardings=seed_sh))

    return engine, Programs(state, run_epoch, place, on_devices, compile_seconds)


# The history entry of a run checkpoint saved when a callback stopped the run
# (`stop_training`): its epoch, int32 `(1,)`. Not a metric: never in a history.
STOPPED_KEY = "_stopped_at"


def _resume(saver, layout: SeedLayout, programs: Programs, epochs: int, verbose: int,
            print_fn) -> tuple[TrainState, dict, int | None]:
    """The state, per-epoch history and stopped epoch to start from: the
    newest intact checkpoint's (the real seeds', filled out to the layout's
    slots; the epoch a callback stopped the run at, when it did), else the
    fresh state, an empty history and None."""
    state = programs.state
    restored = None if saver is None else saver.restore(layout.real(state))
    if restored is None:
        return state, {}, None
    real_state, saved_history = restored
    done = int(np.max(np.asarray(_to_host(real_state.epoch))))
    if done > epochs:
        raise ValueError(f"the checkpoint in {saver.directory} is at epoch {done}, "
                         f"past epochs={epochs}")
    stopped = saved_history.pop(STOPPED_KEY, None)
    stopped = None if stopped is None else int(np.asarray(stopped).reshape(-1)[0])
    if verbose:
        print_fn(f"resumed from {saver.directory}/{done} (epoch {done} of {epochs})"
                 + ("" if stopped is None else
                    "; a callback stopped the run there: no more epochs to train"))
    history = {k: list(np.moveaxis(np.asarray(v), -1, 0)) for k, v in saved_history.items()}
    return programs.place(real_state), history, stopped


def fit(model, x, y, *, loss, optimizer="adam", metrics: Sequence[str] = (),
        batch_size: int = 32, epochs: int = 1, validation_split: float = 0.0,
        validation_data=None, shuffle: bool = True, seed: int = 0, num_seeds: int = 1,
        validation_batch_size: int | None = None, from_logits: bool = False,
        verbose: int | str = 1, callbacks: Sequence = (),
        compiler_options: dict | None = None, devices: Sequence | None = None, mesh=None,
        print_fn: Callable[[str], None] = print, check_inputs: bool = True,
        checkpoint_dir: str | None = None, checkpoint_every: int = 10,
        learning_rate=None, sweep: dict | None = None,
        seed_chunk: int | None = None) -> FitResult:
    """Train like `keras.Model.fit`, compiled, for one seed or `num_seeds` at
    once, and for several optimizer values at once (a sweep).

    Args:
      model: a built `nnx.Module` (trained in place; `num_seeds` must be 1),
        or a factory `rngs -> Module` that builds a model (`input_shape=`),
        called with `nnx.Rngs(init_key)` for every seed.
      x: inputs `(N, ...)`; y: targets `(N, ...)`.
      loss: a name from `rnn_jax.losses` or `(y_true, y_pred) -> (B,)`.
      optimizer: a name from `rnn_jax.optimizers` (Keras' defaults) or an
        optax transformation.
      learning_rate: None (the named optimizer's default), a float (the named
        optimizer built with it), or a list of floats: a sweep, shorthand for
        `sweep={'learning_rate': [...]}`.
      sweep: name -> list of values, trained together with the seeds in
        one program (`rnn_jax.sweeps`): scalars of the named optimizer
        (`rnn_jax.optimizers.hyperparameters`: `learning_rate`, adam's
        `beta_1`, `beta_2`, `epsilon`, sgd's `momentum`, rmsprop's `rho`,
        `momentum`, `epsilon`), held per member in its optimizer state
        (`optax.inject_hyperparams`), or keyword arguments of the model
        factory (e.g. an initializer scale: `make_model(rngs, init_scale=v)`).
        Several names form a grid (cross product in the order given), and
        `num_seeds` seeds per combination make `num_members` members:
        member `m` has combination `m // num_seeds` and trains from
        `key(seed + m % num_seeds)`; `result.members` says which is which.
        A member trains what a separate `fit` with its seed and scalar values
        trains: bitwise on CPU for `learning_rate` and `momentum` (measured);
        within ~1e-7 relative for betas, `rho` and factory values, which the
        program rounds from a float32 value where a constant was rounded
        once from Python's float64 (`1 - beta_1`, `scale / fan`). An optax
        transformation cannot sweep its values.
      metrics: names (`'accuracy'` resolves as in Keras) or callables.
      batch_size, epochs, validation_split, validation_data, shuffle: Keras'.
      seed, num_seeds: seed `i` trains from `jax.random.key(seed + i)`.
      validation_batch_size: batch size of the validation pass (default
        `batch_size`).
      from_logits: the model outputs logits (cross-entropy losses).
      verbose: as Keras' (`callbacks.ProgbarLogger`): 1 (or 'auto') prints the
        compile time, then a progress bar over the epochs (an epoch is one
        program) with elapsed time, time per epoch, ETA and the epoch's
        logs, rewritten in place on a terminal or in Jupyter, else a line
        for the first epoch, then at most one every 5 s, and the last; 2
        prints one line per epoch; 0 is quiet. With several seeds the logs
        shown are means over the seeds, with their range.
      print_fn: prints each line (default `print`; only `print` to a terminal
        rewrites the bar in place).
      callbacks: `rnn_jax.callbacks.Callback` objects (Keras' hooks: `epoch`
        from 0, logs as floats, `self.model.stop_training = True` stops
        training after the epoch; see `rnn_jax.callbacks`) and plain
        functions `cb(epoch, logs, state)` called after every epoch (epoch
        counted from 1; logs as numpy arrays with a seed axis), in order.
      devices, mesh: where to train (`seed_layout`). By default, on host CPU
        devices the seeds are spread over all of them (`use_cpu_cores` makes
        one per core), elsewhere over `gcd(num_seeds, n)` rows of a
        `('seeds', 'batch')` mesh with each minibatch over the rest. Results
        equal the one-device run within float rounding (sums are reduced
        across devices).
      seed_chunk: how a device's seeds train: None chooses (`seed_chunks`:
        on CPU one at a time for a model of >= 100k parameters x batch size,
        else all `vmap`-ed together), 0 vmaps them all, k runs them k at a
        time. The same training either way, up to float rounding.
      compiler_options: XLA options for compiling the programs, e.g.
        `{"xla_backend_optimization_level": 0}`, which on CPU compiles a tiny
        model's many seeds faster but trains them 5-6x slower, and changes
        results by float rounding.
      check_inputs: refuse float data holding NaN or inf (`x`, `y`,
        `validation_data`) with a ValueError naming the array and the first
        bad sample, before compiling (a numpy pass over the data on the host).

      checkpoint_dir: save the training state (parameters, optimizer state
        with a sweep's values, key, epoch, history) there every `checkpoint_every` epochs and after
        the last (`checkpoints.RunCheckpoints`), and, like Keras'
        `BackupAndRestore`, resume from the newest intact checkpoint found
        there: a rerun of the same `fit` after a crash continues where the
        checkpoint left off and ends with the same history and weights,
        bitwise, as an unbroken run (same program, same per-epoch keys).
        A run that a callback stopped is saved at the epoch it stopped at,
        marked as stopped: a rerun resumes there and trains no more epochs
        (its callbacks see `on_train_begin` and `on_train_end` only; remove
        the directory to train again).

    Stopping early: when a callback sets `stop_training`, `fit` ends after
    that epoch; the history, `FitResult` and its `stopped_epoch` hold the
    epochs run. (`EarlyStopping(restore_best_weights=True)` then puts the
    best epoch's weights into the result; the checkpoint keeps the state of
    the epoch it stopped at.)

    Non-finite losses: when a step's loss or any gradient entry is NaN or
    inf, that seed's epoch is dropped: its weights stay those at the start of
    the epoch, its logs are NaN from that epoch on, and `result.diverged`
    names it with the epoch and step. When
    every seed has diverged, `fit` raises `NonFiniteLossError` ("non-finite
    loss at epoch E, step S") after the epoch, without calling the callbacks
    or saving a checkpoint for it (the last checkpoint stays the last good one).

    Returns:
      a `FitResult` (history, final state, per-member models). When `model`
      is a module, its parameters are also updated to the trained ones.
    """
    for name, value in (("batch_size", batch_size), ("epochs", epochs), ("num_seeds", num_seeds),
                        ("checkpoint_every", checkpoint_every)):
        _check_positive_int(name, value)
    verbose = 1 if verbose == "auto" else verbose
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    callbacks = callbacks_lib.checked(callbacks)  # refused before compiling
    if validation_batch_size is not None:
        _check_positive_int("validation_batch_size", validation_batch_size)
    optimizer, grid = sweeps_lib.make_grid(optimizer, learning_rate, sweep, model)
    members = sweeps_lib.members(seed, num_seeds, grid)
    num_members = len(members)
    if grid is not None and num_members > 1 and isinstance(model, nnx.Module):
        raise ValueError("a sweep trains several models: it needs a model factory `rngs -> "
                         "model`; got a built module")
    data = split_data(x, y, validation_split, validation_data, check_inputs)
    engine = make_engine(model, data, loss=loss, optimizer=optimizer, metrics=metrics,
                         batch_size=batch_size, validation_batch_size=validation_batch_size,
                         shuffle=shuffle, from_logits=from_logits, num_seeds=num_seeds)
    layout = seed_chunks(engine.num_params, batch_size, seed_layout(num_members, devices, mesh),
                         seed_chunk)
    if grid is None:
        member_values = None
    else:
        opt_values, model_values = sweeps_lib.split_values(grid, grid.member_values(num_seeds))
        member_values = {"hyperparams": opt_values, "model_values": model_values}
    engine, programs = compile_programs(engine, layout, data, seed, compiler_options,
                                        num_seeds=num_seeds, member_values=member_values)
    if verbose:
        what = (f"{num_seeds} seed{'s' if num_seeds > 1 else ''}" if grid is None else
                f"{num_members} members: {len(grid)} value"
                f"{'s' if len(grid) > 1 else ''} of {', '.join(grid.names)} x {num_seeds} seed"
                f"{'s' if num_seeds > 1 else ''}")
        print_fn(f"compiled in {programs.compile_seconds:.2f} s ({what}, "
                 f"{num_samples(data.x)} training samples, "
                 f"{0 if data.x_val is None else num_samples(data.x_val)} validation"
                 f"{layout.describe()})")
    if checkpoint_dir is None:
        saver = None
    else:
        from rnn_jax import checkpoints as checkpoints_lib  # imports Orbax: only when asked
        saver = checkpoints_lib.RunCheckpoints(checkpoint_dir)
    with saver or contextlib.nullcontext():
        state, history, stopped = _resume(saver, layout, programs, epochs, verbose, print_fn)
        loop = _EpochLoop(engine, layout, programs, history, epochs, verbose, print_fn,
                          callbacks, saver, checkpoint_every, num_seeds, members,
                          stopped_epoch=stopped, steps=-(-num_samples(data.x) // min(
                              batch_size, num_samples(data.x))))
        loop.run(state)
    result = loop.result()
    if isinstance(model, nnx.Module):
        nnx.update(model, result.params(0))
    return result


class _EpochLoop:
    """`fit`'s loop over epochs: run, record, show, check divergence, call
    back, save, stop when a callback asks."""

    def __init__(self, engine, layout, programs, history, epochs, verbose, print_fn,
                 callbacks, saver, checkpoint_every, num_seeds=None, members=None,
                 stopped_epoch=None, steps=None):
        self.engine, self.layout, self.programs = engine, layout, programs
        self.history, self.epochs, self.verbose, self.print_fn = history, epochs, verbose, print_fn
        self.saver, self.checkpoint_every, self.steps = saver, checkpoint_every, steps
        # A sweep's slots are members: seeds per value, and which member is which.
        self.num_seeds = num_seeds or layout.num_seeds
        self.members = members or sweeps_lib.members(0, layout.num_seeds)
        self.swept = len(self.members[0]) > 1
        self.names = ["loss", *engine.metrics]
        self.names += [f"val_{k}" for k in self.names]
        self.epoch_seconds = []
        self.state = None
        self.initial_epoch = 0
        self.diverged = {}
        self.stopped_epoch = stopped_epoch  # set when a callback stops the run
        self.printer = callbacks_lib.Printer(print_fn)
        self.run_handle = FitRun(self)
        self.callbacks = callbacks_lib.CallbackList(callbacks, self.run_handle, verbose)

    def result(self) -> FitResult:
        n = self.layout.num_seeds
        return FitResult(stack_history(self.history, n), self.layout.real(self.state),
                         self.engine, self.num_seeds, self.programs.compile_seconds,
                         float(sum(self.epoch_seconds)), list(self.epoch_seconds),
                         dict(self.diverged), self.initial_epoch, n, list(self.members),
                         self.stopped_epoch)

    def run(self, state):
        n = self.layout.num_seeds
        self.state = state
        self.initial_epoch = int(np.max(np.asarray(_to_host(state.epoch))))
        self.diverged = _diverged(state, n)
        cbs = self.callbacks
        cbs.set_params({"verbose": self.verbose, "epochs": self.epochs, "steps": self.steps,
                        "initial_epoch": self.initial_epoch, "num_seeds": self.num_seeds,
                        "num_members": n})
        cbs.on_train_begin()
        first = self.initial_epoch + 1 if self.stopped_epoch is None else self.epochs + 1
        try:
            for epoch in range(first, self.epochs + 1):
                cbs.on_epoch_begin(epoch)
                t0 = time.perf_counter()
                self.state, logs = self.programs.run_epoch(self.state, *self.programs.data)
                logs = _to_host(logs)
                logs = {k: np.asarray(logs[k])[:n] for k in self.names if k in logs}  # Keras' order
                self.epoch_seconds.append(time.perf_counter() - t0)
                for k, v in logs.items():
                    self.history.setdefault(k, []).append(v)
                cbs.progress(epoch, logs)
                self._check_divergence()
                cbs.on_epoch_end(epoch, logs, self.layout.real(self.state))
                stop = self._stop_requested()
                if self.saver is not None and (epoch % self.checkpoint_every == 0
                                               or epoch == self.epochs or stop):
                    history = {k: np.stack(v, axis=-1) for k, v in self.history.items()}
                    if stop:
                        history[STOPPED_KEY] = np.array([epoch], np.int32)
                    self.saver.save(self.layout.real(self.state), history)
                if stop:
                    self.stopped_epoch = epoch
                    break
        except BaseException:
            cbs.abort()
            raise
        cbs.on_train_end()

    def _stop_requested(self) -> bool:
        """Whether a callback set `stop_training` (with several processes,
        process 0's answer, so that all stop together)."""
        stop = bool(self.run_handle.stop_training)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            stop = bool(multihost_utils.broadcast_one_to_all(np.int32(stop)))
        return stop

    def _check_divergence(self):
        n = self.layout.num_seeds
        now = _diverged(self.state, n)
        for i in sorted(set(now) - set(self.diverged)):
            if self.verbose and len(now) < n:
                self.printer.line(f"{self._who(i)}: non-finite loss at epoch {now[i][0]}, step "
                                  f"{now[i][1]}; its weights stay those before that epoch")
        self.diverged = now
        if len(now) == n:
            first = min(now.items(), key=lambda kv: (kv[1], kv[0]))
            where = f"at epoch {first[1][0]}, step {first[1][1]}"
            last = None if self.saver is None else self.saver.latest_epoch()
            raise NonFiniteLossError(
                f"non-finite loss {where}" if n == 1 else
                f"non-finite loss in every {'member' if self.swept else 'seed'} (first: "
                f"{self._who(first[0])} {where})",
                now, self.result(),
                None if last is None else os.path.join(self.saver.directory, str(last)))


    def _who(self, i: int) -> str:
        """`'seed index i'`, or in a sweep `'member i (seed 5, learning_rate=0.01)'`."""
        if not self.swept:
            return f"seed index {i}"
        member = self.members[i]
        values = ", ".join(f"{k}={v:g}" for k, v in member.items() if k != "seed")
        return f"member {i} (seed {member['seed']}, {values})"


def evaluate(model, x, y, *, loss, metrics: Sequence[str] = (), batch_size: int = 32,
             from_logits: bool = False) -> dict:
    """Keras' `evaluate`: mean loss and metrics of a built model over `(x, y)`."""
    _check_positive_int("batch_size", batch_size)
    x, y = as_inputs(x), np.asarray(y)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    y_pred_shape = jax.eval_shape(lambda: model(rows(x, slice(None, 1)))).shape
    engine = Engine(graphdef=graphdef, rest=rest,
                    loss=losses_lib.get(loss, from_logits=from_logits),
                    metrics=_metric_fns(metrics, y.shape, y_pred_shape),
                    optimizer=optax.identity(), batch_size=batch_size,
                    validation_batch_size=batch_size, shuffle=False,
                    init_params=lambda key: params, chunk_bytes=default_chunk_bytes())
    sums = jax.jit(engine.evaluate_sums)(params, jax.tree.map(jnp.asarray, x), jnp.asarray(y))
    return {k: float(v) for k, v in _means(sums).items()}
