"""scan's derivative: a scan in the other direction over residuals the forward loop saved."""
from __future__ import annotations

from typing import Sequence

from graphc.node import Node, toposort
from graphc.ops.grad_helpers import zeros_like
from graphc.ops.leaves import placeholder_node
from graphc.ops.registry import get_op, make
from graphc.ops.scan_op import make_scan, scan_counts
from graphc.region import Region


def residual_scan(node: Node, residuals: Sequence[Node] | None = None) -> list[Node]:
    """The scan of `node` that also stacks, per step, each of `residuals` (nodes of its
    body; by default the carries each step starts from): its results are the scan's own,
    then one sequence per residual. Equal inputs and direction: the pass merge_scans makes
    it one loop with the scan itself."""
    attrs = node.attrs
    body: Region = attrs["body"]
    c, k, _, _ = scan_counts(attrs)
    ins = node.inputs
    extra = body.inputs[:c] if residuals is None else tuple(residuals)
    grown = Region(body.inputs, body.outputs + extra)
    return make_scan(ins[:c], ins[c:c + k], ins[c + k:], grown, attrs["length"],
                     attrs["reverse"], attrs["checkpoint"])


def _depends(order: Sequence[Node], sources: set[Node]) -> set[Node]:
    """The nodes of `order` (a toposort) that read one of `sources`, themselves included."""
    hit = set(sources)
    for n in order:
        if n not in hit and any(i in hit for i in n.inputs):
            hit.add(n)
    return hit


def saved_residuals(carries: Sequence[Node], cotangents: Sequence[Node],
                    back: Sequence[Node]) -> list[Node]:
    """The forward values the reverse body `back` reads that depend on a carry: the nodes
    free of `cotangents` that a node reading a cotangent (or `back` itself) uses. Saving
    them per step spares the reverse loop the forward's carry-dependent work (a step's
    h @ W_hh and its gates); what depends on the steps' slices and captured values alone
    stays, for hoist_scan_steps to compute for all steps at once."""
    order = toposort(back)
    on_ct = _depends(order, set(cotangents))
    on_carry = _depends(order, set(carries)) - on_ct
    found: dict[Node, None] = {}
    for r in [i for n in order if n in on_ct for i in n.inputs] + list(back):
        if r in on_carry:
            # a view is stacked as the value it views: the reverse body takes the view
            # again for free (and the sums sink_scan_sums looks for keep their form)
            while r.inputs and (get_op(r.op).reshapes or r.op == "transpose") and \
                    r.inputs[0] in on_carry:
                r = r.inputs[0]
            found[r] = None
    return list(found)


def scan_vjp(siblings: Sequence[Node], cotangents: Sequence[Node | None],
             wanted: Sequence[bool]) -> list[Node | None]:
    """The cotangents of a scan's inputs (those `wanted`): a scan in the other direction
    whose carries are the carries' cotangents and the sums of the captured values'
    cotangents, over the sequences (the residuals the forward saved, x, cotangent of y)."""
    from graphc.autodiff import _substitute, vjp_nodes  # autodiff imports the ops
    node = siblings[0]
    attrs = node.attrs
    body: Region = attrs["body"]
    c, k, m, y = scan_counts(attrs)
    ins = node.inputs
    init, xs, consts = ins[:c], ins[c:c + k], ins[c + k:]
    given = {s.attrs["output"]: ct for s, ct in zip(siblings, cotangents) if ct is not None}
    float_c = [i for i in range(c) if body.inputs[i].dtype.kind == "f"]
    # Every float carry's cotangent flows from step to step; the others only where wanted.
    float_x = [j for j in range(k) if body.inputs[c + j].dtype.kind == "f" and wanted[c + j]]
    float_m = [j for j in range(m)
               if body.inputs[c + k + j].dtype.kind == "f" and wanted[c + k + j]]
    y_given = [j for j in range(y) if c + j in given and body.outputs[c + j].dtype.kind == "f"]
    if not float_c and not y_given:
        return [None] * len(ins)

    # The body of the reverse loop: the body's own placeholders stand for the step's carry,
    # x and captured values; new ones for the cotangents flowing in and the running sums.
    ct_carry = [placeholder_node(body.inputs[i].shape, body.inputs[i].dtype, f"ct_carry{i}")
                for i in float_c]
    ct_y = [placeholder_node(body.outputs[c + j].shape, body.outputs[c + j].dtype, f"ct_y{j}")
            for j in y_given]
    sums = [placeholder_node(body.inputs[c + k + j].shape, body.inputs[c + k + j].dtype,
                             f"sum_ct_{body.inputs[c + k + j].attrs['name']}")
            for j in float_m]
    outs = [body.outputs[i] for i in float_c] + [body.outputs[c + j] for j in y_given]
    wrt = [body.inputs[i] for i in float_c] + [body.inputs[c + j] for j in float_x] + \
        [body.inputs[c + k + j] for j in float_m]
    grads = vjp_nodes(outs, ct_carry + ct_y, wrt)
    n_c, n_x = len(float_c), len(float_x)
    new_sums = [make("add", s, g) for s, g in zip(sums, grads[n_c + n_x:])]
    back_outs = grads[:n_c] + new_sums + grads[n_c:n_c + n_x]
    carries = body.inputs[:c]
    # a checkpointed loop saves only carries: its segments are recomputed by design; else,
    # as JAX's scan, the forward stacks what the reverse body would recompute from the
    # carries, so the reverse loop runs none of the forward's GEMMs again
    residuals = list(carries) if attrs["checkpoint"] else \
        saved_residuals(carries, ct_carry + ct_y + sums, back_outs)
    stand_in = {r: placeholder_node(r.shape, r.dtype, f"saved{n}")
                for n, r in enumerate(residuals) if r not in carries}
    back_outs = _substitute(back_outs, stand_in)
    res_phs = tuple(stand_in.get(r, r) for r in residuals)
    back_body = Region(
        tuple(ct_carry + sums) + res_phs + body.inputs[c:c + k] + tuple(ct_y)
        + body.inputs[c + k:], tuple(back_outs))

    saved = residual_scan(node, residuals)[c + y:]
    back_init = [given[i] if i in given else zeros_like(init[i]) for i in float_c] + \
        [zeros_like(consts[j]) for j in float_m]
    back_xs = saved + list(xs) + [given[c + j] for j in y_given]
    # a checkpointed loop's reverse loop is one too: passes keep its per-step values in it
    back = make_scan(back_init, back_xs, consts, back_body, attrs["length"],
                     not attrs["reverse"], attrs["checkpoint"])
    result: list[Node | None] = [None] * len(ins)
    for n, i in enumerate(float_c):
        result[i] = back[n]
    for n, j in enumerate(float_m):
        result[c + k + j] = back[n_c + n]
    for n, j in enumerate(float_x):
        result[c + j] = back[n_c + len(float_m) + n]
    return result
