"""The core ops (graphc.schedule.core_ops) in numpy: the kernel runner evaluates lowered
bodies with this table, so it checks the core lowering against the reference interpreter."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from graphc.schedule import ir

_erf = np.frompyfunc(math.erf, 1, 1)


def _ipow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer power; a negative exponent gives 0, or +-1 for a base of +-1."""
    a, b = np.broadcast_arrays(a, b)
    out = np.power(a, np.maximum(b, 0))
    negative = b < 0
    if np.any(negative):
        odd = (b & 1).astype(bool)
        ones = np.where(a == 1, 1, np.where(a == -1, np.where(odd, -1, 1), 0))
        out = np.where(negative, ones.astype(a.dtype), out)
    return out


def _idiv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division rounding toward zero (C's), from numpy's floor division."""
    q = np.floor_divide(a, b)
    return q + ((q * b != a) & ((a < 0) != (b < 0)))


def _lshr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    unsigned = np.dtype(f"u{a.dtype.itemsize}")
    return (a.astype(unsigned) >> np.asarray(b).astype(unsigned)).astype(a.dtype)


def _cast(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """numpy's astype, except floats to ints saturate and nan gives 0 (as native code)."""
    if a.dtype.kind == "f" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        clipped = np.clip(np.nan_to_num(a, nan=0.0), info.min, info.max)
        big = clipped >= float(info.max)  # (info.max is not exact in floats)
        out = clipped.astype(np.float64).astype(dtype)
        return np.where(big, info.max, out).astype(dtype)
    return a.astype(dtype)


Table = dict[str, Callable[..., np.ndarray]]

TABLE: Table = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "neg": np.negative,
    "fdiv": np.true_divide, "abs": np.abs, "max": np.maximum, "min": np.minimum,
    "exp": np.exp, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt, "sin": np.sin,
    "cos": np.cos, "tan": np.tan, "tanh": np.tanh, "sinh": np.sinh, "cosh": np.cosh,
    "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh, "asin": np.arcsin,
    "acos": np.arccos, "atan": np.arctan, "atan2": np.arctan2, "floor": np.floor,
    "ceil": np.ceil, "pow": np.power, "ipow": _ipow,
    "expm1": np.expm1, "log2": np.log2, "log10": np.log10, "rint": np.rint, "rem": np.fmod,
    "idiv": _idiv,
    "erf": lambda a: np.asarray(_erf(a), dtype=a.dtype),
    "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
    "eq": np.equal, "ne": np.not_equal, "isnan": np.isnan,
    "select": np.where, "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor,
    "lshr": _lshr,
}


def evaluate(e: ir.Apply, args: list[np.ndarray]) -> np.ndarray:
    """The value of one core op over numpy arrays, in the op's dtype."""
    with np.errstate(all="ignore"):
        if e.op == "cast":
            return _cast(np.asarray(args[0]), e.dtype)
        try:
            fn = TABLE[e.op]
        except KeyError:
            raise NotImplementedError(f"numpy kernels: no core op {e.op!r}") from None
        value = np.asarray(fn(*args))
    return value if value.dtype == e.dtype else value.astype(e.dtype)
