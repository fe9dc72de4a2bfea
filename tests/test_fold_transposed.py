"""A parameter update folds into the GEMM that makes its gradient also where the gradient
comes out in another layout than the parameter's: column-major (a narrow product computed
turned) or transposed (a recurrent layer's [4H, E] weights from [E, 4H] products). The GEMM,
turned where needed, adds -lr * gradient to the parameter in place
(graphc/schedule/epilogue.py)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.schedule import ir, schedule_graph


def _two_d_updates(f) -> list[ir.Elementwise]:
    return [k for k in schedule_graph(f.graph).kernels
            if isinstance(k, ir.Elementwise) and "update" in k.fused and len(k.shape) == 2]


def _linear_step(backend: str, x: np.ndarray, w0: np.ndarray, dtype: str):
    w = gc.parameter(w0.astype(dtype), name="w_t")
    xp = gc.placeholder(x.shape, dtype, name="x_t")
    loss = gc.sum(gc.tanh(xp @ w.T))
    f = gc.function([xp], loss, updates={w: w - 0.1 * gc.grad(loss, w)}, backend=backend)
    f(x.astype(dtype))
    f(x.astype(dtype))
    return f, w.value


@pytest.mark.parametrize("shape", [(40, 6, 5), (300, 64, 96), (7, 3, 130)])
def test_a_linear_layers_transposed_weight_update_folds(shape):
    n, c, r = shape
    rng = np.random.default_rng(sum(shape))
    x, w0 = rng.normal(size=(n, c)), rng.normal(size=(r, c)) * 0.2
    f, got = _linear_step("llvm", x, w0, "float64")
    _, want = _linear_step("numpy", x, w0, "float64")
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)
    assert not np.allclose(got, w0)
    assert not _two_d_updates(f)
    assert any(isinstance(k, ir.Gemm) and k.accumulate and k.out.strides == (c, 1)
               for k in schedule_graph(f.graph).kernels)


def _lstm_step(backend: str, seed: int):
    rng = np.random.default_rng(seed)
    lstm = gc.nn.LSTM(5, 7, dtype="float64", name="lstm_t")
    lstm.load_state_dict({k: rng.normal(size=v.shape) * 0.3 for k, v in
                          lstm.state_dict().items()})
    xs = gc.placeholder((6, 3, 5), "float64", name="xs_t")
    out, _ = lstm(xs)
    loss = gc.sum(out * out)
    p = lstm.parameters()
    f = gc.function([xs], loss, updates={v: v - 0.05 * g for v, g in zip(p, gc.grad(loss, p))},
                    backend=backend)
    f(rng.normal(size=(6, 3, 5)))
    return f, [v.value.copy() for v in p]


def test_an_lstms_weight_updates_fold_into_their_gradient_gemms():
    f, got = _lstm_step("llvm", 3)
    _, want = _lstm_step("numpy", 3)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)
    assert not _two_d_updates(f)
