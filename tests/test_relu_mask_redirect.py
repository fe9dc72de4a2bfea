"""relu's derivative reads its mask z > 0 from relu(z) when the kernel that makes relu(z)
also stored z only for that mask (graphc/schedule/redirect.py): z is then not stored."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.schedule import ir, schedule_graph


def _layer(backend: str, x: np.ndarray, w: np.ndarray, v: np.ndarray, also_z: bool = False):
    xp = gc.placeholder(x.shape, "float64", name="x_mask")
    wp = gc.placeholder(w.shape, "float64", name="w_mask")
    vp = gc.placeholder(v.shape, "float64", name="v_mask")
    # (sin: a value too costly to recompute where it is read, graphc/schedule/recompute.py)
    z = gc.sin(xp @ wp) + 1.0
    h = gc.relu(z)
    loss = gc.sum(gc.tanh(h @ vp)) + (gc.sum(z * z) if also_z else 0.0)
    # (h stored once, for the forward product and the transposed one of v's gradient)
    f = gc.function([xp, wp, vp], [loss] + gc.grad(loss, [wp, vp]), backend=backend)
    return f, f(x, w, v)


def _stores_beside_relu(f) -> int:
    (k,) = [k for k in schedule_graph(f.graph).kernels
            if isinstance(k, ir.Elementwise) and "relu" in k.fused]
    return len(k.stores)


def test_the_mask_reads_relu_and_the_pre_activation_is_not_stored():
    rng = np.random.default_rng(7)
    x, w, v = (rng.normal(size=s) for s in ((16, 12), (12, 20), (20, 3)))
    x[0, :] = np.nan  # a NaN pre-activation: masked out either way
    f, got = _layer("llvm", x, w, v)
    _, want = _layer("numpy", x, w, v)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)
    assert _stores_beside_relu(f) == 1


def test_a_pre_activation_read_otherwise_stays_stored():
    rng = np.random.default_rng(8)
    x, w, v = (rng.normal(size=s) for s in ((16, 12), (12, 20), (20, 3)))
    f, got = _layer("llvm", x, w, v, also_z=True)
    _, want = _layer("numpy", x, w, v, also_z=True)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)
    assert _stores_beside_relu(f) == 2
