"""A graph specialised to call-time sizes: every None dimension becomes the size given, so
the scheduler and the native backends see static shapes (one compiled plan per shape)."""
from __future__ import annotations

from typing import Sequence

from graphc.graph import Graph
from graphc.node import Dim, Node, carry_label, toposort
from graphc.ops.leaves import placeholder_node
from graphc.ops.registry import rebuild


def specialize_graph(graph: Graph, shapes: Sequence[tuple[Dim, ...]]) -> Graph:
    """Rebuilds `graph` with its placeholders given `shapes` (checked by every shape rule);
    a None size stays unknown."""
    memo: dict[Node, Node] = {}
    for ph, shape in zip(graph.inputs, shapes):
        if ph.shape == tuple(shape):
            memo[ph] = ph
        else:
            memo[ph] = placeholder_node(tuple(shape), ph.dtype, ph.attrs["name"])
    for node in toposort(graph.inputs + graph.roots):
        if node not in memo:
            new = rebuild(node, [memo[i] for i in node.inputs]) if node.inputs else node
            memo[node] = carry_label(node, new)
    n_out = len(graph.outputs)
    roots = [memo[r] for r in graph.roots]
    updates = tuple((p, v) for (p, _), v in zip(graph.updates, roots[n_out:]))
    return Graph(tuple(memo[p] for p in graph.inputs), tuple(roots[:n_out]), updates)
