"""Folding a parameter update into the GEMM that makes its gradient: `p = p - lr * g`
right after `g = a @ b` (g read by nothing else) becomes one GEMM adding -lr * a @ b to p
in place. The gradient is never stored, the update's pass over p and g disappears, and
there is one kernel less to compile (an SGD step of an MLP: one per weight matrix)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from graphc.schedule import ir


def _load_of(e: ir.Expr, access: ir.Access) -> bool:
    return isinstance(e, ir.Load) and e.access == access and e.guard is None


def _coefficient(term: ir.Expr, g: ir.Access) -> float | None:
    """c where term is g, c * g or g * c (c a constant), else None."""
    if _load_of(term, g):
        return 1.0
    if isinstance(term, ir.Apply) and term.op == "mul" and len(term.args) == 2:
        x, y = term.args
        if isinstance(x, ir.Const) and _load_of(y, g):
            return float(x.value)
        if isinstance(y, ir.Const) and _load_of(x, g):
            return float(y.value)
    return None


def _alpha(value: ir.Expr, p: ir.Access, g: ir.Access) -> float | None:
    """alpha where value is p + alpha * g in one of the forms an update takes."""
    if not (isinstance(value, ir.Apply) and value.op in ("add", "sub")
            and len(value.args) == 2):
        return None
    x, y = value.args
    if value.op == "sub":
        c = _coefficient(y, g) if _load_of(x, p) else None
        return None if c is None else -c
    for own, term in ((x, y), (y, x)):
        if _load_of(own, p):
            return _coefficient(term, g)
    return None


def _unit_axes_zeroed(acc: ir.Access, shape: tuple) -> ir.Access:
    return ir.Access(acc.buffer, tuple(0 if d == 1 else s for s, d in zip(acc.strides, shape)),
                     acc.offset)


def _folded(gemm: ir.Gemm, update: ir.Kernel, readers: dict[int, int]) -> ir.Gemm | None:
    if not (isinstance(update, ir.Elementwise) and len(update.stores) == 1):
        return None
    store = update.stores[0]
    identity = ir.contiguous_strides(update.shape)
    target, grad = store.access.buffer, gemm.out.buffer
    if (store.accumulate or gemm.accumulate or np.dtype(gemm.dtype).kind != "f"
            or store.access.strides != identity or store.access.offset != 0
            or ir.Buffer(0, gemm.dtype, update.shape, 'temp').size != ir.Buffer(
                0, gemm.dtype, gemm.batch + (gemm.m, gemm.n), 'temp').size
            or readers.get(grad) != 1 or grad == target
            or target in (gemm.a.buffer, gemm.b.buffer)
            or store.value.dtype != gemm.dtype):
        return None
    # The update reads the gradient where it writes the parameter (both whole, in the same
    # layout): the GEMM can write each element to the parameter where it wrote the gradient.
    # (Strides along axes of size 1 are never used: they may differ, [8, 1, 25] read as 0.)
    value = ir.map_accesses(store.value, lambda acc: _unit_axes_zeroed(acc, update.shape))
    alpha = _alpha(value, _unit_axes_zeroed(store.access, update.shape),
                   _unit_axes_zeroed(ir.Access(grad, identity, 0), update.shape))
    if alpha is None:
        return None
    return replace(gemm, out=ir.Access(target, gemm.out.strides, gemm.out.offset),
                   alpha=gemm.alpha * alpha, accumulate=True)


def fold_updates(kernels: list[ir.Kernel], temps: set[int],
                 nodes: list[frozenset] | None = None) -> list[ir.Kernel]:
    """GEMMs followed by the update their (temporary) result is for, folded. `nodes`, if
    given, is what each kernel computes: updated in place to stay parallel to the result."""
    readers: dict[int, int] = {}
    for k in kernels:
        for bid in k.reads():
            readers[bid] = readers.get(bid, 0) + 1
    out: list[ir.Kernel] = []
    sets: list[frozenset] = []
    i = 0
    while i < len(kernels):
        k = kernels[i]
        folded = None
        if isinstance(k, ir.Gemm) and i + 1 < len(kernels) and k.out.buffer in temps:
            folded = _folded(k, kernels[i + 1], readers)
        out.append(folded or k)
        step = 2 if folded else 1
        if nodes is not None:
            sets.append(frozenset().union(*nodes[i:i + step]))
        i += step
    if nodes is not None:
        nodes[:] = sets
    return out
