"""Running sums and products along an axis, stable argsort, and gathers/scatters along an axis."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from graphc.dtypes import bool_, int64
from graphc.errors import DTypeError, ShapeError
from graphc.node import Node, TensorType
from graphc.ops.leaves import scalar_constant
from graphc.ops.registry import OpDef, make, register
from graphc.ops.shapes import fmt_shape

Attrs = Mapping[str, Any]


def _axis(x: Node, attrs: Attrs) -> int:
    axis = attrs["axis"]
    if not isinstance(axis, int) or isinstance(axis, bool) or not 0 <= axis < x.ndim:
        raise ShapeError(f"axis {axis!r} must be a non-negative int below {x.ndim}")
    return axis


# ---- cumsum, cumprod ------------------------------------------------------------------

def _scan_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    (x,) = ins
    _axis(x, attrs)
    if x.dtype == bool_:
        raise DTypeError("needs int or float inputs, got bool")
    return x.type


def _scan_impl(fn):
    def impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
        x, axis = arrs[0], attrs["axis"]
        if attrs.get("reverse"):
            return np.flip(fn(np.flip(x, axis), axis=axis, dtype=x.dtype), axis)
        return fn(x, axis=axis, dtype=x.dtype)
    return impl


def _cumsum_vjp(node: Node, g: Node) -> list[Node | None]:
    """y_j = sum_{i<=j} x_i: dx_i = sum_{j>=i} g_j, the running sum taken backwards"""
    return [make("cumsum", g, axis=node.attrs["axis"], reverse=not node.attrs["reverse"])]


def _cumprod_vjp(node: Node, g: Node) -> list[Node | None]:
    """dx_i = sum_{j>=i} g_j prod_{k<=j, k!=i} x_k, in O(n) and right with zeros (taking
    the running product forwards; reverse=True mirrors it). Before the first zero p of a
    row, dx_i = revcumsum(g y)_i / x_i (x_i != 0 there); at p, the products skip x_p, which
    is cumprod of x with x_p set to 1 (x', y'): dx_p = revcumsum(g y')_p; after p every
    product holds x_p = 0, so dx_i = 0. The first derivative is exact everywhere; a second
    derivative is exact away from zeros only (after p the rule is the constant 0, whose
    derivative misses the terms through x_p: exact higher orders need a linear-recurrence
    scan, S_i = g_i + x_{i+1} S_{i+1}, which graphc does not have yet)."""
    (x,) = node.inputs
    axis, reverse = node.attrs["axis"], node.attrs["reverse"]
    back = dict(axis=axis, reverse=not reverse)
    zero, one = scalar_constant(0, x.dtype), scalar_constant(1, x.dtype)
    is_zero = make("equal", x, zero)
    zeros_so_far = make("cumsum", make("cast", is_zero, dtype=int64), axis=axis,
                        reverse=reverse)
    none_yet = make("equal", zeros_so_far, scalar_constant(0, int64))
    # the first zero: a zero with one zero so far (where(c, a, c) is c and a)
    first_zero = make("where", is_zero, make("equal", zeros_so_far, scalar_constant(1, int64)),
                      is_zero)
    before = make("div", make("cumsum", make("mul", g, node), **back),
                  make("where", none_yet, x, one))
    skipped = make("cumprod", make("where", first_zero, one, x), axis=axis, reverse=reverse)
    at_zero = make("cumsum", make("mul", g, skipped), **back)
    return [make("where", none_yet, before, make("where", first_zero, at_zero, zero))]


register(OpDef(
    name="cumsum", arity=1, vjp=_cumsum_vjp, infer=_scan_infer, impl=_scan_impl(np.cumsum),
    doc="running sum along axis (reverse: from the end)",
))
register(OpDef(
    name="cumprod", arity=1, vjp=_cumprod_vjp, infer=_scan_infer,
    impl=_scan_impl(np.cumprod), doc="running product along axis (reverse: from the end)",
))


# ---- argsort ----------------------------------------------------------------------------

def _argsort_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    (x,) = ins
    _axis(x, attrs)
    if x.dtype.kind not in "if":
        raise DTypeError(f"needs int or float inputs, got {x.dtype}")
    return TensorType(x.shape, int64)


register(OpDef(
    name="argsort", arity=1, differentiable=False, infer=_argsort_infer,
    impl=lambda arrs, attrs: np.argsort(arrs[0], axis=attrs["axis"], kind="stable"),
    doc="the indices that sort x along axis (stable; NaN last, like numpy)",
))


# ---- take_along_axis and its transpose --------------------------------------------------

def _along_infer(x: Node, idx: Node, attrs: Attrs) -> None:
    if idx.dtype.kind != "i":
        raise DTypeError(f"indices must be integers, got {idx.dtype}")
    axis = _axis(x, attrs)
    if idx.ndim != x.ndim or any(isinstance(a, int) and isinstance(b, int) and a != b
                                 for k, (a, b) in enumerate(zip(idx.shape, x.shape))
                                 if k != axis):
        raise ShapeError(f"indices {fmt_shape(idx.shape)} must match {fmt_shape(x.shape)} "
                         f"except along axis {axis}")


def check_along(idx: np.ndarray, size: int, what: str) -> None:
    """Raises IndexError naming `what` when an index falls outside [0, size)."""
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        bad = idx[(idx < 0) | (idx >= size)].flat[0]
        raise IndexError(f"{what}: index {bad} is out of range [0, {size})")


def _take_along_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    x, idx = ins
    _along_infer(x, idx, attrs)
    return TensorType(idx.shape, x.dtype)


def _take_along_impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x, idx = arrs
    check_along(idx, x.shape[attrs["axis"]], "take_along_axis")
    return np.take_along_axis(x, idx, axis=attrs["axis"])


def _take_along_vjp(node: Node, g: Node) -> list[Node | None]:
    x, idx = node.inputs
    return [make("scatter_along_axis", x, idx, g, axis=node.attrs["axis"]), None]


def _scatter_along_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    ref, idx, upd = ins
    _along_infer(ref, idx, attrs)
    if upd.ndim != idx.ndim or any(isinstance(a, int) and isinstance(b, int) and a != b
                                   for a, b in zip(upd.shape, idx.shape)):
        raise ShapeError(f"updates {fmt_shape(upd.shape)} must match the indices "
                         f"{fmt_shape(idx.shape)}")
    return TensorType(ref.shape, upd.dtype)


def _scatter_along_impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    ref, idx, upd = arrs
    axis = attrs["axis"]
    check_along(idx, ref.shape[axis], "scatter_along_axis")
    out = np.zeros(ref.shape, upd.dtype)
    where: list[np.ndarray] = list(np.indices(idx.shape, sparse=True))
    where[axis] = idx
    np.add.at(out, tuple(where), upd)
    return out


def _scatter_along_vjp(node: Node, g: Node) -> list[Node | None]:
    _, idx, _ = node.inputs
    return [None, None, make("take_along_axis", g, idx, axis=node.attrs["axis"])]


register(OpDef(
    name="take_along_axis", arity=2, vjp=_take_along_vjp, index_inputs=(1,),
    infer=_take_along_infer, impl=_take_along_impl,
    doc="out[..., j, ...] = x[..., idx[..., j, ...], ...] along axis (indices in [0, n))",
))
register(OpDef(
    name="scatter_along_axis", arity=3, vjp=_scatter_along_vjp, shape_only_inputs=(0,),
    index_inputs=(1,), infer=_scatter_along_infer, impl=_scatter_along_impl,
    doc="zeros shaped like ref, updates added along axis at the indices (take_along_axis's "
        "gradient)",
))
