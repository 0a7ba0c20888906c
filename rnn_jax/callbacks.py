"""Keras' callbacks for `rnn_jax.fit`, and its progress bar.

    from rnn_jax import callbacks

    result = rnn_jax.fit(make_model, x, y, loss="mse", epochs=200, validation_split=0.2,
                         callbacks=[callbacks.EarlyStopping(patience=5, restore_best_weights=True),
                                    callbacks.CSVLogger("history.csv"),
                                    callbacks.TensorBoard("logs")])

A callback is a `Callback` subclass with Keras' hooks, called by `fit` in
the order given: `on_train_begin(logs)`, then for every epoch
`on_epoch_begin(epoch, logs)` and `on_epoch_end(epoch, logs)`, then
`on_train_end(logs)` with the last epoch's logs. As in Keras:

- `epoch` counts from 0 (the first epoch of a run resumed at epoch 5 is 5);
- `logs` is a dict of floats under Keras' names (`loss`, `accuracy`,
  `val_loss`, ...). With several seeds (or a sweep's members) each float is
  the mean over the seeds whose logs are finite (a seed that met a
  non-finite loss is NaN from then on and left out), and
  `logs['per_seed']` holds name -> `(num_members,)` numpy array, one value
  per seed, in `FitResult.members` order. With one seed there is no
  `per_seed` entry: the dict is the one Keras passes;
- `self.params` is `{'verbose', 'epochs', 'steps', 'initial_epoch',
  'num_seeds', 'num_members'}` (`steps`: minibatches per epoch);
- `self.model` is the run (`rnn_jax.training.FitRun`): setting
  `self.model.stop_training = True` stops `fit` after this epoch;
  `get_weights()` / `set_weights(...)` read and replace every member's
  parameters (numpy arrays with a leading member axis), `model(i)` is
  member `i` as a module, `state` the `TrainState`.

An epoch is one compiled program, so there are no per-batch hooks: a
callback defining `on_train_batch_end` (or another batch hook) is refused.
Plain callables `cb(epoch, logs, state)` are still taken as before (epoch
from 1, logs as `(num_members,)` numpy arrays, the `TrainState`), in the
same list.

What a callback of several seeds does is the Keras callback run per seed:
`EarlyStopping` tracks every seed and stops when each seed would have
stopped; `ModelCheckpoint(save_best_only=True)` keeps each seed's best
weights; `CSVLogger` writes a row per seed; `TensorBoard` a run per seed.

With several processes, every process calls the callbacks with the same
logs; files (`CSVLogger`, `TensorBoard`) are written by process 0, Orbax
checkpoints (`ModelCheckpoint`) by every process for its shards.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import sys
import time
import warnings

import numpy as np

PER_SEED = "per_seed"
_BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin",
                "on_train_batch_end")


class Callback:
    """Base class of `fit`'s callbacks: Keras' `keras.callbacks.Callback`,
    for the hooks an epoch-at-a-time run has (see the module docstring).

    Attributes:
      model: the run (`rnn_jax.training.FitRun`), set by `fit`.
      params: `fit`'s settings (`epochs`, `steps`, `verbose`, ...).
    """

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        """Before the first epoch."""

    def on_train_end(self, logs=None):
        """After the last epoch (`logs`: its logs; None when no epoch ran)."""

    def on_epoch_begin(self, epoch, logs=None):
        """Before epoch `epoch` (from 0)."""

    def on_epoch_end(self, epoch, logs=None):
        """After epoch `epoch` (from 0): `logs` holds its loss and metrics."""


class History(Callback):
    """Keras' `History`: `history[name]` lists the epochs' logs (floats: the
    mean over seeds with several), `epoch` the epoch indices; with several
    seeds `per_seed[name]` lists the epochs' `(num_members,)` arrays. Kept
    over several `fit` calls, as in Keras. (`fit` returns the whole
    per-seed history as `FitResult.history`.)"""

    def __init__(self):
        super().__init__()
        self.history, self.per_seed, self.epoch = {}, {}, []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            if k == PER_SEED:
                for name, a in v.items():
                    self.per_seed.setdefault(name, []).append(np.array(a))
            else:
                self.history.setdefault(k, []).append(v)


class LambdaCallback(Callback):
    """Keras' `LambdaCallback`: functions called as `on_epoch_begin(epoch,
    logs)`, `on_epoch_end(epoch, logs)`, `on_train_begin(logs)`,
    `on_train_end(logs)`."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None,
                 on_train_end=None, **kwargs):
        super().__init__()
        if kwargs:
            raise TypeError(f"LambdaCallback takes on_epoch_begin, on_epoch_end, on_train_begin "
                            f"and on_train_end; got {', '.join(sorted(kwargs))} (an epoch is one "
                            "compiled program: fit has no per-batch hooks)")
        for name, fn in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                         ("on_train_begin", on_train_begin), ("on_train_end", on_train_end)):
            if fn is not None:
                setattr(self, name, fn)


# -- progress ------------------------------------------------------------------------------------

class Printer:
    """Where `fit` prints: lines through `print_fn`; and, when `print_fn` is
    the builtin `print` and standard output is a terminal or a Jupyter
    kernel, one progress line rewritten in place (`rewrite`), ended before
    any other line is printed."""

    def __init__(self, print_fn=print):
        self.print_fn = print_fn
        stream = sys.stdout if print_fn is print else None
        self.stream = stream if stream is not None and _dynamic(stream) else None
        self.bar = _bar_chars(sys.stdout if print_fn is print else None)
        self._open = 0  # characters of a line written in place and not yet ended

    @property
    def dynamic(self) -> bool:
        return self.stream is not None

    def line(self, text: str) -> None:
        """Print `text` as a line of its own."""
        self.end_line()
        self.print_fn(text)

    def rewrite(self, text: str) -> None:
        """Write `text` over the line written in place before (terminal only)."""
        if _isatty(self.stream):  # a wrapped line could not be rewritten: cut it
            columns = shutil.get_terminal_size((0, 0)).columns
            if columns and len(text) >= columns:
                text = text[:columns - 1]
        self.stream.write("\r" + text + " " * max(0, self._open - len(text)))
        self.stream.flush()
        self._open = max(len(text), 1)

    def end_line(self) -> None:
        """End a line written in place, if one is open."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = 0


def _isatty(stream) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _dynamic(stream) -> bool:
    """Whether a line can be rewritten in place with `\\r` (Keras' test)."""
    return _isatty(stream) or "ipykernel" in sys.modules


def _bar_chars(stream) -> tuple[str, str]:
    """The done and to-do characters of the bar: Keras' box drawing, or
    ASCII when the stream's encoding cannot write it."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        "━─".encode(encoding)
        return "━", "─"
    except (LookupError, UnicodeEncodeError):
        return "=", "."


def _number(v) -> str:
    """A value as Keras' progress bar writes it (`.4f`, or `.4e` when tiny)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{v:.4f}" if abs(v) > 1e-3 else f"{v:.4e}"


def format_logs(logs: dict, noun: str = "seeds") -> str:
    """`'loss: 0.1234 - val_loss: 0.2345'` (Keras' look). With several seeds
    (`logs['per_seed']`), each mean is followed by the seeds' range and the
    line says so: `'loss: 0.1234 [0.0101, 0.567] - ... (mean [min, max] of 64
    seeds)'`, plus how many diverged (left out of the means and ranges)."""
    per = logs.get(PER_SEED)
    parts = []
    for name, v in logs.items():
        if name == PER_SEED:
            continue
        text = f"{name}: {_number(v)}"
        if per is not None and name in per:
            a = np.asarray(per[name], np.float64)
            a = a[np.isfinite(a)]
            if a.size:
                text += f" [{a.min():.3g}, {a.max():.3g}]"
        parts.append(text)
    text = " - ".join(parts)
    if per:
        stacked = np.stack([np.asarray(a, np.float64) for a in per.values()])
        bad = int(np.sum(np.any(np.isnan(stacked), axis=0)))
        text += (f" (mean [min, max] of {stacked.shape[1]} {noun}"
                 + (f"; {bad} diverged, left out" if bad else "") + ")")
    return text


def _duration(seconds: float) -> str:
    """`'7s'`, `'3:05'`, `'1:02:03'` (Keras' ETA format)."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    if s >= 60:
        return f"{s // 60}:{s % 60:02d}"
    return f"{s}s"


def _per_epoch(seconds: float) -> str:
    """`'2s/epoch'`, `'45ms/epoch'`, `'80us/epoch'` (Keras' time per step)."""
    if seconds >= 1 or seconds == 0:
        return f"{seconds:.0f}s/epoch"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/epoch"
    return f"{seconds * 1e6:.0f}us/epoch"


class ProgbarLogger(Callback):
    """`fit`'s progress output (added by `fit` when `verbose` is not 0; pass
    one in `callbacks` to set `interval`).

    An epoch is one compiled program, so the bar counts epochs:
    `verbose=1` shows one bar over the run,

        Epoch 3/200 ━━━───────────────── 2s 45ms/epoch - ETA 9s - loss: 0.1234 - val_loss: 0.2345

    (elapsed time, time per epoch, time left, the epoch's logs), rewritten in
    place on a terminal or in Jupyter. Elsewhere (a pipe, a log file, a
    `print_fn`) it prints such a line for the first epoch, then at most one
    every `interval` seconds, and the last. `verbose=2` prints one line per
    epoch, `Epoch 3/200 - 0.045s - loss: ...`, with the epoch's wall time.
    With several seeds the logs are means, with ranges (`format_logs`).
    """

    def __init__(self, interval: float = 5.0):
        super().__init__()
        self.interval = interval
        self._reset()

    def _reset(self):
        self._start = self._epoch_start = time.perf_counter()
        self._done = 0            # epochs run by this call
        self._last = None         # (epoch, logs, elapsed) of the last epoch
        self._shown = None        # (epoch, final) of the last line shown
        self._shown_at = None

    @property
    def _printer(self) -> Printer:
        return self.model.printer

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        verbose = self.params.get("verbose", 1)
        if not verbose:
            return
        now = time.perf_counter()
        self._done += 1
        if verbose == 2:
            self._printer.line(f"Epoch {epoch + 1}/{self.params['epochs']} - "
                               f"{now - self._epoch_start:.3f}s - {self._logs(logs)}")
            return
        self._last = (epoch, logs, now - self._start)
        final = epoch + 1 >= self.params["epochs"]
        interval = 0.1 if self._printer.dynamic else self.interval
        if final or self._shown_at is None or now - self._shown_at >= interval:
            self._show(final)
            self._shown_at = now

    def on_train_end(self, logs=None):
        self.finish()

    def finish(self):
        """Show the last epoch's line in its final form (no ETA) unless it is
        shown, and end the line."""
        if self._last is not None and self._shown != (self._last[0], True):
            if self._printer.dynamic or self._shown is None or self._shown[0] != self._last[0]:
                self._show(final=True)
        if self.model is not None:
            self._printer.end_line()

    def _show(self, final: bool):
        epoch, logs, elapsed = self._last
        self._shown = (epoch, final)
        epochs = self.params["epochs"]
        done, todo = self._printer.bar
        filled = int(20 * (epoch + 1) / epochs)
        per_epoch = elapsed / self._done
        parts = [f"Epoch {epoch + 1}/{epochs} {done * filled}{todo * (20 - filled)} "
                 f"{_duration(elapsed)} {_per_epoch(per_epoch)}"]
        if not final:
            parts.append(f"ETA {_duration(per_epoch * (epochs - epoch - 1))}")
        text = " - ".join(parts + [self._logs(logs)])
        if self._printer.dynamic:
            self._printer.rewrite(text)
            if final:
                self._printer.end_line()
        else:
            self._printer.line(text)

    def _logs(self, logs) -> str:
        p = self.params
        noun = "members" if p.get("num_members", 1) != p.get("num_seeds", 1) else "seeds"
        return format_logs(logs or {}, noun)


# -- monitoring a quantity -----------------------------------------------------------------------

class _Monitor(Callback):
    """A monitored log entry, per seed: direction, improvement test, values."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"{type(self).__name__}: mode must be 'auto', 'min' or 'max', "
                             f"got {mode!r}")
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(min_delta)
        self.direction = mode if mode != "auto" else _direction(monitor, type(self).__name__)

    def _improved(self, current, reference):
        """Per member: `current` beats `reference` by more than `min_delta`
        (Keras' `_is_improvement`); False where either is NaN."""
        if self.direction == "min":
            return current + self.min_delta < reference
        return current - self.min_delta > reference

    def _values(self, logs):
        """The monitored value of every member, float64 `(num_members,)`, or
        None (with Keras' warning) when the logs do not have it."""
        logs = logs or {}
        per = logs.get(PER_SEED) or {}
        if self.monitor in per:
            return np.asarray(per[self.monitor], np.float64)
        if self.monitor in logs:
            return np.full(self.params.get("num_members", 1), float(logs[self.monitor]))
        names = ",".join(k for k in logs if k != PER_SEED)
        warnings.warn(f"{type(self).__name__} conditioned on metric `{self.monitor}` which is "
                      f"not available. Available metrics are: {names}", stacklevel=3)
        return None

    def _out(self, a):
        """A per-member array as the attribute shows it: a scalar for one member."""
        a = np.asarray(a)
        return a[0].item() if a.shape == (1,) else a


def _direction(monitor: str, who: str) -> str:
    """`'min'` or `'max'` for `mode='auto'`, from the name as Keras infers it."""
    name = monitor.removeprefix("val_")
    if name.endswith(("loss", "error", "crossentropy")):
        return "min"
    if "acc" in name:
        return "max"
    raise ValueError(f"{who}: cannot tell whether {monitor!r} should be minimized or maximized; "
                     "pass mode='min' or mode='max'")


def _select(mask, new, old):
    """Leaves of `new` where `mask` (per member), else `old` (lists of arrays
    with a leading member axis)."""
    return [np.where(mask.reshape((-1,) + (1,) * (np.ndim(a) - 1)), a, b)
            for a, b in zip(new, old)]


class EarlyStopping(_Monitor):
    """Keras' `EarlyStopping`: stop training when `monitor` has not improved
    (by more than `min_delta`) for `patience` epochs.

    Exactly Keras' rule, per seed: from epoch `start_from_epoch` on, the
    first monitored value is the best; an epoch that improves on the best
    becomes the best and, if it also beats `baseline` (when given), resets
    the wait; otherwise the wait grows, and a seed stops at the epoch
    (never the first) where the wait reaches `patience`.

    With several seeds, a seed that would stop is done (later epochs no
    longer count for it) and `fit` stops when every seed is done, so each
    seed trains at least as long as it would alone. `stopped_epoch` and
    `best_epoch` are then `(num_members,)` arrays (`stopped_epoch` 0 for a
    seed that never stopped, as Keras'), `restore_best_weights=True` gives
    each seed the weights of its own best epoch (among those before it was
    done), at the end of training, whether or not it stopped early (as
    Keras). The restored weights are in `FitResult`; a `checkpoint_dir`
    holds the state of the epoch training stopped at.
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta)
        self.patience, self.verbose, self.baseline = patience, verbose, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch
        self._reset(1)

    def on_train_begin(self, logs=None):
        self._reset(self.params.get("num_members", 1))

    def _reset(self, n: int):
        self._wait = np.zeros(n, np.int64)
        self._stopped = np.zeros(n, np.int64)
        self._done = np.zeros(n, bool)
        self._best = np.full(n, np.nan)
        self._has_best = np.zeros(n, bool)
        self._best_epoch = np.zeros(n, np.int64)
        self.best_weights = None

    wait = property(lambda self: self._out(self._wait))
    stopped_epoch = property(lambda self: self._out(self._stopped))
    best = property(lambda self: self._out(np.where(self._has_best, self._best, np.nan))
                    if np.any(self._has_best) else None)
    best_epoch = property(lambda self: self._out(self._best_epoch))

    def on_epoch_end(self, epoch, logs=None):
        current = self._values(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        active = ~self._done
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self._best_epoch[:] = epoch
        self._wait[active] += 1
        improved = active & (~self._has_best | self._improved(current, self._best))
        if improved.any():
            self._best[improved] = current[improved]
            self._has_best |= improved
            self._best_epoch[improved] = epoch
            if self.restore_best_weights:
                self.best_weights = _select(improved, self.model.get_weights(), self.best_weights)
            beats = (np.ones_like(improved) if self.baseline is None
                     else self._improved(current, self.baseline))
            self._wait[improved & beats] = 0
        stop = active & ~improved & (self._wait >= self.patience) & (epoch > 0)
        self._stopped[stop] = epoch
        self._done |= stop
        if self._done.all():
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        n = self._done.size
        if self.verbose > 0 and self._stopped.max() > 0 and self._done.all():
            epoch = int(self._stopped.max())
            self.model.print_msg(f"Epoch {epoch + 1}: early stopping" if n == 1 else
                                 f"Epoch {epoch + 1}: early stopping (every seed stopped "
                                 f"improving; the first at epoch {int(self._stopped.min()) + 1})")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                b = self._best_epoch + 1
                self.model.print_msg(
                    f"Restoring model weights from the end of the best epoch: {b[0]}." if n == 1
                    else f"Restoring each seed's weights from the end of its best epoch "
                         f"(epochs {b.min()} to {b.max()}).")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Keras' `ModelCheckpoint`, written with the project's Orbax checkpoints.

    After every epoch, saves the weights (`save_weights_only=True`, the
    default; `rnn_jax.checkpoints.save_weights`) or the whole training state
    (`save_train_state`) to `filepath`, a directory, formatted as Keras does
    (`'ckpt/{epoch:03d}'`, `'{val_loss:.3f}'`: `epoch` from 1, the logs'
    floats). `rnn_jax.checkpoints.load_weights(model, path, seed_index=i)`
    reads it back. With `save_best_only`, it saves only when `monitor`
    improves on the best so far (and on `initial_value_threshold`).

    With several seeds the weights have a leading seed axis, and
    `save_best_only` keeps each seed's best: whenever some seed improves, the
    checkpoint is rewritten with the improved seeds' current weights and the
    others' weights of their own best epoch (`best_epoch`, a `(num_members,)`
    array; -1 for a seed that has not beaten `initial_value_threshold` yet,
    which holds its latest weights).
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=True, mode="auto", save_freq="epoch",
                 initial_value_threshold=None):
        super().__init__(monitor, mode)
        if save_freq != "epoch":
            raise ValueError(f"ModelCheckpoint: save_freq must be 'epoch' (an epoch is one "
                             f"compiled program), got {save_freq!r}")
        self.filepath, self.verbose = os.fspath(filepath), verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.initial_value_threshold = initial_value_threshold
        self.best = initial_value_threshold  # as Keras: kept from one fit to the next
        self._reset(1)

    def on_train_begin(self, logs=None):
        self._reset(self.params.get("num_members", 1))

    def _reset(self, n: int):
        self._best = np.full(n, np.nan if self.best is None else np.asarray(self.best, float))
        self._has_best = np.isfinite(self._best) if self.best is not None else np.zeros(n, bool)
        self._kept = None  # with several seeds: what the checkpoint holds, per seed
        self._best_epoch = np.full(n, -1)

    best_epoch = property(lambda self: self._out(self._best_epoch))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        try:
            path = self.filepath.format(
                epoch=epoch + 1, **{k: v for k, v in logs.items() if k != PER_SEED})
        except KeyError as e:
            raise KeyError(f'Failed to format this callback filepath: "{self.filepath}". '
                           f"Reason: {e}") from None
        current = self._values(logs) if self.save_best_only else None
        if current is None:  # every epoch (or, as Keras, when the monitor is missing)
            if self.verbose > 0:
                self.model.print_msg(f"Epoch {epoch + 1}: saving model to {path}")
            self._save(path, self._current())
            return
        improved = ~self._has_best | self._improved(current, self._best)
        n = improved.size
        was = "None" if not self._has_best[0] else f"{self._best[0]:.5f}"
        if not improved.any():
            if self.verbose > 0:
                self.model.print_msg(f"Epoch {epoch + 1}: {self.monitor} did not improve " + (
                    f"from {was}" if n == 1 else "for any seed"))
            return
        now = self._current()
        take = improved | (self._best_epoch < 0)  # a seed with no best yet: its latest
        self._kept = now if self._kept is None else _select(take, now, self._kept)
        self._best[improved] = current[improved]
        self._has_best |= improved
        self._best_epoch[improved] = epoch
        self.best = self._out(self._best)
        if self.verbose > 0:
            what = (f"from {was} to {current[0]:.5f}" if n == 1 else
                    f"for {int(improved.sum())} of {n} seeds")
            self.model.print_msg(f"Epoch {epoch + 1}: {self.monitor} improved {what}, saving "
                                 f"model to {path}")
        self._save(path, self._kept)

    def _current(self):
        return self.model.get_weights() if self.save_weights_only else self.model.get_state()

    def _save(self, path, leaves):
        dirname = os.path.dirname(os.path.abspath(path))
        os.makedirs(dirname, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path, weights=leaves)
        else:
            self.model.save(path, state=leaves)


# -- files ---------------------------------------------------------------------------------------

def _is_writer() -> bool:
    """Whether this process writes files (process 0 of a multi-process run)."""
    if "jax" not in sys.modules:
        return True
    import jax
    return jax.process_index() == 0


def _member_columns(model) -> list[str]:
    """The member's identity columns: none for one member, else `seed` and a
    sweep's value names."""
    members = getattr(model, "members", None) or [{}]
    return [] if len(members) == 1 else list(members[0])


class CSVLogger(Callback):
    """Keras' `CSVLogger`: one row per epoch, `epoch` (from 0) then the logs
    in sorted order, e.g. `epoch,loss,val_loss`; values as Python writes
    floats (they read back exactly). With several seeds, one row per seed
    and epoch, with the seed (and a sweep's values) after `epoch`:
    `epoch,seed,learning_rate,loss,val_loss`.

    Each epoch's rows are appended with one `write` to the file, so a run
    killed mid-way leaves whole lines. `append=True` continues the file;
    when `fit` resumes from a checkpoint at epoch `e` it first drops the
    rows of epochs `>= e` (they are trained again), so the file of a resumed
    run is that of an unbroken one. `append=False` starts the file anew.
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.sep, self.append = os.fspath(filename), separator, append
        self.keys = None
        self._header = True

    def on_train_begin(self, logs=None):
        self.keys = None
        if not _is_writer():
            return
        initial = self.params.get("initial_epoch", 0)
        self._header = True
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                lines = f.read().splitlines(keepends=True)
            if lines:
                self._header = False
                keep = lines[:1] + [l for l in lines[1:]
                                    if _epoch_of(l, self.sep) is not None
                                    and _epoch_of(l, self.sep) < initial]
                if keep != lines:
                    from rnn_jax import workdir
                    with workdir.atomic_write(self.filename) as f:
                        f.write("".join(keep))
        elif not self.append:
            with open(self.filename, "w"):
                pass

    def on_epoch_end(self, epoch, logs=None):
        if not _is_writer():
            return
        logs = dict(logs or {})
        per = logs.pop(PER_SEED, None)
        if self.keys is None:
            self.keys = sorted(logs)
        ids = _member_columns(self.model)
        rows = []
        if per is None:
            rows.append({"epoch": epoch, **{k: logs.get(k, "NA") for k in self.keys}})
        else:
            for m, member in enumerate(self.model.members):
                rows.append({"epoch": epoch, **{k: member[k] for k in ids},
                             **{k: float(per[k][m]) if k in per else logs.get(k, "NA")
                                for k in self.keys}})
        out = io.StringIO()

        class Dialect(csv.excel):
            delimiter = self.sep

        writer = csv.DictWriter(out, fieldnames=["epoch", *ids, *self.keys], dialect=Dialect)
        if self._header:
            writer.writeheader()
            self._header = False
        writer.writerows(rows)
        data = out.getvalue().encode()
        fd = os.open(self.filename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)


def _epoch_of(line: str, sep: str):
    """The epoch a CSV row starts with, or None (a header or a broken line)."""
    try:
        return int(line.split(sep, 1)[0])
    except ValueError:
        return None


class TensorBoard(Callback):
    """Keras' `TensorBoard`, per-epoch scalars, written with `tensorboardX`
    (a dependency of rnn_jax; not TensorFlow).

    As Keras: `log_dir/train/` holds the training logs as `epoch_loss`,
    `epoch_accuracy`, ..., `log_dir/validation/` the `val_*` ones under the
    same tags (so both are one chart), at step `epoch` (from 0). With several
    seeds every seed is a run of its own, `log_dir/seed_<s>/train/` and
    `.../validation/` (a sweep's member: `log_dir/learning_rate=0.003/seed_<s>/`),
    so TensorBoard overlays the seeds in one chart.

    Args:
      log_dir: the directory of the event files.
      histogram_freq: every this many epochs, a histogram of each weight
        (tag: its path, `layers/0/cell/kernel`) in the `train` run; 0: none.
      write_graph: taken for Keras' signature; there is no graph to write.
      update_freq: `'epoch'` only (an epoch is one compiled program).
      hparams: name -> value to show in TensorBoard's HParams dashboard; each
        run gets these plus its seed (and a sweep's values), and its final
        logs as metrics (written when training ends).
    """

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, update_freq="epoch",
                 hparams: dict | None = None):
        super().__init__()
        if update_freq != "epoch":
            raise ValueError(f"TensorBoard: update_freq must be 'epoch' (an epoch is one compiled "
                             f"program), got {update_freq!r}")
        try:
            import tensorboardX  # noqa: F401  (the writer; imported only here)
        except ImportError:
            raise ImportError("rnn_jax.callbacks.TensorBoard writes its files with tensorboardX: "
                              "it is a dependency of rnn_jax: pip install tensorboardX"
                              ) from None
        self.log_dir, self.histogram_freq = os.fspath(log_dir), histogram_freq
        self.write_graph, self.update_freq, self.hparams = write_graph, update_freq, hparams
        self._writers = {}

    def _runs(self) -> list[str]:
        """The run directory of each member, relative to `log_dir`."""
        members = self.model.members
        if len(members) == 1:
            return [""]
        return [os.path.join(*[f"{k}={v:g}" for k, v in m.items() if k != "seed"],
                             f"seed_{m['seed']}") for m in members]

    def _writer(self, run: str, kind: str):
        from tensorboardX.event_file_writer import EventsWriter
        key = (run, kind)
        if key not in self._writers:
            directory = os.path.join(self.log_dir, run, kind)
            os.makedirs(directory, exist_ok=True)
            self._writers[key] = EventsWriter(os.path.join(directory, "events"))
        return self._writers[key]

    def _write(self, run: str, kind: str, step: int, summaries) -> None:
        from tensorboardX.proto import event_pb2
        self._writer(run, kind).write_event(
            event_pb2.Event(wall_time=time.time(), step=step, summary=summaries))

    def on_train_begin(self, logs=None):
        self._writers = {}

    def on_epoch_end(self, epoch, logs=None):
        if not _is_writer():
            return
        from tensorboardX import summary
        from tensorboardX.proto.summary_pb2 import Summary
        logs = logs or {}
        per = logs.get(PER_SEED)
        for m, run in enumerate(self._runs()):
            for kind, names in (("train", [k for k in logs if k != PER_SEED
                                           and not k.startswith("val_")]),
                                ("validation", [k for k in logs if k.startswith("val_")])):
                values = [summary.scalar(f"epoch_{k.removeprefix('val_')}",
                                         float(per[k][m]) if per is not None else float(logs[k]))
                          for k in names if per is None or k in per]
                if values:
                    self._write(run, kind, epoch,
                                Summary(value=[v for s in values for v in s.value]))
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._histograms(epoch)
        for w in self._writers.values():
            w.flush()

    def _histograms(self, epoch):
        from tensorboardX import summary
        from tensorboardX.proto.summary_pb2 import Summary
        named = self.model.named_weights()
        for m, run in enumerate(self._runs()):
            values = [v for name, a in named.items()
                      for v in summary.histogram(name, np.asarray(a[m]), "auto").value]
            self._write(run, "train", epoch, Summary(value=values))

    def on_train_end(self, logs=None):
        if _is_writer() and self.hparams is not None and logs:
            from tensorboardX.summary import hparams, scalar
            from tensorboardX.proto.summary_pb2 import Summary
            per = logs.get(PER_SEED)
            for m, run in enumerate(self._runs()):
                final = {k: float(per[k][m]) if per is not None else float(v)
                         for k, v in logs.items() if k != PER_SEED}
                values = {**self.hparams, **(self.model.members[m] if per is not None else {})}
                for s in (*hparams(values, final), *(scalar(k, v) for k, v in final.items())):
                    self._write(run, "", self.params.get("epochs", 0), s)
        for w in self._writers.values():
            w.close()
        self._writers = {}


# -- what fit runs -------------------------------------------------------------------------------

def keras_logs(logs: dict, num_members: int) -> dict:
    """`fit`'s per-epoch logs (name -> `(num_members,)` array) as a Keras
    callback gets them: name -> float (the mean over the finite seeds), plus
    `per_seed` with copies of the arrays when there are several members."""
    out = {}
    for name, v in logs.items():
        v = np.asarray(v, np.float64).reshape(-1)
        if num_members == 1:
            out[name] = float(v[0])
        else:
            finite = v[~np.isnan(v)]
            out[name] = float(finite.mean()) if finite.size else math.nan
    if num_members > 1:
        out[PER_SEED] = {name: np.array(v) for name, v in logs.items()}
    return out


def checked(callbacks) -> list:
    """`fit`'s `callbacks` as a list, each a `Callback` without per-batch
    hooks or a callable; raises TypeError / ValueError naming the one that is not."""
    callbacks = list(callbacks or ())
    for cb in callbacks:
        _check(cb)
    return callbacks


def _check(cb) -> None:
    if isinstance(cb, Callback):
        batch = [h for h in _BATCH_HOOKS if hasattr(cb, h)]
        if batch:
            raise ValueError(f"{type(cb).__name__} defines {', '.join(batch)}: fit calls no "
                             "per-batch hooks (an epoch is one compiled program); use "
                             "on_epoch_end")
        return
    if callable(cb):
        return
    cls = type(cb)
    hint = (f"; use rnn_jax.callbacks.{cls.__name__}" if cls.__module__.startswith("keras")
            and cls.__name__ in __all__ else "")
    raise TypeError(f"callbacks must be rnn_jax.callbacks.Callback objects or functions "
                    f"cb(epoch, logs, state), got {cls.__module__}.{cls.__name__}{hint}")


class CallbackList:
    """`fit`'s callbacks in order, `Callback` objects and plain callables
    `cb(epoch, logs, state)`, after the progress logger (`ProgbarLogger`,
    added when `verbose` and none is given), which shows each epoch first:
    `progress` runs it, `on_epoch_end` the others."""

    def __init__(self, callbacks, run, verbose: int):
        items = checked(callbacks)
        self.progbar = next((cb for cb in items if isinstance(cb, ProgbarLogger)), None)
        if self.progbar is None and verbose:
            self.progbar = ProgbarLogger()
        self.items = [cb for cb in items if cb is not self.progbar]
        self.objects = [cb for cb in [self.progbar, *self.items] if isinstance(cb, Callback)]
        for cb in self.objects:
            cb.set_model(run)
        self.num_members = len(run.members)
        self.logs = None

    def set_params(self, params: dict) -> None:
        for cb in self.objects:
            cb.set_params(dict(params))

    def on_train_begin(self) -> None:
        for cb in self.objects:
            cb.on_train_begin(None)

    def on_epoch_begin(self, epoch: int) -> None:
        """Before epoch `epoch` (from 1, as `fit` counts)."""
        for cb in self.objects:
            cb.on_epoch_begin(epoch - 1, None)

    def progress(self, epoch: int, logs: dict) -> None:
        """The epoch's logs (from 1; name -> per-member array) to the progress logger."""
        self.logs = keras_logs(logs, self.num_members)
        if self.progbar is not None:
            self.progbar.on_epoch_end(epoch - 1, self.logs)

    def on_epoch_end(self, epoch: int, logs: dict, state) -> None:
        for cb in self.items:
            if isinstance(cb, Callback):
                cb.on_epoch_end(epoch - 1, self.logs)
            else:
                cb(epoch, logs, state)

    def on_train_end(self) -> None:
        for cb in self.objects:
            cb.on_train_end(self.logs)

    def abort(self) -> None:
        """Training ends with an error: show the last epoch's line."""
        if self.progbar is not None and self.progbar.model is not None:
            self.progbar.finish()


__all__ = ["Callback", "CSVLogger", "EarlyStopping", "History", "LambdaCallback",
           "ModelCheckpoint", "ProgbarLogger", "TensorBoard"]
