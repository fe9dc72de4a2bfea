"""Scans over the same inputs made one loop, and results nothing reads left out of it."""
from __future__ import annotations

from collections import Counter

from graphc.graph import Graph
from graphc.node import Node, carry_label, toposort
from graphc.ops.registry import rebuild
from graphc.ops.scan_op import SCAN, make_scan
from graphc.region import Region, node_regions, with_regions
from graphc.passes.scan_walk import on_graph, substitute


def _loop_key(node: Node) -> tuple:
    """Scans with equal keys run the same loop over the same values, whatever their bodies
    compute: one loop can compute all their results."""
    a = node.attrs
    return (node.inputs, a["num_carry"], a["num_xs"], a["reverse"], a["length"],
            a["checkpoint"])


Plan = tuple[Region, tuple[int, ...], int]  # the loop's body, the carries kept, the result


def _plans(nodes: list[Node]) -> dict[Node, Plan]:
    """For scans of one loop key: per node, the loop it becomes (one per set of equal
    carries, its body the union of their bodies' used results, a carry kept while some kept
    result reads it) and its result there."""
    first = nodes[0]
    c = first.attrs["num_carry"]
    ph = first.attrs["body"].inputs
    # each body in the first body's placeholders; bodies whose carries differ stay apart
    clusters: list[tuple[tuple[Node, ...], list[tuple[Node, tuple[Node, ...]]]]] = []
    for n in nodes:
        body: Region = n.attrs["body"]
        if len(body.inputs) != len(ph):
            continue
        outs = body.outputs if body.inputs == ph else \
            substitute(body.outputs, dict(zip(body.inputs, ph)))
        for carries, members in clusters:
            if carries == outs[:c]:
                members.append((n, outs))
                break
        else:
            clusters.append((outs[:c], [(n, outs)]))
    plans: dict[Node, Plan] = {}
    for carries, members in clusters:
        bodies = list(dict.fromkeys(outs for _, outs in members))
        used = sorted((bodies.index(outs), n.attrs["output"]) for n, outs in members
                      if n.attrs["output"] >= c)  # in body order, then output order
        ys = list(dict.fromkeys(bodies[b][j] for b, j in used))
        live = {n.attrs["output"] for n, _ in members if n.attrs["output"] < c}
        while True:  # a carry stays while a kept result reads it
            read = set(toposort([carries[i] for i in sorted(live)] + ys))
            more = {i for i in range(c) if ph[i] in read} - live
            if not more:
                break
            live |= more
        keep = tuple(sorted(live))
        body = Region(tuple(ph[i] for i in keep) + ph[c:],
                      tuple(carries[i] for i in keep) + tuple(ys))
        for n, outs in members:
            j = n.attrs["output"]
            plans[n] = (body, keep, keep.index(j) if j < c else len(keep) + ys.index(outs[j]))
    return plans


def _merge(roots: tuple[Node, ...], fired: Counter) -> tuple[Node, ...]:
    memo: dict[Node, Node] = {}
    for n in toposort(roots):  # bodies first, each a graph of its own
        new = rebuild(n, [memo[i] for i in n.inputs]) if n.inputs else n
        regions = node_regions(new)
        if regions:
            bodies = tuple(Region(r.inputs, _merge(r.outputs, fired)) for r in regions)
            if bodies != regions:
                new = rebuild(new, new.inputs, with_regions(new.attrs, bodies))
        memo[n] = carry_label(n, new)
    roots = tuple(memo[r] for r in roots)
    loops: dict[tuple, list[Node]] = {}
    for n in toposort(roots):
        if n.op == SCAN:
            loops.setdefault(_loop_key(n), []).append(n)
    plans: dict[Node, Plan] = {}
    for nodes in loops.values():
        found = _plans(nodes)
        if any(body != n.attrs["body"] or len(keep) != n.attrs["num_carry"]
               or out != n.attrs["output"] for n, (body, keep, out) in found.items()):
            fired["merge_scans"] += 1
            plans.update(found)
    if not plans:
        return roots
    # rebuilt in topological order: a loop reading another's results reads the new ones
    memo = {}
    built: dict[tuple, list[Node]] = {}
    for n in toposort(roots):
        ins = [memo[i] for i in n.inputs]
        if n in plans:
            body, keep, out = plans[n]
            a = n.attrs
            c, k = a["num_carry"], a["num_xs"]
            key = (body, keep, tuple(ins))
            if key not in built:
                built[key] = make_scan([ins[i] for i in keep], ins[c:c + k], ins[c + k:], body,
                                       a["length"], a["reverse"], a["checkpoint"])
            memo[n] = carry_label(n, built[key][out])
        else:
            memo[n] = carry_label(n, rebuild(n, ins)) if n.inputs else n
    return tuple(memo[r] for r in roots)


def merge_scans(graph: Graph) -> tuple[Graph, Counter]:
    """Scans with the same inputs, length and direction (a scan and the one that saves its
    carries for the gradient) become one loop with the union of their results; results
    nothing reads, and carries only they need, are left out of the loop."""
    return on_graph(graph, _merge)
