"""A loop body's GEMM whose B is loop-invariant reads B packed once before the loop
(backends/llvm/loop.py prepack), and a transposed invariant enters the loop as it is stored
(schedule/loop.py permuted_buffer): values and gradients equal the numpy interpreter's."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.schedule import ir

RNG = np.random.default_rng(7)
# More rows than a GEMM reads B in place for; depths and widths of more than one packed
# block (B's block at depth pk, column jc), partial panels and vectors.
T, N, K, H = 3, 24, 300, 600


def _rnn(transposed: bool, dtype: str):
    """h' = tanh(h @ W + x_t) (or h @ W^T with W stored (H, K)); the loss and its
    gradients with respect to W, h0 and the sequence."""
    xs = gc.placeholder((T, N, H), dtype, "xs")
    h0 = gc.placeholder((N, K), dtype, "h0")
    w = gc.parameter((RNG.standard_normal((H, K) if transposed else (K, H)) * 0.05)
                     .astype(dtype), name="w")
    proj = gc.parameter((RNG.standard_normal((H, K)) * 0.05).astype(dtype), name="proj")

    def step(h, x):
        z = (h @ gc.transpose(w) if transposed else h @ w) + x
        # (W is also read elementwise: that kernel must see W itself, not its panels)
        h = gc.tanh(z) @ proj + 0.01 * gc.sum(w)
        return h, h
    h, hs = gc.scan(step, h0, xs)
    loss = gc.sum(hs * hs) + gc.sum(h)
    return [xs, h0], [loss, *gc.grad(loss, [w, proj, h0, xs])]


@pytest.mark.parametrize("threads", [1, 2], ids=["1thread", "2threads"])
@pytest.mark.parametrize("transposed", [False, True], ids=["rows", "transposed"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_prepacked_b_values_and_gradients(transposed, dtype, threads, monkeypatch, tmp_path):
    # (two threads: always the team, which shares the panels packed before the loop)
    monkeypatch.setenv("GRAPHC_NUM_THREADS", str(threads))
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    inputs, outputs = _rnn(transposed, dtype)
    args = [RNG.standard_normal((T, N, H)).astype(dtype),
            RNG.standard_normal((N, K)).astype(dtype)]
    want = gc.function(inputs, outputs, backend="numpy")(*args)
    f = gc.function(inputs, outputs, backend="llvm")
    got = f(*args)
    assert "_packed_b" in f.source  # (the body's GEMMs took the prepacked path)
    # W (or W^T) enters the loops as it is stored: no transposed copy before them
    assert not [k for k in f.schedule().kernels
                if isinstance(k, ir.Elementwise) and "copy" in k.fused]
    kernels = gc.function(inputs, outputs, backend="numpy",
                          backend_options={"mode": "kernels"})(*args)
    tol = 1e-10 if dtype == "float64" else 2e-4
    for g, k, w in zip(got, kernels, want):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)
        np.testing.assert_allclose(k, w, rtol=tol, atol=tol)
