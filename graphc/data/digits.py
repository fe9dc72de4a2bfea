"""scikit-learn's bundled 8x8 handwritten digits (1797 images), split reproducibly."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(test_fraction: float = 0.2, seed: int = 0, dtype: str = "float32") -> Split:
    """Images flattened to 64 features scaled to [0, 1], int64 labels, a stratified-free
    shuffled split. Needs scikit-learn (`pip install graphc[data]`); no download."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise ImportError("load_digits needs scikit-learn: pip install 'graphc[data]' "
                          "(or pip install scikit-learn)") from exc
    bunch = sk_load_digits()
    x = (bunch.data / 16.0).astype(dtype)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return Split(x[train], y[train], x[test], y[test])
