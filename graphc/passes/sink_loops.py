"""Sinking per-step matmul outputs out of scan bodies: a per-step output v_t @ W (W the
same at every step) becomes one GEMM over the stacked v_t after the loop, where stacking
v_t costs no memory (v_t is a per-step output already, or no larger than v_t @ W): a
gradient's input cotangent dz_t @ W_ih^T, whose dz_t the weights' sums stack anyway."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from graphc.graph import Graph
from graphc.node import Node, toposort
from graphc.ops.registry import make, rebuild
from graphc.ops.scan_op import make_scan, scan_counts
from graphc.region import Region


def _invariant(body: Region, c: int, k: int) -> set[Node]:
    """The body values that depend on no carry and no step of a sequence."""
    invariant = set(body.inputs[c + k:])
    for n in body.nodes():
        if n.op != "placeholder" and all(i in invariant for i in n.inputs):
            invariant.add(n)
    return invariant


def _size(node: Node) -> int:
    total = 1
    for d in node.shape:
        total *= int(d)
    return total


def _sinkable(node: Node) -> dict[int, tuple[Node, Node]]:
    """y index -> (v, W) for the per-step outputs v_t @ W this loop can leave to after it."""
    body: Region = node.attrs["body"]
    c, k, _, y = scan_counts(node.attrs)
    invariant = _invariant(body, c, k)
    uses: dict[Node, int] = {}
    for n in body.nodes():
        for i in n.inputs:
            uses[i] = uses.get(i, 0) + 1
    for o in body.outputs:
        uses[o] = uses.get(o, 0) + 1
    ys = set(body.outputs[c:])
    found = {}
    for j in range(y):
        out = body.outputs[c + j]
        if out.op != "matmul" or uses[out] != 1:
            continue
        v, w = out.inputs
        if (v.ndim == 2 and v not in invariant and w in invariant and w.ndim == 2
                and all(isinstance(d, int) for d in v.shape + out.shape)
                and (v in ys or v in body.inputs[c:c + k] or _size(v) <= _size(out))):
            found[j] = (v, w)
    return found


def _outer(node: Node, consts: dict[Node, Node], memo: dict[Node, Node]) -> Node:
    """A loop-invariant body value, outside the loop."""
    for n in toposort([node]):
        if n not in memo:
            memo[n] = consts[n] if n in consts else (
                rebuild(n, [memo[i] for i in n.inputs]) if n.inputs else n)
    return memo[node]


def sink_scan(siblings: dict[int, Node], length: int) -> dict[int, Node] | None:
    """The loop's results (by result index) with its sinkable matmul outputs computed after
    it, or None when it has none."""
    node = next(iter(siblings.values()))
    if node.attrs.get("checkpoint"):
        return None  # (a checkpointed loop keeps per-step values out of memory)
    sunk = _sinkable(node)
    if not sunk:
        return None
    body: Region = node.attrs["body"]
    c, k, _, y = scan_counts(node.attrs)
    keep = [j for j in range(y) if j not in sunk]
    kept = [body.outputs[c + j] for j in keep]
    sequences = dict(zip(body.inputs[c:c + k], node.inputs[c:c + k]))
    stacked = [v for v, _ in sunk.values() if v not in sequences]
    extra = [v for v in dict.fromkeys(stacked) if v not in kept]
    made = make_scan(node.inputs[:c], node.inputs[c:c + k], node.inputs[c + k:],
                     Region(body.inputs, body.outputs[:c] + tuple(kept) + tuple(extra)),
                     node.attrs["length"], node.attrs["reverse"],
                     node.attrs.get("checkpoint", False))
    consts = dict(zip(body.inputs[c + k:], node.inputs[c + k:]))
    memo: dict[Node, Node] = {}

    def steps(v: Node) -> Node:
        """v for every step, (T, N, K)."""
        if v in sequences:
            return sequences[v]
        if v in kept:
            return made[c + kept.index(v)]
        return made[c + len(kept) + extra.index(v)]

    out: dict[int, Node] = {}
    for i, sib in siblings.items():
        if i < c:
            out[i] = made[i]
        elif i - c in sunk:
            v, w = sunk[i - c]
            rows = make("reshape", steps(v), shape=(length * v.shape[0], v.shape[1]))
            product = make("matmul", rows, _outer(w, consts, memo))
            out[i] = make("reshape", product, shape=tuple(sib.shape))
        else:
            out[i] = made[c + keep.index(i - c)]
    return out


def _group_key(node: Node) -> tuple:
    return node.inputs, tuple(sorted((a, v) for a, v in node.attrs.items() if a != "output"))


def sink_loops(graph: Graph) -> tuple[Graph, Counter]:
    """Every scan of the graph (of a known length, not inside bodies) with its sinkable
    matmul outputs computed after it; `fired` counts the loops changed. Walked in order, so
    a loop reading another's results reads the rebuilt one."""
    fired: Counter = Counter()
    nodes = graph.nodes()
    groups: dict[tuple, dict[int, Node]] = {}
    for n in nodes:
        if n.op == "scan":
            groups.setdefault(_group_key(n), {})[n.attrs["output"]] = n
    if not groups:
        return graph, fired
    memo: dict[Node, Node] = {}
    done: dict[tuple, dict[int, Node]] = {}
    for n in nodes:
        inputs: Sequence[Node] = [memo[i] for i in n.inputs]
        if n.op != "scan":
            memo[n] = rebuild(n, inputs) if n.inputs else n
            continue
        key = _group_key(n)
        if key not in done:
            rebuilt = {i: rebuild(s, inputs) for i, s in groups[key].items()}
            length = n.attrs["length"]
            sunk = sink_scan(rebuilt, length) if isinstance(length, int) and length > 0 \
                else None
            if sunk is not None:
                fired["sink_output_matmul"] += 1
            done[key] = rebuilt if sunk is None else sunk
        memo[n] = done[key][n.attrs["output"]]
    if not fired:
        return graph, fired
    roots = [memo[r] for r in graph.roots]
    n_out = len(graph.outputs)
    updates = tuple((p, v) for (p, _), v in zip(graph.updates, roots[n_out:]))
    return Graph(graph.inputs, tuple(roots[:n_out]), updates), fired
