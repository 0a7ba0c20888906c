"""Keras' functional API in rnn_jax (`Input`, `rnn_jax.models.Model`, the model
methods of `rnn_jax.trainer`) against Keras 3 (TensorFlow backend).

Every model here is written once, as a function of a layers module, an
`Input` and a `Model` class (`build(L, Input, Model)`), and built twice: with
`rnn_jax.layers` and with `keras.layers`. The Keras model is given the
rnn_jax model's weights (`keras_model.set_weights(model.get_weights())`, which
also checks that both list them in the same order), and then both are run on
the same data. Nothing is compared with stored numbers or with an earlier
rnn_jax output, except the `save_weights` round trip (whose loaded model is
compared with Keras) and the seeds of `fit(num_seeds=N)` (compared with
separate runs, a fact checked from outside the vmapped program).

1. Keras' RNN tutorial patterns: an encoder-decoder LSTM (the encoder's states
   as the decoder's `initial_state`), `Bidirectional(LSTM)` over a masking
   `Embedding` then a pooling or an LSTM, `TimeDistributed(Dense)` after a
   sequence, `RepeatVector` between an encoder and a decoder. Predictions
   equal Keras' (float32, 1e-5 absolute, masks included). The
   encoder-decoder's `fit` history (loss, accuracy, validation) equals Keras'
   `fit` from the same weights with `shuffle=False`, and so do the trained
   weights (history rtol 1e-4 and weights atol 1e-4, as in
   tests/test_training.py; measured on CPU after 3 epochs: history 1.2e-7
   relative, weights 2e-6 absolute, for every pattern), its loss going
   down; the masked Bidirectional model trains (loss goes down). Every other
   pattern's `fit` against Keras' (and its loss going down) is
   `@pytest.mark.slow`: each `fit` compiles its programs, seconds apiece.
   With an `Embedding`, Keras is given dense gradients: its TF-backend Adam
   treats an Embedding's sparse gradient differently (the known divergence
   of tests/test_training.py).
2. Model behaviour: Keras' automatic names, `layers` (with the InputLayers,
   in Keras' order), `get_layer`, `summary`, `count_params`, weights in
   Keras' order, `predict` / `predict_on_batch` / `evaluate`,
   `save_weights` / `load_weights`, several inputs (list or dict) and
   outputs, shared layers, NNX transformations, `fit(num_seeds=N)`.
3. Bad input: refused with a message that says what is wrong.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnn_jax
from rnn_jax import layers as R
from rnn_jax.models import Model

D, U, K, V, T = 3, 4, 3, 12, 5  # features, units, classes, vocabulary, time steps
# (one size of each kind throughout: a layer's weight initializers compile once per shape)
ATOL = 1e-5  # float32 predictions
HIST_RTOL = 1e-4  # fit histories (as tests/test_training.py)
WEIGHT_ATOL = 1e-4


# -- helpers ----------------------------------------------------------------------------


def build_both(keras, build):
    """`(rnn_jax model, Keras model)` from one `build(L, Input, Model)`, each side's
    layer names counted from a cleared session; Keras is given rnn_jax's weights."""
    rnn_jax.utils.clear_session()
    keras.backend.clear_session()
    model = build(R, rnn_jax.Input, Model)
    keras_model = build(keras.layers, keras.Input, keras.Model)
    keras_model.set_weights(model.get_weights())
    return model, keras_model


_BUILT = {}


def pair(keras, build):
    """`build_both(keras, build)`, built once per module (building costs seconds):
    a clone of the rnn_jax model with its initial weights, and the Keras model
    with those weights set again."""
    if build not in _BUILT:
        model, keras_model = build_both(keras, build)
        _BUILT[build] = (model, keras_model, model.get_weights())
    model, keras_model, weights = _BUILT[build]
    keras_model.set_weights(weights)
    return nnx.clone(model), keras_model


def keras_outputs(keras_model, x):
    """The Keras model called eagerly on `x`: an array, or a list of them."""
    out = keras_model(x, training=False)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else np.asarray(out)


def assert_same(want, got, atol=ATOL):
    """Same structure (an array or a list of arrays), shapes and values within `atol`."""
    want = want if isinstance(want, list) else [want]
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(want), (len(got), len(want))
    for i, (w, g) in enumerate(zip(want, got)):
        assert np.shape(g) == np.shape(w), f"output {i}: {np.shape(g)} vs Keras {np.shape(w)}"
        np.testing.assert_allclose(g, w, atol=atol, rtol=0, err_msg=f"output {i}")


def assert_history_close(keras_history, history, rtol=HIST_RTOL):
    assert set(history) == set(keras_history), (set(history), set(keras_history))
    for name, values in keras_history.items():
        np.testing.assert_allclose(history[name], values, rtol=rtol, err_msg=name)


def dense_gradient_adam(keras, learning_rate):
    """Keras' Adam, given dense gradients. Keras' TF-backend Adam squares an
    `Embedding`'s gradient slices before the duplicate ids are summed (see
    tests/test_training.py, `test_keras_tf_adam_squares_sparse_gradient_slices`);
    rnn_jax, like Keras' JAX backend, uses the dense gradient."""
    import tensorflow as tf

    class DenseGradientAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            return super().update_step(tf.convert_to_tensor(gradient), variable, learning_rate)

    return DenseGradientAdam(learning_rate)


def random_weights(rng, model, scale=0.5):
    return [rng.normal(0.0, scale, w.shape).astype(w.dtype) for w in model.get_weights()]


# -- the tutorial patterns ----------------------------------------------------------------


def encoder_decoder(L, Input, Model):
    """Keras' character-level seq2seq: the encoder LSTM's states start the decoder,
    which reads the target tokens shifted by one (teacher forcing)."""
    encoder_inputs = Input(shape=(None, D), name="encoder_inputs")
    _, h, c = L.LSTM(U, return_state=True)(encoder_inputs)
    decoder_inputs = Input(shape=(None, K), name="decoder_inputs")
    sequence, _, _ = L.LSTM(U, return_sequences=True, return_state=True)(
        decoder_inputs, initial_state=[h, c])
    return Model([encoder_inputs, decoder_inputs],
                 L.Dense(K, activation="softmax")(sequence))


def bidirectional_pooled(L, Input, Model):
    """Keras' IMDB Bidirectional LSTM, pooled: masked ids -> BiLSTM sequence -> mean."""
    ids = Input(shape=(None,), dtype="int32")
    x = L.Embedding(V, D, mask_zero=True)(ids)
    x = L.Bidirectional(L.LSTM(U, return_sequences=True))(x)
    x = L.GlobalAveragePooling1D()(x)
    return Model(ids, L.Dense(1, activation="sigmoid")(x))


def bidirectional_stacked(L, Input, Model):
    """Keras' IMDB Bidirectional LSTM: masked ids -> BiLSTM sequence -> LSTM."""
    ids = Input(shape=(None,), dtype="int32")
    x = L.Embedding(V, D, mask_zero=True)(ids)
    x = L.Bidirectional(L.LSTM(U, return_sequences=True))(x)
    x = L.LSTM(U)(x)
    return Model(ids, L.Dense(1, activation="sigmoid")(x))


def time_distributed(L, Input, Model):
    """A per-step readout: `TimeDistributed(Dense)` over a returned sequence."""
    x = Input(shape=(T, D))
    h = L.LSTM(U, return_sequences=True)(x)
    return Model(x, L.TimeDistributed(L.Dense(K))(h))


def repeat_vector(L, Input, Model):
    """Keras' addition seq2seq: encoder LSTM -> RepeatVector -> decoder LSTM -> per step."""
    x = Input(shape=(T, D))
    h = L.LSTM(U)(x)
    h = L.RepeatVector(T + 1)(h)
    h = L.LSTM(U, return_sequences=True)(h)
    return Model(x, L.TimeDistributed(L.Dense(D))(h))


def padded_ids(rng, n, steps=T):
    """Ids with zero padding (Keras' mask_zero): trailing in most rows, leading in
    some; every row keeps at least one real id (a fully masked row has no
    average: NaN in Keras and here)."""
    ids = rng.integers(1, V, (n, steps))
    lengths = rng.integers(1, steps + 1, n)
    ids[np.arange(steps) >= lengths[:, None]] = 0
    ids[::4, 0] = 0
    ids[::4, 1] = rng.integers(1, V, len(ids[::4]))
    return ids.astype("int32")


def pattern_data(rng, name, n):
    """`(x, y, loss)` for a pattern: small learnable tasks."""
    if name == "encoder_decoder":  # the tokens reversed
        tokens = rng.integers(0, K, (n, 4))
        x_enc = np.eye(K, dtype="float32")[tokens[:, ::-1]]
        x_enc += 0.1 * rng.normal(size=x_enc.shape).astype("float32")
        shifted = np.concatenate([np.zeros((n, 1), int), tokens[:, :-1]], axis=1)
        return ([x_enc, np.eye(K, dtype="float32")[shifted]], np.eye(K, dtype="float32")[tokens],
                "categorical_crossentropy")
    if name.startswith("bidirectional"):  # does id 3 occur?
        ids = padded_ids(rng, n)
        return ids, np.any(ids == 3, axis=1, keepdims=True).astype("float32"), \
            "binary_crossentropy"
    x = rng.normal(size=(n, T, D)).astype("float32")
    if name == "time_distributed":  # running sums
        return x, np.cumsum(x, axis=1).astype("float32"), "mean_squared_error"
    return x, np.repeat(x.mean(axis=1, keepdims=True), T + 1, axis=1), "mean_squared_error"


PATTERNS = {"encoder_decoder": encoder_decoder, "bidirectional_pooled": bidirectional_pooled,
            "bidirectional_stacked": bidirectional_stacked,
            "time_distributed": time_distributed, "repeat_vector": repeat_vector}


@pytest.mark.parametrize("name", [p for p in PATTERNS if p != "encoder_decoder"])
def test_tutorial_pattern_predicts_as_keras(keras, rng, name):
    """(The encoder-decoder's predictions are checked by its `fit` test.)"""
    model, keras_model = pair(keras, PATTERNS[name])
    x, _, _ = pattern_data(rng, name, 21)
    assert_same(keras_outputs(keras_model, x), model.predict(x, batch_size=8))  # 8 + 8 + 5


def test_masked_bidirectional_pattern_trains(keras, rng):
    """`fit` on masked ids through the Bidirectional LSTM and the masked mean: the
    loss goes down. (Every pattern's `fit` against Keras' is a slow test below.)"""
    model, _ = pair(keras, bidirectional_pooled)
    x, y, loss = pattern_data(rng, "bidirectional_pooled", 21)
    model.compile(optimizer=rnn_jax.optimizers.Adam(0.02), loss=loss)
    history = model.fit(x, y, batch_size=8, epochs=4, verbose=0, seed=0).history
    assert len(history["loss"]) == 4
    assert history["loss"][-1] < history["loss"][0], history["loss"]


def _fit_parity(keras, name, rng, n=29):
    """The same predictions; then both models fitted 3 epochs from the same
    weights, `shuffle=False`: the same history (with validation and a metric;
    the loss goes down) and the same trained weights."""
    model, keras_model = pair(keras, PATTERNS[name])
    x, y, loss = pattern_data(rng, name, n)
    assert_same(keras_outputs(keras_model, x), model.predict(x, batch_size=12))  # 12 + 12 + 5
    metrics = ["accuracy"] if loss != "mean_squared_error" else []
    keras_model.compile(optimizer=dense_gradient_adam(keras, 0.02), loss=loss, metrics=metrics,
                        run_eagerly=True)  # no tracing: faster for these tiny models
    want = keras_model.fit(x, y, batch_size=8, epochs=3, validation_split=0.2, shuffle=False,
                           verbose=0).history
    model.compile(optimizer=rnn_jax.optimizers.Adam(0.02), loss=loss, metrics=metrics)
    got = model.fit(x, y, batch_size=8, epochs=3, validation_split=0.2, shuffle=False,
                    verbose=0).history
    assert_history_close(want, got)
    assert got["loss"][-1] < got["loss"][0]
    for i, (k, j) in enumerate(zip(keras_model.get_weights(), model.get_weights(), strict=True)):
        np.testing.assert_allclose(j, k, atol=WEIGHT_ATOL, rtol=0, err_msg=f"weight {i}")


def test_encoder_decoder_fit_matches_keras(keras, rng):
    _fit_parity(keras, "encoder_decoder", rng)


@pytest.mark.slow
@pytest.mark.parametrize("name", [p for p in PATTERNS if p != "encoder_decoder"])
def test_tutorial_pattern_fit_matches_keras(keras, rng, name):
    _fit_parity(keras, name, rng)


# -- model behaviour -----------------------------------------------------------------------


def two_branches(L, Input, Model, inputs_as_dict=False):
    """Two inputs, a layer shared by two calls, a merge and two outputs."""
    series = Input(shape=(4, D), name="series")
    extra = Input(shape=(D,), name="extra")
    shared = L.Dense(D, activation="tanh")
    h = L.SimpleRNN(U, return_sequences=True)(series)
    h = L.GRU(U)(h)
    s = shared(extra)
    s2 = shared(L.Dense(D)(s))
    z = L.Concatenate()([h, s, s2])
    inputs = {"series": series, "extra": extra} if inputs_as_dict else [series, extra]
    return Model(inputs, [L.Dense(1, name="value")(z),
                          L.Dense(K, activation="softmax", name="probs")(z)])


def two_branch_data(rng, n=10):
    return [rng.normal(size=(n, 4, D)).astype("float32"),
            rng.normal(size=(n, D)).astype("float32")]


def test_automatic_names_follow_keras(keras):
    def make(L, Input, Model):
        x = Input(shape=(T, D))
        ids = Input(shape=(T,), dtype="int32")
        made = [L.SimpleRNN(U), L.SimpleRNN(U), L.GRU(U), L.LSTM(U), L.Dense(1), L.Dense(1),
                L.Embedding(V, D), L.TimeDistributed(L.Dense(1)), L.RepeatVector(2),
                L.Concatenate(), L.Add(), L.GlobalAveragePooling1D(), L.GlobalMaxPooling1D(),
                L.Masking(), L.Dropout(0.1), L.Flatten(), L.Activation("tanh"),
                L.RNN(L.SimpleRNNCell(U)), L.SimpleRNN(U, name="mine"), L.SimpleRNN(U)]
        first = Model(x, made[0](x))
        second = Model(ids, made[6](ids))
        names = [first.layers[0].name, second.layers[0].name] + [layer.name for layer in made]
        return names + [made[7].layer.name, first.name, second.name]

    rnn_jax.utils.clear_session()
    keras.backend.clear_session()
    ours = make(R, rnn_jax.Input, Model)
    want = make(keras.layers, keras.Input, keras.Model)
    assert ours == want
    assert ours[:4] == ["input_layer", "input_layer_1", "simple_rnn", "simple_rnn_1"]
    rnn_jax.utils.clear_session()  # counts start again, as after Keras' clear_session
    assert R.SimpleRNN(U).name == "simple_rnn"


def test_automatic_names_after_bidirectional_follow_keras(keras):
    def make(L):
        wrapper = L.Bidirectional(L.LSTM(U))
        after = L.LSTM(U)
        return [wrapper.name, wrapper.backward_layer.name, after.name]

    rnn_jax.utils.clear_session()
    keras.backend.clear_session()
    want = make(keras.layers)
    assert want == ["bidirectional", "backward_lstm", "lstm_1"]
    assert make(R) == want


def test_layers_and_weights_in_keras_order(keras, rng):
    model, keras_model = pair(keras, two_branches)
    assert [type(layer).__name__ for layer in model.layers] == [
        type(layer).__name__ for layer in keras_model.layers]
    assert [layer.name for layer in model.layers] == [layer.name for layer in keras_model.layers]
    assert [w.shape for w in model.get_weights()] == [w.shape for w in keras_model.get_weights()]
    # the shared Dense is one layer with one kernel and one bias
    assert len(model.layers) == 9
    assert len(jax.tree.leaves(nnx.state(model, nnx.Param))) == len(keras_model.weights) == 14
    # set_weights in Keras' order: Keras' weights set into rnn_jax give Keras' outputs
    keras_model.set_weights(random_weights(rng, model))
    model.set_weights(keras_model.get_weights())
    x = two_branch_data(rng)
    assert_same(keras_outputs(keras_model, x), model(x))
    # SimpleRNN, GRU (reset_after: two biases), the shared Dense, Dense, and the two heads
    # on the concatenation of U + D + D features
    assert model.count_params() == keras_model.count_params() == (
        U * (D + U + 1) + 3 * U * (U + U + 2) + 2 * D * (D + 1) + (U + 2 * D + 1) * (1 + K))


def test_from_keras_and_to_keras_keep_keras_order(keras, rng):
    model, keras_model = pair(keras, two_branches)
    x = two_branch_data(rng)
    want = keras_outputs(keras_model, x)
    converted = rnn_jax.from_keras(keras_model)
    assert [layer.name for layer in converted.layers] == [
        layer.name for layer in keras_model.layers]
    for ours, theirs in zip(converted.get_weights(), keras_model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert_same(want, converted(x))
    back = rnn_jax.to_keras(model)
    assert [layer.name for layer in back.layers] == [layer.name for layer in keras_model.layers]
    assert_same(want, keras_outputs(back, x))


def test_get_layer(keras):
    model, keras_model = pair(keras, encoder_decoder)
    assert model.get_layer("lstm_1") is model.layers[3]
    assert model.get_layer(index=0).name == keras_model.get_layer(index=0).name == "encoder_inputs"
    assert type(model.get_layer(index=0)).__name__ == "InputLayer"
    assert model.get_layer(index=-1).name == keras_model.get_layer(index=-1).name == "dense"
    with pytest.raises(ValueError) as keras_error:
        keras_model.get_layer("decoder")
    with pytest.raises(ValueError) as error:
        model.get_layer("decoder")
    assert str(error.value) == str(keras_error.value)
    assert "No such layer: decoder. Existing layers are: ['encoder_inputs'," in str(error.value)
    with pytest.raises(ValueError, match="index 5"):
        model.get_layer(index=5)


def keras_summary_rows(keras_model, monkeypatch):
    """`(name (type), output shape, params)` per row of Keras' summary for its
    layers (Keras 3 also lists operations that are not layers, such as the
    `NotEqual` behind `Embedding(mask_zero=True)`'s mask), and the number of
    trainable parameters."""
    monkeypatch.setenv("COLUMNS", "250")  # no wrapped cells
    lines = []
    keras_model.summary(line_length=250, print_fn=lambda s, line_break=False: lines.append(s))
    text = "\n".join(lines)
    rows = [[c.strip() for c in line.split("│")[1:4]] for line in text.splitlines()
            if line.startswith("│ ")]
    # (Keras' total counts a compiled model's optimizer variables too)
    total = int(re.search(r"Trainable params: ([\d,]+)", text).group(1).replace(",", ""))
    names = {f"{layer.name} ({type(layer).__name__})" for layer in keras_model.layers}
    return [(a, b, int(c.replace(",", ""))) for a, b, c in rows if a in names], total


@pytest.mark.parametrize("build", [encoder_decoder, two_branches, bidirectional_pooled],
                         ids=["encoder_decoder", "two_branches", "bidirectional_pooled"])
def test_summary_matches_keras(keras, monkeypatch, build):
    model, keras_model = pair(keras, build)
    want, total = keras_summary_rows(keras_model, monkeypatch)
    lines = []
    model.summary(print_fn=lines.append)
    rows = [re.match(r"^(\S+ \(\w+\))\s{2,}(.+?)\s{2,}(\d+)$", line) for line in lines]
    got = [(r.group(1), r.group(2), int(r.group(3))) for r in rows if r]
    assert got == want
    assert f"Trainable params: {total}" in lines
    assert model.count_params() == keras_model.count_params() == total


def test_predict_in_batches_and_on_batch(keras, rng):
    model, keras_model = pair(keras, two_branches)
    x = two_branch_data(rng, n=10)
    want = keras_outputs(keras_model, x)
    whole = model(x)
    assert isinstance(whole, list) and len(whole) == 2
    assert_same(want, whole)
    assert_same(whole, model.predict(x, batch_size=4), atol=1e-6)  # 4 + 4 + 2
    assert_same(want, model.predict(x, batch_size=3))
    on_batch = model.predict_on_batch(x)
    assert all(isinstance(a, np.ndarray) for a in on_batch)
    assert_same(keras_model.predict_on_batch(x), on_batch)


def test_predict_compiles_once_per_model_and_batch_shape(keras, rng, monkeypatch):
    """A loop of `predict` calls (Keras' seq2seq tutorial decodes with one call per
    step) traces the model once; new weights are used without tracing again."""
    model, keras_model = pair(keras, encoder_decoder)
    (x_enc, x_dec), _, _ = pattern_data(rng, "encoder_decoder", 5)
    traces = []
    call = Model.__call__
    monkeypatch.setattr(Model, "__call__",
                        lambda self, *a, **kw: traces.append(1) or call(self, *a, **kw))
    for _ in range(3):
        weights = random_weights(rng, model)
        model.set_weights(weights)
        keras_model.set_weights(weights)
        assert_same(keras_outputs(keras_model, [x_enc, x_dec]), model.predict([x_enc, x_dec]))
    assert len(traces) == 1


def test_inputs_as_list_or_dict(keras, rng):
    model, keras_model = pair(keras, two_branches)
    series, extra = two_branch_data(rng)
    want = keras_outputs(keras_model, [series, extra])
    assert_same(want, model.predict({"extra": extra, "series": series}))
    assert_same(want, model([series, extra]))

    by_name, keras_by_name = build_both(
        keras, lambda L, I, M: two_branches(L, I, M, inputs_as_dict=True))
    keras_by_name.set_weights(model.get_weights())
    by_name.set_weights(model.get_weights())
    assert_same(want, keras_outputs(keras_by_name, {"series": series, "extra": extra}))
    assert_same(want, by_name.predict({"series": series, "extra": extra}, batch_size=4))
    with pytest.raises(ValueError, match="dict with keys"):
        by_name([series, extra])


def test_shared_layer_keeps_one_set_of_weights(keras, rng):
    def siamese(L, Input, Model):
        a, b = Input(shape=(T, D)), Input(shape=(T, D))
        encode = L.GRU(U)
        return Model([a, b], L.Dense(1)(L.Concatenate()([encode(a), encode(b)])))

    model, keras_model = pair(keras, siamese)
    assert model.count_params() == keras_model.count_params() == (
        3 * U * (D + U + 2) + 2 * U + 1)  # one GRU (reset_after: two biases) and the Dense
    a = rng.normal(size=(6, T, D)).astype("float32")
    b = rng.normal(size=(6, T, D)).astype("float32")
    assert_same(keras_outputs(keras_model, [a, b]), model.predict([a, b]))
    # one set of weights: changing the GRU's kernel changes both calls
    gru = model.get_layer("gru")
    gru.set_weights([w * 0.5 for w in gru.get_weights()])
    keras_model.get_layer("gru").set_weights(gru.get_weights())
    assert_same(keras_outputs(keras_model, [a, b]), model.predict([a, b]))


def test_evaluate_matches_keras(keras, rng):
    model, keras_model = pair(keras, bidirectional_pooled)
    ids, y, loss = pattern_data(rng, "bidirectional_pooled", 21)
    keras_model.compile(optimizer="adam", loss=loss, metrics=["accuracy"], run_eagerly=True)
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    want = keras_model.evaluate(ids, y, batch_size=8, verbose=0, return_dict=True)
    got = model.evaluate(ids, y, batch_size=8, verbose=0, return_dict=True)
    assert set(got) == set(want) == {"loss", "accuracy"}
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)
    assert model.evaluate(ids, y, batch_size=8, verbose=0) == pytest.approx(
        [got["loss"], got["accuracy"]])


def test_save_and_load_weights(keras, rng, tmp_path):
    model, keras_model = pair(keras, encoder_decoder)
    (x_enc, x_dec), _, _ = pattern_data(rng, "encoder_decoder", 5)
    want = keras_outputs(keras_model, [x_enc, x_dec])
    model.save_weights(tmp_path / "weights")
    other = nnx.clone(model)
    other.set_weights(random_weights(rng, other))
    assert np.max(np.abs(other.predict([x_enc, x_dec]) - want)) > 1e-3
    assert other.load_weights(tmp_path / "weights") is other
    assert_same(want, other.predict([x_enc, x_dec]))


def test_jit_and_vmap_over_parameter_sets(keras, rng):
    model, keras_model = pair(keras, encoder_decoder)
    (x_enc, x_dec), _, _ = pattern_data(rng, "encoder_decoder", 5)
    graphdef, _ = nnx.split(model)
    sets, want = [], []
    for _ in range(3):
        weights = random_weights(rng, model)
        model.set_weights(weights)
        sets.append(nnx.split(nnx.clone(model))[1])  # a split shares the live variables
        keras_model.set_weights(weights)
        want.append(keras_outputs(keras_model, [x_enc, x_dec]))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *sets)

    @jax.jit
    def run_all(state, x):
        return jax.vmap(lambda s: nnx.merge(graphdef, s)(x))(state)

    got = np.asarray(run_all(stacked, [x_enc, x_dec]))
    assert got.shape == (3, 5, 4, K)
    for i in range(3):
        assert_same(want[i], got[i])
        assert_same(got[i], np.asarray(nnx.merge(graphdef, sets[i])([x_enc, x_dec])), atol=1e-6)


def test_fit_num_seeds_are_separate_runs(rng):
    rnn_jax.utils.set_random_seed(0)
    x = rng.normal(size=(21, T, D)).astype("float32")
    y = x.sum(axis=(1, 2))[:, None]
    inputs = rnn_jax.Input(shape=(T, D))
    model = Model(inputs, R.Dense(1)(R.SimpleRNN(U)(inputs)))
    model.compile(optimizer="adam", loss="mean_squared_error")
    history = model.fit(x, y, batch_size=8, epochs=2, num_seeds=3, seed=7, verbose=0)
    assert np.shape(history.history["loss"]) == (3, 2)
    assert history.epoch == [0, 1]
    rows = np.asarray(history.history["loss"])
    assert len({tuple(r) for r in rows}) == 3  # the seeds differ
    for i in (0, 2):  # the first seed and the last (each separate run compiles: seconds)
        alone = rnn_jax.fit(model.fresh_model, x, y, loss="mean_squared_error",
                            optimizer="adam", batch_size=8, epochs=2, seed=7 + i, verbose=0)
        np.testing.assert_allclose(rows[i], alone.history["loss"], rtol=1e-6, atol=1e-7)
        if i == 0:  # the model keeps seed 0's trained weights
            for got, want in zip(model.get_weights(), alone.model(0).get_weights(), strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


# -- bad input ----------------------------------------------------------------------------------


def test_wrong_rank_fails_when_the_model_is_built(keras):
    with pytest.raises(ValueError):
        keras.layers.LSTM(3)(keras.Input(shape=(5,)))  # Keras refuses it too
    rnn_jax.utils.clear_session()
    with pytest.raises(ValueError) as error:
        R.LSTM(3)(rnn_jax.Input(shape=(5,)))
    message = str(error.value)
    assert "LSTM 'lstm'" in message
    assert "(None, 5)" in message  # the tensor's shape
    assert "(batch, time, features)" in message  # the shape the layer takes
    assert "(5, 5)" not in message  # not the stand-in sizes used to work the shapes out


def test_wrong_feature_size_fails_when_the_model_is_built(keras):
    dense = keras.layers.Dense(2)
    dense(keras.Input(shape=(3,)))
    with pytest.raises(ValueError):
        dense(keras.Input(shape=(4,)))  # Keras refuses it too

    rnn_jax.utils.clear_session()
    dense = R.Dense(D)
    dense(rnn_jax.Input(shape=(3,)))
    with pytest.raises(ValueError, match=re.escape(
            "Dense 'dense' cannot be called on inputs of shape (None, 4): inputs have 4 "
            "features, the kernel expects 3")):
        dense(rnn_jax.Input(shape=(4,)))

    lstm = R.LSTM(U, name="encoder")
    lstm(rnn_jax.Input(shape=(5, 3)))
    with pytest.raises(ValueError, match=r"^LSTM 'encoder' cannot be called on inputs of shape "
                       r"\(None, 5, 4\): inputs have 4 features .*expects 3"):
        lstm(rnn_jax.Input(shape=(5, 4)))
    # a merge names every input's shape
    with pytest.raises(ValueError, match=re.escape(
            "Concatenate 'concatenate' cannot be called on inputs of shape "
            "[(None, 5, 3), (None, 4, 3)]")):
        R.Concatenate()([rnn_jax.Input(shape=(5, 3)), rnn_jax.Input(shape=(4, 3))])


def test_model_outputs_must_come_from_its_inputs(keras):
    a, b = rnn_jax.Input(shape=(3,), name="a"), rnn_jax.Input(shape=(3,), name="b")
    ka, kb = keras.Input(shape=(3,)), keras.Input(shape=(3,))
    with pytest.raises(ValueError):
        keras.Model(ka, keras.layers.Dense(1)(kb))  # Keras refuses both too
    with pytest.raises(ValueError):
        keras.Model(ka, keras.layers.Add()([ka, kb]))
    with pytest.raises(ValueError, match=r"name=b>, which is not among the model's inputs"):
        Model(a, R.Dense(1)(b))  # outputs independent of the inputs
    with pytest.raises(ValueError, match=r"name=b>, which is not among the model's inputs"):
        Model(a, R.Add()([a, b]))  # an Input missing from inputs
    with pytest.raises(ValueError, match="symbolic tensors"):
        Model(a, np.zeros((1, 3)))
    assert Model([a, b], R.Add()([a, b])).count_params() == 0  # with both it is fine


def test_fit_before_compile_gives_keras_message(keras, rng):
    x, y = rng.normal(size=(4, T, D)).astype("float32"), np.zeros((4, U), "float32")
    keras_inputs = keras.Input(shape=(T, D))
    keras_model = keras.Model(keras_inputs, keras.layers.SimpleRNN(U)(keras_inputs))
    inputs = rnn_jax.Input(shape=(T, D))
    model = Model(inputs, R.SimpleRNN(U)(inputs))
    for method in ("fit", "evaluate"):
        with pytest.raises(ValueError) as keras_error:
            getattr(keras_model, method)(x, y, verbose=0)
        with pytest.raises(type(keras_error.value)) as error:
            getattr(model, method)(x, y, verbose=0)
        assert str(error.value) == str(keras_error.value)


def test_importing_an_unsupported_layer_says_what_is_supported():
    with pytest.raises(ImportError, match="supported: .*LSTM"):
        R.Conv1D  # noqa: B018
    assert not hasattr(R, "_no_such_thing")  # other names: the usual AttributeError
    with pytest.raises(ImportError) as error:
        from rnn_jax.layers import Conv1D  # noqa: F401
    assert "supported" in str(error.value) and "LSTM" in str(error.value), str(error.value)


@pytest.mark.parametrize("shape", [(0, 3), (-1,), (3, "a"), (2.5,), (True,)])
def test_input_with_a_bad_shape(shape):
    with pytest.raises(ValueError, match=r"Input: every size must be a positive integer or None"):
        rnn_jax.Input(shape=shape)


def test_input_without_a_shape():
    with pytest.raises(ValueError, match=r"Input needs a shape"):
        rnn_jax.Input()


def test_float64_layer_needs_64_bit_mode():
    with jax.enable_x64(False):
        for make in (lambda: R.LSTM(3, dtype="float64"), lambda: R.Dense(2, dtype="float64")):
            with pytest.raises(ValueError, match=re.escape(
                    "needs JAX's 64-bit mode: call jax.config.update('jax_enable_x64', True)")):
                make()
        inputs = rnn_jax.Input(shape=(T, D), dtype="float64")  # fed, cast by the layers
        model = Model(inputs, R.SimpleRNN(U)(inputs))
        assert model(np.ones((1, T, D))).dtype == np.float32
