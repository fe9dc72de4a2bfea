"""Sums of products with factors constant along the summed axes (passes/sum_factors.py):
those factors multiply the sum instead of every term, sums that become equal are one node,
and a sum whose parts' sums exist costs no pass. Values against the unoptimized graph
(numpy interpreter) and finite differences; the graphs by their sums."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import passes
from graphc.passes import run_pipeline, select_passes, sum_factors


def _sums_over(graph, shape) -> list:
    """The sum nodes of a graph that read a tensor of `shape` (passes over it)."""
    return [n for n in graph.nodes() if n.op == "sum" and n.inputs[0].shape == shape]


def _optimized(outputs):
    graph = gc.Graph((), tuple(t.node for t in outputs))
    return run_pipeline(graph, select_passes(True))[0]


def _batch_norm_step(dtype="float32"):
    x = gc.placeholder((None, 4, 5, 5), dtype, name="x")
    r = gc.placeholder((None, 4, 5, 5), dtype, name="r")
    g = gc.placeholder((4,), dtype, name="g")
    b = gc.placeholder((4,), dtype, name="b")
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    y = gc.relu((x - mean) / gc.sqrt(var + 1e-5) * g.reshape(1, -1, 1, 1)
                + b.reshape(1, -1, 1, 1))
    loss = gc.sum(y * r)
    return [x, r, g, b], [loss] + gc.grad(loss, [x, g, b])


def _args(inputs, seed=0, batch=3):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=tuple(batch if not isinstance(d, int) else d for d in v.shape))
             * 2 + 0.5).astype(v.dtype) for v in inputs]


def test_batch_norm_backward_reads_its_inputs_for_two_sums_not_four(monkeypatch):
    inputs, outputs = _batch_norm_step()
    full = inputs[0].node.shape

    def per_channel_sums() -> int:
        return sum(1 for n in _sums_over(_optimized(outputs), full) if n.shape == (1, 4, 1, 1))

    after = per_channel_sums()
    without = passes.RuleSet([r for r in passes.SPECIALIZE.rules
                              if r not in sum_factors.RULES], includes=passes.CANONICAL)
    monkeypatch.setitem(passes.PASSES, "specialize", passes._loops_then(without))
    # forward: the mean's and the variance's; backward: gamma's and the variance's term
    # (one sum of dy * (x - mean)), beta's and the mean's term (sum(dy), and sum(x - mean)
    # as sum(x) - N * mean)
    assert (per_channel_sums(), after) == (6, 4)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_batch_norm_values_and_gradients_are_unchanged(backend):
    inputs, outputs = _batch_norm_step("float64")
    f = gc.function(inputs, outputs, backend=backend)
    want_f = gc.function(inputs, outputs, backend="numpy", optimize=False)
    for batch in (3, 7):
        args = _args(inputs, batch, batch)
        for got, want in zip(f(*args), want_f(*args)):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_batch_norm_gradient_matches_finite_differences():
    inputs, outputs = _batch_norm_step("float64")
    f = gc.function(inputs, outputs, backend="llvm")
    args = _args(inputs, 1)
    loss, dx, dg, db = f(*args)
    rng = np.random.default_rng(2)
    for which, grad in ((0, dx), (2, dg), (3, db)):
        for _ in range(3):
            idx = tuple(rng.integers(0, s) for s in args[which].shape)
            eps = 1e-6
            up = [a.copy() for a in args]
            down = [a.copy() for a in args]
            up[which][idx] += eps
            down[which][idx] -= eps
            numeric = (f(*up)[0] - f(*down)[0]) / (2 * eps)
            np.testing.assert_allclose(grad[idx], numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("keepdims", [True, False])
def test_a_per_channel_factor_multiplies_the_sum(keepdims):
    x = gc.placeholder((None, 3, 4), name="x")
    g = gc.placeholder((3,), name="g")
    s = gc.placeholder((3,), name="s")
    body = -(x * g.reshape(1, 3, 1) / s.reshape(1, 3, 1))
    out = gc.sum(body, axis=(0, 2), keepdims=keepdims)
    graph = _optimized([out])
    (total,) = [n for n in graph.nodes() if n.op == "sum"]
    assert total.inputs[0] is x.node  # the sum reads x alone
    f = gc.function([x, g, s], out, backend="llvm")
    args = _args([x, g, s])
    want = gc.function([x, g, s], out, backend="numpy", optimize=False)(*args)
    np.testing.assert_allclose(f(*args), want, rtol=1e-5)


def test_a_factor_of_lower_rank_constant_along_the_summed_axis_leaves():
    x = gc.placeholder((None, 3, 4), name="x")
    v = gc.placeholder((4,), name="v")
    out = gc.sum(x * v, axis=1)
    (total,) = [n for n in _optimized([out]).nodes() if n.op == "sum"]
    assert total.inputs[0] is x.node
    args = _args([x, v])
    f = gc.function([x, v], out, backend="llvm")
    np.testing.assert_allclose(f(*args), (args[0] * args[1]).sum(axis=1), rtol=1e-5)


def test_a_factor_that_varies_along_a_summed_axis_stays_inside():
    x = gc.placeholder((None, 3, 4), name="x")
    v = gc.placeholder((4,), name="v")
    out = gc.sum(x * v, axis=2)  # v varies along axis 2
    (total,) = [n for n in _optimized([out]).nodes() if n.op == "sum"]
    assert total.inputs[0].op == "mul"
    args = _args([x, v])
    np.testing.assert_allclose(gc.function([x, v], out, backend="llvm")(*args),
                               (args[0] * args[1]).sum(axis=2), rtol=1e-5)


def test_a_scalar_factor_of_a_product_needed_anyway_stays_inside():
    x = gc.placeholder((None, 3), name="x")
    product = x * 0.5
    out = [product, gc.sum(product, axis=0)]  # the product is an output itself
    graph = _optimized(out)
    (total,) = [n for n in graph.nodes() if n.op == "sum"]
    assert total.inputs[0] is graph.roots[0]
    assert len(graph.nodes()) == 4  # x, 0.5, the product and its sum: nothing added


def test_the_sum_of_a_broadcast_value_is_that_value_times_the_count():
    x = gc.placeholder(("N", 3, 4), name="x")
    spread = gc.grad(gc.mean(x), x)  # 1 / (12 N) broadcast over x's shape
    out = gc.sum(spread, axis=(0, 2), keepdims=True)
    graph = _optimized([out])
    assert not [n for n in graph.nodes() if n.op == "sum"]
    f = gc.function([x], out, backend="llvm")
    for batch in (2, 5):
        np.testing.assert_allclose(f(*_args([x], batch=batch)), np.full((1, 3, 1), 1 / 3),
                                   rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_tensor_less_its_mean_sums_to_zero(dtype):
    x = gc.placeholder(("N", 3, 4), dtype, name="x")
    mean = gc.mean(x, axis=(0, 2), keepdims=True)
    out = [mean, gc.sum(x - mean, axis=(0, 2), keepdims=True),
           gc.sum(x - mean, axis=(0, 1, 2), keepdims=True)]  # (another axis: stays)
    graph = _optimized(out)
    assert len(_sums_over(graph, x.node.shape)) == 2  # the mean's, and the last one
    f = gc.function([x], out, backend="llvm")
    args = [(np.arange(24 * 5).reshape(10, 3, 4) * 1e3 + 0.25).astype(dtype)]
    got = f(*args)
    np.testing.assert_array_equal(got[1], np.zeros((1, 3, 1)))
    want = (args[0] - args[0].mean(axis=(0, 2), keepdims=True)).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(got[2].reshape(-1), want, atol=1e-3 * np.abs(args[0]).max())


def test_a_tensor_less_another_value_is_summed_as_written():
    x = gc.placeholder((None, 3, 4), "float64", name="x")
    total = gc.sum(x, axis=(0, 2), keepdims=True)
    shift = total / 8.0  # not the mean: the count is 4 N
    out = [total, gc.sum(x - shift, axis=(0, 2), keepdims=True)]
    assert len(_sums_over(_optimized(out), x.node.shape)) == 2
    args = _args([x])
    got = gc.function([x], out, backend="llvm")(*args)
    s = args[0].sum(axis=(0, 2), keepdims=True)
    np.testing.assert_allclose(got[1], (args[0] - s / 8.0).sum(axis=(0, 2), keepdims=True),
                               rtol=1e-12)


def test_a_difference_whose_parts_have_no_sums_is_left_alone():
    x = gc.placeholder((None, 3), name="x")
    y = gc.placeholder((None, 3), name="y")
    out = gc.sum(x - y, axis=0)
    (total,) = [n for n in _optimized([out]).nodes() if n.op == "sum"]
    assert total.inputs[0].op == "sub"  # one pass, not two


def test_integer_sums_are_left_alone():
    x = gc.placeholder((None, 3), "int64", name="x")
    k = gc.placeholder((3,), "int64", name="k")
    out = gc.sum(x * k, axis=0)
    (total,) = [n for n in _optimized([out]).nodes() if n.op == "sum"]
    assert total.inputs[0].op == "mul"
    args = [np.arange(6, dtype=np.int64).reshape(2, 3), np.array([1, 2, 3], np.int64)]
    np.testing.assert_array_equal(gc.function([x, k], out, backend="llvm")(*args),
                                  (args[0] * args[1]).sum(axis=0))


def test_the_graph_does_not_depend_on_sums_other_graphs_hold():
    x = gc.placeholder((None, 3), name="x")
    y = gc.placeholder((None, 3), name="y")
    out = gc.sum(x * 2.0 + y, axis=0)
    alone = _optimized([out])
    held = [gc.sum(x, axis=0), gc.sum(y, axis=0), gc.sum(x * 2.0, axis=0)]  # alive meanwhile
    with_others = _optimized([out])
    assert with_others.roots == alone.roots
    assert [n.op for n in with_others.nodes() if n.op == "sum"] == ["sum"]
    assert held  # (kept alive until the second optimization)
