"""numpy's shape functions over Tensors: flip, split, tile, repeat, pad, dot, outer, einsum
(each a decomposition into slices, broadcasts, reshapes, pads, gathers and matmuls)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graphc.node import Node
from graphc.ops import make
from graphc.ops.leaves import constant_node, scalar_constant
from graphc.frontends.convert import operands, to_node
from graphc.frontends.functions import _axes, _shape_error, matmul
from graphc.frontends.tensor import Tensor


def _slice(x: Node, axis: int, start: int | None, stop: int | None, step: int | None) -> Node:
    s = tuple((start, stop, step) if i == axis else (None, None, None) for i in range(x.ndim))
    return make("slice", x, slices=s)


def _static(op: str, node: Node, axes: Sequence[int] | None = None) -> None:
    axes = range(node.ndim) if axes is None else axes
    for a in axes:
        if not isinstance(node.shape[a], int):
            raise _shape_error(op, f"axis {a} needs a size known when building the graph", node)


def flip(x: Any, axis: Any = None) -> Tensor:
    """numpy.flip: reverse the order of elements along `axis` (None: every axis)."""
    node = to_node(x, "flip operand")
    axes = _axes("flip", axis, node)
    s = tuple((None, None, -1) if i in axes else (None, None, None) for i in range(node.ndim))
    return Tensor(make("slice", node, slices=s) if axes else node)


def split(x: Any, indices_or_sections: Any, axis: int = 0) -> list[Tensor]:
    """numpy.split: N equal parts (N must divide the axis), or the parts between the given
    indices."""
    node = to_node(x, "split operand")
    (ax,) = _axes("split", axis, node)
    _static("split", node, (ax,))
    n = node.shape[ax]
    if isinstance(indices_or_sections, (int, np.integer)) and not isinstance(
            indices_or_sections, bool):
        sections = int(indices_or_sections)
        if sections <= 0:
            raise ValueError(f"split: the number of sections must be > 0, got {sections}")
        if n % sections:
            raise ValueError(f"split: array split does not result in an equal division "
                             f"({n} into {sections} sections)")
        bounds = [n // sections * i for i in range(sections + 1)]
    else:
        try:
            cuts = [int(i) for i in indices_or_sections]
        except (TypeError, ValueError):
            raise TypeError("split: indices_or_sections must be an int or a sequence of ints, "
                            f"got {indices_or_sections!r}") from None
        bounds = [0, *cuts, n]
    return [Tensor(_slice(node, ax, a, b, 1)) for a, b in zip(bounds[:-1], bounds[1:])]


def tile(x: Any, reps: Any) -> Tensor:
    """numpy.tile: x repeated reps[i] times along axis i (x or reps padded with leading 1s)."""
    node = to_node(x, "tile operand")
    reps_t = (int(reps),) if isinstance(reps, (int, np.integer)) else tuple(int(r) for r in reps)
    if any(r < 0 for r in reps_t):
        raise ValueError(f"tile: reps must be >= 0, got {reps}")
    nd = max(node.ndim, len(reps_t))
    reps_t = (1,) * (nd - len(reps_t)) + reps_t
    if node.ndim < nd:
        node = make("expand_dims", node, axes=tuple(range(nd - node.ndim)))
    _static("tile", node)
    shape = node.shape
    # (1, d0, 1, d1, ...) broadcast to (r0, d0, r1, d1, ...), then merged pairwise
    inter = make("reshape", node, shape=tuple(v for d in shape for v in (1, d)))
    wide = make("broadcast_to", inter, shape=tuple(v for r, d in zip(reps_t, shape)
                                                   for v in (r, d)))
    return Tensor(make("reshape", wide, shape=tuple(r * d for r, d in zip(reps_t, shape))))


def repeat(x: Any, repeats: Any, axis: int | None = None) -> Tensor:
    """numpy.repeat: each element repeated `repeats` times (an int, or one count per element
    along the axis) along `axis` (None: of the flattened tensor)."""
    node = to_node(x, "repeat operand")
    if axis is None:
        node, axis = make("reshape", node, shape=(-1,)), 0
    (ax,) = _axes("repeat", axis, node)
    counts = np.asarray(repeats)
    if counts.dtype.kind not in "iu" or counts.ndim > 1 or np.any(counts < 0):
        raise ValueError(f"repeat: repeats must be an int >= 0 or a 1-D sequence of them, "
                         f"got {repeats!r}")
    if counts.ndim == 0:
        r = int(counts)
        _static("repeat", node)
        shape = node.shape
        inter = make("expand_dims", node, axes=(ax + 1,))
        wide = make("broadcast_to", inter, shape=shape[:ax + 1] + (r,) + shape[ax + 1:])
        return Tensor(make("reshape", wide, shape=shape[:ax] + (shape[ax] * r,)
                           + shape[ax + 1:]))
    _static("repeat", node, (ax,))
    if counts.size != node.shape[ax]:
        raise ValueError(f"repeat: {counts.size} repeats for axis {ax} of size "
                         f"{node.shape[ax]}")
    index = constant_node(np.repeat(np.arange(node.shape[ax], dtype=np.int64), counts))
    return Tensor(make("take", node, index, axis=ax))


def _pairs(value: Any, ndim: int, what: str, integer: bool) -> np.ndarray:
    """numpy.pad's forms (x; (x,); (before, after); one pair per axis) as an (ndim, 2) array."""
    array = np.asarray(value)
    if integer and (array.dtype.kind not in "iu" or np.any(array < 0)):
        raise ValueError(f"pad: {what} must be ints >= 0, got {value!r}")
    if array.dtype.kind not in "iufb":
        raise TypeError(f"pad: {what} must be numbers, got {value!r}")
    try:
        return np.broadcast_to(array, (ndim, 2))
    except ValueError:
        raise ValueError(f"pad: {what} {value!r} does not fit {ndim} axes (numpy's forms: "
                         "n, (n,), (before, after) or one pair per axis)") from None


def pad(x: Any, pad_width: Any, mode: str = "constant", constant_values: Any = 0) -> Tensor:
    """numpy.pad with mode "constant": pad_width in numpy's forms, constant_values a number or
    (before, after) pairs in the same forms (each axis in turn, so later axes fill corners)."""
    if mode != "constant":
        raise ValueError(f"pad: mode {mode!r} is not supported (only 'constant')")
    node = to_node(x, "pad operand")
    widths = _pairs(pad_width, node.ndim, "pad_width", integer=True)
    values = _pairs(constant_values, node.ndim, "constant_values", integer=False)
    if not np.any(values):
        pads = tuple((int(b), int(a)) for b, a in widths)
        return Tensor(make("pad", node, pads=pads) if any(map(any, pads)) else node)
    out = node
    for k, ((b, a), (vb, va)) in enumerate(zip(widths, values)):
        if not b and not a:
            continue
        _static("pad", out, (k,))
        pads = tuple((int(b), int(a)) if i == k else (0, 0) for i in range(out.ndim))
        padded = make("pad", out, pads=pads)
        n = padded.shape[k]
        assert isinstance(n, int)  # (checked by _static)
        # which positions along axis k are before / after the data
        place = np.zeros(n, np.int8)
        place[:b], place[n - a:] = 1, 2
        shape = tuple(n if i == k else 1 for i in range(out.ndim))
        for where_code, v in ((1, vb), (2, va)):
            mask = constant_node((place == where_code).reshape(shape))
            padded = make("where", mask, scalar_constant(v, out.dtype), padded)
        out = padded
    return Tensor(out)


def outer(a: Any, b: Any) -> Tensor:
    """numpy.outer: out[i, j] = a.ravel()[i] * b.ravel()[j]."""
    x, y = operands([a, b], "outer")
    x = make("reshape", x, shape=(-1, 1))
    y = make("reshape", y, shape=(1, -1))
    from graphc.frontends.functions import multiply
    return multiply(Tensor(x), Tensor(y))


def dot(a: Any, b: Any) -> Tensor:
    """numpy.dot: a product with a scalar, matmul for 1-D and 2-D operands, and for N-D a sum
    over the last axis of a and the second-to-last of b."""
    x, y = operands([a, b], "dot")
    if x.ndim == 0 or y.ndim == 0:
        from graphc.frontends.functions import multiply
        return multiply(Tensor(x), Tensor(y))
    if y.ndim <= 2:
        return matmul(Tensor(x), Tensor(y))
    # a (..., K) against b (..., K, M): b's K axis to the front, every other axis flattened
    _static("dot", x)
    _static("dot", y)
    k = x.shape[-1]
    if y.shape[-2] != k:
        raise _shape_error("dot", f"shapes {x.shape} and {y.shape} are not aligned: "
                           f"{k} (dim {x.ndim - 1}) != {y.shape[-2]} (dim {y.ndim - 2})", x, y)
    rest = y.shape[:-2] + y.shape[-1:]
    perm = (y.ndim - 2,) + tuple(i for i in range(y.ndim) if i != y.ndim - 2)
    y2 = make("reshape", make("transpose", y, perm=perm), shape=(k, -1))
    x2 = make("reshape", x, shape=(-1, k))
    out = matmul(Tensor(x2), Tensor(y2)).node
    return Tensor(make("reshape", out, shape=x.shape[:-1] + rest))


from graphc.frontends.numpy_einsum import einsum  # noqa: E402  (kept in its own file)

__all__ = ["flip", "split", "tile", "repeat", "pad", "outer", "dot", "einsum"]
