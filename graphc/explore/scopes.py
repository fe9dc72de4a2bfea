"""Scopes for folding a graph: dotted parameter names give them, other nodes inherit."""
from __future__ import annotations

from typing import Sequence

from graphc.node import Node


def leaf_scope(name: str) -> str:
    """'block1.conv.W' -> 'block1.conv'; an undotted name lives at the top ('')."""
    return name.rpartition(".")[0]


def common_scope(scopes: Sequence[str]) -> str:
    """The deepest scope that contains all of `scopes` (their common dotted prefix)."""
    parts = [s.split(".") if s else [] for s in scopes]
    common: list[str] = []
    for level in zip(*parts):
        if any(p != level[0] for p in level):
            break
        common.append(level[0])
    return ".".join(common)


def node_scopes(order: Sequence[Node]) -> dict[Node, str]:
    """Each node's scope, `order` being inputs first. Named leaves take the prefix of their
    name; a computed node joins the scope its parameter inputs share (it belongs to the layer
    whose weights it uses), else the scope its computed inputs share. Constants join their
    user's scope, so they never pull a node to the top."""
    scopes: dict[Node, str] = {}
    for node in order:
        if node.op in ("parameter", "placeholder"):
            scopes[node] = leaf_scope(str(node.attrs.get("name") or ""))
            continue
        params = [scopes[i] for i in node.inputs if i.op == "parameter"]
        others = [scopes[i] for i in node.inputs if i.op != "constant"]
        scopes[node] = common_scope(params or others) if (params or others) else ""
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
