"""The base of every `rnn_jax` layer: Keras-style building and weight I/O.

A layer is a Flax NNX module whose weights are `nnx.Param`s named as Keras
names them (`kernel`, `recurrent_kernel`, `bias`, `embeddings`). As in Keras,
a layer may be built lazily: its weight shapes depend on the input's last
dimension, which is known either from `input_shape` at construction or from
the first call. Building draws the initial weights from the `rngs` given at
construction (`nnx.Rngs`), or, without one, from the process-wide seed
stream that `set_random_seed` resets (as Keras draws from its global seed).
A layer made without `name=` is named as Keras names it (`simple_rnn`,
`simple_rnn_1`, ...). Called on symbolic tensors (`rnn_jax.layers.Input`), a
layer records a node of a functional model instead of computing
(`rnn_jax.functional`).

Every layer reads its inputs through `Layer.cast_inputs`, the one place
where inputs are cast to the layer's dtype and, when `check_inputs()` is on,
checked for NaN and inf (see `check_inputs`). `check_finite_data` is the
host-side check of whole data sets that `rnn_jax.fit` runs by default.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import checkify

from rnn_jax import initializers


# -- the process-wide seed stream and layer names ----------------------------------

_STREAM = {"seed": None, "count": itertools.count()}


def set_random_seed(seed: int) -> None:
    """Makes a script reproducible, as `keras.utils.set_random_seed`: seeds
    Python's `random`, NumPy's global generator and rnn_jax's seed stream,
    from which layers made without `rngs=` draw their initial weights (the
    n-th such layer after this call gets `nnx.Rngs(fold_in(key(seed), n))`)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"set_random_seed: seed must be a non-negative integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    _STREAM["seed"] = int(seed)
    _STREAM["count"] = itertools.count()


def next_rngs() -> nnx.Rngs:
    """The next key stream of the process-wide seed stream (see
    `set_random_seed`; unseeded, it starts from a random seed, as Keras does)."""
    if _STREAM["seed"] is None:
        _STREAM["seed"] = int(np.random.SeedSequence().entropy % 2**31)
    key = jax.random.fold_in(jax.random.key(_STREAM["seed"]), next(_STREAM["count"]))
    return nnx.Rngs(params=key)


_NAME_COUNTS: dict[str, itertools.count] = {}


def snake_case(name: str) -> str:
    """A class name as Keras writes it in layer names: `SimpleRNN` ->
    `simple_rnn`, `GlobalAveragePooling1D` -> `global_average_pooling1d`."""
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def clear_session() -> None:
    """Starts layer names afresh (the next `SimpleRNN` is `simple_rnn` again), as
    Keras' `clear_session` does; layers made before keep their names."""
    _NAME_COUNTS.clear()


def unique_name(base: str) -> str:
    """`base`, then `base_1`, `base_2`, ... for each later call in this process."""
    n = next(_NAME_COUNTS.setdefault(base, itertools.count()))
    return base if n == 0 else f"{base}_{n}"


def as_dtype(dtype, what: str = "dtype", x64_required: bool = True) -> np.dtype:
    """A dtype argument as a NumPy dtype: None (Keras' float32 default), a
    string, a NumPy or JAX dtype, or an object that names one (TensorFlow's
    `tf.float64`, anything with `as_numpy_dtype` or a string `name`). A 64-bit
    float needs JAX's 64-bit mode, else ValueError says how to turn it on
    (with `x64_required`)."""
    if dtype is None:
        return np.dtype("float32")
    given = dtype
    if hasattr(dtype, "as_numpy_dtype"):
        dtype = dtype.as_numpy_dtype
    elif not isinstance(dtype, (str, np.dtype, type)) and isinstance(getattr(dtype, "name", None), str):
        dtype = dtype.name
    try:
        dtype = np.dtype(jnp.dtype(dtype))
    except TypeError:
        raise ValueError(f"{what}: {given!r} does not name a dtype") from None
    if x64_required and dtype.itemsize == 8 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"{what}={given!r} needs JAX's 64-bit mode: call "
            "jax.config.update('jax_enable_x64', True) at startup (or set JAX_ENABLE_X64=1)")
    return dtype


class Layer(nnx.Module):
    """Base class: lazy `build`, `get_weights` / `set_weights` in Keras order.

    Subclasses set `weight_names` (Keras' order of `get_weights()`) and
    implement `build(input_shape)`, creating each weight with `add_weight`.
    """

    weight_names: tuple[str, ...] = ()
    # Whether a layer made without `name=` gets Keras' automatic name. Cells do
    # not: the scan's programs are cached per cell configuration, and a name
    # would make every cell's configuration differ.
    auto_named = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__call__" in vars(cls):  # a call on symbolic tensors records a node
            from rnn_jax import functional  # imports this module

            cls.__call__ = functional.symbolic_aware(vars(cls)["__call__"])
        if "build" in vars(cls):
            cls.build = _recording_build(vars(cls)["build"])

    def __init__(self, *, dtype="float32", rngs: nnx.Rngs | None = None, name: str | None = None):
        self.dtype = as_dtype(dtype, f"{type(self).__name__}: dtype")
        if not jnp.issubdtype(self.dtype, jnp.floating):
            raise ValueError(f"{type(self).__name__}: dtype must be a float dtype, got {dtype!r}")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"{type(self).__name__}: name must be a string, got {name!r}")
        self.name = (name if name is not None or not self.auto_named
                     else unique_name(snake_case(type(self).__name__)))
        self.built = False
        # Without rngs, a layer with weights draws from the process-wide stream.
        self._rngs = rngs if rngs is not None or not self.weight_names else next_rngs()

    # -- building -----------------------------------------------------------

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Creates the weights for inputs of `input_shape` (batch first)."""
        self.built = True

    def maybe_build(self, input_shape: Sequence[int | None], traced: bool = False) -> None:
        """Builds on first use; refuses to build inside `jit` / `vmap` / `grad`."""
        if self.built:
            return
        if traced:
            raise RuntimeError(
                f"{type(self).__name__} is not built yet and was called under a JAX "
                "transformation; call it once eagerly, call build(input_shape), or "
                "pass input_shape=... at construction before jit/vmap/grad"
            )
        self.build(tuple(input_shape))

    def add_weight(self, name: str, shape: Sequence[int], initializer) -> None:
        """Creates `nnx.Param` `name` of `shape` drawn from `initializer`."""
        init = initializers.get(initializer)
        if self._rngs is None:  # its stream was used up by an earlier build
            self._rngs = next_rngs()
        value = init(self._rngs.params(), tuple(shape), self.dtype)
        setattr(self, name, nnx.Param(jnp.asarray(value, self.dtype)))

    # What `build` was given, for `reinitialize`: None, or the shape with every
    # axis but the features left out (`(None, ..., D)`; a layer's own weights
    # depend on D alone, and equally configured layers keep equal graphs).
    build_input = None

    def reinitialize(self, rngs: nnx.Rngs) -> None:
        """Draws this layer's own weights (if it has any) again from `rngs`, with
        its initializers and in its order, by building it again: the weights
        an equally configured layer built with `rngs` gets."""
        if self.built and self.weight_names:
            self._rngs = rngs
            self.build(self.build_input)

    def _done_building(self) -> None:
        self.built = True
        self._rngs = None  # the key stream is not part of the trained state

    # -- masks ----------------------------------------------------------------

    def compute_mask(self, inputs, mask=None):
        """The Keras mask this layer's output carries, given its input's `mask`
        (`(B, T)` bool or None): by default the input's, passed through (as
        Keras' `supports_masking` layers: `Dense`, `Activation`, ...). Layers
        that make, change or drop masks override it."""
        return mask

    # -- inputs -------------------------------------------------------------

    def cast_inputs(self, inputs) -> jax.Array:
        """`inputs` as an array of the layer's dtype (Keras' autocasting), checked
        for NaN / inf when `check_inputs()` is on. Every layer reads its float
        inputs through this method."""
        x = as_float(inputs, self.dtype)
        if _CHECK_INPUTS.value:
            check_finite_inputs(self, x)
        return x

    # -- weights ------------------------------------------------------------

    def _check_built(self) -> None:
        if not self.built:
            raise ValueError(
                f"{type(self).__name__} has no weights yet: call it once or call "
                "build(input_shape) first"
            )

    @property
    def weights(self) -> list[nnx.Param]:
        """The weight variables in Keras' `get_weights()` order."""
        self._check_built()
        return [getattr(self, n) for n in self.weight_names if getattr(self, n, None) is not None]

    def get_weights(self) -> list[np.ndarray]:
        """The weights as numpy arrays, in the order Keras' `get_weights()` uses."""
        return [np.asarray(w[...]) for w in self.weights]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Sets the weights from arrays in Keras' order; shapes must match exactly."""
        own = self.weights
        if len(weights) != len(own):
            raise ValueError(
                f"{describe(self)} has {len(own)} weights "
                f"({', '.join(self.weight_labels())}), got {len(weights)} arrays"
            )
        for label, var, value in zip(self.weight_labels(), own, weights):
            value = np.asarray(value)
            if value.shape != var[...].shape:
                raise ValueError(
                    f"{describe(self)}: weight {label!r} has shape "
                    f"{var[...].shape}, got an array of shape {value.shape}"
                )
            var.set_value(jnp.asarray(value, self.dtype))

    def weight_labels(self) -> list[str]:
        """How error messages name the weights of `weights`, in the same order
        (`'kernel'`; `'cells[1].bias'` inside stacked cells)."""
        return [n for n in self.weight_names if getattr(self, n, None) is not None]

    @property
    def weight_rngs(self) -> nnx.Rngs | None:
        """The key stream this layer draws its weights from when it builds;
        None once built (it is not part of the trained state) or if none was
        given."""
        return self._rngs

    def read_inputs(self, inputs, ndim: int, expected: str) -> jax.Array:
        """The first lines of a call: `inputs` cast (`cast_inputs`), refused
        unless of rank `ndim` (the message says `expected`, e.g. `'(batch,
        time, features)'`), and the layer built for their shape if it is not
        yet (`maybe_build`)."""
        x = self.cast_inputs(inputs)
        if x.ndim != ndim:
            raise ValueError(f"{describe(self)} expects inputs of shape {expected}, got shape "
                             f"{tuple(x.shape)}")
        self.maybe_build(x.shape, traced=is_traced(x))
        return x

    def count_params(self) -> int:
        """Number of scalar weights (Keras' `count_params`); works on abstract
        modules from `nnx.eval_shape` too (it reads only the shapes)."""
        return int(sum(np.prod(w.get_value().shape) for w in self.weights))


def _recording_build(build):
    """Wraps a layer's `build` to keep what it was given in `build_input`."""
    @functools.wraps(build)
    def recording(self, input_shape):
        build(self, input_shape)
        if self.weight_names:
            shape = None if input_shape is None else tuple(input_shape)
            if shape and all(d is None or isinstance(d, (int, np.integer)) for d in shape):
                shape = (None,) * (len(shape) - 1) + (
                    None if shape[-1] is None else int(shape[-1]),)
            self.build_input = shape

    return recording


def is_traced(x) -> bool:
    """True when `x` is an abstract value inside a JAX transformation."""
    return isinstance(x, jax.core.Tracer)


def as_float(x, dtype) -> jax.Array:
    """Casts float inputs to the layer's dtype, as Keras' autocasting does."""
    x = jnp.asarray(x)
    if x.dtype != dtype:
        x = x.astype(dtype)
    return x


def describe(layer) -> str:
    """The layer as error messages name it: its type, and its name if it has one
    (`"LSTM 'encoder'"`, or `"LSTM"`)."""
    name = getattr(layer, "name", None)
    return type(layer).__name__ + (f" {name!r}" if name else "")


# -- checking inputs for NaN / inf -------------------------------------------------


class Switch:
    """A process-wide bool (the state behind a `Setting`) that `jax.jit` includes in its cache key (with
    `jax.make_user_context`; older JAX: a plain flag), so that flipping it
    retraces jitted functions instead of reusing a program traced before."""

    def __init__(self):
        make = getattr(jax, "make_user_context", None)
        self._context = make(default_value=False) if make is not None else None
        self._value = False

    @property
    def value(self) -> bool:
        return bool(self._context.value) if self._context is not None else self._value

    def set(self, value: bool) -> None:
        if self._context is not None:
            self._context.set_global(bool(value))
        self._value = bool(value)


_CHECK_INPUTS = Switch()  # set by check_inputs()


class Setting:
    """A process-wide setting: constructing it sets the class's `_switch` from
    now on, or, as a context manager, for the block only (then back to what it
    was). `check_inputs` and `rnn_jax.scan.jax_lstm_gradients` are two."""

    _switch: Switch

    def __init__(self, enabled: bool = True):
        self._previous = self._switch.value
        self._switch.set(enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self._switch.set(self._previous)


class check_inputs(Setting):
    """Switches the check of every layer's inputs for NaN and inf on (default: off).

        rnn_jax.check_inputs()          # on from now on
        rnn_jax.check_inputs(False)     # off again
        with rnn_jax.check_inputs():    # on inside the block, then as before
            model(x)

    With the check on, a layer called on float inputs holding NaN or inf
    (`Dense`, `Activation`, `Masking`, the recurrent layers and cells):

    - on concrete arrays (an eager call) raises `ValueError` naming the layer
      (type and name), how many values are NaN and how many inf, and the
      first offending index (sample, step) for `(B, T, D)` inputs;
    - under a JAX transformation (`jit`, `vmap`, `scan`, `grad`) adds a
      `jax.experimental.checkify.check` with the same message, reported when
      the function is wrapped in `checkify.checkify`:

          err, y = checkify.checkify(jax.jit(f))(x)
          err.throw()   # checkify.JaxRuntimeError (a ValueError) naming the layer

      A plain `jit` cannot raise from inside the compiled program: without
      `checkify` the check is dropped (it is a debug check) and NaN flows on.
      `Embedding` ids outside `[0, input_dim)` under a transformation are
      reported the same way (eagerly they are refused whether or not the
      check is on).

    The switch is process-wide and read when a layer is called or traced;
    it is part of `jax.jit`'s cache key (`jax.make_user_context`), so a
    jitted function is traced again, with or without the checks, after it
    flips (with a JAX older than `make_user_context`, a function traced
    before keeps its program). Eager checks cost one pass over the inputs
    and a device-to-host transfer of a flag; leave it off for speed.

    Args:
      enabled: True turns the check on, False off (as a context manager: for
        the block only).
    """

    _switch = _CHECK_INPUTS


def checking_inputs() -> bool:
    """Whether `check_inputs()` is on."""
    return _CHECK_INPUTS.value


def _first_index_text(ndim: int) -> str:
    """`'sample {}, step {}, feature {}'` for `(B, T, D)`: a `{}` per axis."""
    names = {2: ("sample", "feature"), 3: ("sample", "step", "feature")}.get(
        ndim, tuple(f"axis {i}" for i in range(ndim)))
    return ", ".join(f"{axis} {{}}" for axis in names) or "the only value"


def refuse_where(bad, message: str, *values) -> None:
    """Refuses an array where the bool array `bad` holds anywhere, with
    `message`: a format string with a `{}` for each of `values` (scalars
    computed from the array, e.g. counts) and then one per axis of `bad`,
    filled with the first offending index.

    Concrete `bad`: raises ValueError at once. Traced: a `checkify.check`
    (with `debug=True`, so plain `jit` drops it) that `checkify.checkify`
    reports. The one mechanism behind `check_finite_inputs` and
    `Embedding`'s id check.
    """
    if is_traced(bad):
        first = jnp.unravel_index(jnp.argmax(bad.reshape(-1)), bad.shape)
        checkify.check(~jnp.any(bad), message, *values, *first, debug=True)
        return
    bad = np.asarray(bad)
    if not bad.any():
        return
    first = np.unravel_index(int(np.argmax(bad.reshape(-1))), bad.shape)
    raise ValueError(message.format(*(np.asarray(v).item() for v in values),
                                    *(int(i) for i in first)))


def check_finite_inputs(layer, x) -> None:
    """Refuses NaN / inf in a layer's float inputs `x` (see `check_inputs`):
    a ValueError at once on concrete `x`, a `checkify` check under a JAX
    transformation (`refuse_where`). Integer inputs pass unchecked."""
    if not jnp.issubdtype(x.dtype, jnp.inexact) or x.size == 0:
        return
    who = describe(layer).replace("{", "{{").replace("}", "}}")
    message = (f"{who}: inputs contain {{}} NaN and {{}} inf values; the first at "
               f"{_first_index_text(x.ndim)} (rnn_jax.check_inputs() is on)")
    refuse_where(~jnp.isfinite(x), message, jnp.sum(jnp.isnan(x)), jnp.sum(jnp.isinf(x)))


def check_finite_data(**arrays) -> None:
    """Refuses data sets holding NaN or inf (the check `rnn_jax.fit` runs first).

    Args:
      **arrays: `name=array` (float arrays are checked, others skipped), or
        `name=(array, ...)`, checked as `name[0]`, `name[1]`, ... (as
        `validation_data`); None values are skipped.

    Raises:
      ValueError naming the first array (in the order given) with a NaN or
      inf, the count of each, and the first offending sample (index on the
      first axis).
    """
    for name, value in arrays.items():
        if value is None:
            continue
        parts = ([(f"{name}[{i}]", v) for i, v in enumerate(value)]
                 if isinstance(value, (tuple, list)) else [(name, value)])
        for label, array in parts:
            a = np.asarray(array)
            if not np.issubdtype(a.dtype, np.inexact) or a.size == 0:
                continue
            bad = ~np.isfinite(a)
            if not bad.any():
                continue
            first = np.unravel_index(int(np.argmax(bad.reshape(-1))), a.shape)
            raise ValueError(
                f"{label} contains {int(np.isnan(a).sum())} NaN and {int(np.isinf(a).sum())} "
                f"inf values; the first in sample {int(first[0]) if a.ndim else 0} (index "
                f"{tuple(int(i) for i in first)}); clean the data, or pass "
                "check_inputs=False to fit")
