"""Specialization: cheaper forms of the same values (division by a constant -> a multiply)."""
from __future__ import annotations

import numpy as np

from graphc.ops.leaves import scalar_constant
from graphc.ops.registry import make
from graphc.passes.patterns import Const, Op, Var, constant_value
from graphc.passes.rewrite import Rule, rule


@rule("div_const", Op("div", Var("x"), Const(name="c")), "x / c -> x * (1/c)")
def _div_const(b, node):
    c = constant_value(b["c"])
    if node.dtype.kind != "f" or c == 0 or not np.isfinite(c) or b["c"].ndim:
        return None
    with np.errstate(all="ignore"):
        inv = np.asarray(1.0 / float(c)).astype(node.dtype)
    if not np.abs(inv) >= np.finfo(node.dtype).tiny or not np.isfinite(inv):
        return None  # 1/c overflows (c subnormal) or loses precision: keep the division
    return make("mul", b["x"], scalar_constant(inv, node.dtype))


RULES: list[Rule] = [v for v in list(globals().values()) if isinstance(v, Rule)]
