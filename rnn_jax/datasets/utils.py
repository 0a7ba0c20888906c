"""Helpers for the datasets.

- `to_categorical`, `pad_sequences`: equal to `keras.utils`' (same arguments,
  same results; the few differences are listed in each docstring).
- `fetch`, `load_npz`: where a dataset file comes from (an explicit path,
  else Keras' cache, else a download checked against a pinned sha256) and how
  an `.npz` is read without `np.load(allow_pickle=True)`.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import operator
import os
import pathlib
import pickle
import sys
import urllib.request
import zipfile
import zlib

import numpy as np

from rnn_jax import workdir

try:  # numpy >= 2 (also present, as an alias, in numpy 1.26)
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - older numpy
    from numpy.core.multiarray import _reconstruct


# --- Keras' array utilities ---------------------------------------------------------------------

def to_categorical(x, num_classes: int | None = None, dtype="float32") -> np.ndarray:
    """Keras' `to_categorical`: class ids `(...)` -> one-hot `(..., num_classes)`.

    A trailing axis of size 1 is dropped first, as Keras does (`(N, 1)` ->
    `(N, num_classes)`). `num_classes` defaults to `max(x) + 1`.

    Differences from Keras 3: the result is `dtype` (default float32, the
    default of Keras 2's `dtype` argument; Keras 3 has no `dtype` and returns
    float64, so pass `dtype="float64"` for its exact dtype). Ids outside
    `[0, num_classes)` and non-integral values are errors here; Keras 3 wraps
    negative ids around (`-1` -> the last class) and truncates floats.
    """
    ids = np.asarray(x)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        if not np.all(np.equal(np.mod(ids, 1), 0)):
            raise ValueError("to_categorical needs integer class ids")
    ids = ids.astype(np.int64)
    if ids.ndim > 1 and ids.shape[-1] == 1:
        ids = ids.reshape(ids.shape[:-1])
    if num_classes is None:
        num_classes = int(ids.max()) + 1 if ids.size else 0
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(f"class ids must be in [0, {num_classes}), got min {ids.min()} and "
                         f"max {ids.max()}")
    out = np.zeros(ids.shape + (num_classes,), dtype)
    np.put_along_axis(out, ids[..., None], 1, axis=-1)
    return out


def pad_sequences(sequences, maxlen: int | None = None, dtype="int32", padding: str = "pre",
                  truncating: str = "pre", value=0.0) -> np.ndarray:
    """Keras' `pad_sequences`: N sequences of lengths `L_i` -> one array `(N, maxlen, ...)`.

    Args:
      sequences: N sequences (lists or arrays; each `(L_i, ...)`, the trailing
        shape taken from the first non-empty one and required of all).
      maxlen: the length `T` of the result; `None` -> the longest `L_i`.
      dtype: the result's dtype (`object` for variable-length strings); the
        values are cast with `np.asarray(s, dtype)`, so floats are truncated
        for an integer dtype, as in Keras.
      padding: `"pre"` pads before each sequence, `"post"` after it.
      truncating: a sequence longer than `maxlen` keeps its last `maxlen`
        items with `"pre"`, its first `maxlen` with `"post"`.
      value: the padding value (cast to `dtype`; a string needs `dtype=object`
        or a string dtype).

    Returns:
      `(N, T) + trailing shape` array of `dtype`; empty sequences are all
      padding.

    Keras raises for a few degenerate calls that work here: `maxlen=0` gives
    `(N, 0)` (Keras fails for `truncating="pre"`), and `dtype="object"` spelled
    as a string takes a string `value` like `dtype=object` does. Here
    `padding` and `truncating` are checked even when every sequence is empty.
    """
    for name, arg in (("padding", padding), ("truncating", truncating)):
        if arg not in ("pre", "post"):
            raise ValueError(f'{name.capitalize()} type "{arg}" not understood: use "pre" or '
                             f'"post"')
    if not hasattr(sequences, "__len__"):
        raise ValueError(f"`sequences` must be a list of sequences, got {type(sequences).__name__}")
    lengths, sample_shape = [], None
    for i, s in enumerate(sequences):
        try:
            lengths.append(len(s))
        except TypeError:
            raise ValueError("`sequences` must be a list of iterables. Found non-iterable "
                             f"{s!r} at position {i}") from None
        if sample_shape is None and len(s):
            sample_shape = np.asarray(s).shape[1:]
    sample_shape = () if sample_shape is None else sample_shape
    if maxlen is None:
        if not lengths:
            raise ValueError("pad_sequences of no sequences needs `maxlen` (the length of the "
                             "result); it cannot be inferred")
        maxlen = max(lengths)
    elif isinstance(maxlen, bool) or operator.index(maxlen) < 0:
        raise ValueError(f"`maxlen` must be None or an integer >= 0, got {maxlen!r}")
    maxlen = operator.index(maxlen)
    kind = np.dtype(dtype).kind
    if isinstance(value, str) and kind not in "OUS":
        raise ValueError(f"`dtype` {dtype} cannot hold the string padding value {value!r}; "
                         "use dtype=object for variable-length strings")

    x = np.full((len(sequences), maxlen) + sample_shape, value, dtype=dtype)
    if maxlen == 0:
        return x
    for i, s in enumerate(sequences):
        if not len(s):
            continue
        kept = np.asarray(s[-maxlen:] if truncating == "pre" else s[:maxlen], dtype=dtype)
        if kept.shape[1:] != sample_shape:
            raise ValueError(f"Shape of sample {kept.shape[1:]} of sequence at position {i} is "
                             f"different from expected shape {sample_shape}")
        if padding == "post":
            x[i, :len(kept)] = kept
        else:
            x[i, -len(kept):] = kept
    return x


# --- Dataset files: explicit path, Keras' cache, or a checked download --------------------------

def keras_datasets_dir() -> pathlib.Path:
    """Keras' cache for dataset files: `$KERAS_HOME/datasets`, default
    `~/.keras/datasets` (read at each call, so a changed `KERAS_HOME` counts).

    Keras also falls back to `/tmp/.keras` when that folder is not writable;
    this does not.
    """
    home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return pathlib.Path(home).expanduser() / "datasets"


def sha256_of(path) -> str:
    """The sha256 hex digest of a file's bytes."""
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def fetch(name: str, url: str, sha256: str, path=None) -> pathlib.Path:
    """The local file of a dataset: `path` if given, else Keras' cache, else a download.

    - `path` (a file path): used as is (no hash check: it may be your own
      version); missing -> `FileNotFoundError`.
    - else `keras_datasets_dir() / name`, if its sha256 is the pinned one;
    - else `url` is downloaded, its sha256 checked (a mismatch raises
      `ValueError` and writes nothing) and the file moved atomically into the
      cache, replacing an outdated one, as Keras does.

    Offline with no good cached file: `FileNotFoundError` saying where to put it.
    """
    if path is not None:
        path = pathlib.Path(os.fspath(path)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (`path` is the file itself; leave it "
                                    f"None to use Keras' cache, {keras_datasets_dir() / name})")
        return path
    cached = keras_datasets_dir() / name
    if cached.is_file():
        found = sha256_of(cached)
        if found == sha256:
            return cached
        problem = (f"{cached} is incomplete or outdated (sha256 {found}, expected the pinned "
                   f"{sha256})")
    else:
        problem = f"{name} is not in Keras' cache ({cached})"
    try:
        download(url, cached, sha256)
    except (OSError, http.client.HTTPException) as err:  # offline (URLError), HTTP errors,
        # a dropped connection, an unwritable cache
        raise FileNotFoundError(
            f"{problem}, and downloading it from {url} failed ({err}). Put the file at {cached} "
            f"(Keras' cache: $KERAS_HOME/datasets, default ~/.keras/datasets), or pass "
            f"path='/path/to/{name}'.") from err
    return cached


def download(url: str, target, sha256: str, timeout: float = 60.0) -> None:
    """Download `url` to `target` if its bytes have the given sha256.

    The bytes go to a temporary file beside `target`, which replaces `target`
    only after the hash matched (`rnn_jax.workdir.atomic_write`); on a mismatch
    or any failure the temporary file is removed and `target` is untouched.
    """
    target = pathlib.Path(target)
    print(f"Downloading data from {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        target.parent.mkdir(parents=True, exist_ok=True)
        with workdir.atomic_write(target, "wb") as out:
            hasher = hashlib.sha256()
            for chunk in iter(lambda: response.read(1 << 20), b""):
                hasher.update(chunk)
                out.write(chunk)
            if hasher.hexdigest() != sha256:
                raise ValueError(f"the file downloaded from {url} has sha256 {hasher.hexdigest()}, "
                                 f"not the pinned {sha256}; refused, nothing written to "
                                 f"{target.parent}")


# --- Reading an .npz without np.load(allow_pickle=True) -----------------------------------------

class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickled array in a dataset file asks for something other than numpy's array parts."""


# Rebuilding a numpy object array from its pickle uses exactly these globals
# (numpy 1.x writes `numpy.core.multiarray`, numpy 2.x `numpy._core.multiarray`);
# they are returned from this table, so nothing is ever imported by name.
_ARRAY_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays of plain Python objects, and refuses every other class."""

    def __init__(self, file, where: str):
        super().__init__(file)
        self.where = where

    def find_class(self, module, name):
        try:
            return _ARRAY_GLOBALS[module, name]
        except KeyError:
            raise UnsafePickleError(
                f"{self.where}: refusing to unpickle `{module}.{name}`; a dataset array may only "
                f"use numpy's ndarray, dtype and _reconstruct. The file is corrupt or "
                f"malicious.") from None


def load_npz(path, members=("x", "y")) -> dict[str, np.ndarray]:
    """The arrays `members` of an `.npz` file, read without arbitrary unpickling.

    Each member's `.npy` header is parsed; numeric arrays are read from their
    bytes, object arrays (ragged sequences, which numpy can only store as a
    pickle) with an unpickler that allows numpy's array classes and nothing
    else (`UnsafePickleError`, a `ValueError`, naming the class and the file).

    Raises `FileNotFoundError` for a missing file and `ValueError` naming the
    path for anything unreadable (not a zip, a missing member, a bad header,
    short or corrupt data).
    """
    path = pathlib.Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for member in members:
                if f"{member}.npy" not in names:
                    raise ValueError(f"{path}: no array {member!r} in the file (it has "
                                     f"{sorted(names)})")
                where = f"{path} ({member}.npy)"
                arrays[member] = _read_npy(archive.read(f"{member}.npy"), where)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from err
    return arrays


def _read_npy(data: bytes, where: str) -> np.ndarray:
    """One `.npy` file's array from its bytes (`where` names it in errors)."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            # 3.0 differs from 2.0 only in encoding the header as UTF-8, not latin-1.
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as err:
        raise ValueError(f"{where}: bad .npy header ({err})") from err
    if dtype.hasobject:
        if dtype != np.dtype(object):
            raise ValueError(f"{where}: refusing a structured dtype with objects ({dtype})")
        try:
            array = _ArrayOnlyUnpickler(f, where).load()
        except UnsafePickleError:
            raise
        except Exception as err:  # a corrupt pickle can fail in many ways
            raise ValueError(f"{where}: corrupt or truncated pickled array "
                             f"({type(err).__name__}: {err})") from err
        if type(array) is not np.ndarray or array.dtype != object or array.shape != shape:
            raise ValueError(f"{where}: the pickle holds {type(array).__name__} "
                             f"{getattr(array, 'shape', '')}, not the object array {shape} its "
                             f"header declares")
        return array
    body = f.read()
    count = int(np.prod(shape, dtype=np.int64))
    if len(body) != count * dtype.itemsize:
        raise ValueError(f"{where}: {len(body)} bytes of data, expected {count * dtype.itemsize} "
                         f"for {dtype} {shape} (truncated or corrupt)")
    return np.frombuffer(body, dtype).reshape(shape, order="F" if fortran_order else "C").copy()
