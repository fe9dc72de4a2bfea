"""Primitives that move data without arithmetic: casts, reshapes, transposes, broadcasts,
slices, concatenation, gather/scatter, and index helpers."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from graphc.dtypes import as_dtype
from graphc.errors import DTypeError, ShapeError, bad_index, index_error_message
from graphc.node import Dim, Node, TensorType
from graphc.ops.grad_helpers import reshape_to, unbroadcast
from graphc.ops.registry import OpDef, make, register
from graphc.ops.shapes import fmt_shape, normalize_axes, same_size, size_product
from graphc.sizes import Size, assume_equal, floordiv, maximum, minimum

Attrs = Mapping[str, Any]


def _same_dims(a: Dim, b: Dim) -> bool:
    """Whether two sizes can be equal (a symbol is taken equal to what it meets: checked
    at call time)."""
    try:
        same_size(a, b)
    except ValueError:
        return False
    return True


# ---- casts and identities -------------------------------------------------------------

def _cast_vjp(node: Node, g: Node) -> list[Node | None]:
    x = node.inputs[0]
    return [make("cast", g, dtype=x.dtype) if x.dtype.kind == "f" else None]


register(OpDef(
    name="cast", vjp=_cast_vjp, arity=1, doc="convert to another dtype (numpy astype)",
    infer=lambda ins, attrs: TensorType(ins[0].shape, as_dtype(attrs["dtype"])),
    impl=lambda arrs, attrs: arrs[0].astype(attrs["dtype"]),
))
register(OpDef(
    name="stop_gradient", arity=1, differentiable=False, doc="identity whose derivative is zero",
    infer=lambda ins, attrs: ins[0].type, impl=lambda arrs, attrs: arrs[0],
))


# ---- reshapes ---------------------------------------------------------------------------

def _reshape_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    (x,), shape = ins, attrs["shape"]
    ints = [d for d in shape if isinstance(d, int)]
    if sum(d == -1 for d in ints) > 1 or any(d < -1 for d in ints):
        raise ShapeError(f"shape {fmt_shape(shape)} may hold one -1 and sizes >= 0")
    total = size_product(x.shape)
    rest = size_product([d for d in shape if d != -1])
    if -1 in ints:
        if isinstance(total, int) and isinstance(rest, int) and (rest == 0 or total % rest):
            raise ShapeError(f"cannot reshape {fmt_shape(x.shape)} to {fmt_shape(shape)}")
        if rest == 0:
            raise ShapeError(f"cannot reshape {fmt_shape(x.shape)} to {fmt_shape(shape)}: "
                             "-1 is ambiguous next to a size 0")
        missing = floordiv(total, rest)
        if missing * rest != total:  # not exact for every value of the symbols
            assume_equal(missing * rest, total)
        out = tuple(missing if d == -1 else d for d in shape)
    else:
        if isinstance(total, int) and isinstance(rest, int):
            if total != rest:
                raise ShapeError(f"cannot reshape {fmt_shape(x.shape)} to {fmt_shape(shape)}")
        elif total != rest:
            assume_equal(total, rest)
        out = tuple(shape)
    return TensorType(out, x.dtype)


def _reshape_vjp(node: Node, g: Node) -> list[Node | None]:
    return [reshape_to(g, node.inputs[0])]


register(OpDef(
    name="reshape", vjp=_reshape_vjp, arity=1, doc="numpy reshape (one -1 allowed)",
    infer=_reshape_infer, scalar_view=True, reshapes=True,
    impl=lambda arrs, attrs: arrs[0].reshape(attrs["shape"]),
))


def _expand_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    (x,) = ins
    ndim = x.ndim + len(attrs["axes"])
    axes = normalize_axes(attrs["axes"], ndim)
    dims = iter(x.shape)
    return TensorType(tuple(1 if i in axes else next(dims) for i in range(ndim)), x.dtype)


def _expand_vjp(node: Node, g: Node) -> list[Node | None]:
    return [make("squeeze", g, axes=node.attrs["axes"])]


register(OpDef(
    name="expand_dims", vjp=_expand_vjp, arity=1, scalar_view=True, reshapes=True,
    doc="insert size-1 axes (positions in the result)",
    infer=_expand_infer, impl=lambda arrs, attrs: np.expand_dims(arrs[0], attrs["axes"]),
))


def _squeeze_check(shape: Sequence, attrs: Attrs) -> None:
    """An integer index on an axis of run-time size (x[5]) is a slice of one element then
    this squeeze (attrs["indices"]: axis -> index): no element means the index was out of
    range, an IndexError like numpy's."""
    for a, i in attrs.get("indices", ()):
        if shape[a] == 0:
            raise IndexError(f"index {i} is out of bounds for axis {a}")


def _squeeze_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    (x,) = ins
    axes = normalize_axes(attrs["axes"], x.ndim)
    _squeeze_check(x.shape, attrs)
    for a in axes:
        if isinstance(x.shape[a], int) and x.shape[a] != 1:
            raise ShapeError(f"cannot squeeze axis {a} of size {x.shape[a]}")
        if not isinstance(x.shape[a], int) and a not in dict(attrs.get("indices", ())):
            assume_equal(x.shape[a], 1)  # (an int index's element: its IndexError instead)
    return TensorType(tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype)


def _squeeze_impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    _squeeze_check(arrs[0].shape, attrs)
    return np.squeeze(arrs[0], axis=attrs["axes"])


def _squeeze_vjp(node: Node, g: Node) -> list[Node | None]:
    return [make("expand_dims", g, axes=node.attrs["axes"])]


register(OpDef(
    name="squeeze", vjp=_squeeze_vjp, arity=1, doc="remove size-1 axes", infer=_squeeze_infer,
    scalar_view=True, reshapes=True,
    impl=_squeeze_impl,
))


def _transpose_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    (x,), perm = ins, attrs["perm"]
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"axes {perm} are not a permutation of {x.ndim} axes")
    return TensorType(tuple(x.shape[p] for p in perm), x.dtype)


def _transpose_vjp(node: Node, g: Node) -> list[Node | None]:
    inverse = tuple(int(i) for i in np.argsort(node.attrs["perm"]))
    return [make("transpose", g, perm=inverse)]


register(OpDef(
    name="transpose", vjp=_transpose_vjp, arity=1, doc="permute axes", infer=_transpose_infer,
    one_element_identity=True,
    impl=lambda arrs, attrs: np.transpose(arrs[0], attrs["perm"]),
))


# ---- broadcasts ------------------------------------------------------------------------

def _check_broadcastable(x: Sequence[Dim], target: Sequence[Dim]) -> None:
    if len(x) > len(target):
        raise ShapeError(f"cannot broadcast {fmt_shape(x)} to {fmt_shape(target)}")
    for d, t in zip(x[::-1], target[::-1]):
        if not (d == 1 or _same_dims(d, t)):
            raise ShapeError(f"cannot broadcast {fmt_shape(x)} to {fmt_shape(target)}")


def _broadcast_to_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    (x,), shape = ins, tuple(attrs["shape"])
    if any(isinstance(d, int) and d < 0 for d in shape):
        raise ShapeError(f"target shape {fmt_shape(shape)} needs sizes >= 0")
    _check_broadcastable(x.shape, shape)
    return TensorType(shape, x.dtype)


def _broadcast_to_vjp(node: Node, g: Node) -> list[Node | None]:
    return [unbroadcast(g, node.inputs[0])]


register(OpDef(
    name="broadcast_to", vjp=_broadcast_to_vjp, arity=1, scalar_view=True,
    one_element_identity=True, doc="numpy broadcast_to a static shape",
    infer=_broadcast_to_infer,
    impl=lambda arrs, attrs: np.broadcast_to(arrs[0], attrs["shape"]),
))


def sum_to_shape(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sums g over the axes along which an array of `shape` was broadcast to g's shape."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape)
                                      if d == 1 and g.shape[lead + i] != 1)
    return np.sum(g, axis=axes, keepdims=True).reshape(shape) if axes else g


# ---- slices ----------------------------------------------------------------------------

def _slice_len(dim: Dim, s: tuple) -> Dim:
    """numpy's length of dim[start:stop:step]. With symbols: an expression (min/max where
    numpy clamps); bounds that are themselves symbols are taken as in range (the gradient of
    a concatenate makes them)."""
    start, stop, step = s
    if isinstance(dim, int) and not isinstance(start, Size) and not isinstance(stop, Size):
        return len(range(*slice(*s).indices(dim)))
    step = 1 if step is None else step

    def bound(b: Dim | None, default: Dim, low: int) -> Dim:
        if b is None:
            return default
        if isinstance(b, Size):
            return b
        if b < 0:
            return maximum(dim + b, low)
        return minimum(b, dim + low) if low else minimum(b, dim)
    if step > 0:
        lo, hi = bound(start, 0, 0), bound(stop, dim, 0)
        return maximum(floordiv(hi - lo + step - 1, step), 0)
    lo, hi = bound(start, dim - 1, -1), bound(stop, -1, -1)
    return maximum(floordiv(lo - hi - step - 1, -step), 0)


def _slice_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    x, slices = ins[0], attrs["slices"]
    if len(slices) != x.ndim:
        raise ShapeError(f"{len(slices)} slices for {x.ndim} dimensions")
    for s in slices:
        if s[2] == 0:
            raise ShapeError("slice step cannot be zero")
    return TensorType(tuple(_slice_len(d, s) for d, s in zip(x.shape, slices)), x.dtype)


def _slices(attrs: Attrs) -> tuple[slice, ...]:
    return tuple(slice(*s) for s in attrs["slices"])


def _slice_vjp(node: Node, g: Node) -> list[Node | None]:
    return [make("unslice", g, node.inputs[0], slices=node.attrs["slices"])]


register(OpDef(
    name="slice", vjp=_slice_vjp, arity=1, doc="basic slicing start:stop:step on every axis",
    one_element_identity=True,
    infer=_slice_infer, impl=lambda arrs, attrs: arrs[0][_slices(attrs)],
))


def _unslice_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    g, ref = ins
    expected = _slice_infer((ref,), attrs)
    if g.ndim != ref.ndim or not all(map(_same_dims, g.shape, expected.shape)):
        raise ShapeError(f"values {fmt_shape(g.shape)} do not fit slice "
                         f"{fmt_shape(expected.shape)}")
    return TensorType(ref.shape, g.dtype)


def _unslice_impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    g, ref = arrs
    out = np.zeros(ref.shape, g.dtype)
    out[_slices(attrs)] = g
    return out


def _unslice_vjp(node: Node, g: Node) -> list[Node | None]:
    return [make("slice", g, slices=node.attrs["slices"]), None]


register(OpDef(
    name="unslice", vjp=_unslice_vjp, arity=2, shape_only_inputs=(1,),
    doc="zeros shaped like ref with g written into the slice",
    infer=_unslice_infer, impl=_unslice_impl,
))


def _concat_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    if not ins:
        raise ShapeError("needs at least one tensor")
    first = ins[0]
    if any(i.dtype != first.dtype for i in ins):
        raise DTypeError("inputs must share one dtype")
    if any(i.ndim != first.ndim for i in ins):
        raise ShapeError("inputs must have the same number of dimensions")
    if first.ndim == 0:
        raise ShapeError("cannot concatenate 0-d tensors")
    (axis,) = normalize_axes(attrs["axis"], first.ndim)
    out = list(first.shape)
    for i in ins[1:]:
        for a in range(first.ndim):
            if a == axis:
                out[a] = out[a] + i.shape[a]
            else:
                try:
                    out[a] = same_size(out[a], i.shape[a])
                except ValueError:
                    raise ShapeError(f"sizes differ on axis {a}") from None
    return TensorType(tuple(out), first.dtype)


def _concat_vjp(node: Node, g: Node) -> list[Node | None]:
    (axis,) = normalize_axes(node.attrs["axis"], g.ndim)
    sizes = [i.shape[axis] for i in node.inputs]
    bounds: list[tuple[Dim, Dim]] = []
    start: Dim = 0
    for d in sizes:  # (symbolic bounds: in range by construction)
        bounds.append((start, start + d))
        start = start + d
    out: list[Node | None] = []
    for (lo, hi) in bounds:
        slices = tuple((lo, hi, 1) if a == axis else (None, None, None) for a in range(g.ndim))
        out.append(make("slice", g, slices=slices))
    return out


register(OpDef(
    name="concatenate", vjp=_concat_vjp, arity=None, doc="join tensors along an existing axis",
    infer=_concat_infer,
    impl=lambda arrs, attrs: np.concatenate(arrs, axis=attrs["axis"]),
))


# ---- gather and scatter ----------------------------------------------------------------

def _take_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    x, idx = ins
    if idx.dtype.kind != "i":
        raise DTypeError(f"indices must be integers, got {idx.dtype}")
    if x.ndim == 0:
        raise ShapeError("cannot gather from a 0-d tensor")
    (axis,) = normalize_axes(attrs["axis"], x.ndim)
    return TensorType(x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype)


def check_indices(idx: np.ndarray, size: int, what: str) -> None:
    """Raises IndexError naming `what` when an index falls outside [-size, size)."""
    bad = bad_index(idx, size, negative=True)
    if bad is not None:
        raise IndexError(index_error_message(what, size, True, bad))


def _take_impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    x, idx = arrs
    check_indices(idx, x.shape[attrs["axis"]], "take")
    return np.take(x, idx, axis=attrs["axis"])


def _take_vjp(node: Node, g: Node) -> list[Node | None]:
    x, idx = node.inputs
    return [make("scatter_add", x, idx, g, axis=node.attrs["axis"]), None]


register(OpDef(
    name="take", vjp=_take_vjp, arity=2, index_inputs=(1,),
    doc="gather slices of x along axis at integer indices",
    infer=_take_infer, impl=_take_impl,
))


def _scatter_add_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    ref, idx, upd = ins
    expected = _take_infer((ref, idx), attrs)
    if upd.ndim != expected.ndim or not all(map(_same_dims, upd.shape, expected.shape)):
        raise ShapeError(f"updates {fmt_shape(upd.shape)} do not fit {fmt_shape(expected.shape)}")
    return TensorType(ref.shape, upd.dtype)


def _scatter_add_impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    ref, idx, upd = arrs
    axis = attrs["axis"]
    check_indices(idx, ref.shape[axis], "scatter_add")
    out = np.zeros(ref.shape, upd.dtype)
    moved = np.moveaxis(upd, list(range(axis, axis + idx.ndim)), list(range(idx.ndim)))
    np.add.at(np.moveaxis(out, axis, 0), idx, moved)
    return out


def _scatter_add_vjp(node: Node, g: Node) -> list[Node | None]:
    _, idx, _ = node.inputs
    return [None, None, make("take", g, idx, axis=node.attrs["axis"])]


register(OpDef(
    name="scatter_add", vjp=_scatter_add_vjp, arity=3, shape_only_inputs=(0,), index_inputs=(1,),
    doc="zeros shaped like ref, with updates added at the indices (the gradient of take)",
    infer=_scatter_add_infer, impl=_scatter_add_impl,
))


def _check_index_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    if ins[0].dtype.kind != "i":
        raise DTypeError(f"indices must be integers, got {ins[0].dtype}")
    return ins[0].type


def _check_index_impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    idx = arrs[0]
    size = attrs["size"]
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        bad = idx[(idx < 0) | (idx >= size)].flat[0]
        raise IndexError(f"{attrs['what']}: index {bad} is out of range [0, {size})")
    return idx


register(OpDef(
    name="check_index", arity=1, differentiable=False, index_inputs=(0,), infer=_check_index_infer,
    impl=_check_index_impl,
    doc="the indices unchanged, after checking that each lies in [0, size) (IndexError)",
))


# ---- index helpers ---------------------------------------------------------------------

register(OpDef(
    name="iota", arity=0, differentiable=False, finite=True, doc="0, 1, ..., n-1",
    infer=lambda ins, attrs: TensorType((attrs["n"],), as_dtype(attrs["dtype"])),
    impl=lambda arrs, attrs: np.arange(attrs["n"], dtype=attrs["dtype"]),
))


def _dim_size_impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    size = attrs["size"]
    if not isinstance(size, int):
        raise TypeError(f"size {size} has no value until the graph is given call-time sizes")
    return np.asarray(size, dtype=attrs["dtype"])


register(OpDef(
    name="dim_size", arity=0, differentiable=False, finite=True,
    doc="a size known only at call time, as a scalar (e.g. the count a mean divides by)",
    infer=lambda ins, attrs: TensorType((), as_dtype(attrs["dtype"])), impl=_dim_size_impl,
))


def size_value(size: Dim, dtype: Any) -> Node:
    """A size as a scalar node: a constant, or a dim_size leaf for a symbolic size."""
    from graphc.ops.leaves import scalar_constant
    if isinstance(size, int):
        return scalar_constant(size, as_dtype(dtype))
    return make("dim_size", size=size, dtype=as_dtype(dtype))
