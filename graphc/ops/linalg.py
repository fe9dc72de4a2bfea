"""Matrix multiplication (batched, numpy broadcasting over leading axes)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from graphc.errors import DTypeError, ShapeError
from graphc.node import Node, TensorType
from graphc.ops.grad_helpers import swap_last, unbroadcast
from graphc.ops.registry import OpDef, make, register
from graphc.ops.shapes import broadcast_shapes, same_size


def _matmul_infer(ins: Sequence[Node], attrs: Mapping[str, Any]) -> TensorType:
    a, b = ins
    if a.dtype != b.dtype:
        raise DTypeError("inputs must share one dtype")
    if a.dtype.kind not in "if":
        raise DTypeError(f"needs int or float inputs, got {a.dtype}")
    if a.ndim < 2 or b.ndim < 2:
        raise ShapeError("the primitive needs at least 2 dimensions on each side")
    k1, k2 = a.shape[-1], b.shape[-2]
    try:
        same_size(k1, k2)
    except ValueError:
        raise ShapeError(f"inner sizes differ: {k1} and {k2}") from None
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return TensorType(batch + (a.shape[-2], b.shape[-1]), a.dtype)


def _matmul_vjp(node: Node, g: Node) -> list[Node | None]:
    a, b = node.inputs
    return [unbroadcast(make("matmul", g, swap_last(b)), a),
            unbroadcast(make("matmul", swap_last(a), g), b)]


register(OpDef(name="matmul", arity=2, infer=_matmul_infer, vjp=_matmul_vjp,
               impl=lambda arrs, attrs: np.matmul(*arrs), doc="matrix product"))
