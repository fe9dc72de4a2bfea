"""SymPy functions graphc adds (sigmoid, softplus), defined with numerically sound derivatives."""
from __future__ import annotations

import sympy as sp


class Sigmoid(sp.Function):
    """1/(1+exp(-x)), whose derivative is written sigmoid*(1-sigmoid): no exp overflow."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        s = Sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, x: sp.Expr, **kwargs) -> sp.Expr:
        return 1 / (1 + sp.exp(-x))

    def _latex(self, printer, exp=None) -> str:
        arg = printer._print(self.args[0])
        base = rf"\sigma\left({arg}\right)"
        return base if exp is None else rf"{base}^{{{exp}}}"


class Softplus(sp.Function):
    """log(1+exp(x)), whose derivative is sigmoid(x)."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return Sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, x: sp.Expr, **kwargs) -> sp.Expr:
        return sp.log(1 + sp.exp(x))

    def _eval_rewrite_as_log(self, x: sp.Expr, **kwargs) -> sp.Expr:
        return sp.log(1 + sp.exp(x))

    def _latex(self, printer, exp=None) -> str:
        arg = printer._print(self.args[0])
        base = rf"\operatorname{{softplus}}\left({arg}\right)"
        return base if exp is None else rf"{base}^{{{exp}}}"


def explicit(expr: sp.Expr) -> sp.Expr:
    """`expr` with graphc's own functions written out in exp/log (for comparisons)."""
    return expr.replace(Sigmoid, lambda x: 1 / (1 + sp.exp(-x))).replace(
        Softplus, lambda x: sp.log(1 + sp.exp(x)))
