"""Small graph builders that derivative rules share: zeros, sums back to a shape, reshapes."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from graphc.node import Node
from graphc.ops.leaves import scalar_constant
from graphc.ops.registry import make


def is_constant(node: Node, value: float) -> bool:
    if node.op != "constant":
        return False
    array = node.attrs["value"].array
    return bool(array.size) and bool(np.all(array == value))


def zeros_like(node: Node) -> Node:
    zero = scalar_constant(0, node.dtype)
    return make("broadcast_to", zero, shape=node.shape) if node.shape else zero


def add_all(terms: Sequence[Node]) -> Node:
    out = terms[0]
    for t in terms[1:]:
        out = make("add", out, t)
    return out


def times(g: Node, factor: Node) -> Node:
    """g * factor, skipping the multiplication by a constant 1 (and -1 becomes a negation).
    A factor that is an indicator, where(c, 1, 0) (relu's derivative), selects instead:
    where(c, g, 0), so a cotangent where the derivative is 0 does not count, inf or nan
    included (PyTorch's threshold_backward)."""
    if factor.op == "where" and is_constant(factor.inputs[1], 1) and \
            is_constant(factor.inputs[2], 0) and g.dtype == factor.dtype:
        return make("where", factor.inputs[0], g, factor.inputs[2])
    if is_constant(factor, 1):
        return g
    if is_constant(g, 1) and g.shape == factor.shape and g.dtype == factor.dtype:
        return factor
    if is_constant(factor, -1):
        return make("neg", g)
    return make("mul", g, factor)


def unbroadcast(g: Node, target: Node) -> Node:
    """Sums g over the axes along which target was broadcast, giving target's shape."""
    lead = g.ndim - target.ndim
    axes = list(range(lead))
    for i, d in enumerate(target.shape):
        if d == 1 and g.shape[lead + i] != 1:
            axes.append(lead + i)
    if axes:
        g = make("sum", g, axes=tuple(axes), keepdims=True)
    if lead:
        g = make("squeeze", g, axes=tuple(range(lead)))
    if g.dtype != target.dtype:
        g = make("cast", g, dtype=target.dtype)
    if g.shape != target.shape:  # a size that met a symbol: equal, by a call-time check
        g = make("reshape", g, shape=target.shape)
    return g


def reshape_to(g: Node, target: Node) -> Node:
    """g reshaped to target's shape (sizes known at call time are symbols in the shape)."""
    if g.shape == target.shape:
        return g
    return make("reshape", g, shape=target.shape)


def swap_last(x: Node) -> Node:
    perm = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return make("transpose", x, perm=perm)


def keep_axes(g: Node, axes: tuple[int, ...], keepdims: bool) -> Node:
    """A reduction's output with its reduced axes restored as size 1."""
    return g if keepdims or not axes else make("expand_dims", g, axes=axes)
