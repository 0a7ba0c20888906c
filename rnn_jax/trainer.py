"""Keras' model methods, for `rnn_jax.models.Model` and `Sequential`:
`compile`, `fit`, `evaluate`, `predict`, `predict_on_batch`, `summary`,
`get_layer`, `save_weights`, `load_weights` (plus `count_params`,
`get_weights`, `set_weights` from `rnn_jax.base.Layer`).

    model.compile(optimizer=Adam(0.02), loss="binary_crossentropy", metrics=["acc"])
    history = model.fit(x, y, batch_size=8, epochs=4, validation_split=0.2)
    history.history["val_acc"]            # Keras' names, one value per epoch
    model.predict(x[-10:])

`fit` runs on the compiled engine (`rnn_jax.fit`: one program per epoch) and
takes one extra argument, `num_seeds`: with `num_seeds=N` it trains N models
at once, each from fresh initial weights (drawn from the keys `seed`, ...,
`seed + N - 1`, not the model's current weights), `History.history[name]`
holds one row (a list over the epochs) per seed, the model keeps seed 0's
trained weights and `History.result` (the `rnn_jax.FitResult`) every seed's.
"""

from __future__ import annotations

import weakref
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from rnn_jax import training
from rnn_jax.base import Layer


class History:
    """What `Model.fit` returns, as Keras' `History`: `history` (name -> the
    epochs' values; with `num_seeds > 1`, name -> one list per seed), `epoch`
    (the epochs run, from 0), `params` and `model`; `result` is `rnn_jax.fit`'s
    `FitResult` (every seed's weights, the compile and training times)."""

    def __init__(self, history: dict, epoch: list, params: dict, model, result):
        self.history, self.epoch, self.params, self.model = history, epoch, params, model
        self.result = result

    def __repr__(self) -> str:
        return f"<History {sorted(self.history)} over {len(self.epoch)} epochs>"


def _build_for(model, x) -> None:
    """Builds a model not built yet for inputs like `x`, as Keras builds a
    `Sequential` given no input shape on its first `fit`, `evaluate` or `predict`
    (e.g. `model.add(SimpleRNN(50, input_shape=(49, 1)))`, then `add(Dense(46))`)."""
    if not model.built and not isinstance(x, (list, tuple, dict)):
        model.build((None, *np.shape(x)[1:]))


# model -> (its graph definition, its jitted forward pass `(state, x) -> outputs`)
_FORWARD = weakref.WeakKeyDictionary()


def _forward(model):
    """`(run, state)`: the model's jitted forward pass and its current state. The
    function is kept with the model while its graph definition stays the same,
    so that `predict` compiles once per model and batch shape, and a loop of
    `predict` calls (Keras' seq2seq decoding, one step per call) reuses the
    program instead of compiling it again on every call."""
    graphdef, state = nnx.split(model)
    cached = _FORWARD.get(model)
    if cached is None or cached[0] != graphdef:
        cached = (graphdef, jax.jit(lambda state, x: nnx.merge(graphdef, state)(x)))
        _FORWARD[model] = cached
    return cached[1], state


class Trainer:
    """Keras' `compile` / `fit` / `evaluate` / `predict` and friends, shared by
    `Model` and `Sequential` (the class needs `layers`, `__call__` and the
    `Layer` weight methods)."""

    # -- finding layers ---------------------------------------------------------------

    def get_layer(self, name: str | None = None, index: int | None = None):
        """A layer by `name` or by position `index` in `layers` (Keras' `get_layer`)."""
        if (name is None) == (index is None):
            raise ValueError("get_layer: give exactly one of name= and index=")
        if index is not None:
            if not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"get_layer: index {index} is out of range: the model has "
                                 f"{len(self.layers)} layers")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No such layer: {name}. Existing layers are: "
                         f"{[layer.name for layer in self.layers]}.")

    # -- compile ----------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, *, from_logits=False,
                **unsupported):
        """Keras' `compile`: the optimizer (a name, a Keras optimizer object such
        as `rnn_jax.optimizers.Adam(0.02)`, or an optax transformation), the
        loss (a name from `rnn_jax.losses` or a function) and the metrics
        (`'accuracy'` / `'acc'` and the named accuracies), kept for `fit` and
        `evaluate`."""
        unknown = {k: v for k, v in unsupported.items() if v not in (None, False, 1, "auto")}
        if unknown:
            raise ValueError(f"compile: unsupported argument(s) {', '.join(sorted(unknown))}")
        if loss is None:
            raise ValueError("compile needs a loss, e.g. loss='mean_squared_error'")
        if isinstance(metrics, str):
            metrics = [metrics]
        self.compiled = (optimizer, loss, tuple(metrics or ()), bool(from_logits))

    def _compiled(self):
        """What `compile` kept; before it, Keras' ValueError (and message)."""
        compiled = getattr(self, "compiled", None)
        if compiled is None:
            raise ValueError("You must call `compile()` before using the model.")
        return compiled

    # -- fit / evaluate ---------------------------------------------------------------

    def fit(self, x=None, y=None, batch_size=None, epochs: int = 1, verbose="auto",
            callbacks: Sequence = None, validation_split: float = 0.0, validation_data=None,
            shuffle: bool = True, initial_epoch: int = 0, *, num_seeds: int = 1,
            seed: int | None = None, **unsupported) -> History:
        """Keras' `fit`, on the compiled engine (`rnn_jax.fit`).

        Trains `epochs - initial_epoch` epochs with Keras' semantics (batch
        size 32 by default, `validation_split` from the end before shuffling,
        reshuffled every epoch). `verbose`: `'auto'`/1 a progress bar, 2 one
        line per epoch, 0 silent. `seed` (default: drawn from NumPy's global
        generator, which `rnn_jax.utils.set_random_seed` seeds) keys the
        shuffles and dropout; `num_seeds` trains that many models at once (see
        the module docstring). Returns a `History`.
        """
        unknown = {k: v for k, v in unsupported.items() if v is not None}
        if unknown:
            raise ValueError(f"fit: unsupported argument(s) {', '.join(sorted(unknown))}")
        optimizer, loss, metrics, from_logits = self._compiled()
        if x is None or y is None:
            raise ValueError("fit needs x and y")
        if not isinstance(initial_epoch, int) or not 0 <= initial_epoch < epochs:
            raise ValueError(f"fit: initial_epoch must be in [0, epochs={epochs}), got "
                             f"{initial_epoch!r}")
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        x = training.as_inputs(x)
        _build_for(self, x)
        model = self if num_seeds == 1 else self.fresh_model
        result = training.fit(
            model, x, np.asarray(y), loss=loss, optimizer=optimizer,
            metrics=metrics, batch_size=32 if batch_size is None else batch_size,
            epochs=epochs - initial_epoch, validation_split=validation_split,
            validation_data=validation_data, shuffle=shuffle, seed=seed,
            num_seeds=num_seeds, from_logits=from_logits,
            verbose=1 if verbose == "auto" else verbose, callbacks=list(callbacks or ()))
        if num_seeds > 1:
            nnx.update(self, result.params(0))
        history = {k: np.asarray(v).tolist() for k, v in result.history.items()}
        epochs_run = len(next(iter(result.history.values()), ()))
        if num_seeds > 1:
            epochs_run = np.shape(next(iter(result.history.values())))[-1]
        params = {"epochs": epochs, "num_seeds": num_seeds, "seed": seed}
        return History(history, list(range(initial_epoch, initial_epoch + epochs_run)), params,
                       self, result)

    def fresh_model(self, rngs: nnx.Rngs):
        """A copy of this model with fresh initial weights drawn from `rngs` (every
        layer's initializers, in the order the layers built them): what `fit`
        trains each seed from with `num_seeds > 1`."""
        model = nnx.clone(self)
        for _, node in nnx.iter_graph(model):
            if isinstance(node, Layer):
                node.reinitialize(rngs)
        return model

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False,
                 **unsupported):
        """Keras' `evaluate`: the loss (and metrics) on `(x, y)`; a float, a list
        `[loss, *metrics]`, or with `return_dict` a dict."""

        unknown = {k: v for k, v in unsupported.items() if v is not None}
        if unknown:
            raise ValueError(f"evaluate: unsupported argument(s) {', '.join(sorted(unknown))}")
        _, loss, metrics, from_logits = self._compiled()
        x = training.as_inputs(x)
        _build_for(self, x)
        logs = training.evaluate(self, x, np.asarray(y), loss=loss,
                                 metrics=metrics, from_logits=from_logits,
                                 batch_size=32 if batch_size is None else batch_size)
        logs = {"loss": float(logs["loss"]),
                **{k: float(v) for k, v in logs.items() if k != "loss"}}
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    # -- predict ----------------------------------------------------------------------

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Keras' `predict`: the model's outputs on `x`, computed `batch_size`
        (default 32) samples at a time by one compiled program (the last
        batch padded), as NumPy arrays (a list for several outputs)."""
        x = training.as_inputs(x)
        _build_for(self, x)
        n = training.num_samples(x)
        bs = 32 if batch_size is None else int(batch_size)
        if bs <= 0:
            raise ValueError(f"predict: batch_size must be positive, got {batch_size}")
        bs = min(bs, n)
        run, state = _forward(self)
        outs = []
        for start in range(0, n, bs):
            xb = jax.tree.map(lambda a: a[start:start + bs], x)
            short = bs - training.num_samples(xb)
            if short:  # pad the last batch: the program compiled for bs is reused
                xb = jax.tree.map(lambda a: np.concatenate([a, np.repeat(a[-1:], short, 0)]), xb)
            y = run(state, xb)
            outs.append(jax.tree.map(lambda a: np.asarray(a)[:bs - short], y))
        return jax.tree.map(lambda *a: np.concatenate(a), *outs)

    def predict_on_batch(self, x):
        """The model's outputs on one batch, as NumPy arrays."""
        return jax.tree.map(np.asarray, self(training.as_inputs(x)))

    # -- weights on disk --------------------------------------------------------------

    def save_weights(self, filepath: str, overwrite: bool = True):
        """Saves the weights with Orbax to the directory `filepath`
        (`rnn_jax.checkpoints.save_weights`)."""
        from rnn_jax import checkpoints

        return checkpoints.save_weights(str(filepath), self, force=overwrite)

    def load_weights(self, filepath: str):
        """Loads weights saved by `save_weights` (or a run's checkpoints)."""
        from rnn_jax import checkpoints

        checkpoints.load_weights(self, str(filepath))
        return self

    # -- summary ----------------------------------------------------------------------

    def summary(self, print_fn=None, **unsupported):
        """Keras' `summary()`: the table of layers, output shapes and parameter
        counts, printed (or given line by line to `print_fn`)."""
        from rnn_jax import readout

        text = readout.summary(self)
        for line in text.split("\n"):
            (print_fn or print)(line)
