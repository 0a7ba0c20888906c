"""Constructor signatures agree: each layer and cell takes Keras' arguments
with Keras' defaults, and `SimpleRNN`, `GRU`, `LSTM` take their cell's and
`RNN`'s with the same defaults.

The defaults are written out by hand in several places (each cell, each
layer repeating its cell's and `RNN`'s, and Keras' classes they mirror), so
they can drift apart. The arguments a class accepts are read with
`inspect.signature`, following `**kwargs` to the call it is passed on to
(a layer's cell, a base class's `__init__`, down to Keras' `Layer`). Every
difference from Keras is listed below with its reason, so a new one fails.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest

import rnn_jax

REQUIRED = inspect.Parameter.empty

NAMES = ["SimpleRNN", "GRU", "LSTM", "SimpleRNNCell", "GRUCell", "LSTMCell", "RNN",
         "StackedRNNCells", "Bidirectional", "Embedding", "Dense", "Activation", "Masking",
         "Dropout", "Flatten", "RepeatVector", "TimeDistributed", "Concatenate", "Add",
         "GlobalAveragePooling1D", "GlobalMaxPooling1D"]

REGULARIZERS = {
    "kernel_regularizer": "no weight penalties: add one to the loss function instead",
    "recurrent_regularizer": "no weight penalties: add one to the loss function instead",
    "bias_regularizer": "no weight penalties: add one to the loss function instead",
}
CONSTRAINTS = {
    "kernel_constraint": "no projection of the weights after each update",
    "recurrent_constraint": "no projection of the weights after each update",
    "bias_constraint": "no projection of the weights after each update",
}
# What every Keras layer accepts through `keras.layers.Layer(**kwargs)`.
KERAS_LAYER = {
    "trainable": "no per-layer switch: `fit` trains every parameter",
    "autocast": "no mixed-precision policy: a layer computes in its own `dtype`",
    "activity_regularizer": "no penalties on outputs: add one to the loss function instead",
    "input_dim": "`input_shape=(D,)` says the same",
}
SEED = {"seed": "dropout masks come from the explicit `key` of each call, not a layer seed"}
IMPLEMENTATION = {"implementation": "one formulation, equal to Keras' modes 1 and 2 within "
                                    "float tolerance (test_keras_parity)"}
USE_CUDNN = {"use_cudnn": "always the `lax.scan` of the cell; cuDNN is not an option yet "
                          "(rnn_jax.cudnn)"}
LORA = {"lora_rank": "no LoRA", "lora_alpha": "no LoRA",
        "quantization_config": "no quantization"}
WEIGHTS = {"weights": "set weights after construction with `set_weights`"}
RNGS = {"rngs": "Flax NNX: weights are drawn from an explicit `nnx.Rngs`"}
NO_INPUT_SHAPE = {"input_shape": "has no weights, or weights that do not depend on the input "
                                 "shape, or the layer or cell inside takes it"}

# Keras arguments rnn_jax does not take, per class.
KERAS_ONLY = {
    "SimpleRNN": {**REGULARIZERS, **CONSTRAINTS, **KERAS_LAYER, **SEED},
    "GRU": {**REGULARIZERS, **CONSTRAINTS, **KERAS_LAYER, **SEED, **IMPLEMENTATION, **USE_CUDNN},
    "LSTM": {**REGULARIZERS, **CONSTRAINTS, **KERAS_LAYER, **SEED, **IMPLEMENTATION,
             **USE_CUDNN},
    "SimpleRNNCell": {**REGULARIZERS, **CONSTRAINTS, **KERAS_LAYER, **SEED},
    "GRUCell": {**REGULARIZERS, **CONSTRAINTS, **KERAS_LAYER, **SEED, **IMPLEMENTATION},
    "LSTMCell": {**REGULARIZERS, **CONSTRAINTS, **KERAS_LAYER, **SEED, **IMPLEMENTATION},
    "RNN": {**KERAS_LAYER, **NO_INPUT_SHAPE,
            "dtype": "the cell's dtype is the layer's"},
    "StackedRNNCells": {**KERAS_LAYER, **NO_INPUT_SHAPE,
                        "dtype": "the cells' dtype is the stack's"},
    "Bidirectional": {**KERAS_LAYER, **NO_INPUT_SHAPE, **WEIGHTS,
                      "dtype": "the wrapped layer's dtype is the wrapper's"},
    "Embedding": {**KERAS_LAYER, **LORA, **WEIGHTS, **NO_INPUT_SHAPE,
                  "embeddings_regularizer": REGULARIZERS["kernel_regularizer"],
                  "embeddings_constraint": CONSTRAINTS["kernel_constraint"],
                  "input_length": "ignored by Keras 3 (a warning); the input sets the length"},
    "Dense": {**REGULARIZERS, **CONSTRAINTS, **KERAS_LAYER, **LORA},
    "Activation": {**KERAS_LAYER, **NO_INPUT_SHAPE},
    "Masking": {**KERAS_LAYER, **NO_INPUT_SHAPE},
    "Dropout": {**KERAS_LAYER, **NO_INPUT_SHAPE},
    "Flatten": {**KERAS_LAYER, **NO_INPUT_SHAPE},
    "RepeatVector": {**KERAS_LAYER, **NO_INPUT_SHAPE},
    "TimeDistributed": {**KERAS_LAYER, **NO_INPUT_SHAPE,
                        "dtype": "the wrapped layer's dtype is the wrapper's"},
    "Concatenate": {**KERAS_LAYER, **NO_INPUT_SHAPE},
    "Add": {**KERAS_LAYER, **NO_INPUT_SHAPE},
    "GlobalAveragePooling1D": {**KERAS_LAYER, **NO_INPUT_SHAPE},
    "GlobalMaxPooling1D": {**KERAS_LAYER, **NO_INPUT_SHAPE},
}
del KERAS_ONLY["Dense"]["recurrent_regularizer"], KERAS_ONLY["Dense"]["recurrent_constraint"]
del KERAS_ONLY["Embedding"]["input_dim"]  # the vocabulary size there, taken by both

# rnn_jax arguments Keras does not take, per class.
RNN_JAX_ONLY = {name: {} for name in NAMES}
for name in ("SimpleRNN", "GRU", "LSTM", "SimpleRNNCell", "GRUCell", "LSTMCell",
             "Bidirectional", "Embedding", "Dense"):
    RNN_JAX_ONLY[name] = dict(RNGS)

# Arguments both take, with defaults that differ on purpose.
DEFAULTS_DIFFER = {
    "dtype": "Keras' None means `keras.config.floatx()`, 'float32' unless changed; rnn_jax "
             "has no global setting and writes 'float32'",
    "data_format": "Keras' None means `keras.config.image_data_format()`, 'channels_last' "
                   "unless changed; rnn_jax has no global setting and writes 'channels_last'",
}


def _init(fn):
    """The function that runs for `fn(...)`: a class's `__init__`, or `fn` itself."""
    if inspect.isclass(fn):
        owner = next(c for c in fn.__mro__ if "__init__" in vars(c))
        return owner, inspect.unwrap(vars(owner)["__init__"])
    return None, inspect.unwrap(fn)


def _resolve(node, fn, owner, cls):
    """The callable a call's `func` expression names, in `fn`'s module."""
    if (isinstance(node, ast.Attribute) and node.attr == "__init__"
            and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "super"):
        mro = cls.__mro__
        return next(c for c in mro[mro.index(owner) + 1:] if "__init__" in vars(c))
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise AssertionError(f"cannot follow **kwargs of {fn.__qualname__} into {ast.dump(node)}")
    scope = {**fn.__globals__, **inspect.getclosurevars(fn).nonlocals}
    obj = scope[node.id]
    for part in reversed(parts):
        obj = getattr(obj, part)
    return obj


def accepted(cls, _from=None) -> dict:
    """`{argument: default}` of every keyword argument `cls(...)` takes (`REQUIRED`
    for none), following `**kwargs` to the call that receives it and taking the
    names read out of it (`kwargs.pop("implementation", 2)`)."""
    owner, fn = _init(cls)
    cls = cls if inspect.isclass(cls) else None
    params = list(inspect.signature(fn).parameters.values())
    if owner is not None:
        params = params[1:]  # self
    args = {p.name: p.default for p in params
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    var_kw = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)
    if var_kw is None:
        return args
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if (isinstance(node.func, ast.Attribute) and node.func.attr in ("pop", "get")
                and getattr(node.func.value, "id", None) == var_kw
                and node.args and isinstance(node.args[0], ast.Constant)):
            default = ast.literal_eval(node.args[1]) if len(node.args) > 1 else None
            args.setdefault(node.args[0].value, default)
        forwards = any(k.arg is None and getattr(k.value, "id", None) == var_kw
                       for k in node.keywords)
        if forwards:
            target = _resolve(node.func, fn, owner, cls)
            inner = accepted(target)
            given = {k.arg for k in node.keywords if k.arg is not None}
            given |= set(list(inner)[:len(node.args)])
            for name, default in inner.items():
                if name not in given:
                    args.setdefault(name, default)
    return args


def differences(ours: dict, theirs: dict, ours_only: dict, theirs_only: dict,
                defaults_differ: dict) -> list[str]:
    """What is wrong, in words: arguments one side lacks that are not listed as
    known, listed ones that now agree, and defaults that differ."""
    problems = []
    for name in sorted(set(theirs) - set(ours) - set(theirs_only)):
        problems.append(f"missing {name}={theirs[name]!r}")
    for name in sorted(set(ours) - set(theirs) - set(ours_only)):
        problems.append(f"extra {name}={ours[name]!r}")
    for name in sorted((set(theirs_only) & set(ours)) | (set(ours_only) & set(theirs))):
        problems.append(f"{name} is listed as a known difference but both take it")
    for name in sorted(set(theirs_only) - set(theirs)):
        problems.append(f"{name} is listed as only the reference's but it does not take it")
    for name in sorted(set(ours_only) - set(ours)):
        problems.append(f"{name} is listed as only ours but it is not taken")
    for name in sorted(set(ours) & set(theirs)):
        if name not in defaults_differ and not _same(ours[name], theirs[name]):
            problems.append(f"default {name}={ours[name]!r}, the reference has "
                            f"{theirs[name]!r}")
    return problems


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b or (a is REQUIRED and b is REQUIRED)


# A default that disagrees with Keras' is a bug to fix in the layer, not here:
# xfail(strict=True) names it, and the test fails again once it is fixed.
KNOWN_DEFAULT_BUGS: dict[str, str] = {}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_DEFAULT_BUGS[n]))
    if n in KNOWN_DEFAULT_BUGS else n for n in NAMES])
def test_arguments_and_defaults_are_keras(keras, name):
    ours = accepted(getattr(rnn_jax, name))
    theirs = accepted(getattr(keras.layers, name))
    problems = differences(ours, theirs, RNN_JAX_ONLY[name], KERAS_ONLY[name], DEFAULTS_DIFFER)
    assert not problems, f"rnn_jax.{name} against keras.layers.{name}: " + "; ".join(problems)


# Classes rnn_jax exports under a name `keras.layers` also has, not compared above.
NOT_COMPARED = {"Layer": "the base class; its arguments are compared through each layer's"}


def test_every_class_named_as_in_keras_is_compared(keras):
    named = {n for n in rnn_jax.__all__
             if inspect.isclass(getattr(rnn_jax, n)) and hasattr(keras.layers, n)}
    assert named - set(NOT_COMPARED) == set(NAMES)


@pytest.mark.parametrize("layer, cell", [("SimpleRNN", "SimpleRNNCell"), ("GRU", "GRUCell"),
                                         ("LSTM", "LSTMCell")])
def test_layer_takes_its_cells_and_rnns_arguments_with_their_defaults(layer, cell):
    ours = accepted(getattr(rnn_jax, layer))
    theirs = {**{k: v for k, v in accepted(rnn_jax.RNN).items() if k != "cell"},
              **accepted(getattr(rnn_jax, cell))}
    problems = differences(ours, theirs, {}, {}, {})
    assert not problems, f"rnn_jax.{layer} against {cell} and RNN: " + "; ".join(problems)


def test_accepted_follows_kwargs_and_sees_a_changed_default():
    """The reading of signatures itself: `**kwargs` followed through a
    subclass, a forwarding call and a `kwargs.pop`; a changed default, a
    missing and an extra argument are all reported."""

    class Base:
        def __init__(self, units, activation="tanh", *, name=None, **kwargs):
            self.shape = kwargs.pop("input_shape", None)

    class Cell(Base):
        def __init__(self, units, use_bias=True, **kwargs):
            super().__init__(units, activation="linear", **kwargs)

    def layer(units, use_bias=False, go_backwards=False, **kwargs):
        return Cell(units, use_bias=use_bias, **kwargs)

    assert accepted(Cell) == {"units": REQUIRED, "use_bias": True, "name": None,
                              "input_shape": None}
    assert accepted(layer) == {"units": REQUIRED, "use_bias": False, "go_backwards": False,
                               "name": None, "input_shape": None}
    problems = differences(accepted(layer), accepted(Cell), {}, {}, {})
    assert problems == ["extra go_backwards=False", "default use_bias=False, the reference "
                        "has True"]
    assert differences({"a": 1}, {"a": 1, "b": 2}, {}, {"b": "why"}, {}) == []
    assert differences({"a": 1}, {"a": 1.0}, {}, {}, {}) == [
        "default a=1, the reference has 1.0"]
    assert differences({"a": 1}, {"a": 1}, {}, {"a": "stale"}, {}) == [
        "a is listed as a known difference but both take it"]


def _positional(cls) -> list[str]:
    """The names `cls(...)` binds by position, in order (`self` left out)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.kind in kinds][1:]


@pytest.mark.parametrize("name", NAMES)
def test_positional_arguments_mean_what_they_mean_in_keras(keras, name):
    # An argument given by position must land where Keras puts it: rnn_jax's
    # positional arguments are the first ones of Keras' own list, in order;
    # the rest (e.g. `dropout`, which Keras puts after the regularizers) are
    # keyword-only, so a positional call meant for Keras fails loudly instead
    # of setting another argument.
    ours = _positional(getattr(rnn_jax, name))
    theirs = _positional(getattr(keras.layers, name))
    assert ours == theirs[:len(ours)], (name, ours, theirs)
