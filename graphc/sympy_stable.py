"""Stable forms of SymPy definitions: textbook logistic and softplus formulas become Sigmoid
and Softplus, so user-defined primitives neither overflow nor lose their derivatives."""
from __future__ import annotations

import sympy as sp

from graphc.symbolic import Sigmoid, Softplus


def _one_plus_exp(e: sp.Basic) -> sp.Expr | None:
    """u where e is 1 + exp(u), else None."""
    if isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.One in e.args:
        (other,) = [a for a in e.args if a != sp.S.One]
        if isinstance(other, sp.exp):
            return other.args[0]
    return None


def _logistic_power(e: sp.Basic) -> tuple[sp.Expr, int] | None:
    """(u, k) where e is (1 + exp(u))**-k for an integer k >= 1, else None."""
    if isinstance(e, sp.Pow) and e.exp.is_Integer and e.exp < 0:
        u = _one_plus_exp(e.base)
        if u is not None:
            return u, int(-e.exp)
    return None


def _mul(e: sp.Mul) -> sp.Expr:
    # exp(u) * sigmoid(-u)**k (from exp(u) / (1 + exp(u))**k, after the rule for the
    # power ran on the inner node) = sigmoid(u) * sigmoid(-u)**(k-1): exp(u) alone overflows
    factors = list(e.args)
    for i, f in enumerate(factors):
        base, k = f.as_base_exp()
        if not (isinstance(base, Sigmoid) and k.is_Integer and k > 0):
            continue
        u = -base.args[0]
        for j, g in enumerate(factors):
            if j != i and isinstance(g, sp.exp) and g.args[0] == u:
                rest = [h for n, h in enumerate(factors) if n not in (i, j)]
                return sp.Mul(*rest, Sigmoid(u), base ** (k - 1))
    return e


def _rewrite(e: sp.Basic) -> sp.Basic:
    if isinstance(e, sp.Mul):
        e = _mul(e)
    found = _logistic_power(e)
    if found is not None:  # (1 + exp(u))**-k = sigmoid(-u)**k
        return Sigmoid(-found[0]) ** found[1]
    if isinstance(e, sp.log):
        u = _one_plus_exp(e.args[0])
        if u is not None:  # log(1 + exp(u)) = softplus(u)
            return Softplus(u)
        if isinstance(e.args[0], Sigmoid):  # log(sigmoid(u)) = -softplus(-u)
            return -Softplus(-e.args[0].args[0])
    if isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.One in e.args:
        (other,) = [a for a in e.args if a != sp.S.One]
        coeff, rest = other.as_coeff_Mul()
        if coeff == -1 and isinstance(rest, Sigmoid):  # 1 - sigmoid(u) = sigmoid(-u)
            return Sigmoid(-rest.args[0])
    return e


def stabilize(expr: sp.Basic) -> sp.Basic:
    """`expr` with the logistic forms that overflow in floating point (1/(1 + exp(-u)),
    exp(u)/(1 + exp(u)), log(1 + exp(u)), log(sigmoid(u)), 1 - sigmoid(u)) written with
    Sigmoid and Softplus, which graphc evaluates and differentiates stably. Bottom up, so
    an inner rewrite can enable an outer one."""
    memo: dict[sp.Basic, sp.Basic] = {}

    def visit(e: sp.Basic) -> sp.Basic:
        if e in memo:
            return memo[e]
        out = e
        if e.args and not isinstance(e, (sp.Symbol, sp.Number)):
            args = tuple(visit(a) for a in e.args)
            out = _rewrite(e.func(*args) if args != e.args else e)
        memo[e] = out
        return out

    return visit(sp.sympify(expr))
