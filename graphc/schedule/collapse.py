"""Loop collapsing: neighbouring axes of an elementwise kernel that every access walks as
one contiguous run become one axis, so a [64, 32] update is one loop of 2048 (long loops
vectorize well and carry less loop overhead)."""
from __future__ import annotations

import numpy as np

from graphc.schedule import ir
from graphc.sizes import hint


def elementwise_accesses(k: ir.Elementwise) -> list[ir.Access]:
    """Every access of k: its stores', then its loads'."""
    out = [s.access for s in k.stores]
    for s in k.stores:
        out.extend(ld.access for ld in ir.expr_loads(s.value))
    return out


def _uses_index(k: ir.Elementwise) -> bool:
    return any(ir.uses_index(st.value) for st in k.stores)


def _mergeable(k: ir.Elementwise, a: int) -> bool:
    inner = k.shape[a + 1]
    return all(acc.strides[a] == acc.strides[a + 1] * inner for acc in elementwise_accesses(k))


def _merge_access(acc: ir.Access, a: int) -> ir.Access:
    s = acc.strides
    return ir.Access(acc.buffer, s[:a] + s[a + 1:], acc.offset)


def _merge_expr(e: ir.Expr, a: int) -> ir.Expr:
    return ir.map_accesses(e, lambda acc: _merge_access(acc, a))


def _permute_access(acc: ir.Access, perm: tuple[int, ...]) -> ir.Access:
    return ir.Access(acc.buffer, tuple(acc.strides[p] for p in perm), acc.offset)


def _permute_expr(e: ir.Expr, perm: tuple[int, ...]) -> ir.Expr:
    return ir.map_accesses(e, lambda acc: _permute_access(acc, perm))


def _span(acc: ir.Access, shape: tuple) -> int:
    return sum(abs(hint(s)) * (hint(d) - 1) for s, d in zip(acc.strides, shape))


def _scatters(k: ir.Elementwise) -> bool:
    """A col2im: one store adding (in any order) into a buffer that a single load, spanning
    more memory than the store, streams from; the target is not read otherwise."""
    if len(k.stores) != 1 or k.stores[0].accumulate != "atomic":
        return False
    loads = ir.expr_loads(k.stores[0].value)
    target = k.stores[0].access
    return (len(loads) == 1 and loads[0].access.buffer != target.buffer
            and _span(loads[0].access, k.shape) > _span(target, k.shape))


def _gather_order(k: ir.Elementwise) -> tuple[int, ...]:
    """A scatter's loops ordered by the strides of what it reads, largest outermost (the
    store's break ties), so the large source streams in order while the small target
    stays in cache. The outermost axis stays put: the one threads split, whose slabs of
    the target are disjoint in a col2im (one image each)."""
    src = ir.expr_loads(k.stores[0].value)[0].access.strides
    dst = k.stores[0].access.strides
    rest = sorted(range(1, len(k.shape)), key=lambda a: (-abs(hint(src[a])),
                                                         -abs(hint(dst[a])), a))
    return (0, *rest)


def reorder_elementwise(k: ir.Elementwise) -> ir.Elementwise:
    """The loops ordered like the first store's strides, largest outermost (any order is
    legal for an elementwise kernel), so that the innermost loop walks memory in order and
    neighbouring axes can collapse (a strided scatter into windows becomes long rows)."""
    if len(k.shape) < 2 or _uses_index(k) or not k.stores:
        return k
    if _scatters(k):
        perm = _gather_order(k)
    else:
        strides = k.stores[0].access.strides
        # (symbolic strides: ordered by the representative binding; any order is right)
        perm = tuple(sorted(range(len(k.shape)), key=lambda a: (-abs(hint(strides[a])), a)))
    if perm == tuple(range(len(k.shape))):
        return k
    stores = tuple(ir.Store(_permute_access(s.access, perm), _permute_expr(s.value, perm),
                            s.accumulate) for s in k.stores)
    return ir.Elementwise(tuple(k.shape[p] for p in perm), stores, k.fused)


def collapse_elementwise(k: ir.Elementwise) -> ir.Elementwise:
    """The same kernel over fewer, longer axes (axes a and a+1 merge when every access has
    stride[a] == stride[a+1] * shape[a+1]; broadcast axes with stride 0 merge too)."""
    if len(k.shape) < 2 or _uses_index(k) or 0 in k.shape:
        return k
    a = len(k.shape) - 2
    while a >= 0:
        if _mergeable(k, a):
            stores = tuple(ir.Store(_merge_access(s.access, a), _merge_expr(s.value, a),
                                    s.accumulate) for s in k.stores)
            shape = k.shape[:a] + (k.shape[a] * k.shape[a + 1],) + k.shape[a + 2:]
            k = ir.Elementwise(shape, stores, k.fused)
        a -= 1
    return k


def collapse_reduce(k: ir.Reduce) -> ir.Reduce:
    """A reduction over fewer axes: two neighbours merge when both are reduced or both kept
    and every access walks them as one run (argmax keeps its single axis as it is)."""
    if k.op == "argmax" or len(k.shape) < 2 or 0 in k.shape or ir.uses_index(k.body):
        return k
    a = len(k.shape) - 2
    while a >= 0:
        same_kind = (a in k.axes) == (a + 1 in k.axes)
        inner = k.shape[a + 1]
        accesses = [k.out] + [ld.access for ld in ir.expr_loads(k.body)]
        if same_kind and all(acc.strides[a] == acc.strides[a + 1] * inner
                             for acc in accesses):
            axes = tuple(x if x <= a else x - 1 for x in k.axes if x != a + 1)
            shape = k.shape[:a] + (k.shape[a] * inner,) + k.shape[a + 2:]
            k = ir.Reduce(shape, axes, k.op, _merge_expr(k.body, a),
                          _merge_access(k.out, a), k.out_dtype, k.fused)
        a -= 1
    return k


# Reduced extents up to this many positions (a pooling window) move outside the last kept
# axis: see windows_outside.
SMALL_WINDOW = 16


def windows_outside(k: ir.Reduce) -> ir.Reduce:
    """An integer min or max over a few innermost positions (the first-maximum index in max
    pooling's gradient) with the last kept axis (8 or longer) moved innermost: the target
    then accumulates into the output in natural order, a vector of outputs at a time,
    instead of a short scalar loop per output (W5's: 30% less time). Any order gives the
    same integer min or max. Measured no faster: float max (NaN-propagating), kept axes
    of 4; a sum's order is left as it is."""
    n = len(k.shape)
    if (k.op not in ("min", "max") or np.dtype(k.out_dtype).kind not in "iu" or not k.axes
            or ir.uses_index(k.body)):
        return k
    if tuple(k.axes) != tuple(range(n - len(k.axes), n)) or len(k.axes) == n:
        return k
    extent = 1
    for a in k.axes:
        if not isinstance(k.shape[a], int):
            return k
        extent *= k.shape[a]
    last = n - len(k.axes) - 1
    if extent > SMALL_WINDOW or not isinstance(k.shape[last], int) or k.shape[last] < 8:
        return k
    perm = tuple(range(last)) + tuple(k.axes) + (last,)
    axes = tuple(range(last, last + len(k.axes)))
    return ir.Reduce(tuple(k.shape[p] for p in perm), axes, k.op, _permute_expr(k.body, perm),
                     _permute_access(k.out, perm), k.out_dtype, k.fused)


def collapse(kernels: list[ir.Kernel]) -> list[ir.Kernel]:
    out: list[ir.Kernel] = []
    for k in kernels:
        if isinstance(k, ir.Elementwise):
            k = collapse_elementwise(reorder_elementwise(k))
        elif isinstance(k, ir.Reduce):
            k = windows_outside(collapse_reduce(k))
        out.append(k)
    return out
