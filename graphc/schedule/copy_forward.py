"""A copy of a value into another layout, stored by the kernel that makes the value instead:
a convolution's weight gradient reads dY as (C, N*H*W) rows, while the data gradient's
convolution reads it as NCHW images, so the kernel that makes dY wrote NCHW and a later
kernel copied it over (W6: five such copies a step, each a read and a write of the whole
map). The maker now writes both layouts in its one pass; the copy kernel is gone."""
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


def _axis_map(shape: ir.Shape, written: ir.Access, copy_shape: ir.Shape, read: ir.Access
              ) -> list[int | None] | None:
    """For each axis of the maker's space, the axis of the copy's space over which the copy
    reads the same elements (None for axes of one), when the copy reads exactly what the
    maker writes through a permutation of its axes (sizes and strides matching one to one)."""
    if written.offset != read.offset:
        return None
    theirs = {a: (d, s) for a, (d, s) in enumerate(zip(copy_shape, read.strides)) if d != 1}
    mapping: list[int | None] = []
    for d, s in zip(shape, written.strides):
        if d == 1:
            mapping.append(None)
            continue
        match = [a for a, ds in theirs.items() if ds == (d, s)]
        if len(match) != 1:
            return None
        mapping.append(match[0])
        del theirs[match[0]]
    return mapping if not theirs else None


def _forwarded(maker: ir.Elementwise, copy: ir.Elementwise) -> ir.Elementwise | None:
    found = _copied(copy)
    if found is None:
        return None
    load, out = found
    stores = [s for s in maker.stores if s.access.buffer == load.access.buffer]
    if len(stores) != 1 or stores[0].accumulate or stores[0].value.dtype != load.dtype \
            or any(s == 0 and d != 1 for d, s in zip(maker.shape, stores[0].access.strides)):
        return None  # (each index its own element: the copy reads what one index wrote)
    mapping = _axis_map(maker.shape, stores[0].access, copy.shape, load.access)
    if mapping is None:
        return None
    strides = tuple(0 if a is None else out.access.strides[a] for a in mapping)
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
        found = _copied(out[j])
        target = found[1].access.buffer if found else None
        maker = None
        if found is not None and target in temps:
            source = found[0].access.buffer
            # the last kernel before the copy that writes the value; none in between may
            # touch the copy's target
            for i in range(j - 1, -1, -1):
                if target in out[i].reads() | out[i].writes():
                    break
                if source in out[i].writes():
                    maker = i
                    break
        if maker is not None and isinstance(out[maker], ir.Elementwise):
            merged = _forwarded(out[maker], out[j])  # type: ignore[arg-type]
            if merged is not None:
                out[maker] = merged
                sets[maker] = sets[maker] | sets[j]
                del out[j], sets[j]
                continue
        j += 1
    if nodes is not None:
        nodes[:] = sets
    return out
