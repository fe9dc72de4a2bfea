"""SymPy on the user's side: gc.to_sympy reads a graph as mathematics, and
gc.elementwise_function turns a SymPy expression into a new elementwise primitive."""
from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
import sympy as sp

from graphc.ops import OPS, OpDef
from graphc.ops.elementwise import elementwise_infer
from graphc.ops.registry import make, register
from graphc.sympy_bridge import graph_to_sympy
from graphc.sympy_stable import stabilize
from graphc.frontends.functions import _float_operands, _check_op_operands
from graphc.frontends.tensor import Tensor

_NUMPY_EXTRAS = {
    "Sigmoid": lambda x: OPS["sigmoid"].impl([np.asarray(x)], {}),
    "Softplus": lambda x: np.logaddexp(0.0, x),
    "erf": lambda x: OPS["erf"].impl([np.asarray(x, dtype=float)], {}),
}


def to_sympy(t: Tensor) -> sp.Expr:
    """A SymPy expression for a graph of elementwise ops over scalar placeholders; the
    symbols are named after the placeholders (sympy.latex shows it as math)."""
    node = getattr(t, "node", None)
    if node is None:
        raise TypeError(f"to_sympy: expected a Tensor, got {type(t).__name__}")
    return graph_to_sympy(node)


def elementwise_function(name: str, definition: Callable[..., Any],
                         doc: str = "") -> Callable[..., Tensor]:
    """Registers a new elementwise primitive from a SymPy definition, e.g.
    `softsign = gc.elementwise_function("softsign", lambda x: x / (1 + sympy.Abs(x)))`.
    Its derivatives come from sympy.diff like the built-ins'; it prints, differentiates
    (to any order) and compiles like them. Arguments compute in float."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"elementwise_function: name must be an identifier, got {name!r}")
    if name in OPS:
        raise ValueError(f"elementwise_function: a primitive named {name!r} exists already")
    if not callable(definition):
        raise TypeError("elementwise_function: definition must be a function of SymPy symbols")
    arg_names = tuple(inspect.signature(definition).parameters)
    if not 1 <= len(arg_names) <= 3:
        raise ValueError("elementwise_function: the definition takes 1 to 3 arguments")
    symbols = [sp.Symbol(n, real=True) for n in arg_names]
    expr = sp.sympify(definition(*symbols))
    unknown = expr.free_symbols - set(symbols)
    if unknown:
        raise ValueError(f"elementwise_function: the definition uses unknown symbols {unknown}")
    # The numpy reference evaluates the stable form, like the backends (graphc.sympy_stable)
    numeric = sp.lambdify(symbols, stabilize(expr), modules=[_NUMPY_EXTRAS, "numpy"])

    def impl(arrays, attrs):
        with np.errstate(all="ignore"):
            out = numeric(*arrays)
        return np.broadcast_to(np.asarray(out, dtype=arrays[0].dtype),
                               np.broadcast_shapes(*(a.shape for a in arrays)))

    register(OpDef(name=name, infer=elementwise_infer("float"), impl=impl, arity=len(symbols),
                   doc=doc or sp.sstr(expr), sympy_def=definition,
                   arg_names=arg_names, user_defined=True))

    def apply(*args: Any) -> Tensor:
        if len(args) != len(symbols):
            raise TypeError(f"{name}: takes {len(symbols)} arguments, got {len(args)}")
        _check_op_operands(list(args), name)
        return Tensor(make(name, *_float_operands(list(args), name)))

    apply.__name__ = name
    apply.__doc__ = f"Elementwise {name}(" + ", ".join(arg_names) + f") = {sp.sstr(expr)}"
    return apply
