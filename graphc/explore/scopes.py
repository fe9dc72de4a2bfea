"""Scopes for folding a graph: dotted parameter names give them, other nodes inherit."""
from __future__ import annotations

from typing import Sequence

from graphc.node import Node


def node_scopes(order: Sequence[Node]) -> dict[Node, str]:
    """Each node's scope, `order` being inputs first: gc.render's rule (a node joins the
    module whose named leaves enter the data flow at it; a gradient node the module whose
    forward values its rule reads), as a dotted name, '' at the top. Constants join their
    user's scope, so they never pull a node to the top."""
    from graphc.render import scopes as module_scopes
    found = module_scopes(list(order))
    scopes = {n: ".".join(s) if s else "" for n, s in found.items()}
    users: dict[Node, str] = {}
    for node in order:
        for i in node.inputs:
            if i.op == "constant" and i not in users:
                users[i] = scopes[node]
    scopes.update(users)
    return scopes


def scope_tree(names: set[str]) -> list[str]:
    """Every scope with all its ancestors, parents before children ('' first)."""
    full = {""}
    for name in names:
        parts = name.split(".") if name else []
        for k in range(1, len(parts) + 1):
            full.add(".".join(parts[:k]))
    return sorted(full, key=lambda s: (s.count(".") + (1 if s else 0), s))
