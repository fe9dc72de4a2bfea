"""Recomputing cheap values where they are read instead of storing them: a BatchNorm in
training writes its centered input x - mean, then x_hat = (x - mean) / std, and its
backward pass reads both again, each a full pass of writes over an activation-sized buffer
and a temporary that lives from the forward pass to the backward pass (W6: nine
BatchNorms). Where a stored value is a few arithmetic ops over buffers that still hold the
same data when it is read, and every reader is an elementwise or reduce kernel that reads
the value element for element (the same layout through a permutation of its axes), each
reader computes the expression itself; the store is then dropped (dead_stores.py), and a
kernel that only made that value with it. A reader never loads more activation-sized
buffers than before: the expression may bring in one (the value it replaces), and any
others only where the reader loads them already."""
from __future__ import annotations

import itertools

from graphc.schedule import ir
from graphc.schedule.twin_stores import same_value
from graphc.sizes import Dim, hint

# Ops a reader recomputes: a few cycles a vector, where reading the stored value back from
# memory (these kernels are bound by memory) costs more.
CHEAP_OPS = frozenset(("add", "sub", "mul", "div", "neg", "square", "relu", "abs",
                       "maximum", "minimum", "where", "greater", "less", "greater_equal",
                       "less_equal", "equal", "not_equal", "cast"))
MAX_OPS = 8  # ops an expression may hold (repeated recomputation must stay cheap)
SIBLING_NODES = 64  # the longest value in which sibling stores' values are looked for
# A load counts as activation-sized when it touches at least this share of the space.
LARGE_SHARE = 4


def _share(d: Dim) -> int:
    """A size for judging shares: itself, or (known at call time only) its value in the
    representative binding (graphc.sizes.hint): a choice of speed and memory only."""
    return d if isinstance(d, int) else hint(d)


def _cheap(value: ir.Expr) -> bool:
    """Few ops, all cheap, no iteration indices or guarded loads (they name the writer's
    axes). Sizes and strides may be known at call time only: they are carried over."""
    ops = 0
    for e in ir.postorder(value):
        if isinstance(e, ir.Apply):
            ops += 1
            if ops > MAX_OPS or e.op not in CHEAP_OPS:
                return False
        elif isinstance(e, ir.Index) or isinstance(e, ir.Load) and e.guard is not None:
            return False
    return True


def _large(access: ir.Access, shape: ir.Shape) -> bool:
    """Whether a load touches a good share of the elements of the space it runs over."""
    touched = total = 1
    for d, s in zip(shape, access.strides):
        total *= _share(d)
        touched *= _share(d) if s != 0 else 1
    return touched * LARGE_SHARE >= total


def _axis_map(wshape: ir.Shape, written: ir.Access, rshape: ir.Shape, read: ir.Access
              ) -> list[int | None] | None:
    """For each axis of the reader's space, the writer's axis whose index it is (None: an
    axis of one, or one the read broadcasts along), when the read takes each element the
    writer stored at the writer's index so mapped; else None."""
    if read.offset != written.offset:
        return None
    mine = {b: (d, s) for b, (d, s) in enumerate(zip(wshape, written.strides)) if d != 1}
    mapping: list[int | None] = []
    for d, s in zip(rshape, read.strides):
        if (isinstance(d, int) and d == 1) or (isinstance(s, int) and s == 0):
            mapping.append(None)
            continue
        match = [b for b, ds in mine.items() if ds == (d, s)]
        if len(match) != 1:
            return None
        mapping.append(match[0])
        del mine[match[0]]
    return mapping if not mine else None


def _moved(value: ir.Expr, mapping: list[int | None]) -> ir.Expr:
    """The writer's expression over the reader's space (its loads' strides carried over)."""
    def access(a: ir.Access) -> ir.Access:
        return ir.Access(a.buffer, tuple(0 if b is None else a.strides[b] for b in mapping),
                         a.offset)
    return ir.map_accesses(value, access)


def _recomputed(k: ir.Kernel, store: ir.Store, wshape: ir.Shape) -> ir.Kernel | None:
    """Reader k with every load of the store's buffer replaced by the store's expression,
    or None where some load is not an element-for-element read of it, or where k would
    load more activation-sized buffers than it does now."""
    if not isinstance(k, (ir.Elementwise, ir.Reduce)):
        return None
    target = store.access.buffer
    large = {ld.access.buffer for body in k.bodies() for ld in ir.expr_loads(body)
             if _large(ld.access, k.shape)}
    brought = {ld.access.buffer for ld in ir.expr_loads(store.value)
               if _large(ld.access, wshape)}
    if len(brought - large) > 1:
        return None
    failed = False

    def visit(e: ir.Expr) -> ir.Expr | None:
        nonlocal failed
        if not (isinstance(e, ir.Load) and e.access.buffer == target):
            return None
        mapping = None if e.guard is not None or e.dtype != store.value.dtype else \
            _axis_map(wshape, store.access, k.shape, e.access)
        if mapping is None:
            failed = True
            return None
        return _moved(store.value, mapping)

    new = [ir.rewrite(body, visit) for body in k.bodies()]
    if failed:
        return None
    return ir.with_bodies(k, new)


def _nodes(value: ir.Expr) -> int:
    """The distinct nodes of an expression, counted up to SIBLING_NODES + 1."""
    return sum(1 for _ in itertools.islice(ir.postorder(value), SIBLING_NODES + 1))


def _via_siblings(k: ir.Elementwise, store: ir.Store, writers: dict[int, int]
                  ) -> tuple[ir.Expr, set[int]]:
    """The store's value with each value another store of k writes in the same layout (a
    buffer only k writes) read back from it instead: a BatchNorm's backward pass stores
    dy * mask and (dy * mask) * gamma, and the second is then one cheap op over the first.
    Also those buffers."""
    if _nodes(store.value) > SIBLING_NODES:
        return store.value, set()  # (a long value is no cheap one over a sibling either)
    siblings = [s for s in k.stores
                if s is not store and not s.accumulate and writers.get(s.access.buffer) == 1
                and s.access == ir.Access(s.access.buffer, store.access.strides,
                                          store.access.offset)]
    used: set[int] = set()

    def visit(e: ir.Expr) -> ir.Expr | None:
        # (the same computation, not only the same object: lowering may build it twice)
        s = next((s for s in siblings if same_value(e, s.value)), None)
        if s is None or e is store.value:
            return None
        used.add(s.access.buffer)
        return ir.Load(s.access, e.dtype)

    return (ir.rewrite(store.value, visit) if siblings else store.value), used


def _readers(out: list[ir.Kernel], reads: list[set[int]], writes: list[set[int]], i: int,
             wshape: ir.Shape, store: ir.Store, sources: set[int], temps: set[int],
             max_buffers: int | None) -> dict[int, ir.Kernel] | None:
    """Every reader after kernel i of the store's buffer, rewritten to recompute it; None
    unless all can (a reader at or after a kernel that writes the value's sources cannot)."""
    target = store.access.buffer
    new: dict[int, ir.Kernel] = {}
    for j in range(i + 1, len(out)):
        if target in reads[j]:
            moved = None if sources & writes[j] or not writes[j] <= temps \
                else _recomputed(out[j], store, wshape)
            if moved is None or (max_buffers is not None
                                 and len(reads[j] | writes[j] | sources) > max_buffers):
                return None
            new[j] = moved
        elif sources & writes[j]:
            return None if any(target in r for r in reads[j + 1:]) else new
    return new


def recompute_cheap(kernels: list[ir.Kernel], temps: set[int],
                    nodes: list[frozenset] | None = None,
                    max_buffers: int | None = None) -> list[ir.Kernel]:
    """kernels whose reads of cheap stored temporaries compute the value instead, where
    every reader can and no kernel from the writer to the reader rewrites what the value
    is made of. The stores stay (drop_dead_stores removes them). `nodes`, if given,
    parallel to `kernels`: readers gain the nodes of a writer that is left unread. `max_buffers`: a
    reader may touch at most this many buffers (SchedulePolicy.max_kernel_buffers). Only
    readers that write temporaries alone: a parameter's or an output's new value is made
    from the staged values, not straight from other parameters (lower.store_updates)."""
    out = list(kernels)
    sets = list(nodes) if nodes is not None else [frozenset()] * len(out)
    reads = [set(k.reads()) for k in out]
    writes = [set(k.writes()) for k in out]
    writers: dict[int, int] = {}
    for w in writes:
        for bid in w:
            writers[bid] = writers.get(bid, 0) + 1
    moved_to: dict[int, set[int]] = {}  # writer -> the readers that recompute its values
    first_read: dict[int, int] = {}  # (kept up to date: a recomputing reader reads more)
    for j, r in enumerate(reads):
        for bid in r:
            first_read.setdefault(bid, j)
    for i in range(len(out)):
        k = out[i]
        if not isinstance(k, ir.Elementwise):
            continue
        for store in k.stores:  # (k as it stands: an earlier value may be recomputed in it)
            target = store.access.buffer
            if (store.accumulate or target not in temps or writers.get(target) != 1
                    or first_read.get(target, i + 1) <= i
                    or any(s == 0 and d != 1 for d, s in zip(k.shape, store.access.strides))):
                continue
            value, siblings = _via_siblings(k, store, writers)
            if not _cheap(value):
                continue
            store = ir.Store(store.access, value)
            sources = {ld.access.buffer for ld in ir.expr_loads(value)}
            if (sources - siblings) & writes[i]:
                continue  # (k rewrites what the value is made of)
            new = _readers(out, reads, writes, i, k.shape, store, sources, temps,
                           max_buffers)
            for j, moved in (new or {}).items():
                out[j] = moved
                reads[j] = set(moved.reads())
                for bid in reads[j]:
                    first_read[bid] = min(first_read.get(bid, j), j)
                moved_to.setdefault(i, set()).add(j)
    if nodes is not None:
        _hand_over(out, temps, sets, moved_to)
        nodes[:] = sets
    return out


def _hand_over(kernels: list[ir.Kernel], temps: set[int], sets: list[frozenset],
               moved_to: dict[int, set[int]]) -> None:
    """A writer left with no store that is read (dead_stores.py drops it) hands its graph
    nodes to the readers that now compute its values; one that stays keeps them."""
    read: set[int] = set()
    for k in kernels:
        read |= k.reads()
    for i, readers in moved_to.items():
        k = kernels[i]
        if isinstance(k, ir.Elementwise) and all(
                s.access.buffer in temps and s.access.buffer not in read for s in k.stores):
            for j in readers:
                sets[j] = sets[j] | sets[i]
