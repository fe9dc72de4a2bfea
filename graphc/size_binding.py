"""Binding a program's symbolic sizes at call time: each symbol once, from the arguments'
shapes, and every equality the shape rules assumed checked, with messages that name the
size and the arguments."""
from __future__ import annotations

from typing import Sequence

from graphc.node import Node, assumptions_of, toposort
from graphc.sizes import Dim, Size, SizeVar, evaluate


def _where(where: object) -> str:
    return f" at {where}" if where else ""


class SizeBinder:
    """For one program: where each symbol of the inputs' shapes is read, and the equalities
    to check once the symbols have values."""

    def __init__(self, inputs: Sequence[Node], roots: Sequence[Node]) -> None:
        self.names = [p.attrs["name"] for p in inputs]
        self.reads: list[tuple[int, int, SizeVar]] = []
        self.origin: dict[SizeVar, tuple[int, int]] = {}
        for i, p in enumerate(inputs):
            for axis, d in enumerate(p.shape):
                if isinstance(d, Size) and d.is_var():
                    (var,) = d.atoms()
                    self.reads.append((i, axis, var))
                    self.origin.setdefault(var, (i, axis))
        seen: set[tuple] = set()
        self.checks = []
        for node in toposort(roots):
            for a in assumptions_of(node):
                key = (a.a, a.b)
                if key not in seen:
                    seen.add(key)
                    self.checks.append(a)

    @property
    def trivial(self) -> bool:
        return not self.reads and not self.checks

    def describe(self, d: Dim) -> str:
        """A size as users know it: its name, or where an anonymous one is read."""
        if isinstance(d, Size) and d.is_var():
            (var,) = d.atoms()
            if var.name is None and var in self.origin:
                i, axis = self.origin[var]
                return f"axis {axis} of argument {self.names[i]!r}"
            return f"size {var.name or '?'}"
        return f"size {d}"

    def bind(self, shapes: Sequence[tuple[int, ...]]) -> dict[SizeVar, int]:
        values: dict[SizeVar, int] = {}
        for i, axis, var in self.reads:
            n = shapes[i][axis]
            old = values.setdefault(var, n)
            if old != n:
                j, first_axis = self.origin[var]
                raise ValueError(
                    f"size {var.name or '?'}: argument {self.names[j]!r} has {old} on axis "
                    f"{first_axis}, argument {self.names[i]!r} has {n} on axis {axis}; "
                    "they must be equal")
        for check in self.checks:
            try:
                a, b = evaluate(check.a, values), evaluate(check.b, values)
            except KeyError:
                continue  # a size no argument gives (the backend checks what it computes)
            if a != b:
                raise ValueError(
                    f"{self.describe(check.a)} is {a} and {self.describe(check.b)} is {b}; "
                    f"they must be equal ({check.op}{_where(check.where)} uses them together)")
        return values
