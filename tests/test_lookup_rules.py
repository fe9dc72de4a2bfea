"""The lookup rules (graphc/passes/lookup.py): an embedding followed by a projection, and
its gradients, computed on the table's rows. Each rule must fire where the indices repeat
the table's rows, decline where they do not, and leave values and gradients unchanged
(against the unoptimized graph, finite differences and the llvm backend)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

V, D, K = 5, 6, 7  # table rows, row length, projected length


def _embed_project(ids_shape, rows=V, seed=0):
    """loss = sum(tanh(take(E, ids) @ W + b) * c): every lookup rule's pattern appears in
    its gradient graph. Returns (function over ids of the loss and the three gradients,
    parameters)."""
    rng = np.random.default_rng(seed)
    table = gc.parameter(rng.normal(size=(rows, D)), name="E")
    w = gc.parameter(rng.normal(size=(D, K)) / 3, name="W")
    b = gc.parameter(rng.normal(size=(K,)), name="b")
    ids = gc.placeholder(ids_shape, "int64", name="ids")
    c = gc.constant(rng.normal(size=ids_shape + (K,)))
    rows_ = gc.reshape(gc.take(table, ids, axis=0), (-1, D))
    out = gc.reshape(rows_ @ w, ids_shape + (K,)) + b
    loss = gc.sum(gc.tanh(out) * c)
    return ids, loss, [table, w, b]


def _compile(ids_shape, optimize, backend="numpy", rows=V):
    ids, loss, params = _embed_project(ids_shape, rows)
    return gc.function([ids], [loss] + gc.grad(loss, params), backend=backend,
                       optimize=optimize), params


def _ids(shape, rows=V, seed=1):
    return np.random.default_rng(seed).integers(0, rows, size=shape)


@pytest.mark.parametrize("ids_shape", [(12, 4), (40,)])
def test_rules_fire_and_keep_values_and_gradients(ids_shape):
    raw, _ = _compile(ids_shape, optimize=False)
    opt, _ = _compile(ids_shape, optimize=True)
    fired = opt.report.fired()
    for name in ("lookup_then_project", "lookup_weight_grad", "lookup_table_grad",
                 "lookup_then_add"):
        assert fired.get(name, 0) >= 1, (name, dict(fired))
    ids = _ids(ids_shape)
    for want, got in zip(raw(ids), opt(ids)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_no_product_over_the_lookups_is_left():
    """After the rules, every matrix product has the table's rows (V), not the n lookups,
    as its rows or its inner size."""
    opt, _ = _compile((12, 4), optimize=True)
    products = [n for n in opt.graph.nodes() if n.op == "matmul"]
    assert products
    for node in products:
        a, b = node.inputs
        assert 48 not in (a.shape[0], a.shape[1], b.shape[0]), gc.show(opt.graph)


def test_rules_decline_when_lookups_do_not_repeat_rows():
    """A table with more rows than lookups: the products over the lookups stay."""
    opt, _ = _compile((3,), optimize=True, rows=40)
    fired = opt.report.fired()
    assert not any(name.startswith("lookup_") for name in fired), dict(fired)


def test_gradients_against_finite_differences_on_llvm():
    f, params = _compile((10, 3), optimize=True, backend="llvm")
    ids = _ids((10, 3))
    loss, *grads = f(ids)
    table = params[0]
    base = table.value.copy()
    eps = 1e-6
    for (i, j) in [(0, 0), (2, 3), (4, 5)]:
        bumped = base.copy()
        bumped[i, j] += eps
        table.value = bumped
        up = f(ids)[0]
        bumped[i, j] -= 2 * eps
        table.value = bumped
        down = f(ids)[0]
        np.testing.assert_allclose((up - down) / (2 * eps), grads[0][i, j], rtol=1e-6,
                                   atol=1e-8)
    table.value = base
    raw, _ = _compile((10, 3), optimize=False)
    for want, got in zip(raw(ids), f(ids)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_unused_rows_get_zero_gradient():
    """Rows no index names get exactly zero table gradient after the rewrite (the scatter
    starts from zeros)."""
    f, _ = _compile((20,), optimize=True, backend="llvm")
    ids = np.array([0, 1, 1, 0] * 5)
    grads = f(ids)[1]
    assert np.all(grads[2:] == 0) and np.any(grads[:2] != 0)


def test_a_table_whose_rows_are_known_only_at_call_time_is_left_alone():
    """Whether the rules pay depends on the table's rows: where they are a call-time size
    (a table concatenated from a placeholder), the graph stays as it is and computes the
    same numbers, instead of the rule asking the size for a number (a TypeError)."""
    rng = np.random.default_rng(3)
    extra = gc.placeholder((None, D), name="extra")
    table = gc.concatenate([gc.constant(rng.normal(size=(1, D))), extra], axis=0)
    w = gc.parameter(rng.normal(size=(D, K)), name="W")
    ids = gc.placeholder((4,), "int64", name="ids")
    loss = gc.sum(gc.tanh(gc.take(table, ids, axis=0) @ w))
    f = gc.function([extra, ids], [loss] + gc.grad(loss, [w]))
    plain = gc.function([extra, ids], [loss] + gc.grad(loss, [w]), optimize=False)
    ev, iv = rng.normal(size=(3, D)), np.array([0, 3, 1, 3])
    for got, want in zip(f(ev, iv), plain(ev, iv)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
