"""Graph -> Graph optimization passes, registered by name and run in one explicit pipeline."""
from __future__ import annotations

from typing import Callable, Iterable

from graphc.graph import Graph

Pass = Callable[[Graph], Graph]

# name -> pass, in pipeline order. The optimizer issue fills this; until then the
# pipeline is empty and optimize=True runs nothing.
PASSES: dict[str, Pass] = {}


def select_passes(optimize: bool | str | Iterable[str]) -> list[str]:
    """The pass names `optimize` asks for: True all, False none, or names from PASSES."""
    if optimize is True:
        return list(PASSES)
    if optimize is False or optimize is None:
        return []
    names = [optimize] if isinstance(optimize, str) else list(optimize)
    for name in names:
        if not isinstance(name, str) or name not in PASSES:
            known = ", ".join(PASSES) or "none yet"
            raise ValueError(f"optimize: unknown pass {name!r} (known passes: {known})")
    return [n for n in PASSES if n in names]


def run_pipeline(graph: Graph, names: list[str]) -> Graph:
    for name in names:
        graph = PASSES[name](graph)
    return graph
