"""Rules that keep broadcast scalars scalar: a derivative broadcasts its seed (1/N for a
mean) through reshapes and negations before it meets a tensor; these rules let the scalar
meet the tensor directly, and fold a kept-dims sum and its squeeze into one sum."""
from __future__ import annotations

from graphc.node import Node
from graphc.ops.leaves import scalar_constant
from graphc.ops.registry import get_op, make
from graphc.ops.shapes import size_product
from graphc.passes.patterns import Const, Op, Var, constant_value
from graphc.passes.rewrite import Rule, rule

X = Var("x")
_VIEWS = ("expand_dims", "reshape", "squeeze", "broadcast_to")


def _one_element(node: Node) -> bool:
    return size_product(node.shape) == 1


def _scalar(node: Node) -> Node:
    """A one-element node as a 0-d one."""
    return make("reshape", node, shape=()) if node.shape else node


def _scalar_source(node: Node) -> Node | None:
    """The one-element value a chain of views and broadcasts repeats, as a 0-d node."""
    while node.op in _VIEWS and not _one_element(node):
        node = node.inputs[0]
    while node.op in _VIEWS and _one_element(node.inputs[0]):
        node = node.inputs[0]
    return _scalar(node) if _one_element(node) else None


@rule("broadcast_scalar_view", Op("broadcast_to", Var("inner", where=lambda n: n.op in _VIEWS)),
      "broadcast of a reshaped or broadcast scalar -> broadcast of the scalar")
def _broadcast_scalar_view(b, node):
    inner = b["inner"]
    if inner.op == "broadcast_to":  # numpy broadcasting composes
        return make("broadcast_to", inner.inputs[0], shape=node.attrs["shape"])
    source = _scalar_source(inner)
    if source is None or source is inner:
        return None
    return make("broadcast_to", source, shape=node.attrs["shape"])


@rule("view_of_broadcast_scalar", Op("expand_dims", Op("broadcast_to", X, name="inner")),
      "expand_dims of a broadcast scalar -> a broadcast to the new shape")
def _view_of_broadcast_scalar(b, node):
    if not _one_element(b["x"]):
        return None
    return make("broadcast_to", _scalar(b["x"]), shape=node.shape)


def _unary_elementwise(node: Node) -> bool:
    opdef = get_op(node.op)
    return opdef.elementwise and len(node.inputs) == 1 and not opdef.user_defined


def _unary_of_broadcast(b, node):
    if not _unary_elementwise(node):
        return None
    inner = b["inner"]
    if not _one_element(inner.inputs[0]):
        return None
    return make("broadcast_to", make(node.op, inner.inputs[0], **node.attrs),
                shape=node.shape)


RULES: list[Rule] = []
for _op in ("neg", "exp", "log", "sqrt", "reciprocal", "abs", "square", "cast"):
    RULES.append(Rule(f"{_op}_of_broadcast_scalar",
                      Op(_op, Op("broadcast_to", X, name="inner")), _unary_of_broadcast,
                      f"{_op}(broadcast scalar) -> broadcast({_op}(scalar))"))


def _scalar_operand(b, node):
    """An elementwise binary op whose broadcast scalar operand can stay a scalar: the other
    operand already has the result's shape."""
    a, c = node.inputs
    for side, other in ((0, c), (1, a)):
        here = node.inputs[side]
        if here.op == "broadcast_to" and other.shape == node.shape and \
                other.dtype == node.dtype and _one_element(here.inputs[0]):
            scalar = _scalar(here.inputs[0])
            args = (scalar, other) if side == 0 else (other, scalar)
            return make(node.op, *args)
    return None


for _op in ("add", "sub", "mul", "div"):
    RULES.append(Rule(f"{_op}_broadcast_scalar", Op(_op, Var("a"), Var("c")), _scalar_operand,
                      f"{_op} with a broadcast scalar -> {_op} with the scalar"))


@rule("where_broadcast_scalar", Op("where", Var("cond"), Var("a"), Var("c")),
      "where(c, broadcast scalar, y) -> where(c, scalar, y) when c has the result's shape")
def _where_broadcast_scalar(b, node):
    cond = b["cond"]
    if cond.shape != node.shape:
        return None
    args = list(node.inputs)
    for k in (1, 2):
        if args[k].op == "broadcast_to" and _one_element(args[k].inputs[0]):
            args[k] = _scalar(args[k].inputs[0])
    return make("where", *args) if args != list(node.inputs) else None


@rule("squeeze_kept_sum", Op("squeeze", Op("sum", X, name="total")),
      "squeeze(sum(x, axes, keepdims)) over the same axes -> sum(x, axes)")
def _squeeze_kept_sum(b, node):
    total = b["total"]
    if not total.attrs["keepdims"] or tuple(total.attrs["axes"]) != tuple(node.attrs["axes"]) \
            or node.attrs.get("indices"):
        return None
    return make("sum", b["x"], axes=total.attrs["axes"], keepdims=False)


@rule("neg_div_constant", Op("neg", Op("div", Const(name="c"), Var("d"))),
      "-(c / d) -> (-c) / d")
def _neg_div_constant(b, node):
    c = b["c"]
    value = constant_value(c)
    if value is None or c.shape:
        return None
    return make("div", scalar_constant(-value.item(), c.dtype), b["d"])


RULES += [v for v in list(globals().values()) if isinstance(v, Rule) and v not in RULES]


def _checked_one_hot(node: Node, axis: int) -> bool:
    """Whether node is one_hot(check_index(i, size=n), depth=n) along its last axis `axis`:
    every row then holds exactly one 1 (the check raises otherwise)."""
    if node.op != "one_hot" or axis != node.ndim - 1:
        return False
    checked = node.inputs[0]
    return checked.op == "check_index" and checked.attrs["size"] == node.attrs["depth"] > 0


@rule("sum_of_one_hot", Op("sum", Op("mul", Var("a"), Var("c"), name="product")),
      "sum of s * one_hot(checked labels) over the classes -> s (one class per row)")
def _sum_of_one_hot(b, node):
    axes = tuple(node.attrs["axes"])
    if len(axes) != 1:
        return None
    for s, hot in ((b["a"], b["c"]), (b["c"], b["a"])):
        if _one_element(s) and _checked_one_hot(hot, axes[0]) and s.dtype == node.dtype:
            return make("broadcast_to", _scalar(s), shape=node.shape) if node.shape \
                else _scalar(s)
    return None


RULES.append(_sum_of_one_hot)


def _factor_scalar(b, node):
    """s*a ± s*b -> s*(a ± b) for a scalar s both products share: one product fewer."""
    left, right = node.inputs
    if left.op != "mul" or right.op != "mul":
        return None
    for s in left.inputs:
        if s in right.inputs and s.ndim == 0:
            a = left.inputs[1] if left.inputs[0] is s else left.inputs[0]
            c = right.inputs[1] if right.inputs[0] is s else right.inputs[0]
            inner = make(node.op, a, c)
            if inner.shape == node.shape and inner.dtype == node.dtype:
                return make("mul", s, inner)
    return None


for _op in ("add", "sub"):
    RULES.append(Rule(f"{_op}_common_scalar", Op(_op, Var("a"), Var("c")), _factor_scalar,
                      f"s*a {_op} s*b -> s*(a {_op} b)"))
