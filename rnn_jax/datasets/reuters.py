"""The Reuters newswire topics dataset, loaded exactly as `keras.datasets.reuters` loads it.

11,228 newswires, each a list of word ids (ranked by frequency: id 1 is
"the"), labelled with one of 46 topics (`get_label_names()`). The file is
Keras' own `reuters.npz`, found at an explicit `path`, else in Keras' cache
(`$KERAS_HOME/datasets/reuters.npz`, default `~/.keras/datasets/`), else
downloaded from Keras' URL and checked against the sha256 Keras pins
(`rnn_jax.datasets.utils.fetch`). It is read without
`np.load(allow_pickle=True)`: the ragged `x` is unpickled by an unpickler that
allows only numpy's array classes, then every sequence is checked to be a
list of ints (`rnn_jax.datasets.utils.load_npz`).

    from rnn_jax.datasets import reuters, pad_sequences
    (x_train, y_train), (x_test, y_test) = reuters.load_data(num_words=30000, maxlen=50,
                                                             test_split=0.3)
    x_train_NxT = pad_sequences(x_train, padding="post")
"""

from __future__ import annotations

import json
import numbers
import operator
import os

import numpy as np

from rnn_jax.datasets.utils import fetch, load_npz

URL_FOLDER = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
DATA_FILE = "reuters.npz"
DATA_SHA256 = "d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916"
WORD_INDEX_FILE = "reuters_word_index.json"
# Keras pins the word index's md5, 4d44cc38712099c9e383dc6e5f11a921; this is
# the sha256 of the same file.
WORD_INDEX_SHA256 = "9b56000edc4b34a32e89fd5a23b2605594682c74efcf7d8f4e2a5514b771e633"

LABEL_NAMES = (
    "cocoa", "grain", "veg-oil", "earn", "acq", "wheat", "copper", "housing", "money-supply",
    "coffee", "sugar", "trade", "reserves", "ship", "cotton", "carcass", "crude", "nat-gas",
    "cpi", "money-fx", "interest", "gnp", "meal-feed", "alum", "oilseed", "gold", "tin",
    "strategic-metal", "livestock", "retail", "ipi", "iron-steel", "rubber", "heat", "jobs",
    "lei", "bop", "zinc", "orange", "pet-chem", "dlr", "gas", "silver", "wpi", "hog", "lead",
)


def load_data(path=None, num_words: int | None = None, skip_top: int = 0,
              maxlen: int | None = None, test_split: float = 0.2, seed=113,
              start_char: int | None = 1, oov_char: int | None = 2, index_from: int = 3):
    """`((x_train, y_train), (x_test, y_test))`, equal to `keras.datasets.reuters.load_data`.

    The steps, in Keras' order (the ids in the file are raw, `1` = "the"):

    1. shuffle newswires and labels together with the permutation
       `np.random.RandomState(seed).shuffle(np.arange(11228))`;
    2. shift every id by `index_from` and prepend `start_char` (unless None),
       so `0` is left for padding, `1` marks the start, `2` is `oov_char`;
    3. if `maxlen` is given, drop every sequence with `len >= maxlen`
       (counting `start_char`; Keras keeps `len < maxlen`, it does not cut);
    4. replace every id outside `[skip_top, num_words)` by `oov_char` (or drop
       it if `oov_char` is None). This applies to `start_char` too (with
       `skip_top > start_char` the start mark becomes `oov_char`). With
       `num_words=None`, Keras takes the largest id left after step 3 as
       `num_words`, so that one id also becomes `oov_char`;
    5. split at `int(len(x) * (1 - test_split))`: the first part trains.

    Args:
      path: the `reuters.npz` file; None looks in Keras' cache, then downloads.
        (Keras' `path` is a file name inside its cache; here it is a path.)
      num_words: keep the ids below `num_words` (the most frequent words), or
        None for all. Must be >= 1.
      skip_top: ids below `skip_top` become `oov_char` (>= 0).
      maxlen: keep only sequences shorter than `maxlen` (>= 1), or None.
      test_split: fraction in `[0, 1)` of the newswires held out for test.
      seed: the shuffle's `np.random.RandomState` seed.
      start_char: the id put before every sequence, or None for none.
      oov_char: the id that replaces the ids outside `[skip_top, num_words)`,
        or None to drop them.
      index_from: added to every word id (>= 0).

    Returns:
      `x_train (N_train,)`, `x_test (N_test,)`: object arrays of lists of
      Python ints (one newswire each, ragged); `y_train (N_train,)`,
      `y_test (N_test,)`: int64 topic ids in `[0, 46)`. The defaults give
      8,982 train and 2,246 test newswires.

    Where Keras' own result is odd, this one is not: when every kept sequence
    of a split has the same length, Keras' `np.array(..., dtype=object)` makes
    a 2-D object array of ints (here it stays `(N,)` of lists), and an empty
    label split built from a list is float64 in Keras (here int64).
    """
    num_words = _optional_int("num_words", num_words, 1)
    skip_top = _optional_int("skip_top", skip_top, 0, none_ok=False)
    maxlen = _optional_int("maxlen", maxlen, 1)
    start_char = _optional_int("start_char", start_char, 0)
    oov_char = _optional_int("oov_char", oov_char, 0)
    index_from = _optional_int("index_from", index_from, 0, none_ok=False)
    if (isinstance(test_split, bool) or not isinstance(test_split, numbers.Real)
            or not 0 <= test_split < 1):
        raise ValueError(f"test_split must be a fraction in [0, 1), got {test_split!r}")

    file = fetch(DATA_FILE, URL_FOLDER + DATA_FILE, DATA_SHA256, path)
    xs, labels = _checked(load_npz(file, ("x", "y")), file)

    order = np.arange(len(xs))
    np.random.RandomState(seed).shuffle(order)
    xs, labels = xs[order], labels[order]

    start = [] if start_char is None else [start_char]
    seqs = [start + [w + index_from for w in s] for s in xs]
    if maxlen is not None:
        keep = [i for i, s in enumerate(seqs) if len(s) < maxlen]
        seqs, labels = [seqs[i] for i in keep], labels[keep]
    if num_words is None:
        num_words = max((max(s) for s in seqs if s), default=0)
    if oov_char is None:
        seqs = [[w for w in s if skip_top <= w < num_words] for s in seqs]
    else:
        seqs = [[w if skip_top <= w < num_words else oov_char for w in s] for s in seqs]

    split = int(len(seqs) * (1 - test_split))
    return ((_object_array(seqs[:split]), labels[:split]),
            (_object_array(seqs[split:]), labels[split:]))


def get_word_index(path=None) -> dict[str, int]:
    """The word -> raw id dict (30,979 words, `"the": 1`), as Keras' `get_word_index`.

    The ids are those in the file, before `load_data`'s shift: the word of id
    `i` in `load_data`'s output (default `index_from=3`) has index `i - 3`.
    `path`: the json file; None looks in Keras' cache
    (`reuters_word_index.json`), then downloads it.
    """
    file = fetch(WORD_INDEX_FILE, URL_FOLDER + WORD_INDEX_FILE, WORD_INDEX_SHA256, path)
    try:
        with open(file, encoding="utf-8") as f:
            index = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{file}: not a readable json word index ({err})") from err
    if not isinstance(index, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in index.items()):
        raise ValueError(f"{file}: not a word index (a json object of word -> integer id)")
    return index


def get_label_names() -> tuple[str, ...]:
    """The 46 topic names, indexed by label (Keras' `get_label_names`)."""
    return LABEL_NAMES


def _optional_int(name, value, low, none_ok=True):
    if value is None and none_ok:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer{' or None' if none_ok else ''}, got "
                         f"{value!r}") from None
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def _checked(arrays, file: os.PathLike):
    """`x (N,)` object array of lists of ints and `y (N,)` integer labels, or ValueError."""
    xs, labels = arrays["x"], arrays["y"]
    if xs.ndim != 1:
        raise ValueError(f"{file}: x must be a 1-D array of sequences, got shape {xs.shape}")
    for i, s in enumerate(xs):
        if type(s) is np.ndarray and s.ndim == 1 and s.dtype.kind in "iu":
            xs[i] = s.tolist()
        elif type(s) is not list or not all(type(w) is int for w in s):
            raise ValueError(f"{file}: x[{i}] is not a list of ints ({type(s).__name__}); "
                             f"refusing the file")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(xs):
        raise ValueError(f"{file}: y must be {len(xs)} integer labels, got {labels.dtype} "
                         f"{labels.shape}")
    return xs, labels


def _object_array(seqs: list) -> np.ndarray:
    """`(N,)` object array holding the N lists (np.array would make equal-length lists 2-D)."""
    out = np.empty(len(seqs), dtype=object)
    for i, s in enumerate(seqs):
        out[i] = s
    return out
