"""Primitives that move data without arithmetic: casts, reshapes, transposes, broadcasts,
slices, concatenation, gather/scatter, and index helpers."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from graphc.dtypes import as_dtype, int64
from graphc.errors import DTypeError, ShapeError, bad_index, index_error_message
from graphc.node import Dim, Node, TensorType
from graphc.ops.grad_helpers import reshape_to, unbroadcast, zeros_like
from graphc.ops.registry import OpDef, make, register
from graphc.ops.shapes import fmt_shape, known_size, normalize_axes

Attrs = Mapping[str, Any]


def _same_dims(a: Dim, b: Dim) -> bool:
    return a is None or b is None or a == b


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
    if sum(d == -1 for d in shape) > 1 or any(d < -1 for d in shape):
        raise ShapeError(f"shape {fmt_shape(shape)} may hold one -1 and sizes >= 0")
    total = known_size(x.shape)
    rest = 1
    for d in shape:
        rest *= d if d != -1 else 1
    if -1 in shape:
        if total is None:
            out = tuple(None if d == -1 else d for d in shape)
        elif rest == 0 or total % rest:
            raise ShapeError(f"cannot reshape {fmt_shape(x.shape)} to {fmt_shape(shape)}")
        else:
            out = tuple(total // rest if d == -1 else d for d in shape)
    else:
        if total is not None and total != rest:
            raise ShapeError(f"cannot reshape {fmt_shape(x.shape)} to {fmt_shape(shape)}")
        out = tuple(shape)
    return TensorType(out, x.dtype)


def _reshape_vjp(node: Node, g: Node) -> list[Node | None]:
    return [reshape_to(g, node.inputs[0])]


register(OpDef(
    name="reshape", vjp=_reshape_vjp, arity=1, doc="numpy reshape (one -1 allowed)",
    infer=_reshape_infer, scalar_view=True, reshapes=True,
    impl=lambda arrs, attrs: arrs[0].reshape(attrs["shape"]),
))


def _reshape_like_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    x, ref = ins
    a, b = known_size(x.shape), known_size(ref.shape)
    if a is not None and b is not None and a != b:
        raise ShapeError(f"cannot reshape {fmt_shape(x.shape)} to {fmt_shape(ref.shape)}")
    return TensorType(ref.shape, x.dtype)


def _reshape_like_vjp(node: Node, g: Node) -> list[Node | None]:
    return [reshape_to(g, node.inputs[0]), None]


register(OpDef(
    name="reshape_like", vjp=_reshape_like_vjp, arity=2, shape_only_inputs=(1,), reshapes=True,
    one_element_identity=True, doc="reshape x to the run-time shape of ref",
    infer=_reshape_like_infer, impl=lambda arrs, attrs: arrs[0].reshape(arrs[1].shape),
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
        if x.shape[a] not in (1, None):
            raise ShapeError(f"cannot squeeze axis {a} of size {x.shape[a]}")
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
    if any(d is None or d < 0 for d in shape):
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


def _broadcast_like_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    x, ref = ins
    _check_broadcastable(x.shape, ref.shape)
    return TensorType(ref.shape, x.dtype)


def _broadcast_like_vjp(node: Node, g: Node) -> list[Node | None]:
    return [unbroadcast(g, node.inputs[0]), None]


register(OpDef(
    name="broadcast_like", vjp=_broadcast_like_vjp, arity=2, shape_only_inputs=(1,),
    scalar_view=True, one_element_identity=True, doc="broadcast x to the run-time shape of ref",
    infer=_broadcast_like_infer,
    impl=lambda arrs, attrs: np.broadcast_to(arrs[0], arrs[1].shape),
))


def _sum_to_like_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    g, ref = ins
    _check_broadcastable(ref.shape, g.shape)
    return TensorType(ref.shape, g.dtype)


def sum_to_shape(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sums g over the axes along which an array of `shape` was broadcast to g's shape."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape)
                                      if d == 1 and g.shape[lead + i] != 1)
    return np.sum(g, axis=axes, keepdims=True).reshape(shape) if axes else g


def _sum_to_like_vjp(node: Node, g: Node) -> list[Node | None]:
    """the cotangent broadcasts back to the summed input's shape"""
    return [make("broadcast_like", g, node.inputs[0]), None]


register(OpDef(
    name="sum_to_like", arity=2, vjp=_sum_to_like_vjp, shape_only_inputs=(1,),
    one_element_identity=True,
    doc="g summed over the axes along which ref's run-time shape broadcasts to g's",
    infer=_sum_to_like_infer,
    impl=lambda arrs, attrs: sum_to_shape(arrs[0], arrs[1].shape),
))


# ---- slices ----------------------------------------------------------------------------

def _slice_len(dim: Dim, s: tuple[int | None, int | None, int | None]) -> Dim:
    if dim is None:
        return None
    return len(range(*slice(*s).indices(dim)))


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
                d, e = out[a], i.shape[a]
                out[a] = None if d is None or e is None else d + e
            elif not _same_dims(out[a], i.shape[a]):
                raise ShapeError(f"sizes differ on axis {a}")
            elif out[a] is None:
                out[a] = i.shape[a]
    return TensorType(tuple(out), first.dtype)


def _concat_vjp(node: Node, g: Node) -> list[Node | None]:
    axis, sizes = node.attrs["axis"], [i.shape[node.attrs["axis"]] for i in node.inputs]
    unknown = [k for k, d in enumerate(sizes) if d is None]
    if len(unknown) > 1:  # where each part starts is known at run time only
        (axis,) = normalize_axes(axis, g.ndim)
        return [make("concat_part", g, *node.inputs, axis=axis, index=k)
                for k in range(len(node.inputs))]
    split = unknown[0] if unknown else len(sizes)
    bounds: list[tuple[int | None, int | None]] = []
    start = 0
    for d in sizes[:split]:
        bounds.append((start, start + d))
        start += d
    if unknown:
        after = sum(sizes[split + 1:])
        bounds.append((start, -after if after else None))
        for d in sizes[split + 1:]:
            if d == 0:  # (-0 would read as "from the start")
                bounds.append((0, 0))
                continue
            bounds.append((-after, -after + d if -after + d else None))
            after -= d
    out: list[Node | None] = []
    for (lo, hi) in bounds:
        slices = tuple((lo, hi, 1) if a == axis else (None, None, None) for a in range(g.ndim))
        out.append(make("slice", g, slices=slices))
    return out


def _concat_part_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    g, parts = ins[0], ins[1:]
    axis, index = attrs["axis"], attrs["index"]
    if not 0 <= index < len(parts) or any(p.ndim != g.ndim for p in parts) \
            or not 0 <= axis < g.ndim:
        raise ShapeError("concat_part: the parts must have the cotangent's rank, and the "
                         "axis and index be in range")
    shape = list(g.shape)
    shape[axis] = parts[index].shape[axis]
    return TensorType(tuple(shape), g.dtype)


def _concat_part_impl(arrs, attrs):
    g, parts = arrs[0], arrs[1:]
    axis, index = attrs["axis"], attrs["index"]
    start = sum(p.shape[axis] for p in parts[:index])
    where = [slice(None)] * g.ndim
    where[axis] = slice(start, start + parts[index].shape[axis])
    return g[tuple(where)]


def _concat_part_vjp(node: Node, h: Node) -> list[Node | None]:
    """concat_part's cotangent goes where the part came from: zeros around it."""
    parts, index = node.inputs[1:], node.attrs["index"]
    pieces = [h if k == index else zeros_like(p) for k, p in enumerate(parts)]
    return [make("concatenate", *pieces, axis=node.attrs["axis"])] + [None] * len(parts)


register(OpDef(
    name="concat_part", vjp=_concat_part_vjp, arity=None, infer=_concat_part_infer,
    shape_only_inputs=slice(1, None),  # every part (however many), not the cotangent
    impl=_concat_part_impl,
    doc="the piece of concatenate(parts, axis)'s cotangent g that part `index` made: the "
        "gradient of a concatenate whose parts have run-time sizes (inputs: g, *parts, "
        "read for their shapes only)",
))


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


def _size_of_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    normalize_axes(attrs["axes"], ins[0].ndim)
    return TensorType((), as_dtype(attrs.get("dtype", int64)))


def _size_of_impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    shape = arrs[0].shape
    return np.asarray(int(np.prod([shape[a] for a in attrs["axes"]])), dtype=attrs["dtype"])


register(OpDef(
    name="size_of", arity=1, differentiable=False, shape_only_inputs=(0,),
    doc="the number of elements of x along axes (a run-time scalar)",
    infer=_size_of_infer, impl=_size_of_impl,
))
