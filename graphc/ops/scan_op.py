"""The scan primitive: a loop over axis 0 of its sequences, its body a region."""
from __future__ import annotations

import weakref
from typing import Any, Mapping, Sequence

import numpy as np

from graphc import sizes
from graphc.errors import DTypeError, ShapeError
from graphc.node import Dim, Node, TensorType, toposort
from graphc.ops.registry import OpDef, make, register
from graphc.ops.shapes import fmt_shape
from graphc.region import Region

# The node format (docs/architecture.md, "Regions"): inputs (*init, *xs, *consts); attrs
# body (inputs: C carries, K per-step slices, M consts; outputs: C new carries, Y per-step
# outputs), num_carry C, num_xs K, reverse, length, checkpoint, output. A scan with several
# results is several sibling nodes equal in all but "output": one loop.
SCAN = "scan"


def scan_counts(attrs: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(C carries, K sequences, M consts, Y per-step outputs) of a scan."""
    body: Region = attrs["body"]
    c, k = attrs["num_carry"], attrs["num_xs"]
    return c, k, len(body.inputs) - c - k, len(body.outputs) - c


def _fits(what: str, got: TensorType, want: TensorType) -> None:
    """`got` must be `want` (sizes known only at call time are checked then)."""
    if got.dtype != want.dtype:
        raise DTypeError(f"{what} has dtype {got.dtype}, expected {want.dtype}")
    if len(got.shape) != len(want.shape) or any(
            isinstance(a, int) and isinstance(b, int) and a != b
            for a, b in zip(got.shape, want.shape)):
        raise ShapeError(f"{what} has shape {fmt_shape(got.shape)}, expected "
                         f"{fmt_shape(want.shape)}")
    for a, b in zip(got.shape, want.shape):
        if a != b:
            sizes.assume_equal(a, b)


def _infer(inputs: Sequence[Node], attrs: Mapping[str, Any]) -> TensorType:
    body = attrs.get("body")
    if not isinstance(body, Region):
        raise TypeError("scan: attribute 'body' must be a Region")
    c, k, m, y = scan_counts(attrs)
    if c < 0 or k < 0 or m < 0 or y < 0 or len(inputs) != c + k + m:
        raise ShapeError(f"the body takes {len(body.inputs)} inputs and gives "
                         f"{len(body.outputs)} outputs, which do not fit {c} carries, {k} "
                         f"sequences and {len(inputs)} inputs")
    length: Dim = attrs["length"]
    if isinstance(length, int) and length < 0:
        raise ShapeError(f"length must be >= 0, got {length}")
    for i in range(c):
        _fits(f"init {i}", inputs[i].type, body.inputs[i].type)
        _fits(f"carry {i} returned by the body", body.outputs[i].type, body.inputs[i].type)
    for j in range(k):
        x, ph = inputs[c + j], body.inputs[c + j]
        if x.ndim == 0:
            raise ShapeError(f"sequence {j} is a scalar: sequences are scanned along axis 0")
        n = x.shape[0]
        if isinstance(n, int) and isinstance(length, int) and n != length:
            raise ShapeError(f"sequence {j} has length {n}, the scan {length}")
        if n != length:
            sizes.assume_equal(n, length)
        _fits(f"a step of sequence {j}", TensorType(x.shape[1:], x.dtype), ph.type)
    for j in range(m):
        _fits(f"captured value {j}", inputs[c + k + j].type, body.inputs[c + k + j].type)
    out = attrs["output"]
    if not isinstance(out, int) or not 0 <= out < c + y:
        raise ShapeError(f"output {out!r} is not one of the scan's {c + y} results")
    if out < c:
        return inputs[out].type
    y_type = body.outputs[out].type
    return TensorType((length,) + y_type.shape, y_type.dtype)


_executables: "weakref.WeakKeyDictionary[Region, Any]" = weakref.WeakKeyDictionary()


def _body_executable(body: Region) -> Any:
    from graphc.backends.numpy.interpreter import NumpyExecutable
    from graphc.graph import Graph
    exe = _executables.get(body)
    if exe is None:
        exe = _executables[body] = NumpyExecutable(Graph(body.inputs, body.outputs))
    return exe


def run_scan(arrays: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
    """Every result of a scan (final carries, then stacked per-step outputs), by running the
    body with the numpy interpreter once per step."""
    from graphc.backends.numpy.interpreter import enclosing_sizes
    from graphc.specialize import bind_shapes
    body: Region = attrs["body"]
    c, k, _, _ = scan_counts(attrs)
    carries = list(arrays[:c])
    xs, consts = arrays[c:c + k], list(arrays[c + k:])
    length = int(attrs["length"])
    for j, x in enumerate(xs):
        if x.shape[0] != length:
            raise ValueError(f"sequence {j} has length {x.shape[0]} at run time, the scan "
                             f"{length}")
    step_shapes = [a.shape for a in carries] + [x.shape[1:] for x in xs] + \
        [a.shape for a in consts]
    exe = _body_executable(body)
    stacked: list[np.ndarray] = []
    for t in (range(length - 1, -1, -1) if attrs["reverse"] else range(length)):
        outs = exe.run(carries + [x[t] for x in xs] + consts)
        carries = outs[:c]
        if not stacked:
            stacked = [np.empty((length,) + v.shape, o.dtype)
                       for v, o in zip(outs[c:], body.outputs[c:])]
        for s, v in zip(stacked, outs[c:]):
            s[t] = v
    if length == 0:  # no step ran: the outputs' shapes from the body's types
        bound = {**enclosing_sizes(), **bind_shapes(body.inputs, step_shapes)}
        stacked = [np.empty((0,) + tuple(sizes.evaluate(d, bound) for d in o.shape), o.dtype)
                   for o in body.outputs[c:]]
    return carries + stacked


def _impl(arrays: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> np.ndarray:
    return run_scan(arrays, attrs)[attrs["output"]]


def make_scan(init: Sequence[Node], xs: Sequence[Node], consts: Sequence[Node], body: Region,
              length: Dim, reverse: bool, checkpoint: bool = False) -> list[Node]:
    """Every result of one scan (C final carries, then Y stacked outputs), sibling nodes.
    Sequences and consts the body does not read are left out."""
    c, k = len(init), len(xs)
    used = set(toposort(body.outputs))
    keep = [i for i, ph in enumerate(body.inputs) if i < c or ph in used]
    ins = list(init) + list(xs) + list(consts)
    body = Region(tuple(body.inputs[i] for i in keep), body.outputs)
    inputs = [ins[i] for i in keep]
    num_xs = sum(1 for i in keep if c <= i < c + k)
    attrs = dict(body=body, num_carry=c, num_xs=num_xs, reverse=bool(reverse), length=length,
                 checkpoint=bool(checkpoint))
    return [make(SCAN, *inputs, output=i, **attrs) for i in range(len(body.outputs))]


def _group_vjp(siblings: Sequence[Node], cotangents: Sequence[Node | None],
               wanted: Sequence[bool]) -> Sequence[Node | None]:
    """a scan in the other direction over the residuals the forward saved"""
    from graphc.ops.scan_grad import scan_vjp  # it builds scans: after this module
    return scan_vjp(siblings, cotangents, wanted)


def _impl_all(arrays: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> list[np.ndarray]:
    return run_scan(arrays, attrs)


register(OpDef(
    name=SCAN, infer=_infer, impl=_impl, impl_all=_impl_all, group_vjp=_group_vjp,
    doc="a loop: the body maps (carries, a step of each sequence, captured values) to new "
        "carries and per-step outputs; results are the final carries and the stacked outputs",
))
