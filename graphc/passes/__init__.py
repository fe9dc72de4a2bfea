"""Graph -> Graph optimization passes, registered by name and run in one explicit pipeline:
canonicalize -> fold -> stabilize -> specialize (in the spirit of PyTensor's phases).
CSE is structural (nodes are interned, so every rebuild merges equal subgraphs, constants
included) and dead code never enters a Graph (it holds what its roots reach)."""
from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Iterable

from graphc.collector import collector_paused
from graphc.graph import Graph
from graphc.passes import (broadcasts, canonicalize, conv_grad, lookup, pool_grad, specialize,
                           stabilize, sum_factors)
from graphc.passes.fold import fold_constants
from graphc.passes.patterns import Op, Var
from graphc.passes.report import PassReport, PassStats
from graphc.passes.scan_hoist import hoist_scan_steps
from graphc.passes.scan_merge import merge_scans
from graphc.passes.scan_sink import sink_scan_sums
from graphc.passes.rewrite import Rule, RuleSet, rewrite_graph, rewrite_roots, rule

Pass = Callable[[Graph], "tuple[Graph, Counter]"]


@rule("drop_stop_gradient", Op("stop_gradient", Var("x")),
      "after differentiation stop_gradient is the identity")
def _drop_stop_gradient(b, node):
    return b["x"]


_CANONICAL_RULES = canonicalize.RULES + broadcasts.RULES + conv_grad.CANONICAL_RULES
CANONICAL = RuleSet(_CANONICAL_RULES)
# (each holds the canonical rules: a node they left settled needs only the others tried)
STABILIZE = RuleSet(stabilize.RULES + _CANONICAL_RULES, includes=CANONICAL)
SPECIALIZE = RuleSet(specialize.RULES + conv_grad.RULES + lookup.RULES + pool_grad.RULES
                     + sum_factors.RULES + _CANONICAL_RULES
                     + [_drop_stop_gradient], includes=CANONICAL)


def _rules(rules: RuleSet) -> Pass:
    return lambda graph: rewrite_graph(graph, rules)


def _loops_then(rules: RuleSet) -> Pass:
    """Scans made one loop per set of results (merge_scans), their step-independent work
    moved before them (hoist_scan_steps) and their sums of per-step products after them
    (sink_scan_sums), then the rules. Again in specialize: stabilize may have
    made two bodies equal (a loss's scan and the one its gradient stabilized first)."""
    def run(graph: Graph) -> tuple[Graph, Counter]:
        graph, merged = merge_scans(graph)
        graph, hoisted = hoist_scan_steps(graph)
        graph, sunk = sink_scan_sums(graph)
        graph, fired = rewrite_graph(graph, rules)
        return graph, merged + hoisted + sunk + fired
    return run


# name -> pass, in pipeline order.
PASSES: dict[str, Pass] = {
    "canonicalize": _loops_then(CANONICAL),
    "fold": fold_constants,
    "stabilize": _rules(STABILIZE),
    "specialize": _loops_then(SPECIALIZE),
}


def select_passes(optimize: bool | str | Iterable[str] | None) -> list[str]:
    """The pass names `optimize` asks for: True all, False none, or names from PASSES."""
    if optimize is True:
        return list(PASSES)
    if optimize is False or optimize is None:
        return []
    names = [optimize] if isinstance(optimize, str) else list(optimize)
    for name in names:
        if not isinstance(name, str) or name not in PASSES:
            raise ValueError(f"optimize: unknown pass {name!r} (known passes: "
                             f"{', '.join(PASSES)})")
    return [n for n in PASSES if n in names]


def run_pipeline(graph: Graph, names: list[str]) -> tuple[Graph, PassReport]:
    with collector_paused():
        return _run_pipeline(graph, names)


def _run_pipeline(graph: Graph, names: list[str]) -> tuple[Graph, PassReport]:
    report = PassReport()
    count = len(graph.nodes())
    for name in names:
        t0 = time.perf_counter()
        before = graph
        graph, fired = PASSES[name](graph)
        seconds = time.perf_counter() - t0
        after = len(graph.nodes())
        changed = graph.roots != before.roots or graph.inputs != before.inputs
        report.passes.append(PassStats(name, count, after, fired, seconds,
                                       graph if changed else None))
        count = after
    return graph, report


def stabilize_roots(roots: tuple) -> tuple:
    """The stabilized form of some nodes (used before differentiating, so that gradients
    are taken of log_softmax rather than of a naive log(softmax))."""
    return rewrite_roots(roots, STABILIZE)[0]


__all__ = ["PASSES", "PassReport", "Rule", "RuleSet", "run_pipeline", "select_passes",
           "stabilize_roots"]
