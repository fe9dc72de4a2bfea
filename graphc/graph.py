"""A whole program: its inputs, outputs and parameter updates, as one printable record."""
from __future__ import annotations

from dataclasses import dataclass, field

from graphc.node import Node, toposort


@dataclass(frozen=True)
class Graph:
    """What gc.function compiles: outputs and update values, computed from the inputs."""

    inputs: tuple[Node, ...]
    outputs: tuple[Node, ...]
    # (parameter node, new value node) pairs; all new values are computed before any is stored.
    updates: tuple[tuple[Node, Node], ...] = ()
    # nodes()'s order, kept: nodes are immutable, and the optimizer's passes asked a
    # 96-layer MLP step's graphs for it 28 times
    _order: list[Node] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def roots(self) -> tuple[Node, ...]:
        return self.outputs + tuple(value for _, value in self.updates)

    def nodes(self) -> list[Node]:
        """Every node the program computes, inputs before users (a new list each call)."""
        if self._order is None:
            object.__setattr__(self, "_order", toposort(self.inputs + self.roots))
        assert self._order is not None
        return list(self._order)

    def parameters(self) -> list[Node]:
        """Every parameter the program reads or updates, region bodies included."""
        seen = [n for n in toposort(self.inputs + self.roots, into_regions=True)
                if n.op == "parameter"]
        return seen + [p for p, _ in self.updates if p not in seen]

    # Notebook views (issue #17, pictures): the graph as SVG, folded when large.
    def _repr_svg_(self) -> str | None:
        from graphc.render import svg_text
        return svg_text(self)

    def _repr_html_(self) -> str | None:
        from graphc.render import html_view
        return html_view(self)
