"""The scratch arena's memory: large arenas in a fresh private mapping advised for
transparent huge pages before anything touches it.

A first call touches every page of its arena. Measured here (2-core VM, 194 MB, the W6 step's
arena size; fresh processes, three rounds): an np.empty buffer (malloc, then numpy's own
huge-page advice) took 180-440 ms of CPU (480-1250 ms wall) to touch once; this mapping
14-15 ms (42 ms wall), both ending in huge pages. Where the platform has no madvise, or
the system no huge pages to give, the memory is ordinary pages, as before."""
from __future__ import annotations

import mmap

import numpy as np

# Below this an arena is a few hundred pages at most: an ordinary allocation, as before.
HUGE_MIN_BYTES = 4 << 20
_HUGE = 2 << 20


def _aligned_empty(nbytes: int, align: int) -> np.ndarray:
    if nbytes + align >= 2 ** 63:  # numpy's own message would be about dimensions
        raise MemoryError(f"cannot allocate {nbytes} bytes of scratch memory for these "
                          "shapes: too large")
    raw = np.empty(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


def arena_memory(nbytes: int, align: int = 64) -> np.ndarray:
    """nbytes of uninitialized memory aligned to `align` (<= a page); the array keeps its
    mapping alive and unmaps it when it is collected."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < HUGE_MIN_BYTES or advice is None:
        return _aligned_empty(nbytes, align)
    size = -(-nbytes // _HUGE) * _HUGE
    try:
        # private: a shared anonymous mapping is shmem (no huge pages, and written
        # through in a forked child)
        mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, OverflowError):
        return _aligned_empty(nbytes, align)
    try:
        mapping.madvise(advice)
    except OSError:  # no huge pages here: ordinary pages still serve
        pass
    return np.frombuffer(mapping, np.uint8, count=nbytes)  # mmap is page aligned
