"""Core-op lowerings of numpy's mod, floor_divide, isnan and isfinite: numpy's own algorithm
(npy_divmod), with the integer cases C leaves undefined (b = 0, MIN // -1) made numpy's."""
from __future__ import annotations

from typing import Callable

import numpy as np

from graphc.schedule.ir import Apply, Const, Expr

BOOL = np.dtype(bool)


def _ap(op: str, *args: Expr, dtype: np.dtype | None = None) -> Apply:
    """Core op `op`; its dtype is its first argument's (select: its first branch's)."""
    if dtype is None:
        dtype = args[1].dtype if op == "select" else args[0].dtype
    return Apply(op, tuple(args), np.dtype(dtype))


def _c(value: float, like: Expr) -> Const:
    return Const(int(value) if like.dtype.kind in "iu" else float(value), like.dtype)


def _b(op: str, a: Expr, b: Expr) -> Apply:
    return _ap(op, a, b, dtype=BOOL)


def _signs_differ(r: Expr, b: Expr) -> Apply:
    """r != 0 and r, b of opposite signs: truncation and flooring disagree."""
    zero = _c(0, r)
    return _ap("and", _b("ne", r, zero), _ap("xor", _b("lt", r, zero), _b("lt", b, zero)))


def _int_parts(a: Expr, b: Expr) -> tuple[Expr, Expr, Expr, Expr]:
    """(b == 0, b == -1, trunc(a / b), a rem b) with the undefined divisors replaced by 1."""
    zero_b, minus_one = _b("eq", b, _c(0, b)), _b("eq", b, _c(-1, b))
    safe = _ap("select", _ap("or", zero_b, minus_one), _c(1, b), b)
    return zero_b, minus_one, _ap("idiv", a, safe), _ap("rem", a, safe)


def _float_mod(a: Expr, b: Expr) -> tuple[Expr, Expr]:
    """npy_divmod's remainder (Python's sign) and the fmod it started from."""
    m = _ap("rem", a, b)
    zero = _c(0, m)
    signed_zero = _ap("select", _b("lt", b, zero), _c(-0.0, m), zero)
    adjusted = _ap("select", _signs_differ(m, b), _ap("add", m, b), m)
    return _ap("select", _b("eq", m, zero), signed_zero, adjusted), m


def mod(a: Expr, b: Expr) -> Expr:
    """numpy.remainder: the result has the sign of b; ints: x % 0 is 0."""
    if a.dtype.kind in "iu":
        _, _, _, r = _int_parts(a, b)
        return _ap("select", _signs_differ(r, b), _ap("add", r, b), r)
    out, m = _float_mod(a, b)
    return _ap("select", _b("eq", b, _c(0, b)), m, out)  # x mod 0 is fmod's nan


def floor_divide(a: Expr, b: Expr) -> Expr:
    """numpy.floor_divide: (a - fmod(a, b)) / b snapped to an integer (npy_divmod); ints:
    x // 0 is 0 and MIN // -1 wraps to MIN."""
    if a.dtype.kind in "iu":
        zero_b, minus_one, q, r = _int_parts(a, b)
        q = _ap("select", _signs_differ(r, b), _ap("sub", q, _c(1, q)), q)
        q = _ap("select", minus_one, _ap("neg", a), q)
        return _ap("select", zero_b, _c(0, q), q)
    m = _ap("rem", a, b)
    zero, one = _c(0, m), _c(1, m)
    div = _ap("fdiv", _ap("sub", a, m), b)
    div = _ap("select", _signs_differ(m, b), _ap("sub", div, one), div)
    fl = _ap("floor", div)
    snapped = _ap("select", _b("gt", _ap("sub", div, fl), _c(0.5, m)), _ap("add", fl, one), fl)
    quotient = _ap("fdiv", a, b)
    signed_zero = _ap("select", _b("lt", quotient, zero), _c(-0.0, m), zero)
    out = _ap("select", _b("ne", div, zero), snapped, signed_zero)
    return _ap("select", _b("eq", b, zero), quotient, out)


def isnan(x: Expr) -> Expr:
    return _ap("isnan", x, dtype=BOOL)


def isfinite(x: Expr) -> Expr:
    """|x| < inf: false for inf and (an ordered comparison) nan."""
    return _b("lt", _ap("abs", x), _c(np.inf, x))


SPECIAL: dict[str, Callable[..., Expr]] = {"mod": mod, "floor_divide": floor_divide,
                                           "isnan": isnan, "isfinite": isfinite}
