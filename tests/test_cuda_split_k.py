"""Split-K GEMMs on the cuda backend (backends/cuda/gemm.py): a GEMM of few tiles and a long
k sums slices of k in blocks of their own, adding into out atomically (out zeroed by a launch
of its own unless the GEMM accumulates into it). Emulated, with blocks in a shuffled order,
against numpy; SPLIT_K_MIN is made small so that small GEMMs split."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda import gemm
from graphc.schedule import ir as kir


@pytest.fixture
def shallow_splits(monkeypatch):
    monkeypatch.setattr(gemm, "SPLIT_K_MIN", 32)


def _emulated(inputs, outputs, tmp_path, **kw):
    return gc.function(inputs, outputs, backend="cuda", backend_options={
        "emulate": True, "seed": 5, "cache_dir": str(tmp_path)}, **kw)


def _gemm(m: int, n: int, k: int, batch=(), dtype="float32") -> kir.Gemm:
    acc = kir.Access(buffer=0, strides=(0,) * (len(batch) + 2), offset=0)
    return kir.Gemm(batch=batch, m=m, n=n, k=k, a=acc, b=acc, out=acc, dtype=np.dtype(dtype))


def test_only_few_tiles_over_a_long_k_split():
    # one 64x64 tile over k = 50176 (a weight gradient): split until the GPU is full
    splits, depth = gemm.k_splits(_gemm(16, 9, 50176), gemm.SMALL, 1)
    assert splits > 64 and depth % (2 * gemm.SMALL.bk) == 0
    assert (splits - 1) * depth < 50176 <= splits * depth  # every block has some of k
    assert gemm.k_splits(_gemm(16, 9, 200), gemm.SMALL, 1) == (1, 200)  # too shallow
    assert gemm.k_splits(_gemm(4096, 4096, 4096), gemm.LARGE, 1024)[0] == 1  # fills the GPU
    assert gemm.k_splits(_gemm(16, 9, 50176, dtype="int32"), gemm.SMALL, 1)[0] == 1
    assert gemm.k_splits(_gemm(16, 9, 50176, dtype="float16"), gemm.SMALL, 1)[0] == 1


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-12)])
def test_split_products_equal_numpy_for_any_layout(shallow_splits, tmp_path, dtype, rtol):
    """k = 300 in slices of 64 (the last one short), a transposed operand, a batch axis."""
    a = gc.placeholder((300, 20), dtype, name="a")
    b = gc.placeholder((300, 40), dtype, name="b")
    c = gc.placeholder((3, 30, 300), dtype, name="c")
    d = gc.placeholder((3, 300, 7), dtype, name="d")
    f = _emulated([a, b, c, d], [a.T @ b, 2.5 * (c @ d)], tmp_path)
    assert "gc_atomic_add(&" in f.source and "_gemm_zero(" in f.source
    rng = np.random.default_rng(3)
    args = [rng.normal(size=s).astype(dtype) for s in
            [(300, 20), (300, 40), (3, 30, 300), (3, 300, 7)]]
    want = [args[0].T @ args[1], 2.5 * (args[2] @ args[3])]
    for _ in range(2):  # the second call adds to a zeroed out again, not to the first's
        for g, w in zip(f(*args), want):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max())


def test_a_split_weight_gradient_update_accumulates_into_the_parameter(shallow_splits,
                                                                       tmp_path):
    """W -= lr * x.T @ dy folded into the GEMM: the split blocks add into W itself."""
    rng = np.random.default_rng(4)
    w0 = rng.normal(size=(12, 5)).astype("float32")
    x = gc.placeholder((400, 12), name="x")
    w = gc.parameter(w0.copy(), name="w")
    loss = gc.sum((x @ w) ** 2) / 2
    (g,) = gc.grad(loss, [w])
    f = _emulated([x], loss, tmp_path, updates={w: w - 0.001 * g})
    xv = rng.normal(size=(400, 12)).astype("float32")
    want = w0.copy()
    for _ in range(2):
        f(xv)
        want = want - 0.001 * xv.T @ (xv @ want)
        np.testing.assert_allclose(w.value, want, rtol=1e-4, atol=1e-5)
    assert "gc_atomic_add(&" in f.source
