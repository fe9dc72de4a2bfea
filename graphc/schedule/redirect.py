"""Reading relu(z) > 0 where z > 0 was read: a kernel that stores a pre-activation z beside
relu(z) (the forward pass of a layer whose backward pass needs relu's derivative, the mask
z > 0) keeps only relu(z) when every later read of z is such a mask; the mask is the same
for every z, NaN and -0.0 included. The store of z, a full pass of writes over an
activation-sized buffer, is then dropped (dead_stores.py): in W5, one per convolution."""
from __future__ import annotations

from graphc.schedule import ir


def _is_zero(e: ir.Expr) -> bool:
    return isinstance(e, ir.Const) and e.value == 0


def _masked_from(k: ir.Kernel, z: ir.Access, relu: ir.Access) -> ir.Kernel | None:
    """k reading its masks z > 0 as relu > 0 (the same layout as z), or None where it reads
    z otherwise (or k is no kind whose body is known here)."""
    if not isinstance(k, (ir.Elementwise, ir.Reduce)):
        return None
    masks: set[int] = set()

    def visit(e: ir.Expr) -> ir.Expr | None:
        if (isinstance(e, ir.Apply) and e.op == "greater" and len(e.args) == 2
                and isinstance(e.args[0], ir.Load) and e.args[0].guard is None
                and e.args[0].access.buffer == z.buffer and _is_zero(e.args[1])):
            acc = e.args[0].access
            masks.add(id(e.args[0]))
            return ir.Apply("greater", (ir.Load(ir.Access(relu.buffer, acc.strides, acc.offset),
                                                e.args[0].dtype), e.args[1]), e.dtype)
        return None

    bodies = k.bodies()
    loads = [ld for body in bodies for ld in ir.expr_loads(body) if ld.access.buffer == z.buffer]
    new = [ir.rewrite(body, visit) for body in bodies]
    if any(id(ld) not in masks for ld in loads):
        return None  # z read elsewhere than in a mask: it stays stored anyway
    return ir.with_bodies(k, new)


def _redirect(kernels: list[ir.Kernel], reads: list[set[int]], index: "_Index", after: int,
              z: ir.Access, relu: ir.Access) -> None:
    """Every later read of z's buffer moved to relu's, or none. `reads`: each kernel's
    buffers, parallel to `kernels` and kept so (walking every later kernel's expressions
    for every relu made a 96-layer MLP's schedule take seconds); `index`: who reads and
    writes each buffer (scanning every later kernel for each relu was quadratic)."""
    if index.writes_after(z.buffer, after) or index.writes_after(relu.buffer, after):
        return  # (the two would no longer hold z and relu(z) from there on)
    new = {}
    for j in sorted(j for j in index.readers.get(z.buffer, ()) if j > after):
        moved = _masked_from(kernels[j], z, relu)
        if moved is None:
            return
        new[j] = moved
    for j, k in new.items():
        kernels[j] = k
        index.reread(j, reads[j], set(k.reads()))
        reads[j] = set(k.reads())


class _Index:
    """The kernels that read each buffer (kept up to date) and those that write it (a
    redirect changes reads only)."""

    def __init__(self, reads: list[set[int]], writes: list[set[int]]) -> None:
        self.readers: dict[int, set[int]] = {}
        self.last_writer: dict[int, int] = {}
        for j, (r, w) in enumerate(zip(reads, writes)):
            for bid in r:
                self.readers.setdefault(bid, set()).add(j)
            for bid in w:
                self.last_writer[bid] = j

    def writes_after(self, bid: int, after: int) -> bool:
        return self.last_writer.get(bid, -1) > after

    def reread(self, j: int, old: set[int], new: set[int]) -> None:
        for bid in old - new:
            self.readers[bid].discard(j)
        for bid in new - old:
            self.readers.setdefault(bid, set()).add(j)


def redirect_relu_masks(kernels: list[ir.Kernel], temps: set[int]) -> list[ir.Kernel]:
    """Masks z > 0 read from a temporary z moved to a sibling store of relu(z) in the same
    layout."""
    out = list(kernels)
    reads = [set(k.reads()) for k in out]
    index = _Index(reads, [k.writes() for k in out])
    for i, k in enumerate(kernels):
        if not isinstance(k, ir.Elementwise):
            continue
        for z in k.stores:
            if z.accumulate or z.access.buffer not in temps:
                continue
            for r in k.stores:
                if (not r.accumulate and isinstance(r.value, ir.Apply) and r.value.op == "relu"
                        and r.value.args[0] == z.value and r.access.strides == z.access.strides
                        and r.access.offset == z.access.offset):
                    _redirect(out, reads, index, i, z.access, r.access)
    return out
