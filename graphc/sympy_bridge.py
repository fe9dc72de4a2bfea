"""SymPy expressions <-> graph nodes: how derivative formulas become graphs, and how graphs of
elementwise ops over scalar placeholders read as mathematics (gc.to_sympy)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import sympy as sp

from graphc.node import Node, toposort
from graphc.ops import get_op, make
from graphc.ops.leaves import scalar_constant
from graphc.symbolic import Sigmoid, Softplus
from graphc.symbolic_numpy import PRIMITIVES as NUMPY_PRIMITIVES

FUNCTIONS: dict[Any, str] = {
    sp.exp: "exp", sp.log: "log", sp.sin: "sin", sp.cos: "cos", sp.tan: "tan",
    sp.cot: "cot", sp.sec: "sec", sp.csc: "csc", sp.tanh: "tanh", sp.erf: "erf",
    sp.Abs: "abs", sp.sign: "sign", Sigmoid: "sigmoid", Softplus: "softplus",
    **NUMPY_PRIMITIVES,
}
RELATIONS: dict[Any, str] = {
    sp.StrictLessThan: "less", sp.LessThan: "less_equal", sp.StrictGreaterThan: "greater",
    sp.GreaterThan: "greater_equal", sp.Equality: "equal", sp.Unequality: "not_equal",
}


class SympyToGraph:
    """Builds graph nodes for SymPy expressions over symbols bound to nodes of one dtype."""

    def __init__(self, env: Mapping[sp.Symbol, Node], dtype: np.dtype) -> None:
        self.env = dict(env)
        self.dtype = dtype
        self.memo: dict[sp.Basic, Node] = {}

    def const(self, value: Any) -> Node:
        return scalar_constant(value, self.dtype)

    def __call__(self, expr: sp.Basic) -> Node:
        expr = sp.sympify(expr)
        if expr not in self.memo:
            self.memo[expr] = self._build(expr)
        return self.memo[expr]

    def _build(self, e: sp.Basic) -> Node:
        if e in self.env:
            return self.env[e]
        if e is sp.true or e is sp.false:
            return scalar_constant(bool(e), np.dtype(bool))
        if not e.free_symbols:
            if e.has(sp.DiracDelta):
                return self.const(0)
            return self.const(float(e))
        if isinstance(e, sp.Add):
            return self._add(e)
        if isinstance(e, sp.Mul):
            return self._mul(e)
        if isinstance(e, sp.Pow):
            return self._pow(e.base, e.exp)
        if isinstance(e, sp.Piecewise):
            return self._piecewise(e.args)
        if isinstance(e, sp.DiracDelta):
            return self.const(0)  # zero almost everywhere: sign/abs kinks
        if isinstance(e, sp.Heaviside):
            return make("where", make("greater", self(e.args[0]), self.const(0)),
                        self.const(1), self.const(0))
        if isinstance(e, (sp.Max, sp.Min)):
            op = "maximum" if isinstance(e, sp.Max) else "minimum"
            args = [self(a) for a in e.args]
            out = args[0]
            for a in args[1:]:
                out = make(op, out, a)
            return out
        for cls, op in RELATIONS.items():
            if isinstance(e, cls):
                return make(op, self(e.lhs), self(e.rhs))
        if isinstance(e, (sp.And, sp.Or, sp.Not)):  # conditions of Piecewise definitions
            true, false = (scalar_constant(v, np.dtype(bool)) for v in (True, False))
            args = [self(a) for a in e.args]
            if isinstance(e, sp.Not):
                return make("where", args[0], false, true)
            out = args[0]
            for a in args[1:]:
                out = (make("where", out, a, false) if isinstance(e, sp.And)
                       else make("where", out, true, a))
            return out
        for cls, op in FUNCTIONS.items():
            if isinstance(e, cls):
                if cls is sp.log and len(e.args) == 2:
                    return make("logb", self(e.args[0]), self(e.args[1]))
                return make(op, self(e.args[0]))
        # Functions without a primitive (sinh, cosh, ... in user definitions' derivatives)
        # are built from their exp form.
        rewritten = e.rewrite(sp.exp)
        if rewritten != e:
            return self(rewritten)
        raise NotImplementedError(f"no graph op for the SymPy expression {e}")

    def _add(self, e: sp.Add) -> Node:
        out: Node | None = None
        for term in e.as_ordered_terms():
            coeff, rest = term.as_coeff_Mul()
            if out is not None and coeff < 0:
                out = make("sub", out, self(-term))
            else:
                node = self(term)
                out = node if out is None else make("add", out, node)
        assert out is not None
        return out

    def _mul(self, e: sp.Mul) -> Node:
        coeff, rest = e.as_coeff_Mul()
        num, den = [], []
        for f in sp.Mul.make_args(rest):
            base, exp = f.as_base_exp()
            if exp.is_number and exp < 0:
                den.append(base if exp == -1 else sp.Pow(base, -exp))
            else:
                num.append(f)
        if abs(coeff) != 1:
            num.insert(0, abs(coeff))
        out = self._product(num) if num else self.const(1)
        if den:
            out = make("div", out, self._product(den))
        return make("neg", out) if coeff < 0 else out

    def _product(self, factors: list) -> Node:
        out = self(factors[0])
        for f in factors[1:]:
            out = make("mul", out, self(f))
        return out

    def _pow(self, base: sp.Basic, exp: sp.Basic) -> Node:
        if exp == 2:
            return make("square", self(base))
        if exp == sp.Rational(1, 2):
            return make("sqrt", self(base))
        if exp.is_number and exp < 0:
            return make("div", self.const(1), self._pow(base, -exp) if exp != -1 else self(base))
        return make("pow", self(base), self(exp))

    def _piecewise(self, pieces: tuple) -> Node:
        value, cond = pieces[0]
        if cond is sp.true or len(pieces) == 1:
            return self(value)
        return make("where", self(cond), self(value), self._piecewise(pieces[1:]))


def sympy_to_graph(expr: sp.Basic, env: Mapping[sp.Symbol, Node], dtype: np.dtype) -> Node:
    return SympyToGraph(env, dtype)(expr)


def _one_element(node: Node) -> bool:
    return all(d == 1 for d in node.shape)


def graph_to_sympy(outputs: Node) -> sp.Expr:
    """A SymPy expression for a graph of elementwise ops over 0-d placeholders."""
    values: dict[Node, sp.Basic] = {}
    for node in toposort([outputs]):
        opdef = get_op(node.op)
        if node.op == "placeholder":
            if node.ndim and any(d != 1 for d in node.shape):
                raise ValueError(f"to_sympy: placeholder {node.attrs['name']!r} is not a "
                                 f"scalar ({node.type})")
            values[node] = sp.Symbol(node.attrs["name"], real=True)
        elif node.op == "constant":
            array = node.attrs["value"].array
            if array.size != 1:
                raise ValueError(f"to_sympy: constant {node.type} is not a scalar")
            item = array.reshape(()).item()
            values[node] = sp.nsimplify(item) if isinstance(item, float) else sp.sympify(item)
        elif (node.op == "cast" and node.dtype.kind != "b"
              and isinstance(values[node.inputs[0]], sp.logic.boolalg.Boolean)
              and not isinstance(values[node.inputs[0]], sp.Symbol)):
            values[node] = sp.Piecewise((1, values[node.inputs[0]]), (0, True))  # bool -> 1/0
        elif node.op in ("cast", "stop_gradient", "reshape", "squeeze", "expand_dims"):
            values[node] = values[node.inputs[0]]
        elif (opdef.one_element_identity and _one_element(node)
              and _one_element(node.inputs[0])):
            # On one element, these move or sum nothing (gradients of sum(f(x)) hold them).
            values[node] = values[node.inputs[0]]
        elif node.op == "where" and isinstance(values[node.inputs[0]], sp.logic.boolalg.Boolean):
            # A relational condition is the condition itself: Ne(x > 0, 0) would be True.
            cond, a, b = (values[i] for i in node.inputs)
            values[node] = sp.Piecewise((a, cond), (b, True))
        elif opdef.sympy_def is not None:
            values[node] = opdef.sympy_def(*(values[i] for i in node.inputs))
        else:
            raise ValueError(f"to_sympy: {node.op} is not an elementwise op; to_sympy reads "
                             "graphs of elementwise ops over scalar placeholders")
    return values[outputs]
