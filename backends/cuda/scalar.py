"""The core ops (graphc.schedule.core_ops) in CUDA C: one table entry per op, spelled over
the helpers of the source's prelude (prelude.cuh), which the emulator compiles too."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from graphc.schedule import ir as kir

_CTYPES = {"float32": "float", "float64": "double", "int32": "int", "int64": "long long",
           "bool": "bool"}


def ctype(dtype: np.dtype) -> str:
    """The C type of a dtype (bool is C++'s one-byte bool, as numpy stores it)."""
    return _CTYPES[np.dtype(dtype).name]


def constant(dtype: np.dtype, value: object) -> str:
    """A literal of `dtype` (infinities and nan by their bits: no header needed)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return "true" if value else "false"
    if dtype.kind in "iu":
        v = int(value)  # type: ignore[call-overload]
        if dtype.itemsize == 8:
            return "(-9223372036854775807LL - 1)" if v == -2 ** 63 else f"{v}LL"
        return "(-2147483647 - 1)" if v == -2 ** 31 else f"{v}"
    v = float(value)  # type: ignore[arg-type]
    single = dtype == np.float32
    if math.isfinite(v):
        text = repr(float(np.float32(v))) if single else repr(v)
        return f"({text}f)" if single else f"({text})"
    if single:
        bits = int(np.array(v, np.float32).view(np.uint32))
        return f"__int_as_float({bits:#x})"
    bits = int(np.array(v, np.float64).view(np.uint64))
    return f"__longlong_as_double({bits:#x}LL)"


def _is_float(e: kir.Expr) -> bool:
    return np.dtype(e.dtype).kind == "f"


def _math(name: str) -> Callable:
    """A CUDA math function by name; float32 takes the `f` variant (C's names: both NVRTC
    and the host's libm have them)."""
    def spell(e: kir.Apply, a: list[str]) -> str:
        fn = name + ("f" if np.dtype(e.args[0].dtype) == np.float32 else "")
        return f"{fn}({', '.join(a)})"
    return spell


def _arith(op: str, helper: str) -> Callable:
    """Floats by the operator; integers through a helper that wraps (no signed overflow)."""
    def spell(e: kir.Apply, a: list[str]) -> str:
        if _is_float(e.args[0]):
            return f"({a[0]} {op} {a[1]})"
        return f"{helper}({a[0]}, {a[1]})"
    return spell


def _binary(op: str) -> Callable:
    return lambda e, a: f"({a[0]} {op} {a[1]})"


def _neg(e: kir.Apply, a: list[str]) -> str:
    return f"(-{a[0]})" if _is_float(e.args[0]) else f"gc_sub(({ctype(e.dtype)})0, {a[0]})"


def _abs(e: kir.Apply, a: list[str]) -> str:
    if _is_float(e.args[0]):
        return _math("fabs")(e, a)
    return f"gc_abs({a[0]})"


def _rem(e: kir.Apply, a: list[str]) -> str:
    return _math("fmod")(e, a) if _is_float(e.args[0]) else f"({a[0]} % {a[1]})"


def _cast(e: kir.Apply, a: list[str]) -> str:
    return f"gc_cast<{ctype(e.dtype)}>({a[0]})"


Spelling = Callable[[kir.Apply, list[str]], str]

TABLE: dict[str, Spelling] = {
    "add": _arith("+", "gc_add"), "sub": _arith("-", "gc_sub"), "mul": _arith("*", "gc_mul"),
    "fdiv": _binary("/"), "neg": _neg, "abs": _abs,
    "max": lambda e, a: f"gc_maximum({a[0]}, {a[1]})",
    "min": lambda e, a: f"gc_minimum({a[0]}, {a[1]})",
    **{name: _math(name) for name in (
        "exp", "log", "log1p", "sin", "cos", "tan", "tanh", "erf", "sinh", "cosh", "asinh",
        "acosh", "atanh", "asin", "acos", "atan", "atan2", "sqrt", "floor", "ceil", "pow",
        "expm1", "log2", "log10", "rint")},
    "rem": _rem, "idiv": _binary("/"),
    "ipow": lambda e, a: f"gc_ipow({a[0]}, {a[1]})",
    "lt": _binary("<"), "le": _binary("<="), "gt": _binary(">"), "ge": _binary(">="),
    "eq": _binary("=="), "ne": _binary("!="),  # C's != is true with a nan, as numpy's
    "isnan": lambda e, a: f"({a[0]} != {a[0]})",
    "select": lambda e, a: f"({a[0]} ? {a[1]} : {a[2]})",
    "and": _binary("&"), "or": _binary("|"), "xor": _binary("^"),
    "lshr": lambda e, a: f"gc_lshr({a[0]}, {a[1]})",
    "cast": _cast,
}


def spell(e: kir.Apply, args: list[str]) -> str:
    """The C expression of core op e.op over `args` (the C expressions of e.args)."""
    try:
        fn = TABLE[e.op]
    except KeyError:
        raise NotImplementedError(f"cuda: no spelling of the core op {e.op!r}") from None
    return fn(e, args)
