"""gc.jacobian: the full Jacobian, reverse mode batched over one-hot cotangents."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc.autodiff import vjp_nodes
from graphc.errors import GradientError
from graphc.frontends.autodiff import _nodes, _wrap
from graphc.frontends.batching import batch_nodes
from graphc.frontends.tensor import Tensor
from graphc.node import Node
from graphc.sizes import all_static
from graphc.ops import make
from graphc.ops.leaves import constant_node, placeholder_node, scalar_constant


def _shaped(rows: Node, y: Node, x: Node) -> Node:
    """(y.size, *x.shape) to y.shape + x.shape."""
    shape = y.shape + x.shape
    if rows.shape == shape:
        return rows
    return make("reshape", rows, shape=shape)


def jacobian(y: Tensor, x: Any) -> Any:
    """d y / d x, shaped y.shape + x.shape, as a graph (like gc.grad); x may be a list of
    tensors (then a list of Jacobians).

    Reverse mode over the rows of the identity: the vjp graph of y is built once for a
    symbolic cotangent and batched over the y.size one-hot cotangents (the rules of gc.vmap),
    so the graph does not grow with y.size, except through primitives without a batching
    rule, which are unrolled. y needs a static shape.

    >>> x = gc.placeholder((3,), "float64")
    >>> J = gc.jacobian(gc.tanh(x) * x.sum(), x)   # shape (3, 3)
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"jacobian: y must be a Tensor, got {type(y).__name__}")
    xs, single = _nodes(x, "x")
    out = y.node
    if out.dtype.kind != "f":
        raise GradientError(f"jacobian: y must be a float tensor, got {out.dtype}")
    if not all_static(out.shape):
        raise GradientError(f"jacobian: y needs a static shape, got {out.type} (its size is "
                            "the number of rows)")
    rows = math.prod(out.shape)
    if rows == 0 or any(0 in w.shape for w in xs):
        results = []
        for w in xs:
            results.append(make("broadcast_to", scalar_constant(0, w.dtype),
                                shape=out.shape + w.shape))
        return _wrap(results, single)
    u = placeholder_node(out.shape, out.dtype, "jacobian_cotangent")
    pullbacks = vjp_nodes([out], [u], xs)
    eye = np.eye(rows, dtype=out.dtype).reshape((rows,) + out.shape)
    batched = batch_nodes(pullbacks, {u: constant_node(eye)}, rows)
    return _wrap([_shaped(b, out, w) for b, w in zip(batched, xs)], single)
