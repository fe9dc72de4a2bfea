"""The walk the loop passes share: substitution in a body, and a rewrite applied once per
loop (its siblings stay siblings), bodies first, to a whole graph."""
from __future__ import annotations

from collections import Counter
from typing import Callable

from graphc.graph import Graph
from graphc.node import Node, carry_label, toposort
from graphc.ops.registry import rebuild, sibling_key
from graphc.ops.scan_op import SCAN
from graphc.region import Region, node_regions, with_regions

# A loop rewrite: one sibling of a loop -> the new results of the loop (all of them, by
# "output"), or None when it does not apply.
LoopRewrite = Callable[[Node], "list[Node] | None"]


def substitute(roots: tuple[Node, ...], mapping: dict[Node, Node]) -> tuple[Node, ...]:
    """`roots` rebuilt with `mapping`'s nodes in place of its keys."""
    memo = dict(mapping)
    for n in toposort(roots):
        if n not in memo:
            memo[n] = carry_label(n, rebuild(n, [memo[i] for i in n.inputs])) \
                if n.inputs else n
    return tuple(memo[r] for r in roots)


def rewrite_loops(roots: tuple[Node, ...], rewrite: LoopRewrite, name: str, fired: Counter,
                  rewritten: dict[Region, Region]) -> tuple[Node, ...]:
    """`roots` with `rewrite` applied to every loop that is not checkpointed (a checkpointed
    loop keeps per-step values out of memory: it stays as it is), nested ones first. Each
    body is rewritten once and each loop once, so the siblings of a loop keep one body."""
    memo: dict[Node, Node] = {}
    done: dict[tuple, list[Node] | None] = {}
    for n in toposort(roots):  # inputs first: a loop reading another's reads the new one
        new = rebuild(n, [memo[i] for i in n.inputs]) if n.inputs else n
        regions = node_regions(new)
        if regions:
            for r in regions:
                if r not in rewritten:
                    rewritten[r] = Region(r.inputs, rewrite_loops(r.outputs, rewrite, name,
                                                                  fired, rewritten))
            bodies = tuple(rewritten[r] for r in regions)
            if bodies != regions:
                new = rebuild(new, new.inputs, with_regions(new.attrs, bodies))
        if new.op == SCAN and not new.attrs["checkpoint"]:
            key = sibling_key(new)
            if key not in done:
                done[key] = rewrite(new)
                if done[key] is not None:
                    fired[name] += 1
            results = done[key]
            if results is not None:
                new = results[new.attrs["output"]]
        memo[n] = carry_label(n, new)
    return tuple(memo[r] for r in roots)


def on_graph(graph: Graph, walk: Callable[[tuple[Node, ...], Counter], tuple[Node, ...]]
             ) -> tuple[Graph, Counter]:
    """A loop pass over a graph: `walk` over its outputs and updates; nothing to do (and the
    graph returned as it is) when it has no loop."""
    fired: Counter = Counter()
    if not any(n.op == SCAN for n in graph.nodes()):  # (loops in bodies sit in a loop)
        return graph, fired
    roots = walk(graph.roots, fired)
    n_out = len(graph.outputs)
    updates = tuple((p, v) for (p, _), v in zip(graph.updates, roots[n_out:]))
    return Graph(graph.inputs, roots[:n_out], updates), fired
