"""Reverse and forward mode over the OpDef rules: gradients are graphs built from primitives."""
from __future__ import annotations

import functools
from typing import Sequence

import sympy as sp

from graphc.collector import collector_paused
from graphc.derivatives import arg_symbols, partials
from graphc.sizes import all_static
from graphc.errors import GradientError
from graphc.node import (Node, building_for, label_of, set_label, static_shape,
                         toposort)
from graphc.ops import get_op, make
from graphc.ops.registry import rebuild, sibling_key
from graphc.ops.grad_helpers import add_all, times, unbroadcast, zeros_like
from graphc.ops.leaves import placeholder_node, scalar_constant
from graphc.ops.shapes import fmt_shape
from graphc.region import node_regions
from graphc.sympy_bridge import SympyToGraph

DISCONNECTED = ("zero", "raise")


def elementwise_vjp(node: Node, g: Node) -> list[Node | None]:
    """The table rule: cotangent times each partial derivative, summed back to input shape."""
    syms, labels = _table_rule(node.op)
    build = SympyToGraph(dict(zip(syms, node.inputs)), node.inputs[-1].dtype)
    out: list[Node | None] = []
    for inp, d, label in zip(node.inputs, partials(node.op), labels):
        if d is None or inp.dtype.kind != "f":
            out.append(None)
            continue
        with building_for(label):
            out.append(unbroadcast(times(g, build(d)), inp))
    return out


@functools.lru_cache(maxsize=None)
def _table_rule(op: str) -> tuple[tuple[sp.Symbol, ...], tuple[str, ...]]:
    """An op's argument symbols and the provenance label of each partial (printing the
    formula with SymPy was a fifth of a deep MLP's gradient time, once per node)."""
    syms = arg_symbols(op)
    return syms, tuple(f"d{op}/d{sym} = {sp.sstr(d)}" for sym, d in zip(syms, partials(op)))


def _apply_rule(node: Node, g: Node) -> Sequence[Node | None]:
    opdef = get_op(node.op)
    if opdef.vjp is not None:
        doc = (opdef.vjp.__doc__ or "").strip().splitlines()
        with building_for(f"vjp of {node.op}" + (f": {doc[0]}" if doc else "")):
            return opdef.vjp(node, g)
    if node_regions(node):
        raise GradientError(f"no derivative rule for the primitive {node.op!r}, which carries "
                            "a region (a sub-graph): graphc does not differentiate through "
                            "a region body by itself; register the primitive with a vjp rule")
    if opdef.sympy_def is not None:
        return elementwise_vjp(node, g)
    raise GradientError(f"no derivative rule for the primitive {node.op!r}")


def _apply_group_rule(siblings: list[Node], cts: dict[Node, Node], active: set[Node]
                      ) -> Sequence[Node | None]:
    rule = get_op(siblings[0].op).group_vjp
    assert rule is not None
    doc = (rule.__doc__ or "").strip().splitlines()
    with building_for(f"vjp of {siblings[0].op}" + (f": {doc[0]}" if doc else "")):
        return rule(siblings, [cts.get(s) for s in siblings],
                    [i in active for i in siblings[0].inputs])


def _active_nodes(order: list[Node], wrt: set[Node]) -> set[Node]:
    """Nodes whose value depends differentiably on some wrt node (float-valued paths only)."""
    active: set[Node] = set()
    for n in order:
        if n in wrt:
            active.add(n)
        elif (n.dtype.kind == "f" and get_op(n.op).differentiable
              and any(i in active for i in n.inputs)):
            active.add(n)
    return active


def _check_wrt(wrt: Sequence[Node]) -> None:
    for w in wrt:
        if w.dtype.kind != "f":
            raise GradientError(f"cannot differentiate with respect to a {w.dtype} tensor "
                                f"({w.op} {w.type}): gradients need float inputs")


def vjp_nodes(outputs: Sequence[Node], cotangents: Sequence[Node], wrt: Sequence[Node],
              disconnected: str = "zero") -> list[Node]:
    """Reverse mode: sum_k cotangent_k . d output_k / d w, for each w in wrt."""
    if disconnected not in DISCONNECTED:
        raise ValueError(f"disconnected: expected one of {DISCONNECTED}, got {disconnected!r}")
    _check_wrt(wrt)
    order = toposort(outputs)
    active = _active_nodes(order, set(wrt))
    pending: dict[Node, list[Node]] = {}
    for out, cot in zip(outputs, cotangents):
        if out in active:
            pending.setdefault(out, []).append(cot)
    total: dict[Node, Node] = {}
    # Ops with several results (scan): sibling nodes, differentiated together once, at the
    # sibling first in topological order (every user of every sibling is done by then).
    groups: dict[tuple, list[Node]] = {}
    for n in order:
        if n in active and get_op(n.op).group_vjp is not None:
            groups.setdefault(sibling_key(n), []).append(n)
    group_cts: dict[tuple, dict[Node, Node]] = {}

    def send(node: Node, cts: Sequence[Node | None]) -> None:
        for inp, ct in zip(node.inputs, cts):
            if ct is not None and inp in active:
                if ct.dtype != inp.dtype:
                    ct = make("cast", ct, dtype=inp.dtype)
                pending.setdefault(inp, []).append(ct)

    for node in reversed(order):
        terms = pending.pop(node, None)
        g = None
        if terms:
            with building_for(f"sum of the {len(terms)} paths into {node.op}"):
                g = add_all(terms)
            total[node] = g
        if groups and node in active and get_op(node.op).group_vjp is not None:
            key = sibling_key(node)
            if g is not None:
                group_cts.setdefault(key, {})[node] = g
            if node is groups[key][0] and key in group_cts:
                send(node, _apply_group_rule(groups[key], group_cts.pop(key), active))
            continue
        if g is None or get_op(node.op).leaf:
            continue
        send(node, _apply_rule(node, g))
    results = []
    for w in wrt:
        if w in total:
            g = total[w]
            if g.shape != w.shape and g.ndim == w.ndim:
                # A rule may know a size that w has as a symbol (equal by a call-time
                # check), or the other way round: the result has w's shape.
                g = make("reshape", g, shape=w.shape)
            results.append(g)
        elif disconnected == "raise":
            raise GradientError(f"the output does not depend on {w.op} {w.type} "
                                "(disconnected); pass disconnected='zero' for a zero gradient")
        else:
            results.append(zeros_like(w))
    return results


def _label(node: Node) -> str:
    return label_of(node) or node.attrs.get("name") or node.op


def grad_nodes(y: Node, wrt: Sequence[Node], disconnected: str = "zero") -> list[Node]:
    """d y / d w for a scalar y, each result shaped and typed like its w."""
    if y.shape != () and any(d != 1 for d in y.shape):
        raise GradientError(f"grad needs a scalar output, got {y.type}; use gc.vjp for "
                            "non-scalar outputs, or reduce it first (e.g. .sum())")
    if y.dtype.kind != "f":
        raise GradientError(f"grad needs a float output, got {y.dtype}")
    seed = scalar_constant(1, y.dtype)
    if y.shape:
        seed = make("broadcast_to", seed, shape=y.shape)
    with collector_paused():
        results = vjp_nodes([y], [seed], wrt, disconnected)
    forward: set[Node] | None = None
    for w, g in zip(wrt, results):
        if g.op not in ("constant", "placeholder", "parameter"):
            if forward is None:
                forward = set(toposort([y]))
            if g not in forward:  # d exp(x)/dx is exp(x) itself: keep the forward name
                set_label(g, f"d{_label(y)}/d{_label(w)}")
    return results


def check_cotangent(ct: Node, out: Node, what: str) -> Node:
    if ct.ndim != out.ndim or any(isinstance(a, int) and isinstance(b, int) and a != b
                                  for a, b in zip(ct.shape, out.shape)):
        raise ValueError(f"{what}: shape {fmt_shape(ct.shape)} does not match "
                         f"{fmt_shape(out.shape)}")
    if ct.dtype != out.dtype:
        if ct.dtype.kind not in "fib":
            raise TypeError(f"{what}: dtype {ct.dtype} cannot be cast to {out.dtype}")
        ct = make("cast", ct, dtype=out.dtype)
    return ct


def _value_dependencies(roots: Sequence[Node]) -> set[Node]:
    """Nodes whose values the roots need (inputs read only for shape are not followed)."""
    seen: set[Node] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        skip = get_op(n.op).shape_only(len(n.inputs))
        stack.extend(i for k, i in enumerate(n.inputs) if k not in skip)
    return seen


def _substitute(roots: Sequence[Node], mapping: dict[Node, Node]) -> list[Node]:
    memo: dict[Node, Node] = dict(mapping)
    for n in toposort(roots):
        if n not in memo:
            memo[n] = rebuild(n, [memo[i] for i in n.inputs]) if n.inputs else n
    return [memo[r] for r in roots]


def jvp_nodes(outputs: Sequence[Node], wrt: Sequence[Node], tangents: Sequence[Node]
              ) -> list[Node]:
    """Forward mode by transposing reverse mode: J t = d/du <J^T u, t>, u a dummy cotangent.
    The reverse rules are linear in the cotangent, so the result needs no value of u; where
    it reads u's shape, the output (of the same shape) stands in for it."""
    _check_wrt(wrt)
    for o in outputs:
        if o.dtype.kind != "f":
            raise GradientError(f"jvp needs float outputs, got {o.dtype}")
    dummies = [placeholder_node(o.shape, o.dtype, f"__cotangent{i}")
               for i, o in enumerate(outputs)]
    pullbacks = vjp_nodes(outputs, dummies, wrt)
    results = vjp_nodes(pullbacks, tangents, dummies)
    if set(dummies) & _value_dependencies(results):
        raise GradientError("internal: a reverse rule is not linear in its cotangent")
    return _substitute(results, dict(zip(dummies, outputs)))


def hessian_node(y: Node, x: Node) -> Node:
    """The matrix of second derivatives, shaped x.shape + x.shape (x of known size)."""
    if not all_static(x.shape):
        raise GradientError(f"hessian needs an x of known shape, got {x.type}")
    (g,) = grad_nodes(y, [x])
    flat = make("reshape", g, shape=(-1,))
    n = static_shape(flat.shape)[0]  # x's sizes are known, so are its gradient's
    rows = []
    for i in range(n):
        gi = make("squeeze", make("slice", flat, slices=((i, i + 1, 1),)), axes=(0,))
        (row,) = grad_nodes(gi, [x])
        rows.append(make("reshape", row, shape=(1, n)))
    if not rows:  # x has no elements
        return make("broadcast_to", scalar_constant(0, x.dtype), shape=x.shape + x.shape)
    stacked = rows[0] if n == 1 else make("concatenate", *rows, axis=0)
    return make("reshape", stacked, shape=x.shape + x.shape)
