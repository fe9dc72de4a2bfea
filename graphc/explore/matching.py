"""Matching nodes across graphs: what a pass step removed, added and rebuilt, and which node
of the kernels' specialised graph stands for a node of the optimized one."""
from __future__ import annotations

from typing import Any, Sequence

from graphc.graph import Graph
from graphc.node import Node, attrs_key


def rebuilt(old: set[Node], new: list[Node]) -> dict[Node, Node]:
    """New nodes that stand for an old one (the same op, attributes and type, each input
    the same, rebuilt, or in place of a removed one), each with its old node: a rewrite of
    one node rebuilds everything downstream, and a step should show the one change."""
    gone = old - set(new)
    exact = {(n.op, attrs_key(n.attrs), n.type, n.inputs): n for n in gone}
    loose: dict[tuple, list[Node]] = {}  # old nodes over a removed input
    for n in gone:
        if any(i in gone for i in n.inputs):
            loose.setdefault((n.op, attrs_key(n.attrs), n.type, len(n.inputs)), []).append(n)
    pair: dict[Node, Node] = {}
    used: set[Node] = set()
    for n in new:  # inputs first, so an input's pair is known before its users look
        if n in old:
            continue
        key = attrs_key(n.attrs)
        inputs = tuple(pair.get(i, i) for i in n.inputs)
        match = exact.get((n.op, key, n.type, inputs))
        if match is None or match in used:
            match = next((c for c in loose.get((n.op, key, n.type, len(inputs)), ())
                          if c not in used and all(a is b or b in gone
                                                   for a, b in zip(inputs, c.inputs))), None)
        if match is not None:
            pair[n] = match
            used.add(match)
    return pair


def pass_steps(raw: Graph, report: Any) -> list[tuple[str, Graph, Graph]]:
    """(pass name, graph before, graph after) for each pass that changed the graph."""
    steps, before = [], raw
    for p in report.passes:
        if p.graph is not None:
            steps.append((p.name, before, p.graph))
            before = p.graph
    return steps


def twins(graph: Graph, shapes: Sequence[tuple], scheduled: Graph) -> dict[Node, Node]:
    """Each node of `graph` with the node of `scheduled` (made from it for `shapes`, then
    optimized again) that stands for it, where one does: specialising rebuilds the graph
    node for node, and the second optimization is matched like a pass step."""
    from graphc.specialize import specialize_graph
    spec = specialize_graph(graph, shapes)
    old, new = graph.nodes(), spec.nodes()
    if len(old) != len(new) or any(a.op != b.op and (a.op, b.op) != ("dim_size", "constant")
                                   for a, b in zip(old, new)):
        return {}  # specialising merged nodes: no node-for-node match
    kept = set(scheduled.nodes())
    stands = {was: now for now, was in rebuilt(set(new), scheduled.nodes()).items()}
    out = {}
    for a, b in zip(old, new):
        t = b if b in kept else stands.get(b)
        if t is not None:
            out[a] = t
    return out
