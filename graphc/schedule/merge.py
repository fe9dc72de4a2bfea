"""Merging neighbouring elementwise kernels over the same shape into one loop nest: a value
read by several kernels is materialized by a kernel of its own (`add` before `relu` when the
backward pass needs the pre-activation too); the kernel after it, reading it at the very
index it was written, computes it again in the same iteration instead of loading it. One
pass over memory less, and one kernel less for the code generators to compile. A kernel over
another shape that reads what the first writes through an affine change of indices (a
reshape, a transpose) is first written over the first's shape (respace.py)."""
from __future__ import annotations

from graphc.schedule import ir
from graphc.schedule.respace import respaced


def _substitute(expr: ir.Expr, values: dict[ir.Access, ir.Expr]) -> ir.Expr:
    """expr with each (unguarded) load of an access in `values` replaced by its value."""
    def visit(e: ir.Expr) -> ir.Expr | None:
        if isinstance(e, ir.Load) and e.guard is None:
            return values.get(e.access)
        return None
    return ir.rewrite(expr, visit)


def _injective(access: ir.Access, shape: tuple[int, ...]) -> bool:
    """Each index of `shape` writes its own element (no broadcast store)."""
    return all(s != 0 or d == 1 for s, d in zip(access.strides, shape))


def _reads(kernel: ir.Elementwise) -> set[int]:
    return {ld.access.buffer for s in kernel.stores for ld in ir.expr_loads(s.value)}


def _writes(kernel: ir.Elementwise) -> set[int]:
    return {s.access.buffer for s in kernel.stores}


def _mergeable(first: ir.Elementwise, second: ir.Elementwise, first_reads: set[int]) -> bool:
    """`first_reads`: the buffers first loads (kept by the caller: walking the stores of a
    kernel grown by many merges each time made a long chain's schedule cubic in its length)."""
    if first.shape != second.shape or any(s.accumulate for s in first.stores + second.stores):
        return False
    written = {s.access.buffer: s.access for s in first.stores}
    if len(written) != len(first.stores) or not all(
            _injective(a, first.shape) for a in written.values()):
        return False
    second_writes = {s.access.buffer for s in second.stores}
    if second_writes & (first_reads | set(written)):
        return False  # a later iteration would read (or keep) what an earlier one wrote
    stored = {s.access: s.value.dtype for s in first.stores}
    for s in second.stores:
        for ld in ir.expr_loads(s.value):
            if ld.access.buffer in written and (ld.access not in stored or ld.guard
                                                or stored[ld.access] != ld.dtype):
                return False  # read elsewhere than where it is written (or converted)
    return True


def _independent(kernel: ir.Elementwise, other: ir.Kernel) -> bool:
    """Whether `kernel` may run before `other` instead of after it: neither writes what
    the other reads or writes."""
    mine_reads, mine_writes = kernel.reads(), kernel.writes()
    theirs = other.writes()
    return not (mine_writes & (other.reads() | theirs) or mine_reads & theirs)


# How far back past other kernels an elementwise one may move to join an earlier one.
HOIST_PAST = 3


def _earlier_partner(out: list[ir.Kernel], kernel: ir.Elementwise, before_reads: set[int],
                     max_buffers: int | None = None) -> int | None:
    """The position in `out` of an elementwise kernel `kernel` can merge into, moving
    before the (at most HOIST_PAST) kernels after it, none of which it depends on or
    affects, within `max_buffers`; None if there is none."""
    for at in range(len(out) - 2, max(-1, len(out) - 2 - HOIST_PAST), -1):
        if not _independent(kernel, out[at + 1]):
            return None
        candidate = out[at]
        if isinstance(candidate, ir.Elementwise):
            same = respaced(candidate, kernel)
            reads = before_reads if at == len(out) - 2 else _reads_of_stores(candidate)
            if same is not None and _mergeable(candidate, same, reads) and (
                    max_buffers is None or len(_reads_of_stores(candidate) | _reads(same)
                                               | _writes(same)) <= max_buffers):
                return at
    return None


def _reads_of_stores(kernel: ir.Elementwise) -> set[int]:
    """What a kernel loads, its own stores included (as merge_elementwise's running sets)."""
    return _reads(kernel) | _writes(kernel)


def _merged(first: ir.Elementwise, second: ir.Elementwise) -> ir.Elementwise:
    values = {s.access: s.value for s in first.stores}
    stores = first.stores + tuple(ir.Store(s.access, _substitute(s.value, values))
                                  for s in second.stores)
    fused = first.fused + tuple(f for f in second.fused if f not in first.fused)
    return ir.Elementwise(first.shape, stores, fused)


def merge_elementwise(kernels: list[ir.Kernel], nodes: list[frozenset] | None = None,
                      max_buffers: int | None = None) -> list[ir.Kernel]:
    """`nodes`, if given, is what each kernel computes: it is updated in place to stay
    parallel to the result (a merged kernel computes what both did). `max_buffers`: no
    merge makes a kernel that reads or writes more buffers than this (None: no limit)."""
    out: list[ir.Kernel] = []
    # (the node sets of each kernel of out, joined once at the end: joining at every merge
    # copied a long chain's growing set each time, quadratic in its length)
    sets: list[list[frozenset]] = []
    reads: set[int] = set()  # what out[-1] loads (a superset after merges: its own stores' too)
    before_reads: set[int] = set()  # what out[-2] loads, likewise
    held: set[int] = set()  # every buffer out[-1] loads or stores
    for i, kernel in enumerate(kernels):
        last = out[-1] if out else None
        mine = nodes[i] if nodes is not None else frozenset()
        same = (respaced(last, kernel) if isinstance(last, ir.Elementwise)
                and isinstance(kernel, ir.Elementwise) else None)
        theirs = (_reads(same) | _writes(same)) if same is not None else set()
        if isinstance(last, ir.Elementwise) and same is not None and _mergeable(
                last, same, reads) and (max_buffers is None
                                        or len(held | theirs) <= max_buffers):
            out[-1] = _merged(last, same)
            sets[-1].append(mine)
            reads |= _reads(same)
            held |= theirs
            continue
        # An elementwise kernel independent of the kernels after an earlier elementwise one
        # (a GEMM between them) joins that one: an LSTM's backward step computes the cell's
        # gradient carry from values its gate kernel has, after the step's GEMM, which
        # does not touch them.
        if isinstance(kernel, ir.Elementwise) and isinstance(last, ir.Gemm):
            at = _earlier_partner(out, kernel, before_reads, max_buffers)
            partner = out[at] if at is not None else None
            same = respaced(partner, kernel) if isinstance(partner, ir.Elementwise) else None
            if at is not None and isinstance(partner, ir.Elementwise) and same is not None:
                out[at] = _merged(partner, same)
                sets[at].append(mine)
                if at == len(out) - 2:
                    before_reads |= _reads(same)
                continue
        out.append(kernel)
        sets.append([mine])
        before_reads = reads
        reads = _reads(kernel) if isinstance(kernel, ir.Elementwise) else set()
        held = (reads | _writes(kernel)) if isinstance(kernel, ir.Elementwise) else set()
    if nodes is not None:
        nodes[:] = [frozenset().union(*parts) for parts in sets]
    return out
