"""The front end's faster tables and walks answer as the plain ones did: a rule's compiled
matcher as patterns.match (the same verdict and bindings on every rule and node met), the
intern table and the settled-node table hold nodes weakly, toposort lists nodes in the
order of a plain depth-first walk, and a kernel's kept reads and writes are handed out as
copies."""
from __future__ import annotations

import gc as python_gc
import sys
import weakref

import numpy as np

import graphc as gc
from graphc.node import Node, intern_node, toposort
from graphc.passes import CANONICAL, SPECIALIZE, STABILIZE
from graphc.passes.patterns import Const, Op, Var, compile_pattern, match
from graphc.passes.rewrite import SettledNodes


def _mlp_graph_nodes() -> list[Node]:
    x = gc.placeholder((None, 6), name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    w1 = gc.parameter(np.ones((6, 5), np.float32), name="w1")
    w2 = gc.parameter(np.ones((5, 3), np.float32), name="w2")
    h = gc.tanh(x @ w1) * 2.0 - 1.0
    loss = gc.nn.cross_entropy(gc.relu(h) @ w2 / 3.0, labels)
    grads = gc.grad(loss, [w1, w2])
    return toposort([loss.node] + [g.node for g in grads])


def test_compiled_matchers_agree_with_match_on_every_rule_and_node():
    nodes = _mlp_graph_nodes()
    tried = fired = 0
    for rules in (CANONICAL, STABILIZE, SPECIALIZE):
        for rule in rules.rules:
            for node in nodes:
                want: dict = {}
                have: dict = {}
                verdict = match(rule.pattern, node, want)
                assert rule.matcher(node, have) == verdict, (rule.name, node)
                if verdict:
                    assert have == want, rule.name
                    fired += 1
                tried += 1
    assert tried > 1000 and fired > 10


def test_compiled_patterns_bind_repeated_names_predicates_and_constants():
    x = gc.placeholder((3,), "float64", name="x").node
    y = gc.placeholder((3,), "float64", name="y").node
    two = gc.constant(np.full(3, 2.0)).node
    same = Op("add", Var("a"), Var("a"))
    assert compile_pattern(same)(gc.add(x, x).node, {})
    assert not compile_pattern(same)(gc.add(x, y).node, {})
    scaled = Op("mul", Var("a", where=lambda n: n.op == "placeholder"), Const(2.0, name="c"),
                name="root")
    bindings: dict = {}
    node = gc.multiply(x, two).node
    assert compile_pattern(scaled)(node, bindings)
    assert bindings == {"root": node, "a": x, "c": two}
    assert not compile_pattern(scaled)(gc.multiply(two, x).node, {})
    summed = Op("sum", Op("exp", Var("a")), axes=lambda axes: axes == (0,))
    assert compile_pattern(summed)(gc.exp(x).sum(axis=0).node, {})
    assert not compile_pattern(summed)(gc.exp(x).node, {})


def test_the_intern_table_gives_one_node_a_structure_and_drops_dead_ones():
    from graphc import node as node_module
    a = gc.exp(gc.placeholder((4,), "float32", name="x"))
    x = a.node.inputs[0]
    b = intern_node("exp", (x,), {}, a.node.type)
    assert b is a.node
    key_count = len(node_module._interned)
    ref = weakref.ref(b)
    del a, b
    python_gc.collect()
    assert ref() is None and len(node_module._interned) < key_count
    again = intern_node("exp", (x,), {}, x.type)  # a new node takes the key over
    assert intern_node("exp", (x,), {}, x.type) is again


def test_settled_nodes_are_held_weakly():
    settled = SettledNodes()
    x = gc.placeholder((2,), "float64", name="x").node
    node = gc.exp(gc.exp(x)).node
    settled.add(node)
    assert node in settled and x not in settled and len(settled) == 1
    ref = weakref.ref(node)
    del node
    python_gc.collect()
    assert ref() is None and len(settled) == 0


def _reference_order(roots: list[Node]) -> list[Node]:
    order: list[Node] = []
    seen: set[int] = set()

    def visit(n: Node) -> None:
        if id(n) in seen:
            return
        seen.add(id(n))
        for i in n.inputs:
            visit(i)
        order.append(n)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for r in roots:
            visit(r)
    finally:
        sys.setrecursionlimit(limit)
    return order


def test_toposort_lists_nodes_as_a_depth_first_walk_does():
    nodes = _mlp_graph_nodes()
    roots = [n for n in nodes if n.op in ("add", "mul", "matmul")][-5:] + nodes[-2:]
    assert toposort(roots) == _reference_order(roots)


def test_a_kernels_kept_reads_and_writes_are_copies():
    x = gc.placeholder((8, 4), "float32", name="x")
    f = gc.function([x], gc.exp(x) + 1.0, backend="numpy")
    kernel = f.schedule().kernels[0]
    reads, writes = kernel.reads(), kernel.writes()
    assert reads and writes
    reads.clear()
    writes.add(-1)
    assert kernel.reads() and -1 not in kernel.writes()
