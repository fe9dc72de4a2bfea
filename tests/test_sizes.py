"""Symbolic sizes: named and anonymous sizes in shapes, expressions of them, the call-time
checks that bind them, and derivative graphs free of shape bookkeeping."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.sizes import Size, floordiv, minimum, named

BACKENDS = ["numpy", "llvm"]
BOOKKEEPING = {"broadcast_to", "reshape", "squeeze", "expand_dims"}


def mlp(batch):
    x = gc.placeholder((batch, 784), name="x")
    y = gc.placeholder((batch if isinstance(batch, str) or batch is None else batch,),
                       "int64", name="y")
    rng = np.random.default_rng(0)
    W1 = gc.parameter((rng.normal(size=(784, 64)) * 0.05).astype(np.float32), name="W1")
    b1 = gc.parameter(np.zeros(64, np.float32), name="b1")
    W2 = gc.parameter((rng.normal(size=(64, 10)) * 0.05).astype(np.float32), name="W2")
    b2 = gc.parameter(np.zeros(10, np.float32), name="b2")
    loss = gc.nn.cross_entropy(gc.relu(x @ W1 + b1) @ W2 + b2, y)
    return (x, y), gc.grad(loss, [W1, b1, W2, b2])


def test_size_expressions_are_canonical():
    n, m = named("N"), named("M")
    assert n * 784 // 784 == n
    assert (n + m) - m == n
    assert 2 * n + n == 3 * n
    assert n * m == m * n and str(n * m) in ("M*N", "N*M")
    assert floordiv(n * m, m) == n
    assert minimum(n + 2, n) == n and minimum(n, n) == n
    assert isinstance(n - n, int) and n - n == 0
    with pytest.raises(TypeError, match="known only at call time"):
        bool(n)
    with pytest.raises(TypeError, match="known only at call time"):
        n > 3  # noqa: B015 (the comparison is the test)
    assert n + 1 > 0 and n >= 0


def test_named_sizes_show_in_shapes_and_listings():
    x = gc.placeholder(("N", 784), name="x")
    h = x.reshape(-1, 28, 28)
    assert x.shape == ("N", 784) and h.shape == ("N", 28, 28)
    assert "f32[N,784]" in gc.show(x.sum())
    z = gc.placeholder((None, 3), name="z")
    assert z.shape == (None, 3)
    both = gc.concatenate([gc.placeholder(("N", 3)), gc.placeholder(("M", 3))], axis=0)
    assert both.shape == (None, 3)  # N + M: an expression, None to users
    assert isinstance(both.node.shape[0], Size) and str(both.node.shape[0]) in ("M + N",
                                                                                  "N + M")


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_mlp_gradient_has_no_shape_bookkeeping(backend):
    (x, y), grads = mlp("N")
    f = gc.function([x, y], grads, backend=backend)
    ops = [n.op for n in f.graph.nodes()]
    assert len(ops) <= 31, gc.show(f.graph)
    assert not BOOKKEEPING & set(ops), gc.show(f.graph)
    raw = gc.function([x, y], grads, backend="numpy", optimize=False).graph
    assert len(raw.nodes()) > len(ops)
    assert [g.shape for g in grads] == [(784, 64), (64,), (64, 10), (10,)]


def test_none_sizes_still_shrink_under_the_optimizer():
    (x, y), grads = mlp(None)
    f = gc.function([x, y], grads, backend="numpy")
    raw = gc.function([x, y], grads, backend="numpy", optimize=False)
    assert len(f.graph.nodes()) < len(raw.graph.nodes())


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_function_serves_every_batch_size(backend):
    (x, y), grads = mlp("N")
    (xs, ys), fixed = mlp(None)
    f = gc.function([x, y], grads, backend=backend)
    ref = gc.function([xs, ys], fixed, backend="numpy", optimize=False)
    rng = np.random.default_rng(1)
    for n in (5, 1, 32, 0):
        xa = rng.normal(size=(n, 784)).astype(np.float32)
        ya = rng.integers(0, 10, n)
        for got, want in zip(f(xa, ya), ref(xa, ya)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_named_size_is_bound_once_per_call(backend):
    x = gc.placeholder(("N", 3), name="x")
    y = gc.placeholder(("N",), name="y")
    f = gc.function([x, y], gc.sum(x, axis=1) * y, backend=backend)
    out = f(np.ones((4, 3), np.float32), np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(out, 3.0 * np.arange(4))
    with pytest.raises(ValueError, match=r"size N: argument 'x' has 4 .* argument 'y' has 5"):
        f(np.ones((4, 3), np.float32), np.ones(5, np.float32))


def test_anonymous_sizes_that_meet_are_checked_with_both_names():
    a = gc.placeholder((None, 2), name="a")
    b = gc.placeholder((None, 2), name="b")
    f = gc.function([a, b], a * b, backend="numpy")
    with pytest.raises(ValueError, match=r"axis 0 of argument 'a' is 3 and axis 0 of "
                                         r"argument 'b' is 2; they must be equal \(mul at "):
        f(np.ones((3, 2), np.float32), np.ones((2, 2), np.float32))


def test_a_size_name_must_be_an_identifier():
    with pytest.raises(ValueError, match="identifier"):
        gc.placeholder(("batch size", 3))
    with pytest.raises(TypeError, match="string"):
        gc.placeholder("N")


@pytest.mark.parametrize("backend", BACKENDS)
def test_slices_concatenation_and_means_of_named_sizes(backend):
    x = gc.placeholder(("N",), "float64", name="x")
    y = gc.placeholder(("M",), "float64", name="y")
    both = gc.concatenate([x[1:], y, x[:2]])
    out = gc.mean(both ** 2)
    gx, gy = gc.grad(out, [x, y])
    f = gc.function([x, y], [out, gx, gy], backend=backend)
    rng = np.random.default_rng(2)
    for n, m in ((5, 3), (2, 7)):
        xa, ya = rng.normal(size=n), rng.normal(size=m)
        parts = np.concatenate([xa[1:], ya, xa[:2]])
        value, dx, dy = f(xa, ya)
        np.testing.assert_allclose(value, np.mean(parts ** 2))
        want = np.zeros(n)
        want[1:] += 2 * xa[1:] / parts.size
        want[:2] += 2 * xa[:2] / parts.size
        np.testing.assert_allclose(dx, want)
        np.testing.assert_allclose(dy, 2 * ya / parts.size)
