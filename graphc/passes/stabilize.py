"""Stabilization: rewrites of formulas that overflow or lose precision in floating point
into their stable fused forms (log_softmax, softplus)."""
from __future__ import annotations

import numpy as np

from graphc.node import Node
from graphc.ops.leaves import scalar_constant
from graphc.ops.registry import get_op, make
from graphc.passes.patterns import Const, Op, Var
from graphc.passes.rewrite import Rule, rule

X = Var("x")


def _softmax_axis(total: Node, x: Node) -> int | None:
    """The axis when `total` is sum(exp(x), axis, keepdims=True) (or its expand_dims form)."""
    if total.op == "expand_dims" and total.inputs[0].op == "sum":
        inner = total.inputs[0]
        if inner.attrs["keepdims"] or inner.attrs["axes"] != total.attrs["axes"]:
            return None
        total = make("sum", inner.inputs[0], axes=inner.attrs["axes"], keepdims=True)
    if total.op != "sum" or not total.attrs["keepdims"] or len(total.attrs["axes"]) != 1:
        return None
    summed = total.inputs[0]
    if summed.op != "exp" or summed.inputs[0] is not x:
        return None
    return total.attrs["axes"][0]


@rule("log_softmax", Op("log", Op("div", Op("exp", X), Var("total"))),
      "log(exp(x) / sum(exp(x))) -> log_softmax(x)")
def _log_softmax(b, node):
    x = b["x"]
    axis = _softmax_axis(b["total"], x)
    if axis is None or x.shape != node.shape:
        return None
    return make("log_softmax", x, axis=axis)


@rule("log_exp", Op("log", Op("exp", X)), "log(exp(x)) -> x")
def _log_exp(b, node):
    return b["x"]


@rule("exp_log", Op("exp", Op("log", X)),
      "exp(log(x)) -> x where x >= 0 (else log is nan: where(x >= 0, x, nan))")
def _exp_log(b, node):
    x = b["x"]
    if get_op(x.op).nonnegative:  # x >= 0 or nan: exp(log(x)) is x exactly
        return x
    zero, nan = scalar_constant(0, x.dtype), scalar_constant(np.nan, x.dtype)
    return make("where", make("greater_equal", x, zero), x, nan)


@rule("log_sigmoid", Op("log", Op("sigmoid", X)), "log(sigmoid(x)) -> -softplus(-x)")
def _log_sigmoid(b, node):
    return make("neg", make("softplus", make("neg", b["x"])))


@rule("log_one_minus_sigmoid", Op("log", Op("sub", Const(1), Op("sigmoid", X))),
      "log(1 - sigmoid(x)) -> -softplus(x)")
def _log_one_minus_sigmoid(b, node):
    out = make("neg", make("softplus", b["x"]))
    return out if out.type == node.type else None


@rule("log1p_exp", Op("log", Op("add", Const(1), Op("exp", X))), "log(1 + exp(x)) -> softplus(x)")
def _log1p_exp(b, node):
    out = make("softplus", b["x"])
    return out if out.type == node.type else None


@rule("log_exp1p", Op("log", Op("add", Op("exp", X), Const(1))), "log(exp(x) + 1) -> softplus(x)")
def _log_exp1p(b, node):
    out = make("softplus", b["x"])
    return out if out.type == node.type else None


RULES: list[Rule] = [v for v in list(globals().values()) if isinstance(v, Rule)]
