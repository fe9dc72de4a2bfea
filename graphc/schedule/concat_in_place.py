"""Concatenation written in place: a kernel that only adds up guarded loads of disjoint
slices along one axis (a concatenate, or the gradient of several slices of one value: an
LSTM's four gate gradients into the (N, 4H) gradient of its pre-activation) is dropped,
and the kernels that made the pieces store them into its output's slices instead. One
pass over memory less, and no guarded loads, which LLVM does not vectorize well (that one
kernel took a sixth of an LSTM's backward step)."""
from __future__ import annotations

from dataclasses import dataclass

from graphc.schedule import ir


@dataclass(frozen=True)
class _Piece:
    load: ir.Load  # K2's guarded load of the piece
    start: int  # the slice of K2's axis it fills
    stop: int


def _terms(e: ir.Expr) -> list[ir.Expr]:
    """The leaves of a tree of adds."""
    out, stack = [], [e]
    while stack:
        x = stack.pop()
        if isinstance(x, ir.Apply) and x.op == "add" and len(x.args) == 2:
            stack.extend(x.args)
        else:
            out.append(x)
    return out


def _pieces(k: ir.Elementwise) -> tuple[int, list[_Piece]] | None:
    """(the axis, the pieces by start) when k's one store is a sum of loads (or chains of
    loads, each the next one's fallback), each guarded by one range of one common axis (zero
    outside), that tile the axis exactly (no overlaps: the order of a chain then does not
    matter)."""
    if len(k.stores) != 1 or k.stores[0].accumulate:
        return None
    axis, pieces = None, []
    for t in _terms(k.stores[0].value):
        # a guarded load, or a chain of them (a concatenate: each load's fallback the next)
        while isinstance(t, ir.Load) and t.guard is not None and len(t.guard.bounds) == 1 \
                and t.dtype == k.stores[0].value.dtype:
            b = t.guard.bounds[0]
            if len(b.terms) != 1 or b.terms[0][1] != 1 or axis not in (None, b.terms[0][0]):
                return None
            axis = b.terms[0][0]
            if not all(isinstance(v, int) for v in (b.lo, b.hi, b.offset, k.shape[axis])):
                return None  # call-time sizes: the tiling cannot be proved here
            start, stop = max(0, b.lo - b.offset), min(k.shape[axis], b.hi - b.offset)
            pieces.append(_Piece(t, start, stop))
            t = t.guard.otherwise
        if not (isinstance(t, ir.Const) and t.value == 0):
            return None
    if axis is None or len(pieces) < 2:
        return None
    pieces.sort(key=lambda p: p.start)
    edges = [0] + [x for p in pieces for x in (p.start, p.stop)] + [k.shape[axis]]
    if any(a != b for a, b in zip(edges[::2], edges[1::2])) or any(
            p.start >= p.stop for p in pieces):
        return None  # gaps or overlaps
    return axis, pieces


def _writer(kernels: list[ir.Kernel], end: int, piece: _Piece, shape: tuple[int, ...],
            axis: int) -> tuple[int, int] | None:
    """(kernel, store) of the one store before `end` that writes the piece's buffer whole,
    element i' of its iteration space where K2 reads element i' + start along `axis`."""
    bid = piece.load.access.buffer
    found = None
    for i in range(end):
        if bid in kernels[i].writes():
            if found is not None or not isinstance(kernels[i], ir.Elementwise):
                return None
            found = i
    if found is None:
        return None
    w = kernels[found]
    assert isinstance(w, ir.Elementwise)
    hits = [j for j, s in enumerate(w.stores) if s.access.buffer == bid]
    want_shape = shape[:axis] + (piece.stop - piece.start,) + shape[axis + 1:]
    acc = piece.load.access
    want = ir.Access(bid, acc.strides, acc.offset + acc.strides[axis] * piece.start)
    if len(hits) != 1 or w.shape != want_shape or w.stores[hits[0]].access != want or \
            w.stores[hits[0]].accumulate or bid in w.reads():
        return None
    return found, hits[0]


def concat_in_place(kernels: list[ir.Kernel], temps: set[int],
                    nodes: list[frozenset] | None = None) -> list[ir.Kernel]:
    """kernels with each such concatenating kernel dropped, its pieces stored where it
    would have put them. Legal when each piece is a temporary only it reads, written whole
    by one elementwise store at the matching indices, and nothing between the piece's
    writer and it touches its output. `nodes` (parallel to kernels) is kept parallel."""
    kernels = list(kernels)
    sets = list(nodes) if nodes is not None else [frozenset()] * len(kernels)
    i = 0
    while i < len(kernels):
        k = kernels[i]
        found = _pieces(k) if isinstance(k, ir.Elementwise) else None
        new = _rewritten(kernels, i, found, temps) if found is not None else None
        if new is None:
            i += 1
            continue
        last = max(new)
        for j, w in new.items():
            kernels[j] = w
        sets[last] = sets[last] | sets[i]
        del kernels[i], sets[i]
    if nodes is not None:
        nodes[:] = sets
    return kernels


def _rewritten(kernels: list[ir.Kernel], end: int, found: tuple[int, list[_Piece]],
               temps: set[int]) -> dict[int, ir.Elementwise] | None:
    """The writers of kernel `end`'s pieces with their stores moved into its output, by
    index; None where that is not legal."""
    axis, pieces = found
    k2 = kernels[end]
    assert isinstance(k2, ir.Elementwise)
    out = k2.stores[0].access
    new: dict[int, ir.Elementwise] = {}
    for piece in pieces:
        bid = piece.load.access.buffer
        if bid not in temps or bid == out.buffer or any(
                bid in kernels[j].reads() for j in range(len(kernels)) if j != end) or sum(
                ld.access.buffer == bid for ld in ir.expr_loads(k2.stores[0].value)) != 1:
            return None
        hit = _writer(kernels, end, piece, k2.shape, axis)
        if hit is None:
            return None
        j, s = hit
        if any(out.buffer in kernels[x].reads() | kernels[x].writes()
               for x in range(j, end)):
            return None  # (the writer itself included: it must not read the output)
        w = new.get(j, kernels[j])
        assert isinstance(w, ir.Elementwise)
        into = ir.Access(out.buffer, out.strides, out.offset + out.strides[axis] * piece.start)
        stores = list(w.stores)
        stores[s] = ir.Store(into, stores[s].value)
        new[j] = ir.Elementwise(w.shape, tuple(stores), w.fused)
    return new
