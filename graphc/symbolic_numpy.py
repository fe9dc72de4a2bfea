"""SymPy functions for numpy's elementwise functions that SymPy lacks or would rewrite."""
from __future__ import annotations

import sympy as sp


class _Step(sp.Function):
    """A piecewise-constant function: derivative 0 (as PyTorch and JAX give)."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.S.Zero


class Floor(_Step):
    """numpy.floor"""


class Ceil(_Step):
    """numpy.ceil"""


class Rint(_Step):
    """numpy.rint: round half to even"""


class Log1p(sp.Function):
    """log(1 + x), accurate for small x"""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return 1 / (1 + self.args[0])


class Expm1(sp.Function):
    """exp(x) - 1, accurate for small x"""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.exp(self.args[0])


class Log2(sp.Function):
    """numpy.log2 (exact at powers of two)"""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return 1 / (self.args[0] * sp.log(2))


class Log10(sp.Function):
    """numpy.log10 (exact at powers of ten)"""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return 1 / (self.args[0] * sp.log(10))


class IsNan(sp.Function):
    """numpy.isnan (a bool)"""

    nargs = 1


class IsFinite(sp.Function):
    """numpy.isfinite (a bool)"""

    nargs = 1


# SymPy function -> the primitive of the same meaning (derivatives become graphs of these).
PRIMITIVES = {Floor: "floor", Ceil: "ceil", Rint: "round", Log1p: "log1p", Expm1: "expm1",
              Log2: "log2", Log10: "log10", sp.sinh: "sinh", sp.cosh: "cosh",
              sp.asin: "arcsin", sp.acos: "arccos", sp.atan: "arctan", sp.asinh: "arcsinh",
              sp.acosh: "arccosh", sp.atanh: "arctanh"}

# SymPy function -> the core op (graphc.schedule.core_ops) of the same meaning and dtype.
CORE_OPS = {Floor: "floor", Ceil: "ceil", Rint: "rint", Log1p: "log1p", Expm1: "expm1",
            Log2: "log2", Log10: "log10"}
