"""In-graph random numbers and dropout: the same bits on every backend, the statistics of a
uniform distribution, reproducible seeds, and dropout's training/inference behaviour."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ops.random import uniform_from_counter

BACKENDS = [("numpy", None), ("numpy", {"mode": "kernels"}), ("llvm", None)]


def splitmix_reference(seed: int, i: int) -> int:
    """SplitMix64 written out on Python ints (mod 2**64), independent of numpy."""
    m = (1 << 64) - 1
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_the_hash_is_splitmix64():
    got = uniform_from_counter(np.int64(12345), np.arange(6, dtype=np.uint64), np.float64)
    want = [(splitmix_reference(12345, i) >> 11) * 2.0 ** -53 for i in range(6)]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_backend_draws_the_same_numbers(dtype):
    seed = gc.placeholder((), "int64", name="seed")
    x = gc.placeholder((None, 7, 3), dtype, name="x")
    u = gc.random_uniform(seed, x, dtype)
    xv = np.zeros((5, 7, 3), dtype)
    results = [gc.function([seed, x], u, backend=b, backend_options=o)(7, xv)
               for b, o in BACKENDS]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    assert results[0].dtype == np.dtype(dtype) and results[0].shape == (5, 7, 3)
    other = gc.function([seed, x], u, backend="llvm")(8, xv)
    assert not np.array_equal(other, results[0])


def test_uniform_statistics():
    u = gc.function([], gc.random_uniform(3, (200_000,), "float64"), backend="llvm")()
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    hist, _ = np.histogram(u, bins=10, range=(0, 1))
    assert hist.min() > 19_000 and hist.max() < 21_000


@pytest.mark.parametrize("backend,options", BACKENDS)
def test_dropout_layer(backend, options):
    x = gc.placeholder((None, 1000), "float64", name="x")
    layer = gc.nn.Dropout(0.25, seed=11, name="drop")
    y = layer(x, training=True)
    f = gc.function([x], y, updates=layer.updates(), backend=backend, backend_options=options)
    ones = np.ones((4, 1000))
    first, second = f(ones), f(ones)
    for out in (first, second):
        kept = out != 0
        assert abs(kept.mean() - 0.75) < 0.02
        np.testing.assert_allclose(out[kept], 1 / 0.75)
    assert not np.array_equal(first, second)  # the seed moved on
    assert layer.seed.value == 13
    g = gc.function([x], layer(x, training=False), backend=backend, backend_options=options)
    np.testing.assert_array_equal(g(ones), ones)


def test_dropout_gradient_flows_through_kept_units_only():
    x = gc.placeholder((50,), "float64", name="x")
    y = gc.nn.dropout(x, 0.5, seed=5)
    f = gc.function([x], [y, gc.grad(gc.sum(y * y), x)], backend="llvm")
    xv = np.linspace(1, 2, 50)
    out, grad = f(xv)
    np.testing.assert_allclose(grad, np.where(out != 0, 2 * out * 2.0, 0.0))


def test_bad_arguments():
    x = gc.placeholder((3,), name="x")
    with pytest.raises(ValueError, match="rate"):
        gc.nn.dropout(x, 1.0, seed=1)
    with pytest.raises(ValueError, match="scalar"):
        gc.random_uniform(gc.placeholder((2,), "int64"), x)
    with pytest.raises(TypeError):
        gc.random_uniform(0, x, "int32")
