"""numpy's further elementwise functions and reductions (argmin, prod, var, std) over Tensors."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.dtypes import bool_, int64
from graphc.errors import DTypeError
from graphc.node import Node
from graphc.ops import make
from graphc.ops.leaves import scalar_constant
from graphc.frontends.convert import cast, operands, to_bool, to_node
from graphc.frontends.functions import (Axis, _average_dtype, _axes, _check_op_operands,
                                        _float_operands, _shape_error, _unary_float, argmax,
                                        count, mean, sqrt)
from graphc.frontends.numpy_shape import _slice
from graphc.frontends.tensor import Tensor

sinh = _unary_float("sinh")
cosh = _unary_float("cosh")
arcsin = _unary_float("arcsin")
arccos = _unary_float("arccos")
arctan = _unary_float("arctan")
arcsinh = _unary_float("arcsinh")
arccosh = _unary_float("arccosh")
arctanh = _unary_float("arctanh")
log1p = _unary_float("log1p")
expm1 = _unary_float("expm1")
exp2 = _unary_float("exp2")
log2 = _unary_float("log2")
log10 = _unary_float("log10")


def arctan2(a: Any, b: Any) -> Tensor:
    """Elementwise angle of the point (b, a) in radians (ints compute in float64)."""
    _check_op_operands([a, b], "arctan2")
    return Tensor(make("arctan2", *_float_operands([a, b], "arctan2")))


def _rounding(name: str):
    def fn(x: Any) -> Tensor:
        _check_op_operands([x], name)
        node = to_node(x, f"{name} operand")
        if node.dtype.kind != "f":  # integers and bools are already whole (numpy 2 keeps them)
            return Tensor(node)
        return Tensor(make(name, node))
    fn.__name__ = name
    fn.__doc__ = f"Elementwise {name} (derivative 0; ints and bools are returned unchanged)."
    return fn


floor = _rounding("floor")
ceil = _rounding("ceil")
_rint = _rounding("round")


def round(x: Any, decimals: int = 0) -> Tensor:  # noqa: A001 (numpy's name)
    """numpy.round: to `decimals` places, halves to even (x * 10**d rounded, then / 10**d,
    as numpy computes it); derivative 0."""
    if not isinstance(decimals, (int, np.integer)) or isinstance(decimals, bool):
        raise TypeError(f"round: decimals must be an int, got {decimals!r}")
    node = to_node(x, "round operand")
    if node.dtype.kind != "f":
        if decimals < 0:
            raise NotImplementedError("round: negative decimals on integer tensors are not "
                                      "supported")
        return Tensor(node)
    if decimals == 0:
        return _rint(node)
    scale = scalar_constant(10.0 ** abs(int(decimals)), node.dtype)
    there, back = ("mul", "div") if decimals > 0 else ("div", "mul")
    return Tensor(make(back, _rint(make(there, node, scale)).node, scale))


def _int_or_float_binary(name: str, a: Any, b: Any) -> Tensor:
    _check_op_operands([a, b], name)
    nodes = operands([a, b], name)
    if nodes[0].dtype == bool_:  # numpy computes bools in a small int
        nodes = [cast(n, int64) for n in nodes]
    return Tensor(make(name, *nodes))


def mod(a: Any, b: Any) -> Tensor:
    """numpy.remainder (Python's %): the result has the sign of b; x % 0 is nan for floats
    and 0 for ints. Gradient: 1 for a, -floor(a / b) for b (PyTorch's remainder)."""
    return _int_or_float_binary("mod", a, b)


remainder = mod


def floor_divide(a: Any, b: Any) -> Tensor:
    """numpy.floor_divide (Python's //): floor(a / b), computed as numpy does; ints: x // 0
    is 0. Derivative 0."""
    return _int_or_float_binary("floor_divide", a, b)


def clip(x: Any, a_min: Any = None, a_max: Any = None) -> Tensor:
    """numpy.clip: min(max(x, a_min), a_max) (a_min > a_max gives a_max; a nan bound or x
    gives nan). The gradient passes to x where a_min <= x <= a_max (PyTorch's clamp), to a
    bound where it is the result."""
    if a_min is None and a_max is None:
        raise ValueError("clip: give a_min, a_max or both")
    _check_op_operands([v for v in (x, a_min, a_max) if v is not None], "clip")
    given = [v for v in (x, a_min, a_max) if v is not None]
    nodes = operands(given, "clip")
    out, bounds = nodes[0], nodes[1:]
    if out.dtype == bool_:
        raise DTypeError("clip: bool tensors cannot be clipped")
    lo = bounds.pop(0) if a_min is not None else None
    hi = bounds.pop(0) if a_max is not None else None
    if lo is not None:
        out = _select_bound(make("less", out, lo), lo, out)
    if hi is not None:
        out = _select_bound(make("greater", out, hi), hi, out)
    return Tensor(out)


def _select_bound(past: Node, bound: Node, value: Node) -> Node:
    """bound where `past` (or where bound is nan, as numpy's maximum/minimum), else value."""
    nan_free = bound.op == "constant" and not np.isnan(bound.attrs["value"].array).any()
    if bound.dtype.kind == "f" and not nan_free:
        past = make("where", make("isnan", bound), scalar_constant(True, bool_), past)
    return make("where", past, bound, value)


def isnan(x: Any) -> Tensor:
    """Elementwise x is nan (False for ints and bools)."""
    node = to_node(x, "isnan operand")
    return Tensor(make("isnan", node) if node.dtype.kind == "f" else _full_bool(node, False))


def isfinite(x: Any) -> Tensor:
    """Elementwise x is neither inf nor nan (True for ints and bools)."""
    node = to_node(x, "isfinite operand")
    return Tensor(make("isfinite", node) if node.dtype.kind == "f" else _full_bool(node, True))


def _full_bool(like: Node, value: bool) -> Node:
    """`value` in `like`'s shape (its sizes known at call time included)."""
    value_node = scalar_constant(value, bool_)
    return make("broadcast_to", value_node, shape=like.shape) if like.shape else value_node


# ---- logic: on truth values (any dtype: nonzero is True), results bool -----------------

def logical_and(a: Any, b: Any) -> Tensor:
    _check_op_operands([a, b], "logical_and")
    x, y = to_bool(a, "logical_and operand 0"), to_bool(b, "logical_and operand 1")
    return Tensor(make("where", x, y, scalar_constant(False, bool_)))


def logical_or(a: Any, b: Any) -> Tensor:
    _check_op_operands([a, b], "logical_or")
    x, y = to_bool(a, "logical_or operand 0"), to_bool(b, "logical_or operand 1")
    return Tensor(make("where", x, scalar_constant(True, bool_), y))


def logical_not(x: Any) -> Tensor:
    _check_op_operands([x], "logical_not")
    return Tensor(make("equal", to_bool(x, "logical_not operand"),
                       scalar_constant(False, bool_)))


# ---- reductions -------------------------------------------------------------------------

def argmin(x: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index of the smallest entry along `axis` (None: of the flattened tensor); the first
    of ties, or the first nan, like numpy. It is argmax of an order-reversing map: -x for
    floats, -x - 1 (= ~x, no overflow) for ints, not x for bools."""
    node = to_node(x, "argmin operand")
    if node.dtype.kind == "f":
        flipped = make("neg", node)
    elif node.dtype == bool_:
        flipped = logical_not(node).node
    else:
        flipped = make("sub", make("neg", node), scalar_constant(1, node.dtype))
    return argmax(Tensor(flipped), axis=axis, keepdims=keepdims)


def prod(x: Any, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Product over axes (bools and int32 multiply in int64, like numpy). Computed as a tree
    of products of halves, so the gradient of each entry is the product of the others (right
    where entries are 0: no division). The reduced axes need sizes known when building."""
    node = to_node(x, "prod operand")
    axes = _axes("prod", axis, node)
    if node.dtype in (bool_, np.dtype(np.int32)):
        node = cast(node, int64)
    for a in axes:
        if not isinstance(node.shape[a], int):
            raise _shape_error("prod", f"axis {a} needs a size known when building the graph",
                               node)
    out = node
    for a in sorted(axes, reverse=True):
        out = _tree_product(out, a)
    if not keepdims and axes:
        out = make("squeeze", out, axes=axes)
    return Tensor(out)


def _tree_product(x: Node, axis: int) -> Node:
    """The product along `axis` (kept as size 1) by multiplying halves: depth log2(n)."""
    n = x.shape[axis]
    assert isinstance(n, int)  # (prod checked it)
    if n == 0:  # the empty product
        kept = make("sum", x, axes=(axis,), keepdims=True)
        return make("broadcast_to", scalar_constant(1, x.dtype), shape=kept.shape)
    while n > 1:
        half = n // 2
        product = make("mul", _slice(x, axis, 0, half, 1), _slice(x, axis, half, 2 * half, 1))
        x = (make("concatenate", product, _slice(x, axis, 2 * half, n, 1), axis=axis)
             if n % 2 else product)
        n = half + n % 2
    return x


def var(x: Any, axis: Axis = None, ddof: int = 0, keepdims: bool = False) -> Tensor:
    """Variance: the mean of squared deviations from the mean, divided by n - ddof instead of
    n (numpy's ddof=0 by default; ints compute in float64)."""
    if not isinstance(ddof, (int, np.integer)) or isinstance(ddof, bool):
        raise TypeError(f"var: ddof must be an int, got {ddof!r}")
    node = to_node(x, "var operand")
    dtype = _average_dtype(node.dtype)
    node = cast(node, dtype)
    axes = _axes("var", axis, node)
    deviation = make("sub", node, mean(Tensor(node), axes, keepdims=True).node)
    total = make("sum", make("square", deviation), axes=axes, keepdims=bool(keepdims))
    n = make("sub", count(node, axes, dtype), scalar_constant(int(ddof), dtype))
    # numpy: n - ddof <= 0 divides by 0 (inf or nan), never by a negative count
    return Tensor(make("div", total, make("maximum", n, scalar_constant(0, dtype))))


def std(x: Any, axis: Axis = None, ddof: int = 0, keepdims: bool = False) -> Tensor:
    """Standard deviation: sqrt(var(x, axis, ddof))."""
    return sqrt(var(x, axis, ddof=ddof, keepdims=keepdims))


__all__ = ["sinh", "cosh", "arcsin", "arccos", "arctan", "arctan2", "arcsinh", "arccosh",
           "arctanh", "log1p", "expm1", "exp2", "log2", "log10", "floor", "ceil", "round",
           "clip", "mod", "remainder", "floor_divide", "logical_and", "logical_or",
           "logical_not", "isnan", "isfinite", "argmin", "prod", "var", "std"]
