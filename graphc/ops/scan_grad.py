"""scan's derivative: a scan in the other direction over the carries each step started from."""
from __future__ import annotations

from typing import Sequence

from graphc.node import Node
from graphc.ops.grad_helpers import zeros_like
from graphc.ops.leaves import placeholder_node
from graphc.ops.registry import make
from graphc.ops.scan_op import make_scan, scan_counts
from graphc.region import Region


def residual_scan(node: Node) -> list[Node]:
    """The scan of `node` that also stacks the carries each step starts from (its results:
    the scan's own, then one sequence per carry). Equal inputs and direction: the pass
    merge_scans makes it one loop with the scan itself."""
    attrs = node.attrs
    body: Region = attrs["body"]
    c, k, _, _ = scan_counts(attrs)
    ins = node.inputs
    grown = Region(body.inputs, body.outputs + body.inputs[:c])
    return make_scan(ins[:c], ins[c:c + k], ins[c + k:], grown, attrs["length"],
                     attrs["reverse"], attrs["checkpoint"])


def scan_vjp(siblings: Sequence[Node], cotangents: Sequence[Node | None],
             wanted: Sequence[bool]) -> list[Node | None]:
    """The cotangents of a scan's inputs (those `wanted`): a scan in the other direction
    whose carries are the carries' cotangents and the sums of the captured values'
    cotangents, over the sequences (carry each step started from, x, cotangent of y)."""
    from graphc.autodiff import vjp_nodes  # autodiff imports the ops
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
    back_body = Region(
        tuple(ct_carry + sums) + body.inputs[:c + k] + tuple(ct_y) + body.inputs[c + k:],
        tuple(grads[:n_c] + new_sums + grads[n_c:n_c + n_x]))

    saved = residual_scan(node)[c + y:]
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
