"""Sinking out of scan bodies: a carry that only sums a per-step matmul (a gradient's
sum over t of x_t^T g_t) becomes one GEMM over all steps after the loop, and a per-step
output x_t @ W one GEMM over the stacked x_t: the loop keeps the per-step values only."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from graphc.graph import Graph
from graphc.node import Node, toposort
from graphc.ops.registry import make, rebuild
from graphc.ops.scan_op import make_scan, scan_counts
from graphc.passes.patterns import constant_value
from graphc.region import Region


def _transposed(node: Node) -> Node | None:
    """x where node is x.T of a matrix."""
    if node.op == "transpose" and node.ndim == 2 and tuple(node.attrs["perm"]) == (1, 0):
        return node.inputs[0]
    return None


def _rows(value: Node, length: int) -> Node:
    """A stacked per-step matrix (T, N, K) as (T*N, K)."""
    n, k = value.shape[1], value.shape[2]
    return make("reshape", value, shape=(length * n, k))


class _Plan:
    """What one loop's sinking does: per-step body values to stack (new ys) and, for each
    removed carry or y, how its value is made from them after the loop."""

    def __init__(self, body: Region, c: int, k: int) -> None:
        self.body, self.c, self.k = body, c, k
        self.stacked: dict[Node, int] = {}  # body value -> its new y's position
        self.carries: dict[int, tuple] = {}  # removed carry -> ("matmul", a, b) | ("sum", v)
        self.ys: dict[int, tuple] = {}  # removed y -> ("matmul", v, w)

    def stack(self, value: Node) -> None:
        self.stacked.setdefault(value, len(self.stacked))


def _uses(body: Region) -> dict[Node, int]:
    count: dict[Node, int] = {}
    for n in body.nodes():
        for i in n.inputs:
            count[i] = count.get(i, 0) + 1
    for o in body.outputs:
        count[o] = count.get(o, 0) + 1
    return count


def _per_step_matrix(v: Node, invariant: set[Node]) -> bool:
    return v.ndim == 2 and v not in invariant and all(isinstance(d, int) for d in v.shape)


def plan_sinking(node: Node) -> _Plan | None:
    body: Region = node.attrs["body"]
    c, k, m, y = scan_counts(node.attrs)
    places = body.inputs
    invariant = set(places[c + k:])
    for n in body.nodes():  # values that depend on no carry and no sequence
        if n.op != "placeholder" and all(i in invariant for i in n.inputs):
            invariant.add(n)
    uses = _uses(body)
    plan = _Plan(body, c, k)
    for i in range(c):
        out, ph = body.outputs[i], places[i]
        if out.op != "add" or uses.get(ph, 0) != 1 or uses[out] != 1 or ph not in out.inputs:
            continue
        term = out.inputs[1] if out.inputs[0] is ph else out.inputs[0]
        if term is ph or term.type != out.type:
            continue
        if term.op == "matmul":
            a_t, b = term.inputs
            a = _transposed(a_t)
            if a is not None and _per_step_matrix(a, invariant) and \
                    _per_step_matrix(b, invariant) and a.shape[0] == b.shape[0]:
                plan.carries[i] = ("matmul", a, b)
        elif term.op == "sum" and tuple(term.attrs["axes"]) == (0,) and \
                not term.attrs.get("keepdims") and _per_step_matrix(term.inputs[0], invariant):
            plan.carries[i] = ("sum", term.inputs[0])
    for j in range(y):
        out = body.outputs[c + j]
        if out.op != "matmul" or uses[out] != 1:
            continue
        v, w = out.inputs
        if _per_step_matrix(v, invariant) and w in invariant and w.ndim == 2:
            plan.ys[j] = ("matmul", v, w)
    if not plan.carries and not plan.ys:
        return None
    sequences = set(places[c:c + k])  # (already stacked: the loop's own xs)
    for how in list(plan.carries.values()) + list(plan.ys.values()):
        for value in how[1:]:
            if value not in invariant and value not in sequences:
                plan.stack(value)
    return plan


def _outer(node: Node, consts: dict[Node, Node], memo: dict[Node, Node]) -> Node:
    """A loop-invariant body value, outside the loop."""
    for n in toposort([node]):
        if n not in memo:
            memo[n] = consts[n] if n in consts else (
                rebuild(n, [memo[i] for i in n.inputs]) if n.inputs else n)
    return memo[node]


def sink_scan(siblings: dict[int, Node], length: int) -> dict[int, Node] | None:
    """The loop's results (by result index) with its summing carries and matmul outputs
    computed after it, or None when it has none."""
    node = next(iter(siblings.values()))
    plan = plan_sinking(node)
    if plan is None:
        return None
    body: Region = node.attrs["body"]
    c, k, _, y = scan_counts(node.attrs)
    keep_c = [i for i in range(c) if i not in plan.carries]
    keep_y = [j for j in range(y) if j not in plan.ys]
    stacked = sorted(plan.stacked, key=plan.stacked.__getitem__)
    outputs = tuple(body.outputs[i] for i in keep_c) + tuple(
        body.outputs[c + j] for j in keep_y) + tuple(stacked)
    made = make_scan([node.inputs[i] for i in keep_c], node.inputs[c:c + k],
                     node.inputs[c + k:], Region(tuple(body.inputs[i] for i in keep_c)
                                                 + body.inputs[c:], outputs),
                     node.attrs["length"], node.attrs["reverse"],
                     node.attrs.get("checkpoint", False)) if outputs else []  # (no loop left)
    nc, ny = len(keep_c), len(keep_y)
    consts = dict(zip(body.inputs[c + k:], node.inputs[c + k:]))
    sequences = dict(zip(body.inputs[c:c + k], node.inputs[c:c + k]))
    memo: dict[Node, Node] = {}

    def outside(value: Node) -> Node:
        if value in plan.stacked:
            return made[nc + ny + plan.stacked[value]]
        if value in sequences:
            return sequences[value]
        return _outer(value, consts, memo)

    out: dict[int, Node] = {}
    for i, sib in siblings.items():
        if i < c and i in plan.carries:
            how = plan.carries[i]
            if how[0] == "matmul":
                a, b = (_rows(outside(v), length) for v in how[1:])
                total = make("matmul", make("transpose", a, perm=(1, 0)), b)
            else:
                total = make("sum", _rows(outside(how[1]), length), axes=(0,), keepdims=False)
            zero = constant_value(node.inputs[i])  # (a gradient's sum starts at zeros)
            out[i] = total if zero is not None and zero == 0 and total.dtype == sib.dtype \
                else make("add", node.inputs[i], total)
        elif i < c:
            out[i] = made[keep_c.index(i)]
        elif i - c in plan.ys:
            _, v, w = plan.ys[i - c]
            stacked_v = outside(v)
            product = make("matmul", _rows(stacked_v, length), outside(w))
            out[i] = make("reshape", product, shape=tuple(sib.shape))
        else:
            out[i] = made[nc + keep_y.index(i - c)]
    return out


def _group_key(node: Node) -> tuple:
    return node.inputs, tuple(sorted((a, v) for a, v in node.attrs.items() if a != "output"))


def sink_loops(graph: Graph) -> tuple[Graph, Counter]:
    """Every scan of the graph (of a known length, not inside bodies) with its summing
    carries and matmul outputs sunk after it; `fired` counts the loops changed."""
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
                fired["sink"] += 1
            done[key] = rebuilt if sunk is None else sunk
        memo[n] = done[key][n.attrs["output"]]
    if not fired:
        return graph, fired
    roots = [memo[r] for r in graph.roots]
    n_out = len(graph.outputs)
    updates = tuple((p, v) for (p, _), v in zip(graph.updates, roots[n_out:]))
    return Graph(graph.inputs, tuple(roots[:n_out]), updates), fired
