"""One value stored twice, read from one copy: a kernel that writes the same value into two
layouts (copy_forward.py's second store: dY as NCHW images for the data gradient and as
(C, N*H*W) rows for the weight gradient's GEMM) keeps only the layout a template needs when
every other reader of the second layout is an elementwise or reduce kernel, which reads the
same elements through other strides. In W5 the bias gradients' column sums were the only
readers of the NCHW copies of the convolutions' dY: one store of an activation-sized
buffer less per convolution, and its pass of writes."""
from __future__ import annotations

from graphc import sizes
from graphc.sizes import Dim
from graphc.schedule import ir


def _below(x: Dim, size: Dim) -> bool:
    """x < size for every binding of the call-time sizes (each at least 1: a call with an
    empty input runs a specialised module)."""
    if isinstance(x, int) and isinstance(size, int):
        return x < size
    diff = sizes.add(size, sizes.mul(x, -1))
    if isinstance(diff, int):
        return diff >= 1
    low = 0
    for mono, coeff in diff.terms:
        if not mono:
            low += coeff
        elif coeff < 0:
            return False
        elif all(isinstance(a, sizes.SizeVar) for a in mono):
            low += coeff  # (a product of input sizes is at least 1)
    return low >= 1


def _layout(shape: ir.Shape, access: ir.Access) -> list[tuple[Dim, Dim, int]] | None:
    """(stride, size, axis) of each axis longer than one, largest stride first, when the
    store writes its whole buffer once through a permutation of its axes (offset 0, the
    strides those of a contiguous layout in some order); else None. Sizes and strides may
    be known at call time only: each stride must equal the product of the sizes inside
    it, as expressions."""
    if access.offset != 0:
        return None
    left = [(s, d, a) for a, (d, s) in enumerate(zip(shape, access.strides)) if d != 1]
    inner: list[tuple[Dim, Dim, int]] = []
    expected: Dim = 1
    while left:
        found = next((x for x in left if x[0] == expected), None)
        if found is None:
            return None
        left.remove(found)
        inner.append(found)
        expected = expected * found[1]
    return inner[::-1]


def _ranges(shape: ir.Shape, guard: ir.Guard | None) -> list[tuple[Dim, Dim]] | None:
    """The first and last index along each axis of a reader's space that a load touches:
    the whole axis, narrowed by a guard's bounds on that one axis (a pad reads its input
    only inside the border); None where a guard leaves an axis empty."""
    ranges: list[tuple[Dim, Dim]] = [(0, d - 1) for d in shape]
    for bound in guard.bounds if guard is not None else ():
        if not all(isinstance(v, int) for v in (bound.lo, bound.hi, bound.offset)):
            return None  # (a size known at call time only)
        if len(bound.terms) == 1 and bound.terms[0][1] == 1:
            a = bound.terms[0][0]
            lo, hi = ranges[a]
            if not (isinstance(lo, int) and isinstance(hi, int)):
                return None
            ranges[a] = (max(lo, bound.lo - bound.offset), min(hi, bound.hi - bound.offset - 1))
    # (an axis of a call-time size, unguarded, is never empty: sizes are at least 1)
    return None if any(isinstance(lo, int) and isinstance(hi, int) and lo > hi
                       for lo, hi in ranges) else ranges


def _moved(access: ir.Access, shape: ir.Shape, drop: list[tuple[Dim, Dim, int]],
           keep: ir.Access, ranges: list[tuple[Dim, Dim]] | None = None
           ) -> ir.Access | None:
    """A read of `drop`'s buffer (strides over `shape`, a reader's space) as the same
    elements of `keep`'s, or None where a reader's axis does not step along one writer axis
    without carrying into the next (then no strides express it). `ranges`: the indices the
    read touches along each axis (a guarded read's: its offset may point before the
    buffer, the guard keeps every element read inside). Sizes known at call time only are
    taken where every index along them is read from the first (then bounds are proven
    for every binding: _below)."""
    if not all(isinstance(v, int) for v in (*access.strides, access.offset,
                                             *(st for st, _, _ in drop))):
        return None
    kept = keep.strides
    writer = _runs([(int(st), n, a) for st, n, a in drop], keep)
    ranges = ranges or [(0, d - 1) for d in shape]
    if not all(isinstance(lo, int) for lo, _ in ranges):
        return None
    # the writer's index of the first element read, axis by axis
    rest = access.offset + sum(step * lo for step, (lo, _) in zip(access.strides, ranges))
    if not isinstance(rest, int) or rest < 0:
        return None
    first: dict[int, int] = {}
    for stride, _, axis in writer:
        first[axis], rest = divmod(rest, stride)
    if rest or not all(_below(first[a], size) for _, size, a in writer):
        return None
    last: dict[int, Dim] = dict(first)
    strides: list[Dim] = []
    for size, step, (lo, hi) in zip(shape, access.strides, ranges):
        if step == 0 or (isinstance(size, int) and size == 1):
            strides.append(0)
            continue
        found = next(((s, n, a) for s, n, a in writer if s <= step), None)
        if found is None or step < 0 or step % found[0]:
            return None
        s, n, a = found
        last[a] = last[a] + step // s * (hi - lo)
        strides.append(step // s * kept[a])
    if not all(_below(last[a], size) for _, size, a in writer):
        return None
    offset = sum(first[a] * kept[a] for _, _, a in writer) \
        - sum(st * lo for st, (lo, _) in zip(strides, ranges))
    return ir.Access(keep.buffer, tuple(strides), offset)  # type: ignore[arg-type]


def _runs(writer: list[tuple[int, Dim, int]], keep: ir.Access
          ) -> list[tuple[int, Dim, int]]:
    """`writer`'s axes (stride, size, axis; largest stride first) with each run of axes
    that lie inside one another in both layouts (the next one's stride the inner one's
    times its size, in the dropped store and the kept one) as one axis, named by its
    innermost: a reader may then step along the run without carrying into another axis
    (a pool's gradient writes a row as (OW, KW) axes that its bias sum reads as one)."""
    out: list[tuple[int, Dim, int]] = []
    for stride, size, axis in reversed(writer):
        if out:
            inner, n, a = out[-1]
            if stride == inner * n and keep.strides[axis] == keep.strides[a] * n:
                out[-1] = (inner, n * size, a)
                continue
        out.append((stride, size, axis))
    return out[::-1]


def _reread(k: ir.Kernel, drop_buffer: int, drop: list[tuple[Dim, Dim, int]] | None,
            keep: ir.Access, same: tuple[ir.Shape, ir.Access] | None = None
            ) -> ir.Kernel | None:
    """k reading `keep` where it read the dropped buffer; None where it cannot, or where
    its innermost axis would no longer run along contiguous memory (a slower loop).
    `same` (the maker's space and its store of the dropped buffer; `drop` None): only
    reads over that space through that store's very access move (sizes known at call
    time: no arithmetic on strides, index i reads what the maker wrote at index i)."""
    if not isinstance(k, (ir.Elementwise, ir.Reduce)):
        return None
    shape = k.shape
    failed = []

    def move(e: ir.Expr) -> ir.Expr | None:
        if not isinstance(e, ir.Load) or e.access.buffer != drop_buffer:
            return None
        acc = e.access
        if drop is None:
            assert same is not None
            new = keep if (shape, acc) == same and e.guard is None else None
        else:
            ranges = _ranges(shape, e.guard)
            new = None if ranges is None else _moved(acc, shape, drop, keep, ranges)
        if new is None or (acc.strides and acc.strides[-1] == 1 and new.strides[-1] != 1):
            failed.append(acc)
            return None
        return ir.Load(new, e.dtype, e.guard)

    bodies = [ir.rewrite(body, move) for body in k.bodies()]
    if failed:
        return None
    return ir.with_bodies(k, bodies)


def _redirected(kernels: list[ir.Kernel], reads: list[set[int]], writes: list[set[int]],
                at: int, maker: ir.Elementwise, drop: ir.Store, keep: ir.Store
                ) -> dict[int, ir.Kernel] | None:
    """Every later reader of drop's buffer reading keep's instead, by index; None where one
    cannot (or where a later kernel writes either buffer: they would no longer agree).
    `reads`/`writes`: each kernel's buffers, parallel to `kernels`."""
    layout = _layout(maker.shape, drop.access)
    same = None
    if layout is None or _layout(maker.shape, keep.access) is None:
        if all(isinstance(d, int) for d in maker.shape):
            return None
        layout, same = None, (maker.shape, drop.access)  # (call-time sizes: _reread)
    new: dict[int, ir.Kernel] = {}
    for j in range(at + 1, len(kernels)):
        k = kernels[j]
        if {drop.access.buffer, keep.access.buffer} & writes[j]:
            return None
        if drop.access.buffer in reads[j]:
            moved = _reread(k, drop.access.buffer, layout, keep.access, same)
            if moved is None:
                return None
            new[j] = moved
    return new


# The most node pairs same_value compares before it gives up (says "not the same"): a long
# chain fused into one body (100,000 nodes under the CUDA policy) is never a twin worth it.
SAME_VALUE_BUDGET = 4096


def _fields(e: ir.Expr) -> tuple:
    """A node's own fields, children aside; a constant by repr (0.0 == -0.0, and a
    constant's sign is part of the value)."""
    if isinstance(e, ir.Apply):
        return (e.op, e.dtype)
    if isinstance(e, ir.Load):
        guard = e.guard
        return (e.access, e.dtype, None if guard is None else guard.bounds)
    if isinstance(e, ir.Const):
        return (repr(e.value), e.dtype)
    return (e,)


def same_value(a: ir.Expr, b: ir.Expr) -> bool:
    """Whether two expressions are the same computation, walked without recursion (dataclass
    equality recursed past Python's limit on long chains) and within SAME_VALUE_BUDGET."""
    stack = [(a, b)]
    budget = SAME_VALUE_BUDGET
    while stack:
        x, y = stack.pop()
        if x is y:
            continue
        budget -= 1
        if budget < 0 or type(x) is not type(y) or _fields(x) != _fields(y):
            return False
        kx, ky = ir.children(x), ir.children(y)
        if len(kx) != len(ky):
            return False
        stack.extend(zip(kx, ky))
    return True


def redirect_twin_reads(kernels: list[ir.Kernel], temps: set[int]) -> list[ir.Kernel]:
    """Reads of one of two temporaries an elementwise kernel stores the same value into
    moved to the other, where every such read can move; the store nobody reads then is
    dropped by dead_stores.py."""
    out = list(kernels)
    reads: list[set[int]] | None = None  # (made once, when a kernel has two stores)
    writes: list[set[int]] = []
    for i, k in enumerate(out):
        if not isinstance(k, ir.Elementwise) or len(k.stores) < 2:
            continue
        for drop in k.stores:
            keep = next((s for s in k.stores if s is not drop
                         and s.access.buffer != drop.access.buffer
                         and same_value(s.value, drop.value)), None)
            if (keep is None or drop.accumulate or keep.accumulate
                    or not {drop.access.buffer, keep.access.buffer} <= temps):
                continue
            if reads is None:
                reads = [set(x.reads()) for x in out]
                writes = [set(x.writes()) for x in out]
            if drop.access.buffer in reads[i]:
                continue
            new = _redirected(out, reads, writes, i, k, drop, keep)
            if new:
                for j, moved in new.items():
                    out[j] = moved
                    reads[j] = set(moved.reads())
                break  # (one store per kernel: the kept one must stay)
    return out
