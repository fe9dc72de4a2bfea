"""Affine index maps between iteration spaces: how a view (transpose, broadcast, slice,
expand/squeeze) turns into new strides for every access of an expression."""
from __future__ import annotations

from typing import Sequence

from graphc.errors import ShapeError
from graphc.schedule.ir import Access, Apply, Const, Expr, Index, Load

# For each axis j of the producer: (consumer axis or None, scale, offset), meaning
# producer index p_j = scale * i_{axis} + offset (or just offset when the axis is None).
AxisMap = tuple[tuple[int | None, int, int], ...]


def broadcast_map(src: Sequence[int], dst: Sequence[int]) -> AxisMap:
    """numpy broadcasting of shape src to shape dst (aligned on the right)."""
    lead = len(dst) - len(src)
    if lead < 0:
        raise ShapeError(f"cannot broadcast {tuple(src)} to {tuple(dst)}")
    out = []
    for j, d in enumerate(src):
        k = lead + j
        if d == dst[k]:
            out.append((k, 1, 0))
        elif d == 1:
            out.append((None, 0, 0))
        else:
            raise ShapeError(f"cannot broadcast {tuple(src)} to {tuple(dst)}")
    return tuple(out)


def remap_view(strides: Sequence[int], offset: int, amap: AxisMap, rank: int
               ) -> tuple[tuple[int, ...], int]:
    new = [0] * rank
    for s, (k, scale, off) in zip(strides, amap):
        if k is not None:
            new[k] += s * scale
        offset += s * off
    return tuple(new), offset


def _remap_index(e: Index, amap: AxisMap) -> Expr:
    k, scale, off = amap[e.axis]
    if k is None:
        return Const(off, e.dtype)
    out: Expr = Index(k, e.dtype)
    if scale != 1:
        out = Apply("mul", (out, Const(scale, e.dtype)), e.dtype)
    if off:
        out = Apply("add", (out, Const(off, e.dtype)), e.dtype)
    return out


def remap_expr(expr: Expr, amap: AxisMap, rank: int) -> Expr:
    """The expression read through the map: every load's strides (and iota) composed."""
    memo: dict[int, Expr] = {}
    stack: list[tuple[Expr, bool]] = [(expr, False)]
    while stack:  # iterative post-order: fused expressions can be long chains
        e, ready = stack.pop()
        if id(e) in memo:
            continue
        if isinstance(e, Apply) and not ready:
            stack.append((e, True))
            stack.extend((a, False) for a in e.args if id(a) not in memo)
            continue
        if isinstance(e, Load):
            strides, offset = remap_view(e.access.strides, e.access.offset, amap, rank)
            memo[id(e)] = Load(Access(e.access.buffer, strides, offset), e.dtype)
        elif isinstance(e, Index):
            memo[id(e)] = _remap_index(e, amap)
        elif isinstance(e, Apply):
            memo[id(e)] = Apply(e.op, tuple(memo[id(a)] for a in e.args), e.dtype)
        else:
            memo[id(e)] = e
    return memo[id(expr)]


def expr_depth(expr: Expr) -> int:
    if isinstance(expr, Apply):
        return 1 + max((expr_depth(a) for a in expr.args), default=0)
    return 0
