"""Dropping stores nobody reads: merging elementwise kernels (merge.py) keeps the first
kernel's stores, though the second now computes those values itself; a temporary that no
kernel reads any more is then written for nothing (an LSTM's backward step wrote six such
(N, H) arrays per step)."""
from __future__ import annotations

from graphc.schedule import ir


def drop_dead_stores(kernels: list[ir.Kernel], temps: set[int],
                     nodes: list[frozenset] | None = None) -> list[ir.Kernel]:
    """kernels without the elementwise stores into `temps` that no kernel reads (a kernel
    left with no store is dropped); `nodes`, if given, parallel to `kernels`, is updated in
    place to stay parallel to the result."""
    read: set[int] = set()
    for k in kernels:
        read |= k.reads()
    out: list[ir.Kernel] = []
    sets: list[frozenset] = []
    for i, k in enumerate(kernels):
        if isinstance(k, ir.Elementwise):
            stores = tuple(s for s in k.stores
                           if s.access.buffer not in temps or s.access.buffer in read)
            if not stores:
                continue
            if len(stores) != len(k.stores):
                k = ir.Elementwise(k.shape, stores, k.fused)
        out.append(k)
        sets.append(nodes[i] if nodes is not None else frozenset())
    if nodes is not None:
        nodes[:] = sets
    return out
