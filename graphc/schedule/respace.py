"""One elementwise kernel's iteration space read as another's: when the second kernel reads,
whole and once each, a buffer the first writes whole (a pooling gradient's windows over the
image, the image itself, its transposed copy for a weight gradient), each of the second's
indices is an affine function of the first's, so the second can run in the first's loops
(merge.py) instead of a pass of its own over memory."""
from __future__ import annotations

from graphc.schedule import ir
from graphc.schedule.reindex import AxisMap, remap_expr, remap_view

# The shortest innermost axis of a first kernel that another shape's kernel merges into.
MIN_INNER = 8


def _numbers(*values: tuple) -> bool:
    return all(isinstance(v, int) for vs in values for v in vs)


def _layout_order(shape: tuple[int, ...], strides: tuple[int, ...]) -> list[int] | None:
    """The axes (longer than 1) from outermost to innermost when `strides` lay `shape` out
    densely in some order (a transposed contiguous buffer); else None."""
    axes = sorted((k for k, d in enumerate(shape) if d > 1), key=lambda k: -strides[k])
    expected = 1
    for k in reversed(axes):
        if strides[k] != expected:
            return None
        expected *= shape[k]
    return axes


def axis_map(shape: tuple[int, ...], written: tuple[int, ...], other: tuple[int, ...],
             read: tuple[int, ...]) -> AxisMap | None:
    """other's indices from shape's, where a buffer is written at `written` strides over
    `shape` and read at `read` strides over `other` (each densely, in any axis order), both
    from offset 0: element o = sum(written * i) is read at the j whose digits
    (o's mixed-radix digits in the read layout) are sums of i's, with no carries."""
    if not _numbers(shape, written, other, read) or 1 in shape:
        return None
    if _layout_order(shape, written) is None or _layout_order(other, read) is None:
        return None
    total = 1
    for d in shape:
        total *= d
    count = 1
    for d in other:
        count *= d
    if total != count:
        return None
    terms: dict[int, list[tuple[int, int]]] = {k: [] for k in range(len(other))}
    for a, w in enumerate(written):
        digit = [k for k, (size, s) in enumerate(zip(other, read))
                 if size > 1 and s <= w < s * size and w % s == 0]
        if len(digit) != 1:
            return None
        terms[digit[0]].append((a, w // read[digit[0]]))
    for k, size in enumerate(other):
        if sum(c * (shape[a] - 1) for a, c in terms[k]) > size - 1:
            return None  # a carry: not affine
    return tuple((tuple(terms[k]), 0) for k in range(len(other)))


def respaced(first: ir.Elementwise, second: ir.Elementwise) -> ir.Elementwise | None:
    """second over first's shape (the same kernel), or None where no buffer links them or
    first's innermost axis is short: a flat pass (a ReLU mask) run inside a window's loop
    of 2 (a pooling gradient's) measured slower than the two passes apart."""
    if first.shape == second.shape:
        return second
    if not first.shape or not isinstance(first.shape[-1], int) or first.shape[-1] < MIN_INNER:
        return None
    written = {s.access.buffer: s.access for s in first.stores}
    for s in second.stores:
        for ld in ir.expr_loads(s.value):
            w = written.get(ld.access.buffer)
            if w is None or ld.guard is not None or w.offset != 0 or ld.access.offset != 0:
                continue
            amap = axis_map(first.shape, w.strides, second.shape, ld.access.strides)
            if amap is not None:
                rank = len(first.shape)
                stores = tuple(ir.Store(ir.Access(st.access.buffer,
                                                  *remap_view(st.access.strides,
                                                              st.access.offset, amap, rank)),
                                        remap_expr(st.value, amap, rank), st.accumulate)
                               for st in second.stores)
                return ir.Elementwise(first.shape, stores, second.fused)
    return None
