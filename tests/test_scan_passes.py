"""The optimizer and scans: one loop per scan and its gradient's saved carries, results
nothing reads left out, rules fire inside bodies."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.ops.registry import sibling_key


def loops(f):
    """The distinct loops (sibling groups) of a compiled function's optimized graph."""
    return {sibling_key(n) for n in f.graph.nodes() if n.op == "scan"}


def rnn():
    x = gc.placeholder((5, 3), "float64", "x")
    h0 = gc.placeholder((3,), "float64", "h0")
    w = gc.placeholder((3, 3), "float64", "w")
    h, ys = gc.scan(lambda h, xt: (gc.tanh(h @ w + xt), (h * h).sum()), h0, x)
    return x, h0, w, h, ys


def test_the_gradient_runs_the_forward_loop_once():
    x, h0, w, h, ys = rnn()
    loss = (h * h).sum() + ys.sum()
    outs = [loss] + gc.grad(loss, [x, h0, w])
    f = gc.function([x, h0, w], outs, backend="numpy")
    raw = gc.function([x, h0, w], outs, backend="numpy", optimize=False)
    assert len(loops(raw)) == 3  # the scan, the one saving its carries, the reverse loop
    assert len(loops(f)) == 2
    assert f.report.fired()["merge_scans"] == 1
    args = (np.random.default_rng(0).standard_normal((5, 3)), np.ones(3), np.eye(3) * 0.5)
    for a, b in zip(f(*args), raw(*args)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_unread_results_and_the_carries_only_they_need_are_left_out():
    x = gc.placeholder((4, 2), "float64", "x")

    def step(carry, xt):
        a, b = carry
        return (a + xt, b * 2.0 + gc.exp(xt).sum()), (a * b, gc.sin(xt))
    (a, b), (ab, s) = gc.scan(step, (gc.constant(np.zeros(2)), gc.constant(np.float64(1))), x)
    f = gc.function([x], s, backend="numpy")  # reads neither carry
    (node,) = f.graph.outputs
    body = node.attrs["body"]
    assert node.attrs["num_carry"] == 0 and len(body.outputs) == 1
    assert "exp" not in {n.op for n in body.nodes()}
    X = np.random.default_rng(1).standard_normal((4, 2))
    np.testing.assert_allclose(f(X), np.sin(X), rtol=1e-12)
    g = gc.function([x], ab, backend="numpy")  # a*b needs both carries
    assert g.graph.outputs[0].attrs["num_carry"] == 2


def test_rules_fire_inside_a_body():
    x = gc.placeholder((4, 2), "float64", "x")
    c, _ = gc.scan(lambda c, xt: (gc.log(gc.exp(c)) + xt, None), gc.constant(np.zeros(2)), x)
    f = gc.function([x], c, backend="numpy")
    assert f.report.fired()["log_exp"] == 1
    X = np.arange(8.0).reshape(4, 2)
    np.testing.assert_allclose(f(X), X.sum(0))


def test_a_scan_of_constants_folds():
    c, ys = gc.scan(lambda c, xt: (c + xt, c), gc.constant(np.float64(0)),
                    gc.constant(np.arange(4.0)))
    f = gc.function([], [c, ys], backend="numpy")
    assert all(n.op == "constant" for n in f.graph.outputs)
    got = f()
    assert got[0] == 6.0
    np.testing.assert_array_equal(got[1], [0.0, 0.0, 1.0, 3.0])
