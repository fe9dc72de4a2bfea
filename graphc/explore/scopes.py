"""Scopes for folding a graph: dotted parameter names give them, other nodes inherit."""
from __future__ import annotations

from typing import Iterable, Sequence

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


PART = 500  # nodes per part of a large graph that names no scopes


def parts(order: Sequence[Node], scopes: dict[Node, str], names: dict[Node, str]
          ) -> dict[Node, str]:
    """`scopes`, unless no node has one and the graph is large: then parts of PART nodes in
    `order` (inputs first, so a chain's parts follow it), each named by its first and last
    node, fold the graph, so that the page lays out tens of boxes instead of every node."""
    if len(order) <= 2 * PART or any(scopes.values()):
        return scopes
    out: dict[Node, str] = {}
    for start in range(0, len(order), PART):
        chunk = order[start:start + PART]
        name = f"%{names[chunk[0]]}…%{names[chunk[-1]]}".replace(".", "_")
        out.update((n, name) for n in chunk)
    return out


def scope_tree(names: Iterable[str]) -> list[str]:
    """Every scope with all its ancestors, parents before children ('' first), siblings in
    the order `names` first reaches them (the graph's order: a model's blocks in turn)."""
    first: dict[str, int] = {}
    for k, name in enumerate(names):
        parts = name.split(".") if name else []
        for j in range(len(parts) + 1):
            first.setdefault(".".join(parts[:j]), k)
    return sorted(first, key=lambda s: (s.count(".") + (1 if s else 0), first[s]))
