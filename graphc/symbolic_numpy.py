"""SymPy functions for numpy's elementwise functions that SymPy lacks or would rewrite."""
from __future__ import annotations

import sympy as sp


class _Numpy(sp.Function):
    """A function numpy has by the name `numpy_name` (so sympy.lambdify can evaluate it)."""

    nargs = 1
    numpy_name = ""

    def _numpycode(self, printer) -> str:
        return f"numpy.{self.numpy_name}({printer._print(self.args[0])})"


class _Step(_Numpy):
    """A piecewise-constant function: derivative 0 (as PyTorch and JAX give)."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.S.Zero


class Floor(_Step):
    """numpy.floor"""

    numpy_name = "floor"


class Ceil(_Step):
    """numpy.ceil"""

    numpy_name = "ceil"


class Rint(_Step):
    """numpy.rint: round half to even"""

    numpy_name = "rint"


class Log1p(_Numpy):
    """log(1 + x), accurate for small x"""

    numpy_name = "log1p"

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return 1 / (1 + self.args[0])


class Expm1(_Numpy):
    """exp(x) - 1, accurate for small x"""

    numpy_name = "expm1"

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.exp(self.args[0])


class Log2(_Numpy):
    """numpy.log2 (exact at powers of two)"""

    numpy_name = "log2"

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return 1 / (self.args[0] * sp.log(2))


class Log10(_Numpy):
    """numpy.log10 (exact at powers of ten)"""

    numpy_name = "log10"

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return 1 / (self.args[0] * sp.log(10))


class IsNan(_Numpy):
    """numpy.isnan (a bool)"""

    numpy_name = "isnan"

    nargs = 1


class IsFinite(_Numpy):
    """numpy.isfinite (a bool)"""

    numpy_name = "isfinite"

    nargs = 1


# SymPy function -> the primitive of the same meaning (derivatives become graphs of these).
PRIMITIVES = {Floor: "floor", Ceil: "ceil", Rint: "round", Log1p: "log1p", Expm1: "expm1",
              Log2: "log2", Log10: "log10", sp.sinh: "sinh", sp.cosh: "cosh",
              sp.asin: "arcsin", sp.acos: "arccos", sp.atan: "arctan", sp.asinh: "arcsinh",
              sp.acosh: "arccosh", sp.atanh: "arctanh"}

# SymPy function -> the core op (graphc.schedule.core_ops) of the same meaning and dtype.
CORE_OPS = {Floor: "floor", Ceil: "ceil", Rint: "rint", Log1p: "log1p", Expm1: "expm1",
            Log2: "log2", Log10: "log10"}
