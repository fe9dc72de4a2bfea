"""Elementwise primitives: each a SymPy definition (the source of its derivative table and
of the backends' scalar code) plus its numpy reference. Inputs broadcast like numpy."""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import sympy as sp

from graphc.dtypes import bool_
from graphc.errors import DTypeError
from graphc.node import Node, TensorType
from graphc.ops.grad_helpers import unbroadcast
from graphc.ops.leaves import scalar_constant
from graphc.ops.registry import OpDef, make, register
from graphc.ops.shapes import broadcast_shapes
from graphc.symbolic import Sigmoid, Softplus

_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def _erf(x: np.ndarray) -> np.ndarray:
    return np.asarray(_erf_scalar(x), dtype=x.dtype)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # e = exp(-|x|) never overflows, and e/(1+e) keeps full relative precision in the
    # negative tail (0.5*(1+tanh(x/2)) rounds to 0 below about -37).
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(np.zeros((), x.dtype), x)


def _relu(x: np.ndarray) -> np.ndarray:
    zero = np.zeros((), x.dtype)
    # + 0: relu(-0.0) is +0.0 (the definition's "else 0"), whichever zero np.maximum keeps
    return np.maximum(x, zero) + zero


# Rules for dtypes: "float" needs float inputs; "numeric" takes int or float; "compare"
# takes any dtype and gives bool. All inputs of one node share one dtype (the DSL casts).
def elementwise_infer(rule: str) -> Callable[[Sequence[Node], Mapping[str, Any]], TensorType]:
    def infer(inputs: Sequence[Node], attrs: Mapping[str, Any]) -> TensorType:
        dtypes = {i.dtype for i in inputs}
        if len(dtypes) != 1:
            raise DTypeError("inputs must share one dtype")
        (dtype,) = dtypes
        if rule == "float" and dtype.kind != "f":
            raise DTypeError(f"needs float inputs, got {dtype}")
        if rule == "numeric" and dtype.kind not in "if":
            raise DTypeError(f"needs int or float inputs, got {dtype}")
        shape = broadcast_shapes(*(i.shape for i in inputs))
        return TensorType(shape, bool_ if rule == "compare" else dtype)

    return infer


def _elementwise(name: str, arity: int, rule: str, sympy_def: Callable[..., Any],
                 numpy_fn: Callable[..., np.ndarray], doc: str, **facts: Any) -> OpDef:
    """Registers one elementwise primitive; `facts` are further OpDef fields."""
    def impl(arrays: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> np.ndarray:
        with np.errstate(all="ignore"):
            return numpy_fn(*arrays)

    return register(OpDef(name=name, infer=elementwise_infer(rule), impl=impl, doc=doc,
                          sympy_def=sympy_def, arity=arity, **facts))


def _max(a: Any, b: Any) -> Any:
    return sp.Piecewise((a, a >= b), (b, True))


def _min(a: Any, b: Any) -> Any:
    return sp.Piecewise((a, a <= b), (b, True))


# Ties (PyTorch's and JAX's convention): each argument gets half the cotangent, so the
# two partials of max(x, x) still add up to 1. NaN compares unequal: both partials are 0.
def _max_partials(a: Any, b: Any) -> tuple[Any, Any]:
    half = sp.Rational(1, 2)
    return (sp.Piecewise((1, a > b), (half, sp.Eq(a, b)), (0, True)),
            sp.Piecewise((1, b > a), (half, sp.Eq(a, b)), (0, True)))


def _min_partials(a: Any, b: Any) -> tuple[Any, Any]:
    half = sp.Rational(1, 2)
    return (sp.Piecewise((1, a < b), (half, sp.Eq(a, b)), (0, True)),
            sp.Piecewise((1, b < a), (half, sp.Eq(a, b)), (0, True)))


def _pow_partials(a: Any, b: Any) -> tuple[Any, Any]:
    """PyTorch's: 0 where a**b is locally constant in the argument, where sympy.diff's
    b*a**(b-1) and a**b*log(a) are 0*inf or 0*-inf: d/da of a**0, d/db of 0**b for b >= 0."""
    return (sp.Piecewise((0, sp.Eq(b, 0)), (b * a ** (b - 1), True)),
            # (no And: conditions stay single comparisons, which to_sympy reads back)
            sp.Piecewise((a ** b * sp.log(a), sp.Ne(a, 0)), (0, b >= 0),
                         (a ** b * sp.log(a), True)))


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.true_divide(a, b)


# numpy's refusal (ValueError), in the words every backend uses
NEGATIVE_POWER = "integers to negative integer powers are not allowed"


def _pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "i" and np.any(b < 0):
        raise ValueError(NEGATIVE_POWER)
    return np.power(a, b)


# Rows: name, dtype rule, SymPy definition, numpy reference, doc[, OpDef facts].
NONNEGATIVE = {"nonnegative": True}  # >= 0 (or nan) for any input

_Row = tuple[str, str, Callable[..., Any], Callable[..., np.ndarray], str]
_RowWithFacts = tuple[str, str, Callable[..., Any], Callable[..., np.ndarray], str,
                      dict[str, bool]]

UNARY: list[_Row | _RowWithFacts] = [
    ("neg", "numeric", lambda x: -x, np.negative, "-x"),
    ("exp", "float", sp.exp, np.exp, "e**x", NONNEGATIVE),
    ("log", "float", sp.log, np.log, "natural logarithm"),
    ("sqrt", "float", sp.sqrt, np.sqrt, "square root", NONNEGATIVE),
    ("square", "numeric", lambda x: x ** 2, np.square, "x**2", NONNEGATIVE),
    ("abs", "numeric", sp.Abs, np.abs, "|x|", NONNEGATIVE),
    ("sign", "numeric", sp.sign, np.sign, "-1, 0 or 1"),
    ("sin", "float", sp.sin, np.sin, "sine"),
    ("cos", "float", sp.cos, np.cos, "cosine"),
    ("tan", "float", sp.tan, np.tan, "tangent"),
    ("cot", "float", sp.cot, lambda x: 1.0 / np.tan(x), "cotangent"),
    ("sec", "float", sp.sec, lambda x: 1.0 / np.cos(x), "secant"),
    ("csc", "float", sp.csc, lambda x: 1.0 / np.sin(x), "cosecant"),
    ("tanh", "float", sp.tanh, np.tanh, "hyperbolic tangent"),
    ("sigmoid", "float", Sigmoid, _sigmoid, "logistic 1/(1+e**-x)", NONNEGATIVE),
    ("softplus", "float", Softplus, _softplus, "log(1+e**x)", NONNEGATIVE),
    ("relu", "numeric", lambda x: sp.Piecewise((x, x > 0), (0, True)), _relu, "max(x, 0)",
     NONNEGATIVE),
    ("erf", "float", sp.erf, _erf, "error function"),
]

BINARY: list[tuple[Any, ...]] = [
    ("add", "numeric", lambda a, b: a + b, np.add, "a + b"),
    ("sub", "numeric", lambda a, b: a - b, np.subtract, "a - b"),
    ("mul", "numeric", lambda a, b: a * b, np.multiply, "a * b"),
    ("div", "float", lambda a, b: a / b, _div, "a / b"),
    ("pow", "numeric", lambda a, b: a ** b, _pow, "a ** b", {"sympy_partials": _pow_partials}),
    ("logb", "float", lambda a, b: sp.log(a) / sp.log(b), lambda a, b: np.log(a) / np.log(b),
     "logarithm of a to base b"),
    ("maximum", "numeric", _max, np.maximum, "larger of a and b",
     {"sympy_partials": _max_partials}),
    ("minimum", "numeric", _min, np.minimum, "smaller of a and b",
     {"sympy_partials": _min_partials}),
]

COMPARE = [
    ("less", sp.StrictLessThan, np.less, "a < b"),
    ("less_equal", sp.LessThan, np.less_equal, "a <= b"),
    ("greater", sp.StrictGreaterThan, np.greater, "a > b"),
    ("greater_equal", sp.GreaterThan, np.greater_equal, "a >= b"),
    ("equal", sp.Eq, np.equal, "a == b"),
    ("not_equal", sp.Ne, np.not_equal, "a != b"),
]

for _name, _rule, _sym, _fn, _doc, *_facts in UNARY:
    _elementwise(_name, 1, _rule, _sym, _fn, _doc, **(_facts[0] if _facts else {}))
for _name, _rule, _sym, _fn, _doc, *_facts in BINARY:
    _elementwise(_name, 2, _rule, _sym, _fn, _doc, **(_facts[0] if _facts else {}))
for _name, _sym, _fn, _doc in COMPARE:
    # A comparison gives 0 or 1 whatever its inputs (nan included): always finite.
    _elementwise(_name, 2, "compare", _sym, _fn, _doc, differentiable=False, finite=True)


def _where_infer(inputs: Sequence[Node], attrs: Mapping[str, Any]) -> TensorType:
    cond, a, b = inputs
    if cond.dtype != bool_:
        raise DTypeError(f"condition must be bool, got {cond.dtype}")
    if a.dtype != b.dtype:
        raise DTypeError("both branches must share one dtype")
    return TensorType(broadcast_shapes(cond.shape, a.shape, b.shape), a.dtype)


def _where_vjp(node: Node, g: Node) -> list[Node | None]:
    cond, a, b = node.inputs
    zero = scalar_constant(0, g.dtype)
    return [None, unbroadcast(make("where", cond, g, zero), a),
            unbroadcast(make("where", cond, zero, g), b)]


register(OpDef(
    name="where", infer=_where_infer, arity=3, doc="a where cond else b", vjp=_where_vjp,
    nondifferentiable_inputs=(0,),  # the boolean condition
    impl=lambda arrays, attrs: np.where(*arrays),
    sympy_def=lambda c, a, b: sp.Piecewise((a, sp.Ne(c, 0)), (b, True)),
))

ELEMENTWISE_NAMES = ([u[0] for u in UNARY] + [b[0] for b in BINARY]
                     + [c[0] for c in COMPARE] + ["where"])
