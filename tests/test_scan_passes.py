"""The optimizer and scans: one loop per scan and its gradient's saved carries, results
nothing reads left out, rules fire inside bodies."""
from __future__ import annotations

import numpy as np
import pytest

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


def body_ops(node):
    return [n.op for n in node.attrs["body"].nodes()]


def test_work_on_the_steps_alone_moves_before_the_loop():
    """x_t @ U for every t is one matmul before the loop; W * 2 is computed once."""
    x = gc.placeholder(("T", 4, 3), "float64", "x")
    w = gc.placeholder((5, 5), "float64", "w")
    u = gc.placeholder((3, 5), "float64", "u")
    h, ys = gc.scan(lambda h, xt: (gc.tanh(h @ (w * 2.0) + xt @ u), gc.exp(xt).sum()),
                    gc.constant(np.zeros((4, 5))), x)
    f = gc.function([x, w, u], [h, ys], backend="numpy")
    raw = gc.function([x, w, u], [h, ys], backend="numpy", optimize=False)
    assert f.report.fired()["hoist_scan_steps"] == 1
    loop = f.graph.outputs[0]
    assert body_ops(loop).count("matmul") == 1 and "exp" not in body_ops(loop)
    assert "mul" not in body_ops(loop)  # w * 2, once before the loop
    before = [n for n in f.graph.nodes() if n.op == "matmul"]
    assert [n.shape[1:] for n in before] == [(4, 5)]  # (T, 4, 5): every step's x_t @ u
    rng = np.random.default_rng(2)
    W, U = rng.standard_normal((5, 5)) * 0.3, rng.standard_normal((3, 5))
    for T in (0, 1, 6):
        X = rng.standard_normal((T, 4, 3))
        for a, b in zip(f(X, W, U), raw(X, W, U)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_a_primitive_without_a_batching_rule_stays_in_the_loop():
    x = gc.placeholder((3, 4), "float64", "x")
    c, ys = gc.scan(lambda c, xt: (c + gc.sort(xt)[0], gc.sort(xt) * 2.0),
                    gc.constant(np.float64(0)), x)
    f = gc.function([x], [c, ys], backend="numpy")
    assert "argsort" in body_ops(f.graph.outputs[0])
    X = np.random.default_rng(3).standard_normal((3, 4))
    got_c, got_ys = f(X)
    np.testing.assert_allclose(got_c, np.sort(X, axis=1)[:, 0].sum(), rtol=1e-12)
    np.testing.assert_allclose(got_ys, np.sort(X, axis=1) * 2, rtol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("nested,checkpoint", [
    (False, False), (True, False), (False, True),
    pytest.param(True, True, marks=pytest.mark.slow)])
def test_optimized_gradients_equal_the_raw_graph(nested, checkpoint, reverse):
    """merge_scans and hoist_scan_steps together, on two carries, two ys, a loop in the body,
    checkpoints and both directions: the optimized program computes what the raw one does."""
    x = gc.placeholder((5, 2, 3), "float64", "x")
    w = gc.placeholder((3, 3), "float64", "w")
    u = gc.placeholder((3, 3), "float64", "u")

    def step(carry, xt):
        h, s = carry
        if nested:
            inner, _ = gc.scan(lambda a, v: (gc.sin(a @ w + v), a.sum()), h,
                               gc.stack([xt, xt * 0.5]), reverse=not reverse)
            h2 = gc.tanh(inner + xt @ u)
        else:
            h2 = gc.tanh(h @ w + xt @ u)
        return (h2, s + (h2 * xt).sum()), (h2.sum(axis=1), s * 2.0)
    init = (gc.constant(np.zeros((2, 3))), gc.constant(np.float64(0)))
    (h, s), (y1, y2) = gc.scan(step, init, x, reverse=reverse, checkpoint=checkpoint)
    loss = (h ** 2).sum() + s * s + (y1 ** 2).sum() + (y2 * gc.arange(5.0)).sum()
    outs = [loss] + gc.grad(loss, [x, w, u])
    f = gc.function([x, w, u], outs, backend="numpy")
    raw = gc.function([x, w, u], outs, backend="numpy", optimize=False)
    assert f.report.fired()["hoist_scan_steps"] >= 1
    rng = np.random.default_rng(6)
    args = (rng.standard_normal((5, 2, 3)), rng.standard_normal((3, 3)) * 0.4,
            rng.standard_normal((3, 3)) * 0.4)
    for a, b in zip(f(*args), raw(*args)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_a_body_the_gradient_stabilized_still_shares_the_forward_loop():
    """gc.grad stabilizes log(sigmoid(.)) in its copy of the body before differentiating;
    once the optimizer stabilizes the loss's copy too, the two loops are one."""
    x = gc.placeholder((5, 3), "float64", "x")
    w = gc.placeholder((3, 3), "float64", "w")
    h, ys = gc.scan(lambda h, xt: (gc.log(gc.sigmoid(h @ w + xt)), (h * h).sum()),
                    gc.constant(np.zeros(3)), x)
    loss = h.sum() + ys.sum()
    outs = [loss] + gc.grad(loss, [w])
    f = gc.function([x, w], outs, backend="numpy")
    assert len(loops(f)) == 2
    raw = gc.function([x, w], outs, backend="numpy", optimize=False)
    args = (np.random.default_rng(7).standard_normal((5, 3)), np.eye(3) * 0.3)
    for a, b in zip(f(*args), raw(*args)):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_the_reverse_loop_leaves_dw_to_one_matmul_after_it():
    x = gc.placeholder((6, 4, 3), "float64", "x")
    w = gc.parameter(np.eye(5) * 0.5, name="w")
    u = gc.parameter(np.ones((3, 5)) * 0.1, name="u")
    b = gc.parameter(np.zeros(5), name="b")
    h, _ = gc.scan(lambda h, xt: (gc.tanh(h @ w + xt @ u + b), None),
                   gc.constant(np.zeros((4, 5))), x)
    loss = (h * h).sum()
    outs = gc.grad(loss, [w, u, b])
    f = gc.function([x], outs, backend="numpy")
    assert f.report.fired()["sink_scan_sums"] >= 1
    (back,) = {n.attrs["body"]: n for n in f.graph.nodes()
               if n.op == "scan" and n.attrs["reverse"]}.values()
    assert back.attrs["num_carry"] == 1  # the carry's cotangent only: no running sums
    assert body_ops(back).count("matmul") == 1  # g_t @ w.T
    dw = f.graph.outputs[0]
    assert dw.op == "matmul" and dw.inputs[1].shape == (24, 5)  # all 6 x 4 rows at once
    raw = gc.function([x], outs, backend="numpy", optimize=False)
    X = np.random.default_rng(8).standard_normal((6, 4, 3))
    for a, r in zip(f(X), raw(X)):
        np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-13)
