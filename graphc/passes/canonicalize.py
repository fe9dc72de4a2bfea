"""Algebraic simplification: identities (x*1, x+0, --x...), view chains (transpose of
transpose, reshape chains), casts, and sums of broadcasts, as pattern -> replacement rules."""
from __future__ import annotations

import numpy as np

from graphc.node import Node
from graphc.ops.leaves import scalar_constant
from graphc.ops.registry import get_op, make
from graphc.ops.shape_ops import size_value
from graphc.ops.shapes import known_size, size_product
from graphc.passes.patterns import Const, Op, Var, constant_value
from graphc.passes.rewrite import Rule, rule

X, Y = Var("x"), Var("y")


def _fits(b: dict, node: Node, key: str = "x") -> Node | None:
    """The bound node when it already has the node's exact type (so no broadcast is lost)."""
    x = b[key]
    return x if x.type == node.type else None


@rule("add_zero", Op("add", X, Const(0)))
def _add_zero(b, node):
    return _fits(b, node)


@rule("zero_add", Op("add", Const(0), X))
def _zero_add(b, node):
    return _fits(b, node)


@rule("sub_zero", Op("sub", X, Const(0)))
def _sub_zero(b, node):
    return _fits(b, node)


@rule("zero_sub", Op("sub", Const(0), X))
def _zero_sub(b, node):
    return make("neg", b["x"]) if b["x"].type == node.type else None


@rule("mul_one", Op("mul", X, Const(1)))
def _mul_one(b, node):
    return _fits(b, node)


@rule("one_mul", Op("mul", Const(1), X))
def _one_mul(b, node):
    return _fits(b, node)


@rule("div_one", Op("div", X, Const(1)))
def _div_one(b, node):
    return _fits(b, node)


@rule("mul_minus_one", Op("mul", X, Const(-1)))
def _mul_minus_one(b, node):
    return make("neg", b["x"]) if b["x"].type == node.type else None


@rule("minus_one_mul", Op("mul", Const(-1), X))
def _minus_one_mul(b, node):
    return make("neg", b["x"]) if b["x"].type == node.type else None


def _finite(node: Node) -> bool:
    """x*0 is 0 only for finite x (inf*0 and nan*0 are nan): only producers that are finite
    whatever their inputs qualify (sigmoid(nan) is nan, so bounded functions do not)."""
    if node.op == "cast":
        return node.inputs[0].dtype.kind in "biu"
    if node.op == "constant":
        return bool(np.all(np.isfinite(node.attrs["value"].array)))
    return get_op(node.op).finite


def _zeros(node: Node) -> Node | None:
    zero = scalar_constant(0, node.dtype)
    if not node.shape:
        return zero
    return make("broadcast_to", zero, shape=node.shape)


@rule("mul_zero", Op("mul", X, Const(0)), "x*0 -> 0 where x is finite by construction")
def _mul_zero(b, node):
    return _zeros(node) if _finite(b["x"]) else None


@rule("zero_mul", Op("mul", Const(0), X), "0*x -> 0 where x is finite by construction")
def _zero_mul(b, node):
    return _zeros(node) if _finite(b["x"]) else None


@rule("neg_neg", Op("neg", Op("neg", X)))
def _neg_neg(b, node):
    return b["x"]


@rule("add_neg", Op("add", X, Op("neg", Y)), "x + -y -> x - y")
def _add_neg(b, node):
    return make("sub", b["x"], b["y"])


@rule("neg_add", Op("add", Op("neg", X), Y), "-x + y -> y - x")
def _neg_add(b, node):
    return make("sub", b["y"], b["x"])


@rule("sub_neg", Op("sub", X, Op("neg", Y)), "x - -y -> x + y")
def _sub_neg(b, node):
    return make("add", b["x"], b["y"])


@rule("neg_mul_neg", Op("mul", Op("neg", X), Op("neg", Y)), "-x * -y -> x * y")
def _neg_mul_neg(b, node):
    return make("mul", b["x"], b["y"])


def _power_rule(name: str, exponent: float, build):
    @rule(name, Op("pow", X, Const(exponent)))
    def replace(b, node):
        out = build(b["x"])
        return out if out is not None and out.type == node.type else None
    return replace


_pow_one = _power_rule("pow_one", 1, lambda x: x)
_pow_two = _power_rule("pow_two", 2, lambda x: make("square", x))
_pow_half = _power_rule("pow_half", 0.5,
                        lambda x: make("sqrt", x) if x.dtype.kind == "f" else None)
_pow_minus_one = _power_rule(
    "pow_minus_one", -1,
    lambda x: make("div", scalar_constant(1, x.dtype), x) if x.dtype.kind == "f" else None)


@rule("transpose_transpose", Op("transpose", Op("transpose", X, name="inner")))
def _transpose_transpose(b, node):
    inner, outer = b["inner"].attrs["perm"], node.attrs["perm"]
    perm = tuple(inner[p] for p in outer)
    if perm == tuple(range(len(perm))):
        return b["x"]
    return make("transpose", b["x"], perm=perm)


@rule("transpose_identity", Op("transpose", X, perm=lambda p: p == tuple(range(len(p)))))
def _transpose_identity(b, node):
    return b["x"]


@rule("reshape_chain", Op("reshape", Var("inner", where=lambda n: get_op(n.op).reshapes)))
def _reshape_chain(b, node):
    return make("reshape", b["inner"].inputs[0], shape=node.attrs["shape"])


@rule("reshape_noop", Op("reshape", X))
def _reshape_noop(b, node):
    return b["x"] if b["x"].shape == node.shape else None


@rule("squeeze_expand", Op("squeeze", Op("expand_dims", X, name="inner")))
def _squeeze_expand(b, node):
    return b["x"] if b["inner"].attrs["axes"] == node.attrs["axes"] else None


@rule("expand_squeeze", Op("expand_dims", Op("squeeze", X, name="inner")))
def _expand_squeeze(b, node):
    same = b["inner"].attrs["axes"] == node.attrs["axes"]
    return b["x"] if same and b["x"].shape == node.shape else None


@rule("cast_roundtrip", Op("cast", Op("cast", X, name="inner")),
      "cast(cast(x, wider), x.dtype) -> x")
def _cast_roundtrip(b, node):
    x, mid = b["x"], b["inner"]
    widening = np.can_cast(x.dtype, mid.dtype, casting="safe")
    if x.dtype.kind in "iu" and mid.dtype.kind == "f" and x.dtype.itemsize >= mid.dtype.itemsize:
        widening = False  # numpy calls int64 -> float64 safe, but 2**53 + 1 does not survive
    return x if widening and node.dtype == x.dtype else None


@rule("broadcast_noop", Op("broadcast_to", X))
def _broadcast_noop(b, node):
    return _fits(b, node)


@rule("sum_trivial", Op("sum", X))
def _sum_trivial(b, node):
    """A sum over size-1 axes only, kept as size 1, changes nothing."""
    x = b["x"]
    if node.attrs["keepdims"] and all(x.shape[a] == 1 for a in node.attrs["axes"]):
        return x if x.type == node.type else None
    return None


@rule("sum_of_broadcast_scalar", Op("sum", Var("bcast", where=lambda n: n.op == "broadcast_to")),
      "sum(broadcast(s)) over all axes -> s * count")
def _sum_of_broadcast_scalar(b, node):
    bcast = b["bcast"]
    s = bcast.inputs[0]
    axes = node.attrs["axes"]
    if known_size(s.shape) != 1 or len(axes) != bcast.ndim or node.attrs["keepdims"]:
        return None
    if s.dtype != node.dtype:
        return None
    n = size_value(size_product(bcast.shape), node.dtype)
    scalar = make("reshape", s, shape=()) if s.shape else s
    return make("mul", scalar, n)


@rule("all_reduce_one_process", Op("all_reduce", X, ranks=1),
      "a job of one process: the sum and the mean over it are the tensor itself")
def _all_reduce_one_process(b, node):
    return b["x"]


RULES: list[Rule] = [v for v in list(globals().values()) if isinstance(v, Rule)]
_ = constant_value  # re-exported for rule authors
