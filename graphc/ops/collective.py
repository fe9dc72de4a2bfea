"""all_reduce: a collective primitive that sums (or averages) a tensor across processes."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from graphc.errors import DTypeError, ShapeError
from graphc.node import Node, TensorType
from graphc.ops.registry import OpDef, make, register

REDUCTIONS = ("sum", "mean")
# MPI has a datatype for each; bool and the narrow ints have no use in a gradient step.
REDUCIBLE = ("float32", "float64", "int32", "int64")


def _infer(ins: Sequence[Node], attrs: Mapping[str, Any]) -> TensorType:
    (x,) = ins
    op, ranks = attrs["reduction"], attrs["ranks"]
    if op not in REDUCTIONS:
        raise ShapeError(f"reduction must be one of {REDUCTIONS}, got {op!r}")
    if not isinstance(ranks, int) or ranks < 1:
        raise ShapeError(f"ranks must be a positive int, got {ranks!r}")
    if x.dtype.name not in REDUCIBLE:
        raise DTypeError(f"reduces {', '.join(REDUCIBLE)} tensors, got {x.dtype}")
    if op == "mean" and x.dtype.kind != "f":
        raise DTypeError(f"op='mean' needs a float tensor, got {x.dtype} (use op='sum')")
    return TensorType(x.shape, x.dtype)


def _impl(arrays: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> np.ndarray:
    from graphc.distributed.comm import all_reduce_array
    return all_reduce_array(arrays[0], attrs["reduction"], attrs["ranks"])


def _vjp(node: Node, g: Node) -> list[Node | None]:
    # Every process's loss depends on every process's input: the cotangents are reduced
    # the same way (JAX's psum transposes to psum).
    return [make("all_reduce", g, reduction=node.attrs["reduction"], ranks=node.attrs["ranks"])]


register(OpDef(name="all_reduce", arity=1, infer=_infer, impl=_impl, vjp=_vjp,
               collective=True,
               doc="the sum (op='sum') or mean (op='mean') of a tensor over the `ranks` "
                   "processes of the job"))
