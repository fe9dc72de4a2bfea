"""ReLU's gradient mask moved through a max pool's gradient, into the pool's index.

A max pool over relu(z) sends each window's cotangent to the first entry that attains the
window's maximum M (or to its first nan); relu's gradient then masks that entry by z > 0,
which there is M > 0 (relu(z) > 0 exactly where z > 0; a window holding a nan has M nan,
the max propagates it, and its nan entry fails z > 0 as M > 0 does). So a window whose
maximum is not positive passes nothing, and the others pass it unmasked:

    where(z > 0, windows_grad(where(position == first, g, 0), relu(z)), 0)
        -> windows_grad(where(position == first', g, 0), relu(z))

first' = min(where(win > 0 and win == M, position, count)): no entry attains in a window
whose maximum is not positive (nor in one holding a nan: no entry equals nan), and where
it is positive, win > 0 holds wherever win == M. The mask kernel over the activation (W5's
first ReLU: 1.2 MB read twice and written once a step) is gone, the index kernel reads
what it read before, and the pool gradient's placing kernel, now the last writer of the
gradient, takes the weight gradient's layout copy as its store (copy_forward.py).
Overlapping windows hold too: every window adding into an entry picked it, so each has M
equal to that entry."""
from __future__ import annotations

import numpy as np

from graphc.dtypes import bool_
from graphc.node import Node
from graphc.ops.leaves import scalar_constant
from graphc.ops.registry import make
from graphc.passes.patterns import Const, Op, Var
from graphc.passes.rewrite import Rule, rule

_WINDOW_ATTRS = ("axes", "sizes", "strides")


@rule("relu_mask_through_max_pool",
      Op("where", Op("greater", Var("z"), Const(0)),
         Op("windows_grad", Op("where", Var("pick"), Var("g"), Const(0), name="w"),
            Op("relu", Var("z"), name="r"), name="wg"),
         Const(0)),
      "relu's mask under a max pool's gradient -> windows whose maximum is not > 0 pick "
      "no entry")
def _relu_mask_through_max_pool(b, node):
    wg, r, pick = b["wg"], b["r"], b["pick"]
    found = _first_max_pick(pick, r, wg.attrs)
    if found is None:
        return None
    position, first, hit, _ = found
    # (win > 0 where win == M is M > 0; per entry, where M > 0 would be hoisted out of
    # the min's loop by LLVM as a branch around it, which then does not vectorize)
    win = hit.inputs[0]
    positive = make("greater", win, scalar_constant(0, win.dtype))
    attains = make("where", positive, hit, scalar_constant(False, bool_))
    count = first.inputs[0].inputs[2]
    first = make("min", make("where", attains, position, count), **first.attrs)
    w = make("where", make("equal", position, first), b["g"], b["w"].inputs[2])
    if w.type != b["w"].type:
        return None
    out = make("windows_grad", w, r, **wg.attrs)
    return out if out.type == node.type else None


def _first_max_pick(pick: Node, r: Node, window_attrs: dict
                    ) -> tuple[Node, Node, Node, Node] | None:
    """(position, first, hit, M) where `pick` is max_first's gradient selector over
    windows(r) taken with `window_attrs`: equal(position, first), first = min(where(attains,
    position, count)) over the window axes, attains = where(hit, True, win != win), hit =
    (win == M), M = max_first(win) (or max) with the window axes kept. Else None."""
    if pick.op != "equal":
        return None
    position, first = pick.inputs
    if position.op != "constant" or first.op != "min" or not first.attrs["keepdims"]:
        return None
    positions = position.attrs["value"].array
    count_where = first.inputs[0]
    if count_where.op != "where":
        return None
    attains, position_again, count = count_where.inputs
    if position_again is not position or count.op != "constant":
        return None
    count_value = count.attrs["value"].array
    if (count_value.size != 1 or np.unique(positions).size != positions.size
            or np.isin(count_value, positions).any()):
        return None  # (two entries of one position could be picked without attaining)
    if attains.op != "where":
        return None
    hit, true, nan = attains.inputs
    if hit.op != "equal" or nan.op != "not_equal" or true.op != "constant" \
            or not bool(np.all(true.attrs["value"].array)):
        return None
    win, kept_max = hit.inputs
    if nan.inputs != (win, win) or win.op != "windows" or win.inputs[0] is not r:
        return None
    if any(win.attrs.get(k) != window_attrs.get(k) for k in _WINDOW_ATTRS):
        return None
    window_axes = tuple(range(win.ndim - len(win.attrs["sizes"]), win.ndim))
    if tuple(first.attrs["axes"]) != window_axes:
        return None
    source = kept_max.inputs[0] if kept_max.op == "expand_dims" else kept_max
    if (source.op not in ("max_first", "max") or source.inputs[0] is not win
            or tuple(source.attrs["axes"]) != window_axes):
        return None
    if kept_max.op == "expand_dims" and tuple(kept_max.attrs["axes"]) != window_axes:
        return None
    if kept_max.op != "expand_dims" and not source.attrs["keepdims"]:
        return None
    return position, first, hit, kept_max


RULES: list[Rule] = [_relu_mask_through_max_pool]
