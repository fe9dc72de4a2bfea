"""The rewrite driver remembers the nodes at which no rule of a rule set fires (they are
their structure: interned, immutable), so a later run skips them; a rule set that includes
another tries only its own rules at nodes settled under that one. Results, rules fired and
their order are those of a driver without the memo."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import graphc as gc
import graphc.passes as passes
from graphc.ops.leaves import scalar_constant
from graphc.ops.registry import make
from graphc.passes import run_pipeline, select_passes
from graphc.passes.patterns import Op, Var
from graphc.passes.rewrite import Rule, RuleSet, rewrite_roots


def counting(name: str, pattern: Op, replace, calls: Counter) -> Rule:
    def wrapped(b, node):
        calls[name] += 1
        return replace(b, node)
    return Rule(name, pattern, wrapped)


def test_a_second_run_skips_the_nodes_the_first_left_settled():
    x = gc.placeholder((3,), "float64", name="x")
    calls: Counter = Counter()
    never = counting("never", Op("exp", Var("x")), lambda b, node: None, calls)
    rules = RuleSet([never])
    root = gc.exp(gc.exp(x)).node
    first, fired = rewrite_roots((root,), rules)
    assert first == (root,) and not fired and calls["never"] == 2
    again, fired = rewrite_roots((root,), rules)
    assert again == (root,) and not fired and calls["never"] == 2  # (not tried again)
    # another rule set with the same rule remembers nothing of the first
    rewrite_roots((root,), RuleSet([never]))
    assert calls["never"] == 4


def test_a_node_that_fired_is_never_remembered_as_settled():
    x = gc.placeholder((3,), "float64", name="x")
    to_mul = Rule("neg_to_mul", Op("neg", Var("x")),
                  lambda b, node: make("mul", b["x"], scalar_constant(-1, node.dtype)))
    rules = RuleSet([to_mul])
    root = (-x).node
    for _ in range(2):
        (new,), fired = rewrite_roots((root,), rules)
        assert new.op == "mul" and fired == {"neg_to_mul": 1}
    assert root not in rules.settled and new in rules.settled


def test_settled_under_an_included_set_tries_only_the_other_rules():
    x = gc.placeholder((3,), "float64", name="x")
    calls: Counter = Counter()
    inner_rule = counting("inner", Op("neg", Var("x")), lambda b, node: None, calls)
    own_rule = counting("own", Op("neg", Var("x")),
                        lambda b, node: make("mul", b["x"],
                                             scalar_constant(-1, node.dtype)), calls)
    inner = RuleSet([inner_rule])
    outer = RuleSet([own_rule, inner_rule], includes=inner)
    plain = RuleSet([own_rule, inner_rule])
    root = (-x).node
    rewrite_roots((root,), inner)
    assert root in inner.settled and calls == {"inner": 1}
    (got,), fired = rewrite_roots((root,), outer)
    assert calls == {"inner": 1, "own": 1}  # (the included rule not tried again)
    (want,), want_fired = rewrite_roots((root,), plain)
    assert got is want and fired == want_fired == {"own": 1}


def test_an_included_set_must_be_held_whole():
    a = Rule("a", Op("neg", Var("x")), lambda b, node: None)
    b = Rule("b", Op("exp", Var("x")), lambda b_, node: None)
    with pytest.raises(ValueError, match="includes rules it does not hold: \\['b'\\]"):
        RuleSet([a], includes=RuleSet([a, b]))


def _fresh_passes() -> dict:
    """The pipeline's passes with rule sets of their own: nothing remembered."""
    canonical = RuleSet(passes.CANONICAL.rules)
    stabilize = RuleSet(passes.STABILIZE.rules, includes=canonical)
    specialize = RuleSet(passes.SPECIALIZE.rules, includes=canonical)
    return {"canonicalize": passes._loops_then(canonical), "fold": passes.PASSES["fold"],
            "stabilize": passes._rules(stabilize), "specialize": passes._loops_then(specialize)}


def test_the_pipeline_with_a_warm_memo_gives_what_a_fresh_one_gives(monkeypatch):
    """A 2-layer MLP's cross-entropy gradient (batch known at call time), optimized with
    the rule sets' memos warm from earlier runs, and with rule sets that know nothing."""
    rng = np.random.default_rng(0)
    x = gc.placeholder((None, 6), name="x")
    y = gc.placeholder((None,), "int64", name="y")
    w1 = gc.parameter(rng.normal(size=(6, 5)).astype(np.float32), name="w1")
    w2 = gc.parameter(rng.normal(size=(5, 3)).astype(np.float32), name="w2")
    loss = gc.nn.cross_entropy(gc.relu(x @ w1) @ w2, y)
    f = gc.function([x, y], [loss, *gc.grad(loss, [w1, w2])], backend="numpy")
    raw = f.raw_graph
    names = select_passes(True)
    run_pipeline(raw, names)  # (the memos now hold this graph's settled nodes)
    warm, warm_report = run_pipeline(raw, names)
    monkeypatch.setattr(passes, "PASSES", _fresh_passes())
    cold, cold_report = run_pipeline(raw, names)
    assert warm.roots == cold.roots
    assert [(p.name, p.nodes_before, p.nodes_after, dict(p.fired))
            for p in warm_report.passes] == \
        [(p.name, p.nodes_before, p.nodes_after, dict(p.fired)) for p in cold_report.passes]
    assert cold_report.fired()  # (the graph gives the rules work)
