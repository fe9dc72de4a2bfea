"""gc.scan's values on the numpy backend: the same loop unrolled in Python gives them."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import graphc as gc

RNG = np.random.default_rng(0)


def f64(*shape):
    return RNG.standard_normal(shape)


def numpy_fn(inputs, outputs):
    return gc.function(inputs, outputs, backend="numpy")


def test_a_carry_and_a_y_equal_the_python_loop():
    x = gc.placeholder((5, 3), "float64", "x")
    h0 = gc.placeholder((3,), "float64", "h0")
    w = gc.parameter(f64(3), name="w")

    def step(h, xt):
        h = gc.tanh(h * w + xt)
        return h, (h * h).sum()
    h, ys = gc.scan(step, h0, x)
    assert h.shape == (3,) and ys.shape == (5,)
    X, H = f64(5, 3), f64(3)
    got_h, got_ys = numpy_fn([h0, x], [h, ys])(H, X)
    want = []
    for t in range(5):
        H = np.tanh(H * w.value + X[t])
        want.append((H * H).sum())
    np.testing.assert_allclose(got_h, H, rtol=1e-12)
    np.testing.assert_allclose(got_ys, want, rtol=1e-12)


def test_reverse_runs_from_the_end_and_keeps_ys_aligned():
    x = gc.placeholder((4,), "float64", "x")
    c, ys = gc.scan(lambda c, xt: (c * 0.5 + xt, c), gc.constant(np.float64(0)), x,
                    reverse=True)
    X = f64(4)
    got_c, got_ys = numpy_fn([x], [c, ys])(X)
    acc, want = 0.0, np.zeros(4)
    for t in reversed(range(4)):
        want[t] = acc
        acc = acc * 0.5 + X[t]
    np.testing.assert_allclose(got_c, acc, rtol=1e-12)
    np.testing.assert_allclose(got_ys, want, rtol=1e-12)


def test_several_carries_and_ys_in_tuples_and_lists():
    a = gc.placeholder((3, 2), "float64", "a")
    b = gc.placeholder((3,), "float64", "b")

    def step(carry, xs):
        s, p = carry
        at, bt = xs
        return [s + at.sum() * bt, p * bt], (s, at * p)
    (s, p), (ys1, ys2) = gc.scan(step, [gc.constant(np.float64(0)),
                                       gc.constant(np.float64(1))], (a, b))
    A, B = f64(3, 2), f64(3)
    got = numpy_fn([a, b], [s, p, ys1, ys2])(A, B)
    S, P, w1, w2 = 0.0, 1.0, [], []
    for t in range(3):
        w1.append(S)
        w2.append(A[t] * P)
        S, P = S + A[t].sum() * B[t], P * B[t]
    for g, w in zip(got, [S, P, np.array(w1), np.array(w2)]):
        np.testing.assert_allclose(g, w, rtol=1e-12)


def test_y_none_and_xs_none_with_length():
    c0 = gc.placeholder((2,), "float64", "c0")
    c, ys = gc.scan(lambda c, _: (c * 2.0, None), c0, length=3)
    assert ys is None
    C = f64(2)
    np.testing.assert_allclose(numpy_fn([c0], c)(C), C * 8)


def test_length_zero_returns_init_and_empty_ys():
    x = gc.placeholder((0, 3), "float64", "x")
    h0 = gc.placeholder((3,), "float64", "h0")
    h, ys = gc.scan(lambda h, xt: (h + xt, h * 2.0), h0, x)
    H = f64(3)
    got_h, got_ys = numpy_fn([h0, x], [h, ys])(H, np.zeros((0, 3)))
    np.testing.assert_array_equal(got_h, H)
    assert got_ys.shape == (0, 3) and got_ys.dtype == np.float64


def test_symbolic_length_several_calls():
    x = gc.placeholder(("T", 2), "float64", "x")
    h, ys = gc.scan(lambda h, xt: (h + xt, h.sum()), gc.constant(np.zeros(2)), x)
    assert ys.shape == ("T",)
    f = numpy_fn([x], [h, ys])
    for T in (0, 1, 4):
        X = f64(T, 2)
        got_h, got_ys = f(X)
        np.testing.assert_allclose(got_h, X.sum(0), rtol=1e-12)
        want = np.concatenate([[0.0], np.cumsum(X.sum(1))[:-1]]) if T else np.zeros(0)
        np.testing.assert_allclose(got_ys, want, rtol=1e-12, atol=1e-12)


def test_captured_placeholders_and_computed_outside_values():
    x = gc.placeholder((4, 3), "float64", "x")
    m = gc.placeholder((3, 3), "float64", "m")
    scale = gc.placeholder((), "float64", "scale")
    mt = m.T * scale  # computed outside from two placeholders: captured as one value

    def step(h, xt):
        return gc.tanh(h @ mt + xt), None
    h, _ = gc.scan(step, gc.constant(np.zeros(3)), x)
    X, M, S = f64(4, 3), f64(3, 3), 0.7
    H = np.zeros(3)
    for t in range(4):
        H = np.tanh(H @ (M.T * S) + X[t])
    np.testing.assert_allclose(numpy_fn([x, m, scale], h)(X, M, S), H, rtol=1e-12)


def test_nested_scan_values():
    x = gc.placeholder((3, 4), "float64", "x")
    w = gc.placeholder((), "float64", "w")

    def outer(c, row):
        inner, _ = gc.scan(lambda a, v: (a * w + v, None), c, row)
        return inner, inner
    c, ys = gc.scan(outer, gc.constant(np.float64(0)), x)
    X, W = f64(3, 4), 0.9
    a, want = 0.0, []
    for i in range(3):
        for j in range(4):
            a = a * W + X[i, j]
        want.append(a)
    got_c, got_ys = numpy_fn([x, w], [c, ys])(X, W)
    np.testing.assert_allclose(got_c, a, rtol=1e-12)
    np.testing.assert_allclose(got_ys, want, rtol=1e-12)


def test_the_listing_shows_the_body_once_per_loop():
    x = gc.placeholder((4,), "float64", "x")
    c, ys = gc.scan(lambda c, xt: (c + gc.exp(xt), c), gc.constant(np.float64(0)), x)
    text = gc.show(gc.Graph((x.node,), (c.node, ys.node)))
    assert text.count("scan(") == 2 and text.count("exp(%x0)") == 1
    assert "    body: as in %1" in text  # %0 is the constant init


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` missing")
def test_render_and_explore_take_a_scan_and_its_gradient(tmp_path):
    x = gc.placeholder((4, 2), "float64", "x")
    w = gc.parameter(f64(2, 2), name="w")
    h, ys = gc.scan(lambda h, xt: (gc.tanh(h @ w + xt), h.sum()), gc.constant(np.zeros(2)), x)
    loss = (h * h).sum() + ys.sum()
    f = numpy_fn([x], [loss] + gc.grad(loss, [w]))
    gc.render(f, tmp_path / "f.svg")
    assert (tmp_path / "f.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    gc.explore(f, tmp_path / "f.html")
    assert "scan" in (tmp_path / "f.html").read_text()


@pytest.mark.parametrize("optimize", [True, False])
def test_optimized_and_raw_agree(optimize):
    x = gc.placeholder((6, 2), "float64", "x")
    c, ys = gc.scan(lambda c, xt: (gc.log(gc.exp(c)) + xt * 1.0, c * 0 + c), gc.constant(
        np.zeros(2)), x)
    X = f64(6, 2)
    got = gc.function([x], [c, ys], backend="numpy", optimize=optimize)(X)
    np.testing.assert_allclose(got[0], X.sum(0), rtol=1e-12)
    np.testing.assert_allclose(got[1], np.cumsum(X, 0) - X, rtol=1e-12, atol=1e-12)


def test_carries_with_a_batch_size_known_at_call_time():
    x = gc.placeholder(("T", "N", 3), "float64", "x")
    h0 = gc.placeholder(("N", 3), "float64", "h0")
    h, ys = gc.scan(lambda h, xt: (gc.tanh(h + xt), h.sum(axis=1)), h0, x)
    assert h.shape == ("N", 3) and ys.shape == ("T", "N")
    f = numpy_fn([x, h0], [h, ys])
    for T, N in ((3, 2), (0, 4), (2, 1)):
        X, H0 = f64(T, N, 3), f64(N, 3)
        got_h, got_ys = f(X, H0)
        H, want = H0, []
        for t in range(T):
            want.append(H.sum(axis=1))
            H = np.tanh(H + X[t])
        np.testing.assert_allclose(got_h, H, rtol=1e-12)
        np.testing.assert_allclose(got_ys, np.array(want).reshape(T, N), rtol=1e-12)


def test_vmap_batches_the_loop_instead_of_unrolling_it():
    """Batched xs, an unbatched init that the body makes batched, an unbatched counter."""
    w = f64(3, 3) * 0.5

    def per_example(xs, h0):
        def step(carry, xt):
            h, n = carry
            return (gc.tanh(h @ gc.constant(w) + xt), n + 1), (h * xt).sum()
        (h, n), ys = gc.scan(step, (h0, gc.constant(np.int64(0))), xs)
        return h, n, ys
    X, H0 = f64(4, 5, 3), f64(3)
    xs = gc.placeholder((4, 5, 3), "float64", "xs")
    h0 = gc.placeholder((3,), "float64", "h0")
    outs = gc.vmap(per_example, in_axes=(0, None))(xs, h0)
    f = numpy_fn([xs, h0], list(outs))
    assert [n.op for n in f.raw_graph.nodes()].count("scan") == 3  # one loop, 3 results
    got = f(X, H0)
    one = gc.jit(per_example, backend="numpy")
    for i in range(4):
        for g, w_ in zip(got, one(X[i], H0)):
            np.testing.assert_allclose(g[i], w_, rtol=1e-12)
