"""Derivatives through gc.scan (numpy backend, float64): equal to those of the same loop
unrolled in Python, and to finite differences; forward mode, second order, nested scans."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

RNG = np.random.default_rng(1)


def f64(*shape):
    return RNG.standard_normal(shape) * 0.5


def unrolled(step, init, xs, reverse=False):
    """The loop of gc.scan written out in Python (one tensor carry and x, y a tensor)."""
    T = xs.shape[0]
    carry, ys = init, [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        carry, ys[t] = step(carry, xs[t])
    return carry, gc.stack(ys) if T and ys[0] is not None else None


def run(inputs, outputs):
    return gc.function(inputs, outputs, backend="numpy")


def assert_close(got, want):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


def rnn_step(w, u):
    def step(h, xt):
        h = gc.tanh(h @ w + xt @ u)
        return h, gc.sin(h).sum()
    return step


@pytest.mark.parametrize("reverse", [False, True])
def test_gradient_equals_the_unrolled_loop(reverse):
    x = gc.placeholder((5, 2), "float64", "x")
    h0 = gc.placeholder((3,), "float64", "h0")
    w = gc.parameter(f64(3, 3), name="w")
    u = gc.placeholder((2, 3), "float64", "u")
    step = rnn_step(w, u)

    def loss(scanned):
        h, ys = scanned
        return (h * h).sum() + (ys * gc.arange(5.0)).sum()
    a = loss(gc.scan(step, h0, x, reverse=reverse))
    b = loss(unrolled(step, h0, x, reverse))
    wrt = [x, h0, w, u]
    args = (f64(5, 2), f64(3), f64(2, 3))
    got = run([x, h0, u], [a] + gc.grad(a, wrt))(*args)
    want = run([x, h0, u], [b] + gc.grad(b, wrt))(*args)
    assert_close(got, want)


def test_gradient_against_finite_differences():
    def fn(x, h0, w):
        h, ys = gc.scan(lambda h, xt: (gc.tanh(h @ w + xt), h * xt), h0, x)
        return (h ** 2).sum() + gc.sin(ys).sum()
    result = gc.check_grad(fn, f64(6, 3), f64(3), f64(3, 3))
    assert result.ok, str(result)


def test_several_carries_ys_and_an_integer_carry():
    x = gc.placeholder((4, 2), "float64", "x")
    a0 = gc.placeholder((2,), "float64", "a0")
    b0 = gc.placeholder((), "float64", "b0")

    def step(carry, xt):
        a, b, n = carry
        return (a * gc.cos(xt) + b, b * 0.9 + (a * xt).sum(), n + 1), (a.sum() * n, b)
    (a, b, n), (y1, y2) = gc.scan(step, (a0, b0, gc.constant(np.int64(0))), x)
    loss = (a ** 2).sum() + b * 3 + (y1 ** 2).sum() + (y2 * 2).sum()

    def steps():
        carry = (a0, b0, gc.constant(np.int64(0)))
        y1s, y2s = [], []
        for t in range(4):
            carry, (p, q) = step(carry, x[t])
            y1s.append(p)
            y2s.append(q)
        a, b, _ = carry
        return (a ** 2).sum() + b * 3 + (gc.stack(y1s) ** 2).sum() + (gc.stack(y2s) * 2).sum()
    ref = steps()
    args = (f64(4, 2), f64(2), 0.3)
    got = run([x, a0, b0], [loss, n] + gc.grad(loss, [x, a0, b0]))(*args)
    want = run([x, a0, b0], [ref, gc.constant(np.int64(4))] + gc.grad(ref, [x, a0, b0]))(*args)
    assert_close(got, want)


def test_y_none_and_captured_values_get_their_gradient():
    x = gc.placeholder((3, 2), "float64", "x")
    m = gc.placeholder((2, 2), "float64", "m")
    scaled = m * 2.0  # computed outside: captured as one value

    def step(h, xt):
        return gc.sigmoid(h @ scaled) + xt, None
    h, _ = gc.scan(step, gc.constant(np.zeros(2)), x)
    ref, _ = unrolled(lambda h, xt: step(h, xt), gc.constant(np.zeros(2)), x)
    args = (f64(3, 2), f64(2, 2))
    got = run([x, m], gc.grad(h.sum(), [x, m]))(*args)
    want = run([x, m], gc.grad(ref.sum(), [x, m]))(*args)
    assert_close(got, want)


def test_gradient_with_length_zero():
    x = gc.placeholder((0, 2), "float64", "x")
    h0 = gc.placeholder((2,), "float64", "h0")
    w = gc.placeholder((2, 2), "float64", "w")
    h, ys = gc.scan(lambda h, xt: (gc.tanh(h @ w + xt), h), h0, x)
    loss = (h * h).sum() + ys.sum()
    gx, gh, gw = run([x, h0, w], gc.grad(loss, [x, h0, w]))(np.zeros((0, 2)), [1.0, 2.0],
                                                            f64(2, 2))
    assert gx.shape == (0, 2)
    np.testing.assert_array_equal(gh, [2.0, 4.0])
    np.testing.assert_array_equal(gw, np.zeros((2, 2)))


def test_gradient_with_a_length_known_at_call_time():
    x = gc.placeholder(("T", 2), "float64", "x")
    w = gc.placeholder((2, 2), "float64", "w")
    h, ys = gc.scan(lambda h, xt: (gc.tanh(h @ w + xt), (h * xt).sum()),
                    gc.constant(np.ones(2)), x)
    loss = (h * h).sum() + (ys ** 2).sum()
    f = run([x, w], gc.grad(loss, [x, w]))
    W = f64(2, 2)
    for T in (1, 3, 6):
        xt = gc.placeholder((T, 2), "float64", "xt")
        ref_h, ref_ys = unrolled(lambda h, v: (gc.tanh(h @ w + v), (h * v).sum()),
                                 gc.constant(np.ones(2)), xt)
        ref = (ref_h * ref_h).sum() + (ref_ys ** 2).sum()
        X = f64(T, 2)
        assert_close(f(X, W), run([xt, w], gc.grad(ref, [xt, w]))(X, W))


def test_forward_mode_equals_the_unrolled_loop():
    x = gc.placeholder((4, 2), "float64", "x")
    h0 = gc.placeholder((2,), "float64", "h0")
    tx = gc.placeholder((4, 2), "float64", "tx")
    th = gc.placeholder((2,), "float64", "th")
    step = rnn_step(gc.constant(f64(2, 2)), gc.constant(f64(2, 2)))
    h, ys = gc.scan(step, h0, x)
    rh, rys = unrolled(step, h0, x)
    got = gc.jvp([h, ys], [x, h0], [tx, th])
    want = gc.jvp([rh, rys], [x, h0], [tx, th])
    args = (f64(4, 2), f64(2), f64(4, 2), f64(2))
    assert_close(run([x, h0, tx, th], got)(*args), run([x, h0, tx, th], want)(*args))


def numeric_hessian(f, v, eps=1e-4):
    n = v.size
    H = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            d = np.zeros(n)
            e = np.zeros(n)
            d[i], e[j] = eps, eps
            H[i, j] = (f(v + d + e) - f(v + d - e) - f(v - d + e) + f(v - d - e)) / (4 * eps ** 2)
    return H


def test_second_derivatives_against_finite_differences():
    x = gc.placeholder((3, 2), "float64", "x")
    h0 = gc.placeholder((2,), "float64", "h0")
    step = rnn_step(gc.constant(f64(2, 2)), gc.constant(f64(2, 2)))
    h, ys = gc.scan(step, h0, x)
    loss = (h ** 2).sum() + (ys ** 2).sum()
    X, H0 = f64(3, 2), f64(2)
    hess = run([x, h0], gc.hessian(loss, h0))(X, H0)
    value = run([x, h0], loss)
    np.testing.assert_allclose(hess, numeric_hessian(lambda v: value(X, v), H0),
                               rtol=1e-5, atol=1e-6)
    rh, rys = unrolled(step, h0, x)
    ref = run([x, h0], gc.hessian((rh ** 2).sum() + (rys ** 2).sum(), h0))(X, H0)
    np.testing.assert_allclose(hess, ref, rtol=1e-9, atol=1e-12)


def nested(w):
    def outer(c, row):
        inner, ys = gc.scan(lambda a, v: (gc.sin(a * w + v), a * v), c, row)
        return inner, ys.sum()
    return outer


def test_nested_scan_gradient_and_hessian_equal_the_unrolled_loops():
    x = gc.placeholder((2, 3), "float64", "x")
    w = gc.placeholder((), "float64", "w")
    c, ys = gc.scan(nested(w), gc.constant(np.float64(0.1)), x)
    loss = c ** 2 + (ys ** 2).sum()
    a, total = gc.constant(np.float64(0.1)), []
    for i in range(2):
        inner = []
        for j in range(3):
            inner.append(a * x[i, j])
            a = gc.sin(a * w + x[i, j])
        total.append(gc.stack(inner).sum())
    ref = a ** 2 + (gc.stack(total) ** 2).sum()
    args = (f64(2, 3), 0.8)
    got = run([x, w], gc.grad(loss, [x, w]) + [gc.hessian(loss, w)])(*args)
    want = run([x, w], gc.grad(ref, [x, w]) + [gc.hessian(ref, w)])(*args)
    assert_close(got, want)


@pytest.mark.parametrize("reverse", [False, True])
def test_checkpoint_gives_the_same_values_and_gradient(reverse):
    x = gc.placeholder(("T", 2), "float64", "x")
    w = gc.placeholder((2, 2), "float64", "w")

    def step(h, xt):
        h = gc.tanh(h @ w + gc.log(xt * xt + 1))
        return h, (h * xt).sum()
    fs = []
    for checkpoint in (False, True):
        h, ys = gc.scan(step, gc.constant(np.ones(2)), x, reverse=reverse,
                        checkpoint=checkpoint)
        loss = (h * h).sum() + (ys ** 2).sum()
        fs.append(run([x, w], [h, ys] + gc.grad(loss, [x, w])))
    W = f64(2, 2)
    for T in (0, 1, 5, 9, 10):
        X = f64(T, 2)
        assert_close(fs[1](X, W), fs[0](X, W))


def saved_lengths(nodes):
    """The lengths of the per-step values a graph's loops stack (residuals, carries as the
    step starts, cotangents of the steps), inside bodies too."""
    for n in nodes:
        if n.op == "scan":
            if n.attrs["output"] >= n.attrs["num_carry"]:
                yield n.shape[0]
            yield from saved_lengths(n.attrs["body"].nodes())


@pytest.mark.parametrize("checkpoint,saved", [(False, {100}), (True, {10})])
def test_checkpoint_saves_about_sqrt_t_carries(checkpoint, saved):
    x = gc.placeholder((100, 2), "float64", "x")
    w = gc.placeholder((2, 2), "float64", "w")
    h, _ = gc.scan(lambda h, xt: (gc.tanh(h @ w + xt), None), gc.constant(np.ones(2)), x,
                   checkpoint=checkpoint)
    f = run([x, w], gc.grad((h * h).sum(), [x, w]))
    # with checkpoints: 10 segment starts, then the 10 steps of one segment at a time
    assert set(saved_lengths(f.graph.nodes())) == saved


def test_integer_tokens_as_the_sequence_embedding_gradient():
    """A character model's loop: token ids as xs, an embedding captured, its gradient summed
    over the steps (take's vjp inside the reverse loop)."""
    tokens = gc.placeholder((5, 2), "int64", "tokens")
    emb = gc.parameter(f64(7, 3), name="emb")
    w = gc.parameter(f64(3, 3), name="w")

    def step(h, tok):
        return gc.tanh(h @ w + gc.take(emb, tok, axis=0)), h.sum()
    h0 = gc.constant(np.zeros((2, 3)))
    h, ys = gc.scan(step, h0, tokens)
    loss = (h ** 2).sum() + (ys ** 2).sum()
    carry, outs = h0, []
    for t in range(5):
        carry, y = step(carry, tokens[t])
        outs.append(y)
    ref = (carry ** 2).sum() + (gc.stack(outs) ** 2).sum()
    ids = np.random.default_rng(4).integers(0, 7, size=(5, 2))
    got = run([tokens], [loss] + gc.grad(loss, [emb, w]))(ids)
    want = run([tokens], [ref] + gc.grad(ref, [emb, w]))(ids)
    assert_close(got, want)


@pytest.mark.parametrize("checkpoint,largest", [(False, 800), (True, 200)])
def test_checkpoint_keeps_no_value_of_every_step_but_x_sized_ones(checkpoint, largest):
    """T = 100 steps of an 8-wide carry over a 2-wide x: without checkpoints the gradient
    keeps every step's carry (100 x 8 values); with them nothing outside the loops is larger
    than x and its gradient (100 x 2), after every optimization pass."""
    x = gc.placeholder((100, 2), "float64", "x")
    w = gc.placeholder((8, 8), "float64", "w")
    u = gc.placeholder((2, 8), "float64", "u")
    h, _ = gc.scan(lambda h, xt: (gc.tanh(h @ w + xt @ u), None), gc.constant(np.ones(8)), x,
                   checkpoint=checkpoint)
    f = run([x, w, u], gc.grad((h * h).sum(), [x, w, u]))
    sizes = [int(np.prod(n.shape)) for n in f.graph.nodes()]
    assert max(sizes) == largest


def test_jacobian_through_a_scan_batches_the_reverse_loop():
    x = gc.placeholder((5, 3), "float64", "x")
    h0 = gc.placeholder((3,), "float64", "h0")
    w = f64(3, 3)
    h, ys = gc.scan(lambda h, xt: (gc.tanh(h @ gc.constant(w) + xt), (h * xt).sum()), h0, x)
    f = run([x, h0], gc.jacobian(ys, h0))
    assert [n.op for n in f.raw_graph.nodes()].count("scan") <= 4  # not one per output
    X, H0 = f64(5, 3), f64(3)

    def ref(v):
        out = []
        for t in range(5):
            out.append((v * X[t]).sum())
            v = np.tanh(v @ w + X[t])
        return np.array(out)
    eye = np.eye(3) * 1e-6
    numeric = np.stack([(ref(H0 + e) - ref(H0 - e)) / 2e-6 for e in eye], axis=1)
    np.testing.assert_allclose(f(X, H0), numeric, rtol=1e-6, atol=1e-8)
