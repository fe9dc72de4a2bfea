"""Affine index maps between iteration spaces: how a view (transpose, broadcast, slice,
expand/squeeze) turns into new strides for every access of an expression."""
from __future__ import annotations

from graphc.sizes import exact_quotient

from typing import Sequence

from graphc.errors import ShapeError
from graphc.schedule.ir import (Access, Apply, Bound, Const, Expr, Guard, Index, Load,
                                rewrite)

# For each axis j of the producer: (terms, offset) with terms ((consumer axis, scale), ...),
# meaning producer index p_j = offset + sum(scale * i_axis). One term: a transpose, slice or
# plain copy; none: a broadcast (always index offset); two: a sliding window (h = s*oh + kh).
AxisMap = tuple[tuple[tuple[tuple[int, int], ...], int], ...]


def axis(k: int | None, scale: int = 1, offset: int = 0) -> tuple:
    """One AxisMap entry: p = scale * i_k + offset (just offset when k is None)."""
    return (((k, scale),) if k is not None else (), offset)


def broadcast_map(src: Sequence[int], dst: Sequence[int]) -> AxisMap:
    """numpy broadcasting of shape src to shape dst (aligned on the right)."""
    lead = len(dst) - len(src)
    if lead < 0:
        raise ShapeError(f"cannot broadcast {tuple(src)} to {tuple(dst)}")
    out = []
    for j, d in enumerate(src):
        k = lead + j
        if d == dst[k]:
            out.append(axis(k))
        elif d == 1:
            out.append(axis(None))
        else:
            raise ShapeError(f"cannot broadcast {tuple(src)} to {tuple(dst)} "
                             f"({[getattr(x, 'terms', x) for x in (d, dst[k])]})")
    return tuple(out)


def remap_view(strides: Sequence[int], offset: int, amap: AxisMap, rank: int
               ) -> tuple[tuple[int, ...], int]:
    new = [0] * rank
    for s, (terms, off) in zip(strides, amap):
        for k, scale in terms:
            new[k] += s * scale
        offset += s * off
    return tuple(new), offset


def _remap_index(e: Index, amap: AxisMap) -> Expr:
    terms, off = amap[e.axis]
    out: Expr | None = None
    for k, scale in terms:
        term: Expr = Index(k, e.dtype)
        if scale != 1:
            term = Apply("mul", (term, Const(scale, e.dtype)), e.dtype)
        out = term if out is None else Apply("add", (out, term), e.dtype)
    if out is None:
        return Const(off, e.dtype)
    if off:
        out = Apply("add", (out, Const(off, e.dtype)), e.dtype)
    return out


def remap_bound(bound: Bound, amap: AxisMap) -> Bound:
    """A guard's condition over the producer's axes, over the consumer's instead."""
    terms: dict[int, int] = {}
    offset = bound.offset
    for j, scale in bound.terms:
        inner, off = amap[j]
        offset += scale * off
        for k, s in inner:
            terms[k] = terms.get(k, 0) + scale * s
    return Bound(tuple((k, s) for k, s in sorted(terms.items()) if s), offset, bound.lo,
                 bound.hi)


def remap_expr(expr: Expr, amap: AxisMap, rank: int) -> Expr:
    """The expression read through the map: every load's strides (and iota, and guards)
    composed."""
    def visit(e: Expr) -> Expr | None:
        if isinstance(e, Load):
            strides, offset = remap_view(e.access.strides, e.access.offset, amap, rank)
            guard = e.guard and Guard(tuple(remap_bound(b, amap) for b in e.guard.bounds),
                                      e.guard.otherwise)
            return Load(Access(e.access.buffer, strides, offset), e.dtype, guard)
        if isinstance(e, Index):
            return _remap_index(e, amap)
        return None
    return rewrite(expr, visit)


def split_map(shape: Sequence[int], new_shape: Sequence[int]) -> AxisMap | None:
    """The AxisMap that reads `shape` at the indices of `new_shape` when the reshape only
    splits axes (and adds or drops axes of size 1), so that every old index is a linear
    function of the new ones: an expression can be reshaped without being stored. None
    when an old axis would have to merge several (a div/mod, not affine)."""
    if 0 in shape or 0 in new_shape:
        return None
    new = [(k, d) for k, d in enumerate(new_shape) if d != 1]
    out: list[tuple] = []
    j = 0
    for d in shape:
        if d == 1:
            out.append(axis(None))
            continue
        group, size = [], 1
        while _grows(size, d) and j < len(new):
            group.append(new[j])
            size *= new[j][1]
            j += 1
        if size != d:
            return None
        terms, stride = [], 1
        for k, n in reversed(group):
            terms.append((k, stride))
            stride *= n
        out.append((tuple(reversed(terms)), 0))
    return tuple(out) if j == len(new) else None


def _grows(size, d) -> bool:
    """size < d, where a group of new axes grows to an old axis: with symbols, while the
    group's size divides d and is not yet d."""
    if isinstance(size, int) and isinstance(d, int):
        return size < d
    return size != d and exact_quotient(d, size) is not None


def _smaller(a, b) -> bool:
    """a < b for sizes that are products of one another's factors (a reshape's groups):
    with symbols, the one that divides the other exactly is the smaller."""
    if isinstance(a, int) and isinstance(b, int):
        return a < b
    if exact_quotient(b, a) is not None:
        return True
    if exact_quotient(a, b) is not None:
        return False
    raise TypeError(f"sizes {a} and {b}: neither divides the other")


def reshape_strides(shape: Sequence[int], strides: Sequence[int], new_shape: Sequence[int]
                    ) -> tuple[int, ...] | None:
    """Strides that read `new_shape` from the same elements in the same order, when such
    strides exist (numpy's no-copy reshape rule), else None (the data must be copied)."""
    if 0 in shape:
        return tuple(0 for _ in new_shape)
    old = [(d, s) for d, s in zip(shape, strides) if d != 1]
    new = [d for d in new_shape if d != 1]
    out: list[int] = []
    i = j = 0
    while i < len(old) and j < len(new):
        # grow one group of old axes and one of new axes until their sizes agree
        oi, nj = i + 1, j + 1
        po, pn = old[i][0], new[j]
        while po != pn:
            if _smaller(po, pn):
                po *= old[oi][0]
                oi += 1
            else:
                pn *= new[nj]
                nj += 1
        for k in range(i, oi - 1):  # the old group must be one contiguous run
            if old[k][1] != old[k + 1][1] * old[k + 1][0]:
                return None
        stride = old[oi - 1][1]
        group = []
        for k in range(nj - 1, j - 1, -1):
            group.append(stride)
            stride *= new[k]
        out.extend(reversed(group))
        i, j = oi, nj
    if i != len(old) or j != len(new):
        return None
    it = iter(out)
    return tuple(0 if d == 1 else next(it) for d in new_shape)
