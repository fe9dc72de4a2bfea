"""numpy's further elementwise functions as primitives: hyperbolic and inverse trigonometric
functions, log1p/expm1/exp2/log2/log10, rounding, mod/floor_divide and isnan/isfinite."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import sympy as sp

from graphc.dtypes import bool_
from graphc.errors import DTypeError
from graphc.node import Node, TensorType
from graphc.ops.elementwise import _elementwise
from graphc.ops.registry import OpDef, register
from graphc.ops.shapes import broadcast_shapes
from graphc.symbolic_numpy import (Ceil, Expm1, Floor, IsFinite, IsNan, Log1p, Log2, Log10,
                                   Rint)

# Rows: name, dtype rule, SymPy definition, numpy reference, doc. Rounding takes floats only:
# the DSL returns integer tensors unchanged (numpy 2 keeps their dtype too).
Row = tuple[str, str, Any, Any, str]

UNARY: list[Row] = [
    ("sinh", "float", sp.sinh, np.sinh, "hyperbolic sine"),
    ("cosh", "float", sp.cosh, np.cosh, "hyperbolic cosine"),
    ("arcsin", "float", sp.asin, np.arcsin, "inverse sine"),
    ("arccos", "float", sp.acos, np.arccos, "inverse cosine"),
    ("arctan", "float", sp.atan, np.arctan, "inverse tangent"),
    ("arcsinh", "float", sp.asinh, np.arcsinh, "inverse hyperbolic sine"),
    ("arccosh", "float", sp.acosh, np.arccosh, "inverse hyperbolic cosine"),
    ("arctanh", "float", sp.atanh, np.arctanh, "inverse hyperbolic tangent"),
    ("log1p", "float", Log1p, np.log1p, "log(1 + x), accurate near 0"),
    ("expm1", "float", Expm1, np.expm1, "exp(x) - 1, accurate near 0"),
    ("exp2", "float", lambda x: 2 ** x, np.exp2, "2**x"),
    ("log2", "float", Log2, np.log2, "base-2 logarithm"),
    ("log10", "float", Log10, np.log10, "base-10 logarithm"),
    ("floor", "float", Floor, np.floor, "largest integer <= x (derivative 0)"),
    ("ceil", "float", Ceil, np.ceil, "smallest integer >= x (derivative 0)"),
    ("round", "float", Rint, np.rint, "nearest integer, halves to even (derivative 0)"),
]

BINARY: list[Row] = [
    ("arctan2", "float", sp.atan2, np.arctan2, "angle of the point (b, a): atan2(a, b)"),
    # The definitions give the derivatives (PyTorch's: d/da 1, d/db -floor(a/b); floor_divide
    # 0); the backends' code is numpy's exact algorithm (graphc.schedule.scalar_numpy).
    ("mod", "numeric", lambda a, b: a - b * Floor(a / b), np.remainder,
     "a mod b with the sign of b (numpy.remainder, Python's %)"),
    ("floor_divide", "numeric", lambda a, b: Floor(a / b), np.floor_divide,
     "floor(a / b) (numpy.floor_divide, Python's //)"),
]

for _name, _rule, _sym, _fn, _doc in UNARY:
    _elementwise(_name, 1, _rule, _sym, _fn, _doc)
for _name, _rule, _sym, _fn, _doc in BINARY:
    _elementwise(_name, 2, _rule, _sym, _fn, _doc)


def _float_test_infer(inputs: Sequence[Node], attrs: Mapping[str, Any]) -> TensorType:
    (x,) = inputs
    if x.dtype.kind != "f":
        raise DTypeError(f"needs a float input, got {x.dtype}")
    return TensorType(broadcast_shapes(x.shape), bool_)


def _test_impl(fn: Any) -> Any:
    return lambda arrays, attrs: fn(arrays[0])


for _test, _cls, _ufunc, _what in (("isnan", IsNan, np.isnan, "x is nan"),
                                   ("isfinite", IsFinite, np.isfinite,
                                    "x is neither inf nor nan")):
    register(OpDef(name=_test, infer=_float_test_infer, arity=1, doc=_what, sympy_def=_cls,
                   differentiable=False, finite=True, impl=_test_impl(_ufunc)))

NUMPY_ELEMENTWISE_NAMES = ([u[0] for u in UNARY] + [b[0] for b in BINARY]
                           + ["isnan", "isfinite"])
