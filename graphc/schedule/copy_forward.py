"""A copy of a value into another layout, stored by the kernel that makes the value instead:
a convolution's weight gradient reads dY as (C, N*H*W) rows, while the data gradient's
convolution reads it as NCHW images, so the kernel that makes dY wrote NCHW and a later
kernel copied it over (W6: five such copies a step, each a read and a write of the whole
map). The maker now writes both layouts in its one pass; the copy kernel is gone. Copies
merged into one kernel (two maps a weight gradient reads as rows, or those merged with a
BatchNorm gradient's own store) are forwarded one store at a time, each to its own maker;
what else the kernel stores stays."""
from __future__ import annotations

from graphc.schedule import ir


def _copied(k: ir.Kernel) -> tuple[ir.Load, ir.Store] | None:
    """(load, store) of a kernel that only copies one value, unconverted and unguarded."""
    if not (isinstance(k, ir.Elementwise) and len(k.stores) == 1):
        return None
    store = k.stores[0]
    load = store.value
    if store.accumulate or not isinstance(load, ir.Load) or load.guard is not None \
            or ir.uses_index(load):
        return None
    return load, store


def _copies(k: ir.Kernel) -> list[tuple[int, ir.Elementwise]]:
    """Each store of k that only copies a value, as (its index, a single-store kernel),
    forwardable alone: its source not written by k, its target written by no other store
    and read by none (a copy merged with other work: a BatchNorm gradient's kernel that
    also lays out two maps as a weight gradient's rows). [] for other kernels."""
    if not isinstance(k, ir.Elementwise):
        return []
    parts = [ir.Elementwise(k.shape, (s,), ("copy",)) for s in k.stores]
    targets = [s.access.buffer for s in k.stores]
    if len(set(targets)) < len(targets):
        return []
    out = []
    for i, part in enumerate(parts):
        found = _copied(part)
        if found is None or found[0].access.buffer in targets:
            continue
        if any(targets[i] in other.reads() for j, other in enumerate(parts) if j != i):
            continue
        out.append((i, part))
    return out


def _axis_map(shape: ir.Shape, written: ir.Access, copy_shape: ir.Shape, read: ir.Access,
              copy_written: ir.Access) -> list[int | None] | None:
    """For each axis of the maker's space, the stride at which the copy writes the element
    the maker writes there (None for axes of one), when the copy reads exactly what the
    maker writes through a permutation of its axes (sizes and strides matching one to one),
    the copy's merged axes split into the maker's first (`_split_copy_axes`)."""
    if written.offset != read.offset:
        return None
    copy_axes = _split_copy_axes(shape, written.strides, copy_shape, read.strides,
                                 copy_written.strides)
    theirs = dict(enumerate(copy_axes))
    mapping: list[int | None] = []
    for d, s in zip(shape, written.strides):
        if d == 1:
            mapping.append(None)
            continue
        match = [a for a, (dd, rs, _) in theirs.items() if (dd, rs) == (d, s)]
        if len(match) != 1:
            return None
        mapping.append(theirs.pop(match[0])[2])
    return mapping if not theirs else None


def _split_copy_axes(shape: ir.Shape, strides: tuple, copy_shape: ir.Shape, reads: tuple,
                     writes: tuple) -> list[tuple]:
    """The copy's axes of more than one element as (size, read stride, write stride), an
    axis that runs over several of the maker's axes split into them (a copy of NCHW maps
    into (C, N, H*W) reads H*W as one axis where a pool's gradient wrote it as (OH, KH, OW,
    KW)): the maker's axes whose strides fall inside it must count its elements in mixed
    radix, the smallest stride the copy's. Known sizes only; other axes stay whole."""
    out = []
    for size, r, w in zip(copy_shape, reads, writes):
        if size == 1:
            continue
        parts = sorted((s, d) for d, s in zip(shape, strides)
                       if d != 1 and all(isinstance(v, int) for v in (size, r, d, s))
                       and r > 0 and s % r == 0 and s // r < size)
        step, ok = r, bool(parts) and len(parts) > 1
        for s, d in parts:
            ok = ok and s == step
            step = step * d
        if ok and step == r * size:
            out += [(d, s, s // r * w) for s, d in parts]
        else:
            out.append((size, r, w))
    return out


def _forwarded(maker: ir.Elementwise, copy: ir.Elementwise) -> ir.Elementwise | None:
    found = _copied(copy)
    if found is None:
        return None
    load, out = found
    stores = [s for s in maker.stores if s.access.buffer == load.access.buffer]
    if len(stores) != 1 or stores[0].accumulate or stores[0].value.dtype != load.dtype \
            or any(s == 0 and d != 1 for d, s in zip(maker.shape, stores[0].access.strides)):
        return None  # (each index its own element: the copy reads what one index wrote)
    mapping = _axis_map(maker.shape, stores[0].access, copy.shape, load.access, out.access)
    if mapping is None:
        return None
    strides = tuple(0 if s is None else s for s in mapping)
    extra = ir.Store(ir.Access(out.access.buffer, strides, out.access.offset), stores[0].value)
    fused = maker.fused + tuple(f for f in copy.fused if f not in maker.fused)
    return ir.Elementwise(maker.shape, maker.stores + (extra,), fused)


def forward_copies(kernels: list[ir.Kernel], temps: set[int],
                   nodes: list[frozenset] | None = None) -> list[ir.Kernel]:
    """kernels with each pure copy of an elementwise kernel's stored value into one of
    `temps` folded into that kernel as a second store, where nothing in between touches the
    copy's target (its write moves earlier) or rewrites the value. Only temporaries: a
    parameter or output written earlier could be left half-updated by a kernel in between
    that fails (an index check). `nodes`, if given, parallel to `kernels`, is updated in
    place to stay parallel to the result."""
    out = list(kernels)
    sets = list(nodes) if nodes is not None else [frozenset()] * len(out)
    j = 0
    while j < len(out):
        gone = set()
        for i, part in _copies(out[j]):
            maker = _maker_of(out, j, part, temps)
            made = out[maker] if maker is not None else None
            merged = _forwarded(made, part) if isinstance(made, ir.Elementwise) else None
            if maker is None or merged is None:
                continue
            out[maker] = merged
            sets[maker] = sets[maker] | sets[j]
            gone.add(i)
        if gone:
            k = out[j]
            assert isinstance(k, ir.Elementwise)
            kept = tuple(s for i, s in enumerate(k.stores) if i not in gone)
            if not kept:
                del out[j], sets[j]
                continue
            out[j] = ir.Elementwise(k.shape, kept, k.fused)
        j += 1
    if nodes is not None:
        nodes[:] = sets
    return out


def _maker_of(kernels: list[ir.Kernel], j: int, copy: ir.Elementwise,
              temps: set[int]) -> int | None:
    """The elementwise kernel before kernels[j] that last writes what `copy` (one store of
    kernels[j]) reads, where its target is a temporary that no kernel in between touches."""
    load, store = copy.stores[0].value, copy.stores[0]
    target = store.access.buffer
    if target not in temps or not isinstance(load, ir.Load):
        return None
    for i in range(j - 1, -1, -1):
        if target in kernels[i].reads() | kernels[i].writes():
            return None
        if load.access.buffer in kernels[i].writes():
            return i if isinstance(kernels[i], ir.Elementwise) else None
    return None
