"""Sums of products rewritten so that what is the same along the summed axes multiplies the
sum once instead of every term, and a sum of two terms is split where one part's sum is
made already (or costs nothing) and the other reads less than the whole did.

A gradient sums products of full tensors and per-channel values (BatchNorm's scale, its
1/std, a broadcast step). With those factored out,

    sum(dy * g * -((x - m) / s^2))  ->  -(sum(dy * (x - m)) * g / s^2)
    sum(dy * ((x - m) / s))         ->  sum(dy * (x - m)) / s

the two sums are one node (nodes are interned), and

    sum(dy * g / s + c * 2 * (x - m))  ->  sum(dy) * g / s + (sum(x) - count * m) * c * 2

is beta's gradient sum(dy) and the forward pass's sum(x) with a few per-channel operations
instead of another pass over the tensor: BatchNorm's backward pass reads its inputs for two
sums instead of four. The rewrites build every sum they make in its final form, so one
sweep of the rules does all of them (each further sweep rebuilds the graph below).

Floats only. Reassociating rounds differently, as any reordering of a float sum does; the
factors that leave the sum are exactly those constant along every summed axis (by numpy's
broadcasting, a size of 1 known when the graph is built), so the value is the same in exact
arithmetic."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from graphc.errors import ShapeError
from graphc.node import Node, existing_node
from graphc.ops.registry import make
from graphc.ops.shape_ops import size_value
from graphc.ops.shapes import known_size, size_product
from graphc.passes.patterns import Op, Var
from graphc.passes.rewrite import Rule, rule

# Factors looked at in one product (a derivative's are a handful): past it, left alone.
MAX_FACTORS = 16
# How deep a sum of sums is followed to find that each part's sum exists.
FREE_DEPTH = 2


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
    axes, keepdims = tuple(node.attrs["axes"]), bool(node.attrs["keepdims"])
    try:
        if p.inner:
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


def _inner_sum_exists(node: Node, p: _Product) -> bool:
    """Whether the sum left once the factors are out is a node already (of one or two
    factors, as _rebuild would make it)."""
    if p.inner_den or not 1 <= len(p.inner) <= 2:
        return False
    inner = p.inner[0] if len(p.inner) == 1 else existing_node("mul", tuple(p.inner), {})
    return inner is not None and existing_node("sum", (inner,), node.attrs) is not None


def _pays(node: Node, p: _Product) -> bool:
    """Whether factoring out changes what runs: no sum is left (a broadcast value's), a
    factor of many values leaves (its sum may then be another's: BatchNorm's per channel
    ones), or the sum left exists already. A lone scalar taken out of a product that is
    needed anyway (the loss's 1/N) would only add a node."""
    if not p.inner and not p.inner_den:
        return True
    if any(known_size(f.shape) != 1 for f in p.outer + p.outer_den):
        return True
    return _inner_sum_exists(node, p)


def _factor_out(node: Node) -> Node | None:
    """A sum with its constant factors outside (_rebuild), where that pays (_pays)."""
    p = _split(node.inputs[0], tuple(node.attrs["axes"]))
    if p is None or not (p.outer or p.outer_den) or not _pays(node, p):
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


def _free(term: Node, attrs: dict, depth: int) -> bool:
    """Whether sum(term) costs no pass of its own: its factors outside the sum leave a
    product whose sum exists already, or nothing (a broadcast value), or a sum or
    difference of such terms."""
    axes = tuple(attrs["axes"])
    p = _split(term, axes)
    if p is None or p.inner_den:
        return False
    if not p.inner:
        return True
    if len(p.inner) == 1:
        x = p.inner[0]
        if x.shape != term.shape:
            return False
        if existing_node("sum", (x,), attrs) is not None:
            return True
        return depth > 0 and x.op in ("add", "sub") and \
            all(_free(_full(y, x), attrs, depth - 1) for y in x.inputs)
    if len(p.inner) == 2:
        product = existing_node("mul", (p.inner[0], p.inner[1]), {})
        return product is not None and product.shape == term.shape and \
            existing_node("sum", (product,), attrs) is not None
    return False


def _one_factor(term: Node, axes: Sequence[int]) -> bool:
    """Whether sum(term) is, its constant factors out, the sum of one node of its shape."""
    p = _split(term, axes)
    return p is not None and not p.inner_den and len(p.inner) == 1 and \
        p.inner[0].shape == term.shape


def _split_sum(node: Node) -> Node | None:
    """sum(a ± c) -> sum(a) ± sum(c) where one of them is free (_free) and the other is,
    its constant factors out, the sum of one node: that sum reads no more than the one it
    replaces (it may be another's already, beta's gradient sum(dy) under BatchNorm's mean
    term: nodes are interned, whichever is made first). Also under a negation."""
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
    free = [_free(t, attrs, FREE_DEPTH) for t in terms]
    axes = tuple(attrs["axes"])
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
