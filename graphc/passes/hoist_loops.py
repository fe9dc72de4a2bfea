"""Hoisting out of scan bodies: work that does not depend on the carries (x_t @ W_ih) is
computed for every step at once before the loop (one GEMM over (T*N, I)) and enters the
body as a new sequence."""
from __future__ import annotations

from collections import Counter
from typing import Callable

from graphc.graph import Graph
from graphc.node import Node, toposort
from graphc.ops import get_op
from graphc.ops.registry import make, rebuild
from graphc.ops.scan_op import make_scan, scan_counts
from graphc.region import Region

# A per-step value and the value for every step: (T, *step shape).
Batcher = Callable[[Node, list[Node], list[bool]], Node | None]


def _expand(value: Node, rank: int) -> Node:
    """A (T, *s) value seen as (T, 1, ..., 1, *s) with `rank` axes after T: so that it
    broadcasts, per step, as s does against values of that rank."""
    extra = rank - (value.ndim - 1)
    if extra <= 0:
        return value
    shape = (value.shape[0],) + (1,) * extra + tuple(value.shape[1:])
    return make("reshape", value, shape=shape)


def _batch_elementwise(node: Node, inputs: list[Node], batched: list[bool]) -> Node | None:
    rank = node.ndim
    args = [_expand(v, rank) if b else v for v, b in zip(inputs, batched)]
    return rebuild(node, args)


def _batch_matmul(node: Node, inputs: list[Node], batched: list[bool]) -> Node | None:
    """x_t @ W for every t: ((T*...*N), I) @ W, one GEMM, reshaped back."""
    (a, b), (a_batched, b_batched) = inputs, batched
    if b_batched or not a_batched or b.ndim != 2 or a.ndim < 3:
        return None
    rows = 1
    for d in a.shape[:-1]:
        if not isinstance(d, int):
            return None
        rows *= d
    flat = make("reshape", a, shape=(rows, a.shape[-1]))
    product = make("matmul", flat, b)
    return make("reshape", product, shape=tuple(a.shape[:-1]) + (b.shape[-1],))


def _batch_take(node: Node, inputs: list[Node], batched: list[bool]) -> Node | None:
    """table[ids_t] for every t: a lookup of all the ids (axis 0 only: T stays first)."""
    (table, ids), (table_batched, ids_batched) = inputs, batched
    if table_batched or not ids_batched or node.attrs["axis"] != 0:
        return None
    return rebuild(node, [table, ids])


def _batcher(node: Node) -> Batcher | None:
    if node.op == "matmul":
        return _batch_matmul
    if node.op == "take":
        return _batch_take
    if get_op(node.op).sympy_def is not None and not node.attrs:
        return _batch_elementwise
    return None


def _outer(node: Node, consts: dict[Node, Node], memo: dict[Node, Node]) -> Node:
    """A body value that depends on no carry and no sequence, outside the loop (its const
    placeholders replaced by the values they stand for)."""
    for n in toposort([node]):
        if n in memo:
            continue
        memo[n] = consts[n] if n in consts else (
            rebuild(n, [memo[i] for i in n.inputs]) if n.inputs else n)
    return memo[node]


def hoist_scan(siblings: dict[int, Node]) -> dict[int, Node] | None:
    """The loop's results with its carry-independent matmuls computed before it, or None
    when there is nothing worth hoisting."""
    node = next(iter(siblings.values()))
    body: Region = node.attrs["body"]
    c, k, m, _ = scan_counts(node.attrs)
    places = body.inputs
    xs_outer = dict(zip(places[c:c + k], node.inputs[c:c + k]))
    consts = dict(zip(places[c + k:], node.inputs[c + k:]))
    order = body.nodes()
    carried = set(places[:c])  # values that depend on a carry (or on what we cannot batch)
    stepped: dict[Node, Node] = dict(xs_outer)  # per-step value -> its value for every step
    costly: set[Node] = set()  # batched values with a matmul in them
    invariant_memo: dict[Node, Node] = {}
    for n in order:
        if n in carried or n in stepped or n.op == "placeholder":
            continue
        if any(i in carried for i in n.inputs):
            carried.add(n)
            continue
        if not any(i in stepped for i in n.inputs):
            continue  # loop-invariant: stays in the body (cheap; the optimizer's)
        batch = _batcher(n)
        inputs = [stepped[i] if i in stepped else _outer(i, consts, invariant_memo)
                  for i in n.inputs]
        new = batch(n, inputs, [i in stepped for i in n.inputs]) if batch else None
        if new is None:
            carried.add(n)
            continue
        stepped[n] = new
        if n.op == "matmul" or any(i in costly for i in n.inputs):
            costly.add(n)
    users: dict[Node, list[Node]] = {}
    for n in order:
        for i in n.inputs:
            users.setdefault(i, []).append(n)
    outputs = set(body.outputs)
    frontier = [n for n in order if n in costly and (
        n in outputs or any(u not in stepped for u in users.get(n, [])))]
    if not frontier:
        return None
    from graphc.ops.leaves import placeholder_node
    new_places = {n: placeholder_node(n.shape, n.dtype, f"hoisted{j}")
                  for j, n in enumerate(frontier)}
    memo: dict[Node, Node] = dict(new_places)
    for n in toposort(list(body.outputs)):
        if n not in memo:
            memo[n] = rebuild(n, [memo[i] for i in n.inputs]) if n.inputs else n
    region = Region(places[:c + k] + tuple(new_places.values()) + places[c + k:],
                    tuple(memo[o] for o in body.outputs))
    xs = list(node.inputs[c:c + k]) + [stepped[n] for n in frontier]
    made = make_scan(node.inputs[:c], xs, node.inputs[c + k:], region, node.attrs["length"],
                     node.attrs["reverse"], node.attrs.get("checkpoint", False))
    return {i: made[i] for i in siblings}


def _group_key(node: Node) -> tuple:
    return node.inputs, tuple(sorted((a, v) for a, v in node.attrs.items() if a != "output"))


def hoist_loops(graph: Graph) -> tuple[Graph, Counter]:
    """Every scan of the graph (not those inside bodies) with its carry-independent matmuls
    hoisted; `fired` counts the loops changed. Walked in order, so a loop reading another's
    results reads the rebuilt one."""
    fired: Counter = Counter()
    groups: dict[tuple, dict[int, Node]] = {}
    nodes = graph.nodes()
    for n in nodes:
        if n.op == "scan":
            groups.setdefault(_group_key(n), {})[n.attrs["output"]] = n
    if not groups:
        return graph, fired
    memo: dict[Node, Node] = {}
    done: dict[tuple, dict[int, Node]] = {}
    for n in nodes:
        inputs = [memo[i] for i in n.inputs]
        if n.op != "scan":
            memo[n] = rebuild(n, inputs) if n.inputs else n
            continue
        key = _group_key(n)
        if key not in done:
            rebuilt = {i: rebuild(s, inputs) for i, s in groups[key].items()}
            hoisted = hoist_scan(rebuilt)
            if hoisted is not None:
                fired["hoist_matmul"] += 1
            done[key] = rebuilt if hoisted is None else hoisted
        memo[n] = done[key][n.attrs["output"]]
    if not fired:
        return graph, fired
    roots = [memo[r] for r in graph.roots]
    n_out = len(graph.outputs)
    updates = tuple((p, v) for (p, _), v in zip(graph.updates, roots[n_out:]))
    return Graph(graph.inputs, tuple(roots[:n_out]), updates), fired
