"""Constant folding through the numpy reference: an op whose inputs are all constants
becomes a constant, unless folding would blow a small constant up into a big array."""
from __future__ import annotations

from collections import Counter

import numpy as np

from graphc.graph import Graph
from graphc.node import Node, carry_label, static_shape, toposort
from graphc.ops import get_op
from graphc.ops.leaves import constant_node
from graphc.ops.registry import rebuild
from graphc.sizes import all_static, has_symbols

MAX_FOLDED_ELEMENTS = 1 << 16


def _foldable(node: Node) -> bool:
    # (the cheap test first: asked of every node, and few have only constant inputs)
    if not all(i.op == "constant" for i in node.inputs):
        return False
    opdef = get_op(node.op)
    if opdef.leaf or opdef.collective or node.op == "stop_gradient" or \
            not all_static(node.shape) or any(has_symbols(v) for v in node.attrs.values()):
        return False
    size = int(np.prod(static_shape(node.shape))) if node.shape else 1
    biggest = max((i.attrs["value"].array.size for i in node.inputs), default=1)
    return size <= max(biggest, 1) or size <= MAX_FOLDED_ELEMENTS and node.op != "broadcast_to"


def fold_constants(graph: Graph) -> tuple[Graph, Counter]:
    fired: Counter = Counter()
    memo: dict[Node, Node] = {}
    for node in toposort(graph.roots):
        new = node
        if node.inputs:
            inputs = tuple([memo[i] for i in node.inputs])
            if inputs != node.inputs:
                new = rebuild(node, inputs)
        if _foldable(new):
            try:
                with np.errstate(all="ignore"):
                    value = get_op(new.op).impl([i.attrs["value"].array for i in new.inputs],
                                                new.attrs)
                new = constant_node(np.asarray(value, dtype=new.dtype).reshape(new.shape))
                fired[f"fold_{node.op}"] += 1
            except (ValueError, IndexError, ZeroDivisionError, FloatingPointError):
                pass  # leave it to fail at run time with the op's own message
        memo[node] = new if new is node else carry_label(node, new)
    n_out = len(graph.outputs)
    roots = tuple(memo[r] for r in graph.roots)
    updates = tuple((p, v) for (p, _), v in zip(graph.updates, roots[n_out:]))
    return Graph(graph.inputs, roots[:n_out], updates), fired
