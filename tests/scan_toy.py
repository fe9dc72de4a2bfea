"""A test-only scan primitive in the pinned node format, until gc.scan lands (no vjp)."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from graphc.graph import Graph
from graphc.node import Node, TensorType
from graphc.ops import OPS
from graphc.ops.leaves import placeholder_node
from graphc.ops.registry import OpDef, make, register
from graphc.region import Region
from graphc.frontends.tensor import Tensor


def _infer(inputs: Sequence[Node], attrs: Mapping[str, Any]) -> TensorType:
    body: Region = attrs["body"]
    out = attrs["output"]
    t = body.outputs[out].type
    if out < attrs["num_carry"]:
        return t
    return TensorType((attrs["length"],) + tuple(t.shape), t.dtype)


def _impl(arrays: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> np.ndarray:
    from graphc.backends.numpy.interpreter import NumpyExecutable
    body: Region = attrs["body"]
    c, k = attrs["num_carry"], attrs["num_xs"]
    run = NumpyExecutable(Graph(body.inputs, body.outputs)).run
    carry = list(arrays[:c])
    xs, consts = arrays[c:c + k], list(arrays[c + k:])
    n = attrs["length"]
    ys: list[list[np.ndarray]] = []
    for i in range(n):
        t = n - 1 - i if attrs["reverse"] else i
        outs = run(carry + [x[t] for x in xs] + consts)
        carry, y = list(outs[:c]), outs[c:]
        ys.append(y)
    out = attrs["output"]
    if out < c:
        return carry[out]
    if attrs["reverse"]:
        ys = ys[::-1]
    j = out - c
    want = body.outputs[out].type
    if not ys:
        return np.zeros((0,) + tuple(want.shape), want.dtype)
    return np.stack([y[j] for y in ys])


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """The toy primitive exists inside the block only (when graphc has no scan of its own)."""
    if "scan" in OPS:
        yield
        return
    register(OpDef(name="scan", arity=None, infer=_infer, impl=_impl,
                   doc="a toy scan (tests)"))
    try:
        yield
    finally:
        OPS.pop("scan")


def scan(fn: Callable, init: Sequence[Tensor], xs: Sequence[Tensor], consts: Sequence[Tensor],
         length: int, reverse: bool = False) -> tuple[list[Tensor], list[Tensor]]:
    """fn(carries, x_slices, consts) -> (new carries, ys), all lists of Tensors."""
    cs = [placeholder_node(t.node.shape, t.dtype, f"c{i}") for i, t in enumerate(init)]
    xp = [placeholder_node(t.node.shape[1:], t.dtype, f"x{i}") for i, t in enumerate(xs)]
    kp = [placeholder_node(t.node.shape, t.dtype, f"k{i}") for i, t in enumerate(consts)]
    new, ys = fn([Tensor(n) for n in cs], [Tensor(n) for n in xp], [Tensor(n) for n in kp])
    body = Region(tuple(cs + xp + kp), tuple(t.node for t in list(new) + list(ys)))
    inputs = [t.node for t in list(init) + list(xs) + list(consts)]
    outs = [Tensor(make("scan", *inputs, body=body, num_carry=len(init), num_xs=len(xs),
                        reverse=reverse, length=length, output=i))
            for i in range(len(body.outputs))]
    return outs[:len(init)], outs[len(init):]
