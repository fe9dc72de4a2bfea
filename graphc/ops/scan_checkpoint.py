"""A checkpointed scan: a loop over about sqrt(T) segments of about sqrt(T) steps each."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from graphc import sizes
from graphc.node import Dim, Node
from graphc.ops.leaves import placeholder_node, scalar_constant
from graphc.ops.registry import make
from graphc.ops.scan_op import make_scan
from graphc.ops.shape_ops import size_value
from graphc.region import Region


def checkpointed_scan(init: Sequence[Node], xs: Sequence[Node], consts: Sequence[Node],
                      body: Region, length: Dim, reverse: bool) -> list[Node]:
    """The results of make_scan(init, xs, consts, body, length, reverse), computed by an
    outer scan over segments of k = max(isqrt(T), 1) steps whose body is an inner scan over
    one segment. Reverse mode then saves only the carries each segment starts from and
    recomputes a segment's steps while it runs back through it (sqrt(T) carries kept
    instead of T). The sequences are padded to whole segments by repeating their last step
    (a real input, so the padded steps' values and derivatives stay finite); a mask keeps
    the carries unchanged there, and the padded outputs are sliced off."""
    c, k_xs = len(init), len(xs)
    seg = sizes.maximum(sizes.isqrt(length), 1)
    n_seg = sizes.floordiv(sizes.add(length, sizes.add(seg, -1)), seg)
    padded = sizes.mul(n_seg, seg)
    steps = make("iota", n=padded, dtype=np.dtype(np.int64))
    t_len = size_value(length, np.int64)
    # a padded step repeats the last real one (no step at all when the length is 0)
    index = make("minimum", steps, make("sub", t_len, scalar_constant(1, np.dtype(np.int64))))
    mask = make("reshape", make("less", steps, t_len), shape=(n_seg, seg))
    x_segs = [make("reshape", make("take", x, index, axis=0), shape=(n_seg, seg) + x.shape[1:])
              for x in xs]

    # the inner loop: the body with its new carries kept only where the step is real
    step_mask = placeholder_node((), np.bool_, "real_step")
    carries = body.inputs[:c]
    inner_body = Region(
        carries + body.inputs[c:c + k_xs] + (step_mask,) + body.inputs[c + k_xs:],
        tuple(make("where", step_mask, out, old) for out, old in zip(body.outputs, carries))
        + body.outputs[c:])
    # the outer loop's body: one segment
    seg_carry = [placeholder_node(p.shape, p.dtype, p.attrs["name"]) for p in carries]
    seg_xs = [placeholder_node((seg,) + p.shape, p.dtype, p.attrs["name"])
              for p in body.inputs[c:c + k_xs]]
    seg_mask = placeholder_node((seg,), np.bool_, "real_steps")
    seg_consts = [placeholder_node(p.shape, p.dtype, p.attrs["name"])
                  for p in body.inputs[c + k_xs:]]
    inner = make_scan(seg_carry, seg_xs + [seg_mask], seg_consts, inner_body, seg, reverse)
    outer_body = Region(tuple(seg_carry + seg_xs + [seg_mask] + seg_consts), tuple(inner))
    outer = make_scan(init, x_segs + [mask], consts, outer_body, n_seg, reverse,
                      checkpoint=True)
    ys = []
    for y in outer[c:]:
        flat = make("reshape", y, shape=(padded,) + y.shape[2:])
        slices = ((0, length, 1),) + tuple((None, None, None) for _ in y.shape[2:])
        ys.append(make("slice", flat, slices=slices))
    return outer[:c] + ys
