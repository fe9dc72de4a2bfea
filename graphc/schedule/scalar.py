"""Scalar semantics, decided once: each elementwise primitive in a kernel body becomes core
ops (graphc.schedule.core_ops), from its SymPy definition (the same expression the
derivative table comes from). NaN behaviour, stable forms (sigmoid, softplus), integer
powers, casts and the random-number hash are chosen here, for every backend."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import sympy as sp

from graphc.derivatives import arg_symbols, definition
from graphc.ops.random import GOLDEN, MIX1, MIX2
from graphc.schedule.core_ops import COMPARISONS
from graphc.schedule.ir import Apply, Const, Expr, rewrite
from graphc.schedule.scalar_numpy import SPECIAL as NUMPY_SPECIAL
from graphc.symbolic import Sigmoid, Softplus
from graphc.symbolic_numpy import CORE_OPS as NUMPY_CALLS

BOOL, I64 = np.dtype(bool), np.dtype(np.int64)


@dataclass(frozen=True)
class _Arg:
    """Argument i of a template (replaced by the real argument when instantiated)."""

    index: int
    dtype: np.dtype


def _apply(op: str, *args: Expr, dtype: np.dtype | None = None) -> Apply:
    return Apply(op, tuple(args), np.dtype(dtype) if dtype is not None else args[0].dtype)


def _const(value: object, dtype: np.dtype) -> Const:
    if np.dtype(dtype).kind in "iu":
        return Const(int(value), np.dtype(dtype))  # type: ignore[call-overload]
    if np.dtype(dtype).kind == "b":
        return Const(bool(value), np.dtype(dtype))
    return Const(float(value), np.dtype(dtype))  # type: ignore[arg-type]


# Primitives that are one core op of the same meaning (no SymPy needed).
_DIRECT = {"add": "add", "sub": "sub", "mul": "mul", "neg": "neg", "div": "fdiv",
           "exp": "exp", "log": "log", "sqrt": "sqrt", "sin": "sin", "cos": "cos",
           "tan": "tan", "tanh": "tanh", "erf": "erf", "abs": "abs", "maximum": "max",
           "minimum": "min", "less": "lt", "less_equal": "le", "greater": "gt",
           "greater_equal": "ge", "equal": "eq", "not_equal": "ne"}

# SymPy functions that are one core op of their arguments
_CALLS = ((sp.exp, "exp"), (sp.log, "log"), (sp.sin, "sin"), (sp.cos, "cos"),
          (sp.tan, "tan"), (sp.tanh, "tanh"), (sp.erf, "erf"), (sp.sinh, "sinh"),
          (sp.cosh, "cosh"), (sp.asinh, "asinh"), (sp.acosh, "acosh"), (sp.atanh, "atanh"),
          (sp.asin, "asin"), (sp.acos, "acos"), (sp.atan, "atan"), (sp.atan2, "atan2"),
          (sp.floor, "floor"), (sp.ceiling, "ceil"), *NUMPY_CALLS.items())
_RELATIONS = {sp.StrictLessThan: "lt", sp.LessThan: "le", sp.StrictGreaterThan: "gt",
              sp.GreaterThan: "ge", sp.Equality: "eq", sp.Unequality: "ne"}


def relu(x: Expr) -> Expr:
    """x where x > 0 or x is nan (numpy's maximum propagates nan), else +0.0."""
    zero = _const(0, x.dtype)
    if x.dtype.kind != "f":
        return _apply("max", x, zero)
    keep = _apply("or", _apply("gt", x, zero, dtype=BOOL), _apply("isnan", x, dtype=BOOL))
    return _apply("select", keep, x, zero, dtype=x.dtype)


def sigmoid(x: Expr) -> Expr:
    """e = exp(-|x|) never overflows, and e/(1+e) keeps full precision in the tail."""
    one = _const(1, x.dtype)
    e = _apply("exp", _apply("neg", _apply("abs", x)))
    inv = _apply("fdiv", one, _apply("add", one, e))
    return _apply("select", _apply("ge", x, _const(0, x.dtype), dtype=BOOL), inv,
                  _apply("mul", e, inv), dtype=x.dtype)


def softplus(x: Expr) -> Expr:
    """max(x, 0) + log1p(exp(-|x|)), like numpy's logaddexp(0, x)."""
    tail = _apply("log1p", _apply("exp", _apply("neg", _apply("abs", x))))
    return _apply("add", _apply("max", x, _const(0, x.dtype)), tail)


def sign(x: Expr) -> Expr:
    """-1, 0 or 1; nan and signed zeros pass through for floats, like numpy."""
    zero = _const(0, x.dtype)
    middle = x if x.dtype.kind == "f" else zero
    negative = _apply("select", _apply("lt", x, zero, dtype=BOOL), _const(-1, x.dtype), middle,
                      dtype=x.dtype)
    return _apply("select", _apply("gt", x, zero, dtype=BOOL), _const(1, x.dtype), negative,
                  dtype=x.dtype)


def uniform_hash(seed: Expr, counter: Expr, dtype: np.dtype) -> Expr:
    """graphc.ops.random.uniform_from_counter: SplitMix64 of (seed, counter), then the top
    24 (float32) or 53 (float64) bits as a fraction of 1."""
    def c(v: int) -> Const:
        return Const(v - (1 << 64) if v >= 1 << 63 else v, I64)

    if seed.dtype != I64:
        seed = _apply("cast", seed, dtype=I64)
    z = _apply("add", seed, _apply("mul", _apply("add", counter, c(1)), c(GOLDEN)))
    z = _apply("mul", _apply("xor", z, _apply("lshr", z, c(30))), c(MIX1))
    z = _apply("mul", _apply("xor", z, _apply("lshr", z, c(27))), c(MIX2))
    z = _apply("xor", z, _apply("lshr", z, c(31)))
    bits, scale = (40, 2.0 ** -24) if np.dtype(dtype) == np.float32 else (11, 2.0 ** -53)
    return _apply("mul", _apply("cast", _apply("lshr", z, c(bits)), dtype=dtype),
                  Const(scale, np.dtype(dtype)))


_SPECIAL: dict[str, Callable[..., Expr]] = {"relu": relu, "sigmoid": sigmoid,
                                            "softplus": softplus, "sign": sign,
                                            **NUMPY_SPECIAL}


class _FromSympy:
    """A SymPy expression over argument symbols, as core ops of one dtype."""

    def __init__(self, env: dict[sp.Basic, Expr], dtype: np.dtype) -> None:
        self.env = env
        self.dtype = dtype
        self.is_float = dtype.kind == "f"
        self.memo: dict[sp.Basic, Expr] = {}

    def __call__(self, x: sp.Basic) -> Expr:
        if x not in self.memo:
            self.memo[x] = self._node(x)
        return self.memo[x]

    def num(self, x: sp.Basic) -> Const:
        if not self.is_float and not x.is_integer:
            raise NotImplementedError(f"a non-integer constant {x} in integer code")
        return _const(int(x) if not self.is_float else float(x), self.dtype)

    def _node(self, x: sp.Basic) -> Expr:
        if x in self.env:
            return self.env[x]
        if x is sp.true or x is sp.false:
            return Const(bool(x), BOOL)
        if x.is_Number or x in (sp.pi, sp.E) or (not x.free_symbols and x.is_number):
            return self.num(x)
        if isinstance(x, sp.Add):
            out = self(x.args[0])
            for t in x.args[1:]:
                out = _apply("add", out, self(t))
            return out
        if isinstance(x, sp.Mul):
            return self._mul(x)
        if isinstance(x, sp.Pow):
            return self._pow(x.base, x.exp)
        for cls, name in _CALLS:
            if isinstance(x, cls):
                return _apply(name, *(self(a) for a in x.args))
        if isinstance(x, (sp.Max, sp.Min)):
            out = self(x.args[0])
            for a in x.args[1:]:
                out = _apply("max" if isinstance(x, sp.Max) else "min", out, self(a))
            return out
        for cls, name in ((sp.cot, "tan"), (sp.sec, "cos"), (sp.csc, "sin")):
            if isinstance(x, cls):
                return _apply("fdiv", self.num(sp.Integer(1)), _apply(name, self(x.args[0])))
        if isinstance(x, Sigmoid):
            return sigmoid(self(x.args[0]))
        if isinstance(x, Softplus):
            return softplus(self(x.args[0]))
        if isinstance(x, sp.Abs):
            return _apply("abs", self(x.args[0]))
        if isinstance(x, sp.sign):
            return sign(self(x.args[0]))
        if isinstance(x, sp.Piecewise):
            return self._piecewise(x.args)
        if isinstance(x, sp.Rel):
            return self._compare(x)
        for cls, name in ((sp.And, "and"), (sp.Or, "or")):
            if isinstance(x, cls):  # (a piecewise condition: (x > 0) & (x < 1))
                out = self(x.args[0])
                for a in x.args[1:]:
                    out = _apply(name, out, self(a), dtype=BOOL)
                return out
        if isinstance(x, sp.Not):
            return _apply("xor", self(x.args[0]), Const(True, BOOL), dtype=BOOL)
        raise NotImplementedError(f"no core ops for the SymPy expression {x}")

    def _mul(self, x: sp.Mul) -> Expr:
        num, den = [], []
        for f in x.args:
            base, exp = f.as_base_exp()
            if self.is_float and exp.is_number and exp.is_negative and f.free_symbols:
                den.append(base if exp == -1 else sp.Pow(base, -exp))
            else:
                num.append(f)
        out: Expr | None = None
        for f in num:
            v = self(f)
            out = v if out is None else _apply("mul", out, v)
        if den:
            d = self(den[0])
            for f in den[1:]:
                d = _apply("mul", d, self(f))
            out = _apply("fdiv", out if out is not None else self.num(sp.Integer(1)), d)
        assert out is not None
        return out

    def _pow(self, base: sp.Basic, exp: sp.Basic) -> Expr:
        if base is sp.E:
            return _apply("exp", self(exp))
        if exp.is_Integer and 1 <= int(exp) <= 4:
            v = self(base)
            out = v
            for _ in range(int(exp) - 1):
                out = _apply("mul", out, v)
            return out
        if not self.is_float:
            return _apply("ipow", self(base), self(exp))
        if exp == sp.Rational(1, 2):
            return _apply("sqrt", self(base))
        if exp.is_number and exp.is_negative:
            return _apply("fdiv", self.num(sp.Integer(1)), self._pow(base, -exp))
        return _apply("pow", self(base), self(exp))

    def _piecewise(self, pieces: tuple) -> Expr:
        value, cond = pieces[0]
        if cond is sp.true or len(pieces) == 1:
            return self(value)
        rest = self._piecewise(pieces[1:])
        return _apply("select", self(cond), self(value), rest, dtype=rest.dtype)

    def _compare(self, x: sp.Rel) -> Expr:
        lhs, rhs = self(x.lhs), self(x.rhs)
        if isinstance(rhs, Const) and rhs.dtype != lhs.dtype:
            rhs = _const(rhs.value, lhs.dtype)
        if isinstance(lhs, Const) and lhs.dtype != rhs.dtype:
            lhs = _const(lhs.value, rhs.dtype)
        return _apply(_RELATIONS[type(x)], lhs, rhs, dtype=BOOL)


@functools.lru_cache(maxsize=None)
def _template(op: str, in_dtype: np.dtype, arity: int) -> Expr:
    """Primitive `op` over arguments of `in_dtype`, as core ops over _Arg placeholders."""
    args: list[Expr] = [_Arg(i, in_dtype) for i in range(arity)]  # type: ignore[misc]
    if op in _DIRECT:
        core = _DIRECT[op]
        return _apply(core, *args, dtype=BOOL if core in COMPARISONS else None)
    if op in _SPECIAL:
        return _SPECIAL[op](*args)
    symbols = arg_symbols(op)
    return _FromSympy(dict(zip(symbols, args)), in_dtype)(definition(op))


def lower_apply(op: str, args: tuple[Expr, ...], dtype: np.dtype) -> Expr:
    """One primitive applied to (already lowered) arguments, as core ops."""
    if op == "cast":
        return Apply("cast", args, dtype)
    if op == "random_uniform":
        return uniform_hash(args[0], args[1], dtype)
    if op == "where":
        return Apply("select", args, dtype)
    template = _template(op, args[-1].dtype, len(args))

    def fill(e: Expr) -> Expr | None:
        return args[e.index] if isinstance(e, _Arg) else None
    return rewrite(template, fill)


def lower_expr(expr: Expr, memo: dict[int, Expr] | None = None) -> Expr:
    """A kernel body with every primitive (each Apply) replaced by core ops. Run it once on
    a body: its result's names are core ops, some of which are also primitives' names.
    Bodies of one kernel lowered with one `memo` keep sharing what they shared."""
    def visit(e: Expr) -> Expr | None:
        return lower_apply(e.op, e.args, e.dtype) if isinstance(e, Apply) else None
    return rewrite(expr, visit, memo)
