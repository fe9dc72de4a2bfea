"""The chain-rule table: each elementwise primitive's partial derivatives, from sympy.diff."""
from __future__ import annotations

import functools

import sympy as sp
# sympy imports sympy.tensor.tensor (and sympy.combinatorics with it: ~20 ms) the first time
# it adds two expressions; importing it with graphc keeps that one-off cost out of the
# first gradient a program takes.
import sympy.tensor.tensor  # noqa: F401

from graphc.ops import OPS, get_op
from graphc.sympy_stable import stabilize

_NAMES = {1: ("x",), 2: ("a", "b"), 3: ("c", "a", "b")}


def arg_symbols(op: str) -> tuple[sp.Symbol, ...]:
    """The symbols an elementwise op's definition is written in (x; a, b; c, a, b)."""
    opdef = get_op(op)
    if opdef.arg_names:
        names = opdef.arg_names
    elif opdef.arity is not None and opdef.arity in _NAMES:
        names = _NAMES[opdef.arity]
    else:  # arity None: any number of inputs, which no definition can be written over
        raise KeyError(f"{op}: an elementwise primitive needs arg_names or an arity of 1 to 3, "
                       f"got arity {opdef.arity}")
    return tuple(sp.Symbol(n, real=True) for n in names)


@functools.lru_cache(maxsize=None)
def definition(op: str) -> sp.Expr:
    opdef = get_op(op)
    if opdef.sympy_def is None:
        raise KeyError(f"{op} is not an elementwise primitive")
    # The stable form: what is differentiated and lowered (1/(1+exp(-x)) as Sigmoid, ...)
    return stabilize(sp.sympify(opdef.sympy_def(*arg_symbols(op))))


@functools.lru_cache(maxsize=None)
def partials(op: str) -> tuple[sp.Expr | None, ...]:
    """d op / d arg_i for every argument (None where the op is not differentiable)."""
    opdef = get_op(op)
    f = definition(op)
    if not opdef.differentiable:
        return (None,) * len(arg_symbols(op))
    syms = arg_symbols(op)
    by_hand = opdef.sympy_partials(*syms) if opdef.sympy_partials is not None else None
    out: list[sp.Expr | None] = []
    for k, s in enumerate(syms):
        if k in opdef.nondifferentiable_inputs:  # where's boolean condition
            out.append(None)
            continue
        if by_hand is not None:  # the convention at ties and kinks (docs/conventions.md)
            out.append(sp.sympify(by_hand[k]))
            continue
        d = sp.powsimp(sp.diff(f, s))  # powsimp: b*a**b/a -> b*a**(b-1), finite at a=0
        out.append(d)
    return tuple(out)


def elementwise_ops() -> list[str]:
    return [name for name, op in OPS.items() if op.sympy_def is not None]
