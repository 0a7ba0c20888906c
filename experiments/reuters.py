"""Notebook 004: Reuters newswires into 46 topics with four recurrent models, and more.

    python -m experiments.reuters --flagfile=experiments/flags/reuters.flags
    python -m experiments.reuters --flagfile=experiments/flags/reuters.flags --model=lstm --num_seeds=5
    python -m experiments.reuters --flagfile=experiments/flags/reuters.flags --encoding=embedding

The notebook's setup (the flagfile): `reuters.load_data(num_words=30000,
maxlen=50, test_split=0.3)` keeps the 1,994 newswires shorter than 50 words
(1,395 train, 599 test), pads them at the end with 0 to 49 steps, feeds the
word ids as one scalar feature `(N, 49, 1)` (`--encoding=raw`), and trains
`RNN(50) -> Dense(46) -> softmax` with categorical cross-entropy, Adam 1e-3,
batch 50, 200 epochs. Its test accuracies: SimpleRNN 0.756, stacked SimpleRNN
0.738, LSTM 0.846, stacked LSTM 0.850.

`--model`: `vanilla` (SimpleRNN), `stacked_vanilla`, `lstm`, `stacked_lstm`
(the notebook's four), `gru`, `bidirectional_lstm`. `--encoding=embedding`
replaces the scalar id by `Embedding(num_words, --embedding_dim,
mask_zero=True)`, so the padding is masked and the recurrence stops at the
last word. With `--validation_split=0` (the default) the per-epoch `val_*`
curves are computed on the test set (nothing is selected on them); the
reported `test_accuracy` is the model after the last epoch. The majority
baseline (always predict the most frequent training topic) is printed beside.
With several learning rates (`--learning_rate=0.0003,0.001,0.003`, each with
the same `--num_seeds` seeds, one program) the report gives the test accuracy
mean +- std per value and metrics.json `per_learning_rate`.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags
from flax import nnx

import rnn_jax
from experiments import common
from rnn_jax.datasets import reuters

FLAGS = flags.FLAGS
MODELS = ("vanilla", "stacked_vanilla", "lstm", "stacked_lstm", "gru", "bidirectional_lstm")
NOTEBOOK = dict(learning_rate=1e-3, batch_size=50, epochs=200, validation_split=0.0)
NOTEBOOK_ACCURACY = {"vanilla": 0.756, "stacked_vanilla": 0.738, "lstm": 0.846,
                     "stacked_lstm": 0.850}


def define_flags(flag_values: flags.FlagValues = FLAGS):
    """The Reuters experiment's flags, and the common ones, in `flag_values`."""
    fv = dict(flag_values=flag_values)
    common.define_run_flags(flag_values)
    common.define_training_flags(flag_values)
    flags.DEFINE_enum("model", "lstm", MODELS, "the recurrent model", **fv)
    flags.DEFINE_enum("encoding", "raw", ["raw", "embedding"],
                      "raw: the word id as one scalar feature (the notebook); embedding: "
                      "Embedding(num_words, embedding_dim, mask_zero=True)", **fv)
    flags.DEFINE_integer("units", 50, "units of each recurrent layer", lower_bound=1, **fv)
    flags.DEFINE_integer("embedding_dim", 32, "embedding size (--encoding=embedding)",
                         lower_bound=1, allow_override=True,  # also defined by contains4
                         **fv)
    flags.DEFINE_integer("num_words", 30000, "keep the num_words most frequent words",
                         lower_bound=4, **fv)
    flags.DEFINE_integer("maxlen", 50, "keep newswires shorter than maxlen words", lower_bound=2,
                         **fv)
    flags.DEFINE_float("test_split", 0.3, "fraction of the newswires held out for test", **fv)
    flags.DEFINE_string("data_path", None, "reuters.npz (default: Keras' cache, else download)",
                        **fv)
    flags.register_validator("test_split", lambda v: 0.0 < v < 1.0,
                             message="--test_split must be in (0, 1)", **fv)


define_flags(FLAGS)


def load(path=None, num_words=30000, maxlen=50, test_split=0.3, encoding="raw"):
    """The notebook's arrays: `x (N, T, 1)` float32 ids (raw) or `(N, T)` int32 ids
    (embedding), `y (N, 46)` one-hot, for train and test."""
    (x_tr, y_tr), (x_te, y_te) = reuters.load_data(path=path, num_words=num_words, maxlen=maxlen,
                                                   test_split=test_split)
    steps = max(max(len(s) for s in x_tr), max(len(s) for s in x_te))
    x_tr = rnn_jax.datasets.pad_sequences(x_tr, maxlen=steps, padding="post")
    x_te = rnn_jax.datasets.pad_sequences(x_te, maxlen=steps, padding="post")
    y = rnn_jax.datasets.to_categorical(np.concatenate([y_tr, y_te]), 46)
    if encoding == "raw":
        x_tr, x_te = (a[..., None].astype(np.float32) for a in (x_tr, x_te))
    return (x_tr, y[:len(y_tr)]), (x_te, y[len(y_tr):])


def make_model_fn(model: str, encoding: str, steps: int, units: int = 50,
                  num_words: int = 30000, embedding_dim: int = 32):
    """`rngs -> Sequential` for one of `MODELS`."""
    def make(rngs):
        layers = []
        if encoding == "embedding":
            layers.append(rnn_jax.Embedding(num_words, embedding_dim, mask_zero=True, rngs=rngs))
        if model in ("vanilla", "stacked_vanilla"):
            cls = rnn_jax.SimpleRNN
        elif model in ("lstm", "stacked_lstm", "bidirectional_lstm"):
            cls = rnn_jax.LSTM
        else:
            cls = rnn_jax.GRU
        if model.startswith("stacked"):
            layers.append(cls(units, return_sequences=True, rngs=rngs))
        rnn = cls(units, rngs=rngs)
        layers.append(rnn_jax.Bidirectional(rnn, rngs=rngs) if model.startswith("bidirectional")
                      else rnn)
        layers += [rnn_jax.Dense(46, rngs=rngs), rnn_jax.Activation("softmax")]
        shape = (steps,) if encoding == "embedding" else (steps, 1)
        return rnn_jax.Sequential(layers, input_shape=shape)
    return make


def per_learning_rate(result, acc) -> list[dict]:
    """One row per swept learning rate: its seeds and their test accuracy's mean,
    std (ddof=1; None for one seed), min and max."""
    rows = []
    for lr in dict.fromkeys(m["learning_rate"] for m in result.members):
        a = acc[result.member_indices(learning_rate=lr)]
        rows.append({"learning_rate": lr, "seeds": len(a), "test_accuracy_mean": float(a.mean()),
                     "test_accuracy_std": float(a.std(ddof=1)) if len(a) > 1 else None,
                     "test_accuracy_min": float(a.min()), "test_accuracy_max": float(a.max())})
    return rows


def train_and_evaluate(config: common.Config, workdir: str | None) -> dict:
    """Train notebook 004's model as `config` says, writing the run into
    `workdir` (none: nothing written); returns the metrics (metrics.json's
    dict). Raises `common.RunError` when the run cannot go on (data that
    cannot be loaded included)."""
    model, encoding = config.model, config.encoding
    hp = common.hyperparameters(config, NOTEBOOK)
    try:
        (x_tr, y_tr), (x_te, y_te) = load(config.data_path, config.num_words, config.maxlen,
                                          config.test_split, encoding)
    except (OSError, ValueError) as err:  # missing, truncated, corrupt or unsafe: one line
        source = f"--data_path={config.data_path}" if config.data_path else "Keras' cache"
        raise common.RunError(f"reuters: cannot load the data ({source}): {err}") from None
    majority = int(np.argmax(y_tr.sum(0)))
    baseline = float(np.mean(np.argmax(y_te, 1) == majority))
    run = common.Run(f"reuters ({model}, {encoding})", config, workdir)
    if run.complete:
        return run.saved_metrics()
    make = make_model_fn(model, encoding, x_tr.shape[1], config.units, config.num_words,
                         config.embedding_dim)
    print(rnn_jax.readout.summary(nnx.eval_shape(lambda: make(nnx.Rngs(0)))))
    on_test = hp["validation_split"] == 0.0
    result = run.fit(make, x_tr, y_tr, loss="categorical_crossentropy", metrics=["accuracy"],
                     hp=hp, fast_compile=False, validation_data=(x_te, y_te) if on_test else None)
    test = result.evaluate(x_te, y_te)
    n = result.num_members
    acc = test["accuracy"]
    lrs = common.learning_rates(hp)
    lines = [f"test accuracy after {hp['epochs']} epochs ({len(y_te)} newswires): "
             + (f"{acc[0]:.4f}" if n == 1 else
                f"{acc.mean():.4f} +- {acc.std(ddof=1):.4f} (mean +- std over {n} "
                f"{'members' if lrs else 'seeds'}; min {acc.min():.4f}, max {acc.max():.4f})"),
             f"majority baseline (always topic {majority}): {baseline:.4f}"]
    per_value = per_learning_rate(result, acc) if lrs else None
    for row in per_value or ():
        spread = (f" +- {row['test_accuracy_std']:.4f} (mean +- std over {row['seeds']} seeds; "
                  f"min {row['test_accuracy_min']:.4f}, max {row['test_accuracy_max']:.4f})"
                  if row["seeds"] > 1 else " (1 seed)")
        lines.append(f"  learning rate {row['learning_rate']:g}: test accuracy "
                     f"{row['test_accuracy_mean']:.4f}{spread}")
    if model in NOTEBOOK_ACCURACY and encoding == "raw":
        lines.append(f"the notebook's {model}: {NOTEBOOK_ACCURACY[model]:.3f}")
    ran = len(result.epoch_seconds)  # by this command (fewer when it resumed)
    per_epoch = result.train_seconds / ran if ran else None
    lines.append((f"{per_epoch:.3f} s per epoch" if ran else "no epoch left to train")
                 + f" ({n} {'member' if lrs else 'seed'}{'s' if n > 1 else ''} at once), "
                 f"compile {result.compile_seconds:.2f} s")
    extra = {"model": model, "encoding": encoding,
             "test_accuracy": acc.tolist() if n > 1 else float(acc[0]),
             "test_loss": test["loss"].tolist() if n > 1 else float(test["loss"][0]),
             "majority_baseline": baseline, "seconds_per_epoch": per_epoch,
             "notebook_test_accuracy": NOTEBOOK_ACCURACY.get(model)
             if encoding == "raw" else None,
             "val_is_test_set": on_test}
    if per_value:
        extra["per_learning_rate"] = per_value
    return run.finish(extra, "\n".join(lines))


main = common.main_of(train_and_evaluate)


if __name__ == "__main__":
    app.run(main)
