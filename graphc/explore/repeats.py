"""Repeated blocks: runs of sibling scopes built alike fold into one box (layer0…layer11 ×12)."""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from graphc.node import Node


def _signature(members: list[Node]) -> frozenset:
    """What a scope is built of, up to names: each (op, type, forward or gradient) counted."""
    return frozenset(Counter((n.op, str(n.type), bool(n.origin)) for n in members).items())


def group_repeats(tree: Sequence[str], scopes: dict[Node, str], least: int | None = 3
                  ) -> list[dict[str, Any]]:
    """The scope records ({name, parent}, parents before children) for `tree` (from
    scope_tree), with a parent scope added over each run of at least `least` consecutive
    siblings of the same signature (their nodes, descendants' included, the same multiset of
    op, type and kind): a model's repeated layers fold into one box and open into the
    layers. least=None adds none."""
    members: dict[str, list[Node]] = {s: [] for s in tree}
    for node, scope in scopes.items():
        parts = scope.split(".") if scope else []
        for j in range(len(parts) + 1):  # a node belongs to its scope and every ancestor
            members[".".join(parts[:j])].append(node)
    parent = {s: s.rpartition(".")[0] if s else None for s in tree}
    kids: dict[str | None, list[str]] = {}
    for s in tree:
        kids.setdefault(parent[s], []).append(s)
    group_of: dict[str, str] = {}  # first member -> the group's name
    new_parent: dict[str, str] = {}
    for siblings in kids.values() if least is not None else ():
        run: list[str] = []
        run_sig: frozenset | None = None
        for s in siblings + [""]:  # "" ends the last run (the root is nobody's sibling)
            sig = _signature(members[s]) if s else None
            if run and s and sig == run_sig:
                run.append(s)
                continue
            if least is not None and len(run) >= least:
                name = f"{run[0]} \u2026 {run[-1].rpartition('.')[2]} \u00d7{len(run)}"
                group_of[run[0]] = name
                new_parent.update((m, name) for m in run)
            run, run_sig = ([s], sig) if s else ([], None)
    records: list[dict[str, Any]] = []
    ids: dict[str, int] = {}
    for s in tree:
        if s in group_of:  # the group comes right before its first member
            g = group_of[s]
            ids[g] = len(records)
            records.append({"name": g, "parent": ids[parent[s] or ""], "repeat": True})
        ids[s] = len(records)
        up = new_parent.get(s, parent[s])
        records.append({"name": s, "parent": None if up is None else ids[up]})
    return records
