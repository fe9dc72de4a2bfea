"""Sums of products rewritten so that what is the same along the summed axes multiplies the
sum once instead of every term, and a sum of two terms is split where one part sums to
zero (a tensor less its own mean) and the other then reads less than the whole did.

A gradient sums products of full tensors and per-channel values (BatchNorm's scale, its
1/std, a broadcast step). With those factored out,

    sum(dy * g * -((x - m) / s^2))  ->  -(sum(dy * (x - m)) * g / s^2)
    sum(dy * ((x - m) / s))         ->  sum(dy * (x - m)) / s

the two sums are one node (nodes are interned), and

    sum(dy * g / s + c * 2 * (x - m))  ->  sum(dy) * g / s + 0

is beta's gradient sum(dy) (a tensor less its own mean sums to zero: exactly, where
sum(x) - count * m would cancel to rounding noise as large as sum(x) allows) instead of
another pass over the tensor: BatchNorm's backward pass reads its inputs for two sums
instead of four. The rewrites build every sum they make in its final form, so one sweep of
the rules does all of them (each further sweep rebuilds the graph below). No rule asks
which other nodes exist: the optimized graph depends on its own nodes alone, not on what
else the process has built.

Floats only. Reassociating rounds differently, as any reordering of a float sum does; the
factors that leave the sum are exactly those constant along every summed axis (by numpy's
broadcasting, a size of 1 known when the graph is built), so the value is the same in exact
arithmetic."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from graphc.errors import ShapeError
from graphc.node import Node
from graphc.ops.leaves import scalar_constant
from graphc.ops.registry import make
from graphc.ops.shape_ops import size_value
from graphc.ops.shapes import known_size, size_product
from graphc.passes.patterns import Op, Var, constant_value
from graphc.passes.rewrite import Rule, rule

# Factors looked at in one product (a derivative's are a handful): past it, left alone.
MAX_FACTORS = 16
# How far a mean written as sum(x) * k may have k from 1/count (1/6 in float32).
MEAN_SCALE_TOLERANCE = 1e-6


@dataclass
class _Product:
    """A sum's body as sign * prod(inner) / prod(inner_den) * prod(outer) / prod(outer_den):
    `outer` factors are constant along every summed axis, `inner` ones are not (both in the
    order the body has them)."""

    sign: int = 1
    inner: list[Node] = field(default_factory=list)
    inner_den: list[Node] = field(default_factory=list)
    outer: list[Node] = field(default_factory=list)
    outer_den: list[Node] = field(default_factory=list)


def _constant_along(f: Node, ndim: int, axes: Sequence[int]) -> bool:
    """Whether `f`, broadcast against a tensor of `ndim` axes, is the same along `axes`."""
    lead = ndim - f.ndim
    return lead >= 0 and all(a < lead or f.shape[a - lead] == 1 for a in axes)


def _axes(node: Node) -> tuple[int, ...]:
    """A sum's axes, counted from the front."""
    ndim = node.inputs[0].ndim
    return tuple(sorted(a % ndim for a in node.attrs["axes"]))


def _count(node: Node, size: object) -> bool:
    """Whether a scalar node is the number `size` (a constant, or a call-time size)."""
    if node.op == "dim_size":
        return node.attrs["size"] == size
    value = constant_value(node)
    return value is not None and isinstance(size, int) and float(value) == size


def _is_mean(m: Node, x: Node, axes: tuple[int, ...]) -> bool:
    """Whether `m` is x's mean over `axes` (kept): sum(x) / count or sum(x) * (1 / count)."""
    if m.op not in ("mul", "div") or len(m.inputs) != 2:
        return False
    count = size_product([x.shape[a] for a in axes])
    for total, scale in ((m.inputs[0], m.inputs[1]), (m.inputs[1], m.inputs[0])):
        if total.op != "sum" or total.inputs[0] is not x or not total.attrs["keepdims"] \
                or _axes(total) != axes:
            continue
        if m.op == "div":
            return scale is m.inputs[1] and _count(scale, count)
        value = constant_value(scale)
        if value is not None and isinstance(count, int) and count > 0 and \
                abs(float(value) * count - 1) <= MEAN_SCALE_TOLERANCE:
            return True
    return False


def _vanishes(x: Node, axes: tuple[int, ...]) -> bool:
    """Whether x is a tensor less its own mean over `axes`: its sum over them is zero (the
    one exact answer; sum(x) - count * mean would cancel to rounding noise)."""
    return x.op == "sub" and x.inputs[0].shape == x.shape and \
        _is_mean(x.inputs[1], x.inputs[0], axes)


def _split(body: Node, axes: Sequence[int]) -> _Product | None:
    """`body` through its mul, div and neg nodes (and broadcasts of a constant factor) as a
    _Product; None where it is not a float product or has too many factors."""
    if not np.issubdtype(body.dtype, np.floating):
        return None
    ndim, p = body.ndim, _Product()
    stack: list[tuple[Node, bool]] = [(body, False)]
    seen = 0
    while stack:
        e, den = stack.pop()
        seen += 1
        if seen > MAX_FACTORS or e.dtype != body.dtype:
            return None
        if _constant_along(e, ndim, axes):
            (p.outer_den if den else p.outer).append(e)
        elif e.op == "mul":
            stack += [(e.inputs[1], den), (e.inputs[0], den)]  # (the left one first)
        elif e.op == "div":
            stack += [(e.inputs[1], not den), (e.inputs[0], den)]
        elif e.op == "neg":
            p.sign = -p.sign
            stack.append((e.inputs[0], den))
        elif e.op == "broadcast_to" and _constant_along(e.inputs[0], ndim, axes) \
                and e.inputs[0].dtype == body.dtype:
            (p.outer_den if den else p.outer).append(e.inputs[0])
        else:
            (p.inner_den if den else p.inner).append(e)
    return p


def _fit(f: Node, ndim: int, axes: Sequence[int], keepdims: bool) -> Node:
    """A factor constant along `axes`, shaped to multiply the sum's result."""
    if keepdims:
        return f
    lead = ndim - f.ndim
    drop = tuple(a - lead for a in axes if a >= lead)
    return make("squeeze", f, axes=drop) if drop else f


def _rebuild(node: Node, p: _Product) -> Node | None:
    """sum(prod(inner) / prod(inner_den)) * prod(outer) / prod(outer_den), signed, or None
    where that does not come out as the node's type."""
    body = node.inputs[0]
    axes, keepdims = _axes(node), bool(node.attrs["keepdims"])
    try:
        if len(p.inner) == 1 and not p.inner_den and _vanishes(p.inner[0], axes):
            total = scalar_constant(0, body.dtype)
        elif p.inner:
            inner = p.inner[0]
            for f in p.inner[1:]:
                inner = make("mul", inner, f)
            for f in p.inner_den:
                inner = make("div", inner, f)
            if inner.ndim != body.ndim:
                return None
            total = make("sum", inner, **node.attrs)
            total = _split_sum(total) or total  # (a sum of terms: split in the same sweep)
        elif p.inner_den:
            return None
        else:  # (the sum of a broadcast value: that value times the count)
            total = size_value(size_product([body.shape[a] for a in axes]), body.dtype)
        for f in p.outer:
            total = make("mul", total, _fit(f, body.ndim, axes, keepdims))
        for f in p.outer_den:
            total = make("div", total, _fit(f, body.ndim, axes, keepdims))
        if p.sign < 0:
            total = make("neg", total)
        if total.shape != node.shape and total.dtype == node.dtype:
            total = make("broadcast_to", total, shape=node.shape)
    except ShapeError:
        return None
    return total if total.type == node.type else None


def _pays(node: Node, p: _Product) -> bool:
    """Whether factoring out changes what runs: no sum is left (a broadcast value's, or a
    tensor less its mean), or a factor of many values leaves (its sum may then be
    another's: BatchNorm's per-channel ones). A lone scalar taken out of a product that is
    needed anyway (the loss's 1/N) would only add a node. (Whether some sum exists is not
    asked: the answer would depend on what else the process holds, interned nodes of
    other graphs included, and the optimized graph must depend on its own.)"""
    if not p.inner and not p.inner_den:
        return True
    if len(p.inner) == 1 and not p.inner_den and _vanishes(p.inner[0], _axes(node)):
        return True
    return any(known_size(f.shape) != 1 for f in p.outer + p.outer_den)


def _factor_out(node: Node) -> Node | None:
    """A sum with its constant factors outside (_rebuild), where that pays (_pays)."""
    p = _split(node.inputs[0], _axes(node))
    if p is None or not _pays(node, p):
        return None
    if not (p.outer or p.outer_den or _vanishes(node.inputs[0], _axes(node))):
        return None
    if any(f.op == "one_hot" for f in p.inner):
        return None  # (sum_of_one_hot takes the whole product)
    return _rebuild(node, p)


def simplified_sum(node: Node) -> Node | None:
    """What a sum becomes (its factors out, or split into sums that cost no pass), every
    sum made on the way in that form too, so that one sweep of the rules leaves nothing
    for the next; None where nothing changes."""
    return _factor_out(node) or _split_sum(node)


def _full(term: Node, body: Node) -> Node:
    """A term of a sum's body as a tensor of the body's shape."""
    return term if term.shape == body.shape else make("broadcast_to", term, shape=body.shape)


def _free(term: Node, axes: tuple[int, ...]) -> bool:
    """Whether sum(term) costs no pass at all: its factors outside the sum leave a tensor
    less its own mean (zero). (Not a broadcast value c: sum(x) - count * c cancels where c
    is near x's mean, to rounding noise as large as sum(x) allows, where sum(x - c) rounds
    terms near c's size.)"""
    p = _split(term, axes)
    return p is not None and not p.inner_den and len(p.inner) == 1 and \
        p.inner[0].shape == term.shape and _vanishes(p.inner[0], axes)


def _one_factor(term: Node, axes: Sequence[int]) -> bool:
    """Whether sum(term) is, its constant factors out, the sum of one node of its shape."""
    p = _split(term, axes)
    return p is not None and not p.inner_den and len(p.inner) == 1 and \
        p.inner[0].shape == term.shape


def _split_sum(node: Node) -> Node | None:
    """sum(a ± c) -> sum(a) ± sum(c) where one of them is free (_free) and the other is,
    its constant factors out, the sum of one node: that sum reads no more than the one it
    replaces, and may be another's (beta's gradient sum(dy) under BatchNorm's mean term:
    nodes are interned, whichever is made first). Also under a negation."""
    body, negated = node.inputs[0], False
    if body.op == "neg":
        body, negated = body.inputs[0], True
    if body.op not in ("add", "sub") or not np.issubdtype(body.dtype, np.floating):
        return None
    attrs = dict(node.attrs)
    try:
        terms = [_full(y, body) for y in body.inputs]
    except ShapeError:
        return None
    if any(t.dtype != body.dtype for t in terms):
        return None
    axes = _axes(node)
    free = [_free(t, axes) for t in terms]
    if not all(f or _one_factor(t, axes) for f, t in zip(free, terms)) or not any(free):
        return None
    sums = []
    for t in terms:
        total = make("sum", t, **attrs)
        sums.append(simplified_sum(total) or total)
    out = make(body.op, *sums)
    if negated:
        out = make("neg", out)
    return out if out.type == node.type else None


@rule("sum_factor_out", Op("sum", Var("x")),
      "sum(a * c) -> sum(a) * c where c is the same along the summed axes (and -, /); "
      "sum(a ± c) -> sum(a) ± sum(c) where one of them costs no pass")
def _sum_rule(b, node):
    return simplified_sum(node)


RULES: list[Rule] = [_sum_rule]
