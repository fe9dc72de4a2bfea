"""Folding a parameter update into the GEMM that makes its gradient: `p = p - lr * g`
right after `g = a @ b` (g read by nothing else) becomes one GEMM adding -lr * a @ b to p
in place. The gradient is never stored, the update's pass over p and g disappears, and
there is one kernel less to compile (an SGD step of an MLP: one per weight matrix). A
gradient made transposed (a recurrent layer's weights, [4H, E], from [E, 4H] products) folds
too: the GEMM is turned, C^T = B^T A^T, and writes p in its own layout."""
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
    own = _unit_axes_zeroed(store.access, update.shape)
    alpha = _alpha(value, own, _unit_axes_zeroed(ir.Access(grad, identity, 0), update.shape))
    if alpha is not None:
        return replace(gemm, out=ir.Access(target, gemm.out.strides, gemm.out.offset),
                       alpha=gemm.alpha * alpha, accumulate=True)
    return _reoriented(gemm, store, update.shape)


def _swap_last(access: ir.Access) -> ir.Access:
    s = access.strides
    return ir.Access(access.buffer, s[:-2] + (s[-1], s[-2]), access.offset)


def _reoriented(gemm: ir.Gemm, store: ir.Store, shape: tuple) -> ir.Gemm | None:
    """The fold where the update reads the 2-D gradient in the GEMM's output layout or in
    its transpose (a column-major result, a recurrent layer's [4H, E] weights from [E, 4H]
    products): the GEMM, turned where needed (C^T = B^T A^T, operands read with their axes
    exchanged, nothing copied), writes p where the update stores it. Of the orientations
    that fit, one writing p's rows contiguously is taken."""
    if gemm.batch or gemm.b_split is not None or len(shape) != 2 or gemm.out.offset != 0:
        return None
    turned = replace(gemm, m=gemm.n, n=gemm.m, a=_swap_last(gemm.b), b=_swap_last(gemm.a),
                     out=_swap_last(gemm.out))
    fits = []
    for candidate in (gemm, turned):
        if tuple(shape) != (candidate.m, candidate.n):
            continue
        alpha = _alpha(store.value, store.access, candidate.out)
        if alpha is not None:
            fits.append(replace(candidate, out=store.access, alpha=gemm.alpha * alpha,
                                accumulate=True))
    fits.sort(key=lambda g: g.out.strides[-1] != 1)
    return fits[0] if fits else None


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
