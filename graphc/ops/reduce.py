"""Reductions over axes: sum, max, min, argmax, and the fused stable log_softmax."""
from __future__ import annotations

from typing import Any, Mapping, Sequence, cast

import numpy as np

from graphc.dtypes import bool_, int32, int64
from graphc.errors import DTypeError, ShapeError
from graphc.node import Node, TensorType, static_shape
from graphc.sizes import all_static
from graphc.ops.grad_helpers import keep_axes
from graphc.ops.leaves import constant_node, scalar_constant
from graphc.ops.registry import OpDef, make, register
from graphc.ops.shapes import normalize_axes

Attrs = Mapping[str, Any]


def reduced_shape(shape: tuple, axes: tuple[int, ...], keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce_infer(kind: str):
    def infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
        (x,) = ins
        axes = normalize_axes(attrs["axes"], x.ndim)
        if axes != tuple(attrs["axes"]):
            raise ShapeError(f"axes {attrs['axes']} must be sorted and non-negative")
        dtype = x.dtype
        if kind == "sum" and dtype in (bool_, int32):
            dtype = int64  # numpy sums small ints and bools in the platform int
        if kind != "sum" and dtype == bool_:
            raise DTypeError("needs int or float inputs, got bool")
        for a in axes:
            if kind != "sum" and x.shape[a] == 0:
                raise ShapeError(f"cannot take the {kind} of an empty axis {a}")
        return TensorType(reduced_shape(x.shape, axes, attrs["keepdims"]), dtype)

    return infer


def _reduce_impl(fn):
    def impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
        (x,) = arrs
        for a in attrs["axes"]:
            if x.shape[a] == 0 and fn is not np.sum:
                raise ValueError(f"cannot reduce an empty axis {a}")
        return np.asarray(fn(x, axis=attrs["axes"], keepdims=attrs["keepdims"]))

    return impl


def _sum_vjp(node: Node, g: Node) -> list[Node | None]:
    x = node.inputs[0]
    kept = keep_axes(g, node.attrs["axes"], node.attrs["keepdims"])
    if kept.dtype != x.dtype:
        kept = make("cast", kept, dtype=x.dtype)
    return [make("broadcast_to", kept, shape=x.shape)]


def _extremum_vjp(node: Node, g: Node) -> list[Node | None]:
    """Splits the cotangent evenly among the entries that attain the max (or min)."""
    x = node.inputs[0]
    axes, keepdims = node.attrs["axes"], node.attrs["keepdims"]
    hit = make("equal", x, keep_axes(node, axes, keepdims))
    ties = make("sum", make("cast", hit, dtype=x.dtype), axes=axes, keepdims=True)
    share = make("div", keep_axes(g, axes, keepdims), ties)
    return [make("where", hit, share, scalar_constant(0, x.dtype))]


def _first_extremum_vjp(node: Node, g: Node) -> list[Node | None]:
    """The whole cotangent to the first entry (row-major over the reduced axes) that attains
    the maximum, or to the first nan: PyTorch's and JAX's rule for max pooling. Only the
    backward pass looks for that entry; the forward pass is a plain max."""
    x = node.inputs[0]
    axes, keepdims = node.attrs["axes"], node.attrs["keepdims"]
    sizes = [d if a in axes else 1 for a, d in enumerate(x.shape)]
    if not all_static(sizes):
        raise ValueError(f"max_first: the reduced axes need sizes known when the graph is "
                         f"built, got {x.type}")
    known = static_shape(tuple(sizes))
    count = int(np.prod(known))
    position = constant_node(np.arange(count, dtype=np.int32).reshape(known))
    attains = make("where", make("equal", x, keep_axes(node, axes, keepdims)),
                   scalar_constant(True, bool_), make("not_equal", x, x))
    first = make("min", make("where", attains, position, scalar_constant(count, int32)),
                 axes=axes, keepdims=True)
    return [make("where", make("equal", position, first), keep_axes(g, axes, keepdims),
                 scalar_constant(0, x.dtype))]


register(OpDef(name="sum", arity=1, doc="sum over axes", infer=_reduce_infer("sum"),
               impl=_reduce_impl(np.sum), vjp=_sum_vjp, one_element_identity=True))
register(OpDef(name="max", arity=1, doc="maximum over axes", infer=_reduce_infer("max"),
               impl=_reduce_impl(np.max), vjp=_extremum_vjp, one_element_identity=True))
register(OpDef(name="max_first", arity=1, infer=_reduce_infer("max"),
               impl=_reduce_impl(np.max), vjp=_first_extremum_vjp, one_element_identity=True,
               doc="maximum over axes whose gradient goes to the first maximal entry"))
register(OpDef(name="min", arity=1, doc="minimum over axes", infer=_reduce_infer("min"),
               impl=_reduce_impl(np.min), vjp=_extremum_vjp, one_element_identity=True))


def _argmax_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    (x,) = ins
    if x.ndim == 0:
        raise ShapeError("needs at least one dimension")
    (axis,) = normalize_axes(attrs["axis"], x.ndim)
    if x.shape[axis] == 0:
        raise ShapeError(f"cannot take the argmax of an empty axis {axis}")
    return TensorType(reduced_shape(x.shape, (axis,), attrs["keepdims"]), int64)


def _argmax_impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    (x,) = arrs
    if x.shape[attrs["axis"]] == 0:
        raise ValueError(f"cannot take the argmax of an empty axis {attrs['axis']}")
    # a numpy scalar for a 0-d result (as np.sum gives): it has .shape and .dtype too
    return cast(np.ndarray,
                np.argmax(x, axis=attrs["axis"], keepdims=attrs["keepdims"]).astype(np.int64))


register(OpDef(name="argmax", arity=1, differentiable=False, infer=_argmax_infer,
               impl=_argmax_impl, doc="index of the largest entry along one axis"))


def _log_softmax_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    (x,) = ins
    if x.dtype.kind != "f":
        raise DTypeError(f"needs float inputs, got {x.dtype}")
    normalize_axes(attrs["axis"], x.ndim)
    return x.type


def _log_softmax_impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    (x,) = arrs
    axis = attrs["axis"]
    if x.size == 0:
        return x.copy()
    with np.errstate(all="ignore"):
        shifted = x - np.max(x, axis=axis, keepdims=True)
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _log_softmax_vjp(node: Node, g: Node) -> list[Node | None]:
    total = make("sum", g, axes=(node.attrs["axis"],), keepdims=True)
    return [make("sub", g, make("mul", make("exp", node), total))]


register(OpDef(name="log_softmax", arity=1, infer=_log_softmax_infer, impl=_log_softmax_impl,
               vjp=_log_softmax_vjp,
               doc="x - logsumexp(x, axis): stable, a fused primitive"))
