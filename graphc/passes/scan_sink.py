"""Sums a scan's body accumulates step by step (a gradient's dW), taken after the loop at once."""
from __future__ import annotations

from collections import Counter

from graphc import sizes
from graphc.graph import Graph
from graphc.node import Node, toposort
from graphc.ops.registry import make
from graphc.ops.scan_op import make_scan, scan_counts
from graphc.region import Region
from graphc.passes.scan_walk import on_graph, rewrite_loops

# A sum the loop can leave to after it: acc <- acc + term, term read from the step alone, as
# matmul(transpose(a), b) over the rows of a and b (a gradient's sum_t h_t^T g_t), or as
# sum(b) over axis 0 (a bias's sum_t sum_n g_t).
Sum = tuple[str, Node, Node | None]  # ("matmul", a, b) or ("sum", b, None)


def _term(out: Node, acc: Node) -> Node | None:
    if out.op != "add" or out.type != acc.type:
        return None
    a, b = out.inputs
    term = b if a is acc else a if b is acc else None
    if term is None or term.type != acc.type or acc in toposort([term]):
        return None
    return term


def _as_sum(term: Node) -> Sum | None:
    if term.op == "matmul" and term.ndim == 2:
        at, b = term.inputs
        if at.op == "transpose" and at.attrs["perm"] == (1, 0) and b.ndim == 2:
            return ("matmul", at.inputs[0], b)
    if term.op == "sum" and term.inputs[0].ndim == term.ndim + 1 and \
            term.attrs["axes"] == (0,) and not term.attrs["keepdims"]:
        return ("sum", term.inputs[0], None)
    return None


def _sunk(node: Node) -> list[Node] | None:
    """Every result of the loop of `node` with its sinkable sums taken after the loop; None
    if it has none."""
    a = node.attrs
    body: Region = a["body"]
    c, k, _, _ = scan_counts(a)
    order = toposort(body.outputs)
    readers: dict[Node, int] = {}
    for n in order:
        for used in n.inputs:
            readers[used] = readers.get(used, 0) + 1
    for o in body.outputs:
        readers[o] = readers.get(o, 0) + 1
    sums: dict[int, Sum] = {}
    for i in range(c):
        acc, out = body.inputs[i], body.outputs[i]
        if acc.dtype.kind != "f" or readers.get(acc, 0) != 1 or readers.get(out, 0) != 1:
            continue  # the running sum is read by something else
        term = _term(out, acc)
        found = _as_sum(term) if term is not None else None
        if found is not None and not {found[1], found[2]} & set(body.inputs[c + k:]):
            sums[i] = found  # (a captured factor would be stacked for nothing)
    if not sums:
        return None
    ins = node.inputs
    steps = dict(zip(body.inputs[c:c + k], ins[c:c + k]))  # a step's slice: its sequence
    keep = [i for i in range(c) if i not in sums]
    ys = list(body.outputs[c:])
    extra: list[Node] = []  # per-step factors the loop now stacks
    for _, p, q in sums.values():
        for f in (p, q):
            if f is not None and f not in steps and f not in ys and f not in extra:
                extra.append(f)
    y = len(ys)
    new_body = Region(tuple(body.inputs[i] for i in keep) + body.inputs[c:],
                      tuple(body.outputs[i] for i in keep) + body.outputs[c:] + tuple(extra))
    loop = make_scan([ins[i] for i in keep], ins[c:c + k], ins[c + k:], new_body,
                     a["length"], a["reverse"], a["checkpoint"])

    def stacked(f: Node) -> Node:
        if f in steps:
            return steps[f]
        return loop[len(keep) + (ys.index(f) if f in ys else y + extra.index(f))]
    results: list[Node] = []
    for i in range(c):
        if i in keep:
            results.append(loop[keep.index(i)])
            continue
        kind, p, q = sums[i]
        if kind == "matmul":
            assert q is not None
            rows = sizes.mul(a["length"], p.shape[0])
            pp = make("reshape", stacked(p), shape=(rows, p.shape[1]))
            qq = make("reshape", stacked(q), shape=(rows, q.shape[1]))
            total = make("matmul", make("transpose", pp, perm=(1, 0)), qq)
        else:
            total = make("sum", stacked(p), axes=(0, 1), keepdims=False)
        results.append(make("add", ins[i], total))
    return results + loop[len(keep):len(keep) + y]


def sink_scan_sums(graph: Graph) -> tuple[Graph, Counter]:
    """A carry that only accumulates acc + a^T b (or acc + sum(b) over axis 0) of per-step
    values becomes, after the loop, acc + A^T B over the stacked rows of every step (one
    large matmul instead of one small one per step); the loop stacks b (and a, unless a is
    a step of a sequence already)."""
    return on_graph(graph, lambda roots, fired: rewrite_loops(
        roots, _sunk, "sink_scan_sums", fired, {}))
