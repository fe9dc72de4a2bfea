"""Rules as data (pattern -> replacement) and the one fixed-point driver that applies them."""
from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable

from graphc.graph import Graph
from graphc.node import Node, carry_label, toposort
from graphc.ops.registry import rebuild
from graphc.passes.patterns import Bindings, Matcher, Op, compile_pattern
from graphc.region import Region, node_regions, with_regions

Replacement = Callable[[Bindings, Node], "Node | None"]


@dataclass(frozen=True)
class Rule:
    """When `pattern` matches a node, `replace(bindings, node)` gives what it becomes
    (None: the rule declines). A replacement must keep the node's shape and dtype."""

    name: str
    pattern: Op
    replace: Replacement
    doc: str = ""
    matcher: Matcher = field(init=False, repr=False, compare=False)  # patterns.match's

    def __post_init__(self) -> None:
        object.__setattr__(self, "matcher", compile_pattern(self.pattern))

    @property
    def op(self) -> str:
        return self.pattern.op


class SettledNodes:
    """A weak set of nodes (what weakref.WeakSet is, with a test cheap enough to make at
    every node of every sweep inline: `refs`, id -> weak reference, one dict look-up). A
    node's entry goes when it dies (before its id can be reused)."""

    def __init__(self) -> None:
        self.refs: dict[int, weakref.ref[Node]] = {}

    def __contains__(self, node: object) -> bool:
        ref = self.refs.get(id(node))
        return ref is not None and ref() is node

    def __len__(self) -> int:
        return len(self.refs)

    def add(self, node: Node) -> None:
        self.refs[id(node)] = weakref.ref(node, partial(_forget, self.refs, id(node)))


def _forget(refs: dict[int, "weakref.ref[Node]"], key: int, ref: "weakref.ref[Node]") -> None:
    if refs.get(key) is ref:  # (a later node with the same id keeps its entry)
        del refs[key]


class RuleSet:
    """Rules indexed by the op at their pattern's root, and the nodes known to be settled
    under them. `includes`: a rule set whose rules are all in this one: a node settled
    under it needs only this set's other rules tried (in this set's order)."""

    def __init__(self, rules: Iterable[Rule], includes: "RuleSet | None" = None) -> None:
        self.rules = list(rules)
        self.by_op: dict[str, list[Rule]] = {}
        for rule in self.rules:
            self.by_op.setdefault(rule.op, []).append(rule)
        # Nodes at which no rule fires, nor in their bodies. A rule sees only the node and
        # what is under it, and a node is its structure (interned, immutable), so this
        # holds for good: a later pass or compile that meets the node again (the second
        # run after a symbolic schedule unifies sizes, the next function) skips it. Held
        # weakly: a node that no graph holds any more is dropped.
        self.settled = SettledNodes()
        self.includes = includes
        self.others_by_op: dict[str, list[Rule]] = {}
        if includes is not None:
            inner = {id(r) for r in includes.rules}
            mine = {id(r) for r in self.rules}
            missing = [r.name for r in includes.rules if id(r) not in mine]
            if missing:
                raise ValueError(f"RuleSet: includes rules it does not hold: {missing}")
            for op, rules in self.by_op.items():
                self.others_by_op[op] = [r for r in rules if id(r) not in inner]

    def first_rules(self, node: Node) -> list[Rule]:
        """The rules to try first at `node`: only those the included set lacks where
        the node is settled under that set (none of its rules can fire there)."""
        inner = self.includes
        if inner is not None and node in inner.settled and not node_regions(node):
            return self.others_by_op.get(node.op, [])
        return self.by_op.get(node.op, [])


def _same_type(a: Node, b: Node) -> bool:
    return a.type == b.type


def _rewrite_node(node: Node, rules: RuleSet, fired: Counter, budget: list[int]) -> Node:
    """Applies rules at one node until none fires (or the step budget runs out)."""
    changed = True
    candidates = rules.first_rules(node)
    while changed and budget[0] > 0:
        changed = False
        for rule in candidates:
            bindings: Bindings = {}
            if not rule.matcher(node, bindings):
                continue
            new = rule.replace(bindings, node)
            if new is None or new is node or not _same_type(new, node):
                continue
            fired[rule.name] += 1
            budget[0] -= 1
            node = new
            changed = True
            candidates = rules.by_op.get(node.op, [])
            break
    return node


def _rewrite_bodies(node: Node, rules: RuleSet, fired: Counter, budget: list[int]) -> Node:
    """`node` with the bodies of its regions rewritten to their own fixed points (the same
    rules and step budget): passes optimize inside loops and conditionals too."""
    regions = node_regions(node)
    if not regions:
        return node
    new = tuple(Region(r.inputs, _fixed_point(r.outputs, rules, fired, budget))
                for r in regions)
    if new == regions:
        return node
    return rebuild(node, node.inputs, with_regions(node.attrs, new))


def _fixed_point(roots: tuple[Node, ...], rules: RuleSet, fired: Counter, budget: list[int]
                 ) -> tuple[Node, ...]:
    # A settled node (RuleSet.settled) met again, in a later sweep or a later run, is
    # skipped: the sweep that confirms the fixed point then costs a walk, not every rule
    # at every node again.
    settled = rules.settled
    refs = settled.refs
    while True:
        before = sum(fired.values())
        memo: dict[Node, Node] = {}
        for node in toposort(roots):
            new = node
            if node.inputs:  # (most sweeps change few nodes: rebuild only those)
                inputs = tuple([memo[i] for i in node.inputs])
                if inputs != node.inputs:
                    new = rebuild(node, inputs)
            ref = refs.get(id(new))  # (settled.__contains__, inline)
            if ref is None or ref() is not new:
                bodies = _rewrite_bodies(new, rules, fired, budget)
                out = _rewrite_node(bodies, rules, fired, budget)
                if out is new and budget[0] > 0:
                    settled.add(new)
                new = out
            memo[node] = new if new is node else carry_label(node, new)
        roots = tuple(memo[r] for r in roots)
        if sum(fired.values()) == before or budget[0] <= 0:
            return roots


def rewrite_roots(roots: tuple[Node, ...], rules: RuleSet, max_steps: int = 100_000
                  ) -> tuple[tuple[Node, ...], Counter]:
    """Rewrites the graph under `roots` bottom-up, sweeping until a fixed point."""
    fired: Counter = Counter()
    return _fixed_point(roots, rules, fired, [max_steps]), fired


def rewrite_graph(graph: Graph, rules: RuleSet, max_steps: int = 100_000
                  ) -> tuple[Graph, Counter]:
    roots, fired = rewrite_roots(graph.roots, rules, max_steps)
    n_out = len(graph.outputs)
    updates = tuple((p, v) for (p, _), v in zip(graph.updates, roots[n_out:]))
    return Graph(graph.inputs, roots[:n_out], updates), fired


def rule(name: str, pattern: Op, doc: str = "") -> Callable[[Replacement], Rule]:
    """Decorator: a replacement function becomes a Rule."""
    def wrap(fn: Replacement) -> Rule:
        return Rule(name, pattern, fn, doc or (fn.__doc__ or "").strip())
    return wrap
