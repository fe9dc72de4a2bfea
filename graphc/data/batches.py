"""Shuffled minibatches over arrays that share their first axis."""
from __future__ import annotations

from typing import Iterator

import numpy as np


def minibatches(*arrays: np.ndarray, batch_size: int, shuffle: bool = True,
                seed: int | None = None, drop_last: bool = False) -> Iterator[tuple]:
    """Yields tuples of aligned slices; the last batch may be short unless drop_last."""
    if not arrays:
        raise ValueError("minibatches: give at least one array")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"minibatches: batch_size must be a positive int, got {batch_size!r}")
    n = len(arrays[0])
    for i, a in enumerate(arrays):
        if len(a) != n:
            raise ValueError(f"minibatches: array {i} has {len(a)} rows, array 0 has {n}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield tuple(a[idx] for a in arrays)
