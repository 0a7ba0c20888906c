"""Misuse gives a ValueError (or RuntimeError) whose message names the problem."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

import rnn_jax as R

FAST = {"kernel_initializer": "zeros", "recurrent_initializer": "zeros"}


def _x(*shape):
    return np.zeros(shape, np.float32)


RECURRENT = {
    "simple_rnn": lambda **kw: R.SimpleRNN(3, rngs=nnx.Rngs(0), **FAST, **kw),
    "gru": lambda **kw: R.GRU(3, rngs=nnx.Rngs(0), **FAST, **kw),
    "lstm": lambda **kw: R.LSTM(3, rngs=nnx.Rngs(0), **FAST, **kw),
    "bidirectional": lambda **kw: R.Bidirectional(R.GRU(3, rngs=nnx.Rngs(0), **FAST, **kw)),
}


# -- inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RECURRENT))
@pytest.mark.parametrize("shape", [(2, 4), (2, 4, 3, 1), (4,)])
def test_wrong_input_rank(name, shape):
    layer = RECURRENT[name]()
    with pytest.raises(ValueError, match=r"\(batch, time, features\)"):
        layer(_x(*shape))


@pytest.mark.parametrize("cell", [
    lambda: R.SimpleRNNCell(3, rngs=nnx.Rngs(0), **FAST),
    lambda: R.LSTMCell(3, rngs=nnx.Rngs(0), **FAST),
    lambda: R.StackedRNNCells([R.GRUCell(3, rngs=nnx.Rngs(0), **FAST)]),
])
def test_cell_wrong_input_rank(cell):
    c = cell()
    with pytest.raises(ValueError, match=r"\(batch, features\)"):
        c(_x(2, 4, 3), c.get_initial_state(2) if c.built else None)


@pytest.mark.parametrize("name", list(RECURRENT))
def test_wrong_feature_size_after_build(name):
    layer = RECURRENT[name]()
    layer(_x(2, 4, 3))
    with pytest.raises(ValueError, match="features") as info:
        layer(_x(2, 4, 5))
    assert "5" in str(info.value) and "3" in str(info.value)


def test_wrong_feature_size_input_shape_and_cell():
    layer = R.LSTM(2, rngs=nnx.Rngs(0), input_shape=(None, 6), **FAST)
    with pytest.raises(ValueError, match="6"):
        layer(_x(1, 3, 4))
    cell = R.GRUCell(2, rngs=nnx.Rngs(0), input_shape=(4,), **FAST)
    with pytest.raises(ValueError, match="features"):
        cell(_x(1, 3), [_x(1, 2)])
    dense = R.Dense(2, rngs=nnx.Rngs(0), input_shape=(4,))
    with pytest.raises(ValueError, match="features"):
        dense(_x(1, 3))


def test_messages_name_the_layer_and_both_shapes():
    layer = R.LSTM(3, rngs=nnx.Rngs(0), name="enc", **FAST)
    cases = [
        (dict(inputs=_x(2, 4)), "LSTM 'enc' expects inputs of shape (batch, time, features), "
                                "got shape (2, 4)"),
        (dict(inputs=_x(2, 4, 3)), None),  # builds the layer for 3 features
        (dict(inputs=_x(2, 4, 5)), "LSTM 'enc': inputs have 5 features but the layer's kernel "
                                   "expects 3"),
        (dict(inputs=_x(2, 4, 3), mask=np.ones((2, 5), bool)),
         "LSTM 'enc': mask must have shape (batch, time) = (2, 4), got (2, 5)"),
        (dict(inputs=_x(2, 4, 3), initial_state=(_x(2, 3), _x(2, 4))),
         "LSTM 'enc' initial_state: expected a state of shape (2, 3), got (2, 4)"),
    ]
    for kwargs, message in cases:
        if message is None:
            layer(**kwargs)
            continue
        with pytest.raises(ValueError) as info:
            layer(**kwargs)
        assert str(info.value) == message
    dense = R.Dense(2, rngs=nnx.Rngs(0), input_shape=(4,), name="head")
    with pytest.raises(ValueError, match=r"^Dense 'head': inputs have 3 features, the kernel "
                                         r"expects 4$"):
        dense(_x(1, 3))


def test_stacked_cells_name_the_cell_and_both_shapes():
    # Stacked cells take the single cells' checks: the feature count of a
    # cell call, and every cell's state shape in a layer's initial_state.
    cells = R.StackedRNNCells([R.LSTMCell(3, rngs=nnx.Rngs(0), input_shape=(4,), **FAST),
                               R.GRUCell(2, rngs=nnx.Rngs(1), **FAST)], name="stack")
    with pytest.raises(ValueError) as info:
        cells(_x(2, 5), cells.get_initial_state(2))
    assert str(info.value) == ("StackedRNNCells 'stack': inputs have 5 features, the kernel "
                               "expects 4")
    with pytest.raises(ValueError) as info:
        cells(_x(2, 4, 1), cells.get_initial_state(2))
    assert str(info.value) == ("StackedRNNCells 'stack' expects inputs of shape (batch, "
                               "features), got shape (2, 4, 1)")
    layer = R.RNN(cells, name="rnn")
    good = cells.get_initial_state(2)
    bad = (good[0], (_x(2, 3),))  # the GRU's state with the LSTM's width
    with pytest.raises(ValueError) as info:
        layer(_x(2, 6, 4), initial_state=bad)
    assert str(info.value) == "RNN 'rnn' initial_state: expected a state of shape (2, 2), got (2, 3)"


def test_no_time_steps():
    with pytest.raises(ValueError, match="time steps"):
        R.SimpleRNN(2, rngs=nnx.Rngs(0), **FAST)(_x(2, 0, 3))


# -- masks and states ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RECURRENT))
@pytest.mark.parametrize("mask_shape", [(2, 5), (3, 4), (2, 4, 1), (4,)])
def test_mask_of_wrong_shape(name, mask_shape):
    layer = RECURRENT[name]()
    with pytest.raises(ValueError, match="mask") as info:
        layer(_x(2, 4, 3), mask=np.ones(mask_shape, bool))
    assert str(tuple(mask_shape)) in str(info.value)


@pytest.mark.parametrize("name,state", [
    ("simple_rnn", [_x(2, 4)]),     # wrong units
    ("simple_rnn", [_x(3, 3)]),     # wrong batch
    ("gru", _x(2, 3, 1)),           # wrong rank
    ("lstm", (_x(2, 3), _x(2, 2))),  # c of wrong units
    ("lstm", (_x(1, 3), _x(1, 3))),  # wrong batch
])
def test_initial_state_of_wrong_shape(name, state):
    layer = RECURRENT[name]()
    with pytest.raises(ValueError, match="initial_state"):
        layer(_x(2, 4, 3), initial_state=state)


def test_initial_state_wrong_structure():
    lstm = RECURRENT["lstm"]()
    with pytest.raises(ValueError, match=r"\(h, c\)"):
        lstm(_x(2, 4, 3), initial_state=[_x(2, 3)])
    stacked = R.RNN([R.SimpleRNNCell(3, rngs=nnx.Rngs(0), **FAST),
                     R.SimpleRNNCell(3, rngs=nnx.Rngs(1), **FAST)])
    with pytest.raises(ValueError, match="one state per cell"):
        stacked(_x(2, 4, 3), initial_state=[[_x(2, 3)]])
    bidi = RECURRENT["bidirectional"]()
    with pytest.raises(ValueError, match="even number"):
        bidi(_x(2, 4, 3), initial_state=[_x(2, 3)] * 3)
    with pytest.raises(ValueError, match="initial_state"):
        bidi(_x(2, 4, 3), initial_state=[_x(2, 3), _x(2, 5)])


def test_stateful_batch_size_is_fixed():
    layer = R.SimpleRNN(3, stateful=True, rngs=nnx.Rngs(0), **FAST)
    layer(_x(2, 4, 3))
    with pytest.raises(ValueError, match="batch size"):
        layer(_x(5, 4, 3))


# -- Embedding ------------------------------------------------------------------------------


@pytest.mark.parametrize("ids", [[[0, 1, 10]], [[-1, 2, 3]], [[3, 99, 2]]])
def test_embedding_ids_out_of_range(ids):
    emb = R.Embedding(10, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        emb(np.asarray(ids))


def test_embedding_bad_arguments():
    for dims in ((0, 4), (10, -1), (2.5, 4)):
        with pytest.raises(ValueError, match="positive integer"):
            R.Embedding(*dims, rngs=nnx.Rngs(0))
    emb = R.Embedding(10, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="integer ids"):
        emb(np.array([[True, False]]))


# -- constructor arguments ------------------------------------------------------------------


@pytest.mark.parametrize("merge_mode", ["avg", "Concat", "max", "", 3])
def test_bidirectional_invalid_merge_mode(merge_mode):
    with pytest.raises(ValueError, match="merge_mode") as info:
        R.Bidirectional(R.GRU(3, rngs=nnx.Rngs(0)), merge_mode=merge_mode)
    assert "concat" in str(info.value)


def test_bidirectional_bad_layers():
    with pytest.raises(ValueError, match="recurrent layer"):
        R.Bidirectional(R.Dense(3, rngs=nnx.Rngs(0)))
    fwd = R.GRU(3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="go_backwards"):
        R.Bidirectional(fwd, backward_layer=R.GRU(3, rngs=nnx.Rngs(1)))
    with pytest.raises(ValueError, match="return_sequences"):
        R.Bidirectional(fwd, backward_layer=R.GRU(3, go_backwards=True, return_sequences=True,
                                                  rngs=nnx.Rngs(1)))
    # A built layer's key stream is used up: the backward copy draws from the
    # seed stream, as Keras' would (reproducibly after set_random_seed).
    built = R.GRU(3, rngs=nnx.Rngs(0), input_shape=(None, 2), name="g")
    R.utils.set_random_seed(3)
    first = R.Bidirectional(built).backward_layer
    R.utils.set_random_seed(3)
    again = R.Bidirectional(built).backward_layer
    assert first.name == "backward_g" and first.go_backwards
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("units", [0, -2, 2.0, True, "3", None])
@pytest.mark.parametrize("cls", [R.SimpleRNN, R.GRU, R.LSTM, R.SimpleRNNCell, R.GRUCell,
                                 R.LSTMCell, R.Dense])
def test_units_must_be_positive_int(cls, units):
    with pytest.raises(ValueError, match="units") as info:
        cls(units, rngs=nnx.Rngs(0))
    assert repr(units) in str(info.value)


@pytest.mark.parametrize("arg", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
@pytest.mark.parametrize("cls", [R.SimpleRNN, R.GRU, R.LSTM, R.LSTMCell])
def test_dropout_outside_unit_interval(cls, arg, rate):
    with pytest.raises(ValueError, match=arg) as info:
        cls(3, rngs=nnx.Rngs(0), **{arg: rate})
    assert "[0, 1)" in str(info.value)


@pytest.mark.parametrize("make,x", [
    (lambda: R.SimpleRNN(3), _x(2, 4, 3)),
    (lambda: R.LSTM(3, return_sequences=True), _x(2, 4, 3)),
    (lambda: R.GRUCell(3), None),
    (lambda: R.Dense(3), _x(2, 3)),
    (lambda: R.Bidirectional(R.SimpleRNN(3)), _x(2, 4, 3)),
    (lambda: R.Embedding(10, 3), np.array([[1, 2]])),
])
def test_building_without_rngs_draws_from_the_seed_stream(make, x):
    # As Keras: without rngs the weights come from the process-wide seed
    # stream, reproducible after set_random_seed, and each layer gets its own.
    def weights():
        layer = make()
        layer(_x(2, 3), [_x(2, 3)]) if x is None else layer(x)
        return layer.get_weights()

    R.utils.set_random_seed(7)
    first, second = weights(), weights()
    R.utils.set_random_seed(7)
    again = weights()
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("cell", [
    lambda: R.Dense(3, rngs=nnx.Rngs(0)),
    lambda: R.SimpleRNN(3, rngs=nnx.Rngs(0)),
    lambda: "lstm",
    lambda: None,
    lambda: nnx.Linear(2, 3, rngs=nnx.Rngs(0)),
])
def test_rnn_with_unsupported_cell(cell):
    c = cell()
    with pytest.raises(ValueError, match="unsupported cell") as info:
        R.RNN(c)
    assert "LSTMCell" in str(info.value)


def test_stacked_cells_unsupported_or_empty():
    with pytest.raises(ValueError, match="unsupported cell"):
        R.StackedRNNCells([R.SimpleRNNCell(2, rngs=nnx.Rngs(0)), R.Dense(2, rngs=nnx.Rngs(0))])
    with pytest.raises(ValueError, match="unsupported cell"):
        R.RNN([R.GRUCell(2, rngs=nnx.Rngs(0)), "gru"])
    with pytest.raises(ValueError, match="at least one cell"):
        R.StackedRNNCells([])


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="unroll"):
        R.SimpleRNN(2, unroll=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unroll"):
        R.SimpleRNN(2, unroll=1.5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dtype"):
        R.SimpleRNN(2, dtype="int32", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="activation"):
        R.LSTM(2, recurrent_activation="sigmoidd", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="return_state"):
        R.Sequential([R.LSTM(2, return_state=True, rngs=nnx.Rngs(0))])


def test_weights_before_build_and_set_weights_mismatch():
    layer = R.GRU(3, rngs=nnx.Rngs(0), **FAST)
    with pytest.raises(ValueError, match="no weights yet"):
        layer.get_weights()
    layer.build((None, None, 2))
    k, rk, b = layer.get_weights()
    with pytest.raises(ValueError, match="3 weights"):
        layer.set_weights([k, rk])
    with pytest.raises(ValueError, match="bias") as info:
        layer.set_weights([k, rk, b.reshape(-1)])
    assert "(2, 9)" in str(info.value) and "(18,)" in str(info.value)


def test_unbuilt_layer_under_transformation():
    layer = R.LSTM(3, rngs=nnx.Rngs(0), **FAST)
    graphdef, state = nnx.split(layer)
    with pytest.raises(RuntimeError, match="not built"):
        jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, _x(2, 4, 3))


# -- NaN / inf inputs (rnn_jax.check_inputs) -------------------------------------------------


def _with_nan(*shape, at, value=np.nan):
    x = _x(*shape)
    x[at] = value
    return x


CHECKED = {  # a layer (named) and inputs of its rank
    "lstm": (lambda: R.LSTM(3, rngs=nnx.Rngs(0), name="enc", **FAST), (2, 4, 3)),
    "simple_rnn": (lambda: R.SimpleRNN(3, rngs=nnx.Rngs(0), name="enc", **FAST), (2, 4, 3)),
    "gru": (lambda: R.GRU(3, rngs=nnx.Rngs(0), name="enc", **FAST), (2, 4, 3)),
    "stacked": (lambda: R.RNN([R.SimpleRNNCell(2, rngs=nnx.Rngs(0)),
                               R.LSTMCell(3, rngs=nnx.Rngs(1))], name="enc"), (2, 4, 3)),
    "bidirectional": (lambda: R.Bidirectional(R.GRU(3, rngs=nnx.Rngs(0), **FAST), name="enc"),
                      (2, 4, 3)),
    "dense": (lambda: R.Dense(2, rngs=nnx.Rngs(0), name="enc"), (2, 4, 3)),
    "activation": (lambda: R.Activation("tanh", name="enc"), (2, 4, 3)),
    "masking": (lambda: R.Masking(name="enc"), (2, 4, 3)),
}


@pytest.mark.parametrize("name", list(CHECKED))
def test_nan_inputs_refused_when_checking(name):
    make, shape = CHECKED[name]
    layer = make()
    x = _with_nan(*shape, at=(1, 2, 0))
    x[1, 3, 2] = np.inf
    x[0, 3, 1] = np.nan  # the first in row-major order
    layer(_x(*shape))  # clean inputs pass, checked or not
    with R.check_inputs():
        layer(_x(*shape))
        with pytest.raises(ValueError) as info:
            layer(x)
    message = str(info.value)
    assert message.startswith(f"{type(layer).__name__} 'enc': inputs contain 2 NaN and 1 inf")
    assert "sample 0, step 3, feature 1" in message
    assert np.isnan(np.asarray(layer(x))).any()  # off again: NaN passes, as in Keras


@pytest.mark.parametrize("cell", [
    lambda: R.GRUCell(3, rngs=nnx.Rngs(0), input_shape=(2,), **FAST),
    lambda: R.StackedRNNCells([R.LSTMCell(3, rngs=nnx.Rngs(0), input_shape=(2,), **FAST)]),
])
def test_nan_inputs_refused_by_cells(cell):
    c = cell()
    with R.check_inputs(), pytest.raises(ValueError, match=r"1 NaN and 0 inf.*sample 1, feature 0"):
        c(_with_nan(2, 2, at=(1, 0)), c.get_initial_state(2))


def test_nan_in_a_sequential_names_the_layer_that_gets_it():
    model = R.Sequential([R.Dense(3, rngs=nnx.Rngs(0), name="first"),
                          R.SimpleRNN(2, rngs=nnx.Rngs(1), name="rnn")], input_shape=(4, 3))
    with R.check_inputs(), pytest.raises(ValueError, match="Dense 'first': inputs contain"):
        model(_with_nan(2, 4, 3, at=(1, 1, 1), value=-np.inf))
    model.layers[0].kernel.set_value(np.full((3, 3), np.nan, np.float32))  # NaN made inside
    with R.check_inputs(), pytest.raises(ValueError,
                                         match="SimpleRNN 'rnn': inputs contain 24 NaN"):
        model(_x(2, 4, 3))


def test_check_inputs_switch_and_context_manager():
    from rnn_jax.base import checking_inputs

    assert not checking_inputs()  # off by default
    try:
        R.check_inputs()
        assert checking_inputs()
        with R.check_inputs(False):
            assert not checking_inputs()
            R.SimpleRNN(2, rngs=nnx.Rngs(0))(_with_nan(1, 2, 1, at=(0, 0, 0)))
        assert checking_inputs()
    finally:
        R.check_inputs(False)
    assert not checking_inputs()
    with pytest.raises(ZeroDivisionError), R.check_inputs():
        1 / 0
    assert not checking_inputs()  # restored on errors too


def test_nan_check_under_jit_needs_checkify():
    from jax.experimental import checkify

    layer = R.LSTM(3, rngs=nnx.Rngs(0), name="enc", **FAST)
    layer(_x(2, 4, 3))
    graphdef, state = nnx.split(layer)

    def f(s, x):
        return nnx.merge(graphdef, s)(x)

    x = _with_nan(2, 4, 3, at=(1, 2, 0))
    with R.check_inputs():
        # A compiled program cannot raise: plain jit runs and NaN flows on.
        assert np.isnan(np.asarray(jax.jit(f)(state, x))).any()
        err, _ = checkify.checkify(jax.jit(f))(state, x)
        with pytest.raises(checkify.JaxRuntimeError,
                           match=r"LSTM 'enc': inputs contain 1 NaN and 0 inf.*sample 1, step 2"):
            err.throw()
        err, _ = checkify.checkify(jax.jit(f))(state, _x(2, 4, 3))
        err.throw()  # clean inputs: no error
    # The check is opt-in; flipping the switch retraces (it is part of jit's cache key).
    err, _ = checkify.checkify(jax.jit(f))(state, x)
    assert err.get() is None


def test_integer_inputs_are_not_checked_for_nan():
    with R.check_inputs():
        out = R.SimpleRNN(2, rngs=nnx.Rngs(0))(np.ones((2, 3, 1), np.int32))
    assert out.shape == (2, 2)


# -- Embedding ids under jit ----------------------------------------------------------------


def test_embedding_out_of_range_message_names_layer_and_index():
    emb = R.Embedding(10, 4, rngs=nnx.Rngs(0), name="words")
    with pytest.raises(ValueError) as info:
        emb(np.array([[1, 2, 3], [4, 10, -2]]))
    assert str(info.value) == ("Embedding 'words': ids must be in [0, 10), got values in "
                               "[-2, 10]; the first out of range at index (1, 1)")


def test_embedding_out_of_range_under_jit_gives_nan_not_another_row():
    from jax.experimental import checkify

    emb = R.Embedding(10, 4, rngs=nnx.Rngs(0), name="words")
    graphdef, state = nnx.split(emb)

    def f(s, ids):
        return nnx.merge(graphdef, s)(ids)

    ids = np.array([[1, 9, 10], [-1, 0, 99]])
    out = np.asarray(jax.jit(f)(state, ids))
    table = np.asarray(emb.embeddings[...])
    np.testing.assert_array_equal(out[0, :2], table[[1, 9]])
    np.testing.assert_array_equal(out[1, 1], table[0])
    # 10, 99 and -1 (which numpy-style indexing would read as row 9) give NaN vectors
    assert np.isnan(out[0, 2]).all() and np.isnan(out[1, 0]).all() and np.isnan(out[1, 2]).all()
    with R.check_inputs():
        err, _ = checkify.checkify(jax.jit(f))(state, ids)
    with pytest.raises(checkify.JaxRuntimeError,
                       match=r"Embedding 'words': ids must be in \[0, 10\), got values in "
                             r"\[-1, 99\]; the first out of range at index \(0, 2\)"):
        err.throw()


def test_bidirectional_copies_a_stack_of_cells():
    # A stack is a cell like the others: Bidirectional clones it, cell by cell,
    # drawing the backward weights from the first cell's key stream.
    forward = R.RNN([R.LSTMCell(3, rngs=nnx.Rngs(0)),
                     R.GRUCell(2, reset_after=False, rngs=nnx.Rngs(1))], return_sequences=True)
    layer = R.Bidirectional(forward, merge_mode="concat")
    y = layer(_x(2, 5, 4))
    assert y.shape == (2, 5, 4)
    back = layer.backward_layer
    assert back.go_backwards and isinstance(back.cell, R.StackedRNNCells)
    assert [type(c) for c in back.cell.cells] == [R.LSTMCell, R.GRUCell]
    assert ([c.get_config() for c in back.cell.cells]
            == [c.get_config() for c in forward.cell.cells])
    for label, f, b in zip(back.weight_labels(), forward.get_weights(), back.get_weights()):
        assert f.shape == b.shape
        if not label.endswith("bias"):  # fresh draws (the biases start alike)
            assert not np.array_equal(f, b), label
