"""A small pattern language for rewrite rules: Op(...) trees with variables and constants."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from graphc.node import Node
from graphc.ops.registry import get_op

Bindings = dict[str, Node]
Matcher = Callable[[Node, Bindings], bool]


@dataclass(frozen=True)
class Var:
    """Binds any node (the same name twice must bind the same node)."""

    name: str
    where: Callable[[Node], bool] | None = None


@dataclass(frozen=True)
class Const:
    """A constant whose every element equals `value` (any value when None); sees through
    broadcasts of a scalar, so gradient zeros and ones match too."""

    value: float | None = None
    name: str | None = None


class Op:
    """A node of primitive `op` whose inputs match `args` and whose attrs equal `attrs`
    (an attr given as a function is a predicate on the attr's value)."""

    __slots__ = ("op", "args", "attrs", "name")

    def __init__(self, op: str, *args: Any, name: str | None = None, **attrs: Any) -> None:
        self.op, self.args, self.attrs, self.name = op, args, attrs, name

    def __repr__(self) -> str:
        inner = ", ".join(map(repr, self.args))
        return f"Op({self.op!r}{', ' if inner else ''}{inner})"


def constant_value(node: Node) -> np.ndarray | None:
    """The uniform scalar a node is built from (a constant, or a broadcast of one), or None."""
    while get_op(node.op).scalar_view:
        node = node.inputs[0]
    if node.op != "constant":
        return None
    array = node.attrs["value"].array
    if array.size == 0:
        return None
    first = array.reshape(-1)[0]
    if array.size > 1 and not np.all(array == first):
        return None
    return np.asarray(first)


def match(pattern: Any, node: Node, bindings: Bindings) -> bool:
    if isinstance(pattern, Var):
        if pattern.where is not None and not pattern.where(node):
            return False
        bound = bindings.get(pattern.name)
        if bound is not None:
            return bound is node
        bindings[pattern.name] = node
        return True
    if isinstance(pattern, Const):
        value = constant_value(node)
        if value is None or (pattern.value is not None and not value == pattern.value):
            return False
        if pattern.name:
            bindings[pattern.name] = node
        return True
    if isinstance(pattern, Op):
        if node.op != pattern.op or len(node.inputs) != len(pattern.args):
            return False
        for key, want in pattern.attrs.items():
            have = node.attrs.get(key)
            if callable(want) and not isinstance(want, type):
                if not want(have):
                    return False
            elif have != want:
                return False
        if pattern.name:
            bindings[pattern.name] = node
        return all(match(p, i, bindings) for p, i in zip(pattern.args, node.inputs))
    raise TypeError(f"not a pattern: {pattern!r}")


def compile_pattern(pattern: Any) -> Matcher:
    """`match` for one pattern, its tree unrolled into closures once (the rewrite driver
    tries every rule of a node's op at every node of every sweep: walking the pattern's
    records there was most of the optimizer's time). Same answer and bindings as match."""
    if isinstance(pattern, Var):
        return _var_matcher(pattern)
    if isinstance(pattern, Const):
        return _const_matcher(pattern)
    if isinstance(pattern, Op):
        return _op_matcher(pattern)
    raise TypeError(f"not a pattern: {pattern!r}")


def _var_matcher(pattern: Var) -> Matcher:
    name, where = pattern.name, pattern.where

    def var(node: Node, bindings: Bindings) -> bool:
        if where is not None and not where(node):
            return False
        bound = bindings.get(name)
        if bound is not None:
            return bound is node
        bindings[name] = node
        return True
    return var


def _const_matcher(pattern: Const) -> Matcher:
    want, name = pattern.value, pattern.name

    def const(node: Node, bindings: Bindings) -> bool:
        value = constant_value(node)
        if value is None or (want is not None and not value == want):
            return False
        if name:
            bindings[name] = node
        return True
    return const


def _op_matcher(pattern: Op) -> Matcher:
    op, arity, name = pattern.op, len(pattern.args), pattern.name
    # (key, wanted value or predicate, whether it is a predicate), as match tells them apart
    attrs = tuple((key, want, callable(want) and not isinstance(want, type))
                  for key, want in pattern.attrs.items())
    plain = all(isinstance(a, Var) and a.where is None for a in pattern.args)
    names = tuple(a.name for a in pattern.args) if plain else ()
    subs = () if plain else tuple(compile_pattern(a) for a in pattern.args)

    def op_node(node: Node, bindings: Bindings) -> bool:
        inputs = node.inputs
        if node.op != op or len(inputs) != arity:
            return False
        for key, want, predicate in attrs:
            have = node.attrs.get(key)
            if predicate:
                if not want(have):
                    return False
            elif have != want:
                return False
        if name:
            bindings[name] = node
        if plain:  # (the common case: every argument a variable, bound here)
            for var, i in zip(names, inputs):
                bound = bindings.get(var)
                if bound is None:
                    bindings[var] = i
                elif bound is not i:
                    return False
            return True
        for sub, i in zip(subs, inputs):
            if not sub(i, bindings):
                return False
        return True
    return op_node
