"""The closed set of scalar core ops that every kernel body is lowered to before a backend
sees it (graphc.schedule.scalar). Their meaning is fixed here, once: a renderer is a table
from these names to its target's spelling, and the numpy kernel runner evaluates them.

Conventions: an op's dtype is the dtype of its result; integers wrap; floats are IEEE.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CoreOp:
    name: str
    arity: int
    doc: str


_OPS = [
    # arithmetic (int or float; ints wrap)
    ("add", 2, "a + b"), ("sub", 2, "a - b"), ("mul", 2, "a * b"), ("neg", 1, "-a"),
    ("fdiv", 2, "a / b, floats"),
    ("abs", 1, "|a| (float: the sign bit cleared, nan stays nan)"),
    ("max", 2, "numpy.maximum: a nan in either argument gives nan"),
    ("min", 2, "numpy.minimum: a nan in either argument gives nan"),
    # float functions (libm's, correctly rounded where libm is)
    *((name, 1, f"{name}(a), floats") for name in (
        "exp", "log", "log1p", "sqrt", "sin", "cos", "tan", "tanh", "erf", "sinh", "cosh",
        "asinh", "acosh", "atanh", "asin", "acos", "atan", "floor", "ceil", "expm1", "log2",
        "log10")),
    ("rint", 1, "a rounded to the nearest integer, halves to even (C rint), floats"),
    ("rem", 2, "a - trunc(a / b) * b, the sign of a (C fmod; ints: b must not be 0 or -1, "
               "the lowering guards those)"),
    ("idiv", 2, "trunc(a / b), ints (b must not be 0 or -1, the lowering guards those)"),
    ("atan2", 2, "atan2(a, b), floats"),
    ("pow", 2, "a ** b, floats (C pow)"),
    ("ipow", 2, "a ** b, integers; a negative b gives 0, or +-1 for a = +-1 "
                "(numpy raises instead: a value_check kernel runs first)"),
    # comparisons: bool results; ordered ones are false when a nan is involved
    ("lt", 2, "a < b"), ("le", 2, "a <= b"), ("gt", 2, "a > b"), ("ge", 2, "a >= b"),
    ("eq", 2, "a == b"), ("ne", 2, "a != b (true when either is nan, as numpy)"),
    ("isnan", 1, "a != a"),
    ("select", 3, "b where a else c (a bool)"),
    # bits (ints and bools)
    ("and", 2, "a & b"), ("or", 2, "a | b"), ("xor", 2, "a ^ b"),
    ("lshr", 2, "a >> b, logical (the bits of a as unsigned)"),
    ("cast", 1, "a converted to the op's dtype by numpy's astype rules, except that floats "
                "to ints saturate (nan gives 0) instead of being undefined"),
]

CORE_OPS: dict[str, CoreOp] = {name: CoreOp(name, arity, doc) for name, arity, doc in _OPS}

COMPARISONS = ("lt", "le", "gt", "ge", "eq", "ne")
FLOAT_FUNCTIONS = ("exp", "log", "log1p", "sqrt", "sin", "cos", "tan", "tanh", "erf", "sinh",
                   "cosh", "asinh", "acosh", "atanh", "asin", "acos", "atan", "floor", "ceil",
                   "expm1", "log2", "log10", "rint", "atan2", "pow")


REDUCTIONS = ("sum", "max", "min", "argmax")


def reduction_identity(op: str, dtype: np.dtype) -> int | float | bool:
    """What a reduction starts from, and what it leaves over no elements: 0 for sum and
    argmax, -inf/+inf (or the integer extremes, False/True) for max/min. argmax follows
    numpy: the first maximum, or the first nan when there is one."""
    dtype = np.dtype(dtype)
    if op in ("sum", "argmax"):
        return 0
    if dtype.kind == "f":
        return -np.inf if op == "max" else np.inf
    if dtype.kind == "b":
        return op != "max"
    info = np.iinfo(dtype)
    return int(info.min if op == "max" else info.max)
