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
    if all(d is not None for d in node.shape):
        return make("broadcast_to", zero, shape=node.shape) if node.shape else zero
    return make("broadcast_like", zero, node)


def add_all(terms: Sequence[Node]) -> Node:
    out = terms[0]
    for t in terms[1:]:
        out = make("add", out, t)
    return out


def times(g: Node, factor: Node) -> Node:
    """g * factor, skipping the multiplication by a constant 1 (and -1 becomes a negation)."""
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
    if any(d is None and g.shape[lead + i] != 1 for i, d in enumerate(target.shape)):
        # A size known only at call time may be 1 and broadcast (numpy semantics): the
        # sum is decided at run time (and folded away once shapes are specialised).
        g = make("sum_to_like", g, target)
        return make("cast", g, dtype=target.dtype) if g.dtype != target.dtype else g
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
    return g


def reshape_to(g: Node, target: Node) -> Node:
    """g reshaped to target's shape (by its run-time shape when two or more sizes are unknown)."""
    if g.shape == target.shape and None not in target.shape:
        return g
    unknown = sum(d is None for d in target.shape)
    # (-1 for the unknown size is ambiguous when a known size is 0: numpy refuses it)
    if unknown <= 1 and 0 not in target.shape:
        out = make("reshape", g, shape=tuple(-1 if d is None else d for d in target.shape))
        if out.shape == target.shape:  # (not when g's size pins down target's None size:
            return out                 # the gradient keeps target's static shape)
    return make("reshape_like", g, target)


def swap_last(x: Node) -> Node:
    perm = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return make("transpose", x, perm=perm)


def keep_axes(g: Node, axes: tuple[int, ...], keepdims: bool) -> Node:
    """A reduction's output with its reduced axes restored as size 1."""
    return g if keepdims or not axes else make("expand_dims", g, axes=axes)
