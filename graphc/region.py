"""Regions: sub-graphs (own input placeholders, output nodes) carried as node attributes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # node.py imports this module: no import of it at run time
    from graphc.node import Node


@dataclass(frozen=True)
class Region:
    """A body graph, the value of one attribute of a loop or conditional node: `outputs`
    computed from `inputs`, placeholders of its own. A body is closed: a value from outside
    enters through an input of the node that carries it, so the body never reaches another
    placeholder. Nodes are interned, so equal bodies are equal (and hash alike) regions."""

    inputs: tuple[Node, ...]
    outputs: tuple[Node, ...]

    def __post_init__(self) -> None:
        from graphc.node import Node, toposort
        if not isinstance(self.inputs, tuple) or not isinstance(self.outputs, tuple):
            raise TypeError("Region: inputs and outputs must be tuples of nodes")
        if not all(isinstance(n, Node) for n in self.inputs + self.outputs):
            raise TypeError("Region: inputs and outputs must be graph nodes")
        if not self.outputs:
            raise ValueError("Region: a body needs at least one output")
        for n in self.inputs:
            if n.op != "placeholder":
                raise ValueError(f"Region: inputs must be placeholders, got a {n.op} node")
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError("Region: the same placeholder is listed twice as an input")
        own = set(self.inputs)
        for n in toposort(self.outputs):
            if n.op == "placeholder" and n not in own:
                raise ValueError(f"Region: the body reads placeholder {n.attrs['name']!r}, "
                                 "which is not one of its inputs (pass outside values in "
                                 "as inputs of the node that carries the region)")

    def nodes(self) -> list[Node]:
        """The body's nodes, inputs before users."""
        from graphc.node import toposort
        return toposort(self.inputs + self.outputs)

    def __str__(self) -> str:
        return f"region({len(self.inputs)} in, {len(self.outputs)} out)"


def node_regions(node: Node) -> tuple[Region, ...]:
    """The one traversal hook: the regions a node carries, in attribute-name order. Every
    walk that must see inside bodies (toposort, rewrites, fingerprints, autodiff, printing)
    asks this, so a new control-flow primitive needs no change to any of them."""
    return region_attrs(node.attrs)[1]


def region_attrs(attrs: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[Region, ...]]:
    """(names, regions) of the Region-valued attributes, in name order."""
    # Every rewrite sweep asks this of every node, and almost no node carries a region.
    if not any(isinstance(v, Region) for v in attrs.values()):
        return (), ()
    items = [(k, v) for k, v in sorted(attrs.items()) if isinstance(v, Region)]
    return tuple(k for k, _ in items), tuple(v for _, v in items)


def with_regions(attrs: Mapping[str, Any], regions: Sequence[Region]) -> dict[str, Any]:
    """`attrs` with its regions replaced, in the order node_regions gives them."""
    names, old = region_attrs(attrs)
    if len(regions) != len(old):
        raise ValueError(f"with_regions: {len(old)} regions, got {len(regions)} replacements")
    return {**attrs, **dict(zip(names, regions))}
