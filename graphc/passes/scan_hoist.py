"""Work of a scan's body that needs no carry, done before the loop: for all steps at once."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from graphc.graph import Graph
from graphc.node import Dim, Node, toposort
from graphc.ops import get_op
from graphc.ops.leaves import placeholder_node
from graphc.ops.scan_op import SCAN, make_scan, scan_counts
from graphc.region import Region
from graphc.passes.scan_walk import on_graph, rewrite_loops, substitute


class _NoRule(Exception):
    """A primitive without a batching rule: it would be unrolled over the steps."""


def _batched(values: list[Node], xs: dict[Node, Node], length: Dim) -> list[Node] | None:
    """`values` (of one step) for every step, the step on axis 0; None where some primitive
    has no batching rule (unrolling it over T steps would defeat the loop)."""
    from graphc.frontends.batching import Batcher  # batching rules live with gc.vmap

    class Strict(Batcher):
        def unroll(self, node: Node, ins: Sequence[Node], batched: Sequence[bool]) -> Node:
            raise _NoRule(node.op)
    try:
        return Strict(length).run(values, xs)
    except _NoRule:
        return None


def _hoisted(node: Node) -> list[Node] | None:
    """Every result of the loop of `node`, its body reading as new sequences the values it
    computed from the steps' slices and captured values alone, and as new captured values
    those it computed from captured values alone; None if there are none."""
    a = node.attrs
    body: Region = a["body"]
    c, k, _, _ = scan_counts(a)
    carries, steps, consts = (set(body.inputs[:c]), set(body.inputs[c:c + k]),
                              set(body.inputs[c + k:]))
    order = toposort(body.outputs)
    movable_ops = _movable()
    varies: dict[Node, bool] = {}  # depends on a carry, or on a step through a fixed op
    per_step: dict[Node, bool] = {}  # depends on a step's slice
    captured: dict[Node, bool] = {}  # depends on a captured value
    for n in order:
        batchable = not n.inputs or get_op(n.op).elementwise or n.op in movable_ops
        per_step[n] = n in steps or any(per_step[i] for i in n.inputs)
        captured[n] = n in consts or any(captured[i] for i in n.inputs)
        varies[n] = n in carries or any(varies[i] for i in n.inputs) or \
            (per_step[n] and not batchable)
    movable = {n for n in order if per_step[n] and not varies[n] and n.inputs}
    invariant = {n for n in order if captured[n] and not per_step[n] and not varies[n]
                 and n.inputs}
    users = {i for u in order if u not in movable and u not in invariant for i in u.inputs}
    outputs = set(body.outputs)
    wanted = [n for n in order if n in movable and (n in users or n in outputs)
              and not _only_elementwise(n, movable)]
    once = [n for n in order if n in invariant and (n in users or n in outputs)]
    if not wanted and not once:
        return None
    ins = node.inputs
    outer = dict(zip(body.inputs[c + k:], ins[c + k:]))  # the captured values, unbatched
    values = _batched(list(substitute(tuple(wanted), outer)),
                      dict(zip(body.inputs[c:c + k], ins[c:c + k])), a["length"])
    if values is None:
        values, wanted = [], []
        if not once:
            return None
    slots = [placeholder_node(n.shape, n.dtype, f"{n.op}_t") for n in wanted]
    fixed = [placeholder_node(n.shape, n.dtype, f"{n.op}_once") for n in once]
    outs = substitute(body.outputs, dict(zip(wanted + once, slots + fixed)))
    new_body = Region(body.inputs[:c + k] + tuple(slots) + body.inputs[c + k:] + tuple(fixed),
                      outs)
    return make_scan(ins[:c], list(ins[c:c + k]) + values,
                     list(ins[c + k:]) + list(substitute(tuple(once), outer)), new_body,
                     a["length"], a["reverse"], a["checkpoint"])


def _only_elementwise(n: Node, movable: set[Node]) -> bool:
    """n is computed from the steps' slices by views and elementwise ops alone: in the loop
    it fuses into the body's kernels, before it it would be stacked for every step and read
    back (a gradient's activations recomputed from the saved pre-activations)."""
    for m in toposort([n]):
        if m in movable and not (get_op(m.op).elementwise or get_op(m.op).scalar_view
                                 or get_op(m.op).reshapes
                                 or m.op in ("cast", "transpose", "slice")):
            return False
    return True


def _movable() -> frozenset[str]:
    """Primitives with a batching rule; not a loop (its steps stay in the loop body)."""
    from graphc.frontends.batching import RULES
    return frozenset(RULES) - {SCAN}


def hoist_scan_steps(graph: Graph) -> tuple[Graph, Counter]:
    """Values a scan's body computes from the steps' slices and captured values alone (such
    as x_t @ W) become sequences computed for all steps before the loop (one x @ W); values
    it computes from captured values alone (W.T) are computed once, before it."""
    return on_graph(graph, lambda roots, fired: rewrite_loops(
        roots, _hoisted, "hoist_scan_steps", fired, {}))
