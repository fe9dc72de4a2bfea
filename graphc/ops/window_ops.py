"""Padding and sliding windows: the primitives convolution and pooling decompose into.
windows(x) is a strided view (free in the scheduler); its gradient, windows_grad, adds every
window back onto the input positions it came from (col2im)."""
from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import numpy as np

from graphc.errors import ShapeError
from graphc.node import Dim, Node, TensorType
from graphc.ops.registry import OpDef, make, register

Attrs = Mapping[str, Any]


def _pad_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    (x,), pads = ins, attrs["pads"]
    if len(pads) != x.ndim or any(b < 0 or a < 0 for b, a in pads):
        raise ShapeError(f"pads {pads} need one (before, after) pair >= 0 per axis")
    return TensorType(tuple(d + b + a for d, (b, a) in zip(x.shape, pads)), x.dtype)


def _pad_vjp(node: Node, g: Node) -> list[Node | None]:
    """the gradient of padding is the slice of the interior"""
    slices = tuple((b, -a if a else None, 1) for b, a in node.attrs["pads"])
    return [make("slice", g, slices=slices)]


register(OpDef(
    name="pad", arity=1, vjp=_pad_vjp, infer=_pad_infer, doc="zero padding on every axis",
    impl=lambda arrs, attrs: np.pad(arrs[0], attrs["pads"]),
))


def window_count(size: Dim, window: int, stride: int) -> Dim:
    return (size - window) // stride + 1


def _windows_shape(x: Node, attrs: Attrs) -> tuple:
    axes, sizes, strides = attrs["axes"], attrs["sizes"], attrs["strides"]
    if not (len(axes) == len(sizes) == len(strides)) or not axes:
        raise ShapeError("axes, sizes and strides must have one entry each per window axis")
    shape = list(x.shape)
    for a, k, s in zip(axes, sizes, strides):
        if not 0 <= a < x.ndim:
            raise ShapeError(f"window axis {a} is out of range for {x.ndim} dimensions")
        if k < 1 or s < 1:
            raise ShapeError(f"window size {k} and stride {s} must be >= 1")
        if isinstance(shape[a], int) and shape[a] < k:
            raise ShapeError(f"window {k} is larger than axis {a} of size {shape[a]}")
        shape[a] = window_count(shape[a], k, s)
    return tuple(shape) + tuple(sizes)


def _windows_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    return TensorType(_windows_shape(ins[0], attrs), ins[0].dtype)


def _windows_impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    (x,) = arrs
    view = np.lib.stride_tricks.sliding_window_view(x, attrs["sizes"], axis=attrs["axes"])
    index = [slice(None)] * view.ndim
    for a, s in zip(attrs["axes"], attrs["strides"]):
        index[a] = slice(None, None, s)
    return view[tuple(index)]


def _windows_vjp(node: Node, g: Node) -> list[Node | None]:
    """each window's cotangent is added back where the window was read (col2im)"""
    return [make("windows_grad", g, node.inputs[0], **dict(node.attrs))]


register(OpDef(
    name="windows", arity=1, vjp=_windows_vjp, infer=_windows_infer, impl=_windows_impl,
    doc="sliding windows along axes: x.shape with each window axis replaced by its window "
        "count, the window sizes appended",
))


def _windows_grad_infer(ins: Sequence[Node], attrs: Attrs) -> TensorType:
    g, ref = ins
    want = _windows_shape(ref, attrs)
    if g.ndim != len(want) or any(isinstance(a, int) and isinstance(b, int) and a != b
                                  for a, b in zip(g.shape, want)):
        raise ShapeError(f"cotangent {g.type} does not fit windows of {ref.type}")
    return TensorType(ref.shape, g.dtype)


def _windows_grad_impl(arrs: Sequence[np.ndarray], attrs: Attrs) -> np.ndarray:
    g, ref = arrs
    axes, sizes, strides = attrs["axes"], attrs["sizes"], attrs["strides"]
    out = np.zeros(ref.shape, g.dtype)
    nd = ref.ndim
    for offsets in itertools.product(*(range(k) for k in sizes)):
        target = [slice(None)] * nd
        for a, o, s in zip(axes, offsets, strides):
            count = g.shape[a]
            target[a] = slice(o, o + s * (count - 1) + 1, s) if count else slice(0, 0)
        out[tuple(target)] += g[(Ellipsis,) + offsets]
    return out


def _windows_grad_vjp(node: Node, g: Node) -> list[Node | None]:
    """the adjoint of col2im is reading the windows again"""
    return [make("windows", g, **dict(node.attrs)), None]


register(OpDef(
    name="windows_grad", arity=2, vjp=_windows_grad_vjp, shape_only_inputs=(1,),
    infer=_windows_grad_infer,
    impl=_windows_grad_impl, doc="sum of window cotangents onto the input shape (col2im)",
))
