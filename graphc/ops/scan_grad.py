"""scan's derivative: a scan in the other direction over residuals the forward loop saved."""
from __future__ import annotations

from typing import Sequence

from graphc.node import Node, toposort
from graphc.ops.grad_helpers import zeros_like
from graphc.ops.leaves import placeholder_node
from graphc.ops.registry import get_op, make, rebuild
from graphc.ops.scan_op import make_scan, scan_counts
from graphc.region import Region


def residual_scan(node: Node, residuals: Sequence[Node]) -> list[Node]:
    """The scan of `node` that also stacks, per step, each of `residuals` (nodes of its
    body, its carries as the step starts among them): its results are the scan's own, then
    one sequence per residual. Equal inputs and direction: the pass merge_scans makes it
    one loop with the scan itself."""
    attrs = node.attrs
    body: Region = attrs["body"]
    c, k, _, _ = scan_counts(attrs)
    ins = node.inputs
    grown = Region(body.inputs, body.outputs + tuple(residuals))
    return make_scan(ins[:c], ins[c:c + k], ins[c + k:], grown, attrs["length"],
                     attrs["reverse"], attrs["checkpoint"])


def _depends(order: Sequence[Node], sources: set[Node]) -> set[Node]:
    """The nodes of `order` (a toposort) that read one of `sources`, themselves included."""
    hit = set(sources)
    for n in order:
        if n not in hit and any(i in hit for i in n.inputs):
            hit.add(n)
    return hit


def shape_reads_as_zeros(back: Sequence[Node], cotangents: Sequence[Node]) -> list[Node]:
    """`back` with the forward values its cotangent nodes read only for their shape (the
    `like` of an unslice) replaced by zeros of that shape: nothing to save or recompute."""
    order = toposort(back)
    on_ct = _depends(order, set(cotangents))
    memo: dict[Node, Node] = {}
    for n in order:
        skip = get_op(n.op).shape_only(len(n.inputs)) if n in on_ct else ()
        ins = [zeros_like(i) if pos in skip and i not in on_ct else memo[i]
               for pos, i in enumerate(n.inputs)]
        memo[n] = rebuild(n, ins) if any(a is not b for a, b in zip(ins, n.inputs)) else n
    return [memo[r] for r in back]


def _recomputed(n: Node) -> bool:
    """Cheap to compute again in the reverse body, fused into its elementwise kernels."""
    d = get_op(n.op)
    return bool(n.inputs) and (d.elementwise or bool(d.reshapes) or bool(d.scalar_view)
                               or n.op in ("transpose", "slice", "concatenate"))


def saved_residuals(carries: Sequence[Node], cotangents: Sequence[Node],
                    back: Sequence[Node]) -> list[Node]:
    """The forward values the reverse body `back` should read from the forward loop rather
    than recompute: the carries and the results of costly ops (a GEMM, a reduction, a
    nested loop) on which the values it reads from the forward depend through a carry, or
    the elementwise op that first reads such a result (z = h @ W_hh + x_t @ W_ih: one
    value instead of two to combine again). Other elementwise ops and views (the gates'
    activations) are computed again, fused into the reverse body's kernels: a few stacked
    values instead of every activation. What depends on the steps' slices and captured
    values alone is computed again too (before the loop, where hoist_scan_steps moves
    it)."""
    order = toposort(back)
    on_ct = _depends(order, set(cotangents))
    on_carry = _depends(order, set(carries)) - on_ct
    found: dict[Node, None] = {}
    seen: set[Node] = set()
    todo = [i for n in order if n in on_ct for i in n.inputs] + list(back)
    while todo:
        r = todo.pop()
        if r in seen or r not in on_carry:
            continue
        seen.add(r)
        if r in carries or not _recomputed(r) or any(
                i in on_carry and i not in carries and not _recomputed(i) for i in r.inputs):
            found[r] = None  # (a costly op's elementwise epilogue: z = h @ W_hh + x_t W_ih)
        else:
            todo.extend(r.inputs)
    position = {n: i for i, n in enumerate(order)}
    return sorted(found, key=position.__getitem__)


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
    back_outs = shape_reads_as_zeros(back_outs, ct_carry + ct_y + sums)
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
