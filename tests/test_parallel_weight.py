"""Elementwise kernels get a team by their work, libm calls counted (backends/llvm/parallel.py):
an LSTM's gate kernel in its loop body runs on two threads, with PyTorch's values."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import gemm, parallel
from graphc.schedule import ir

T, N, IN, H = 3, 32, 4, 128  # a gate kernel of N x H = 4096 elements, five libm calls each


def _kernel(op: str | None, size: int) -> ir.Elementwise:
    x: ir.Expr = ir.Load(ir.Access(0, (1,), 0), np.dtype("float32"))
    if op is not None:
        x = ir.Apply(op, (ir.Apply(op, (x,), np.dtype("float32")),), np.dtype("float32"))
    return ir.Elementwise((size,), (ir.Store(ir.Access(1, (1,), 0), x),), ())


def test_libm_calls_weigh_in_and_a_shared_call_counts_once():
    assert parallel.element_weight(_kernel(None, 8)) == 1
    assert parallel.element_weight(_kernel("tanh", 8)) == 1 + 2 * parallel.TRANSCENDENTAL_WEIGHT
    add = _kernel(None, 1)
    twice = ir.Apply("add", (add.stores[0].value, add.stores[0].value), np.dtype("float32"))
    tanh = ir.Apply("tanh", (twice,), np.dtype("float32"))
    k = ir.Elementwise((8,), (ir.Store(ir.Access(1, (1,), 0), tanh),
                              ir.Store(ir.Access(2, (1,), 0), tanh)), ())
    assert parallel.element_weight(k) == 1 + parallel.TRANSCENDENTAL_WEIGHT


def test_a_small_kernel_of_many_libm_calls_gets_a_team(monkeypatch):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "2")
    if not gemm.openmp_available():
        pytest.skip("no libgomp: every kernel runs on one thread")
    assert parallel.threads_for(_kernel(None, 8192)) == 1
    assert parallel.threads_for(_kernel("tanh", 8192)) == 2


def test_an_lstm_whose_gate_kernels_run_on_a_team_equals_pytorch(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "2")
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")  # the team at every call
    lstm = gc.nn.LSTM(IN, H, dtype="float64", seed=5)
    x = gc.placeholder((T, N, IN), "float64", name="x")
    out, (h, c) = lstm(x)
    rng = np.random.default_rng(2)
    w = rng.normal(size=(T, N, H))
    loss = gc.sum(out * w) + gc.sum(c)
    params = lstm.parameters()
    f = gc.function([x], [loss] + gc.grad(loss, params), backend="llvm")
    loops = [k for k in f.schedule().kernels if isinstance(k, ir.Loop)]
    gates = [k for lp in loops for k in lp.body.kernels
             if isinstance(k, ir.Elementwise) and parallel.element_weight(k) > 1]
    if gemm.openmp_available():
        assert gates and all(parallel.threads_for(k) == 2 for k in gates)
    xv = rng.normal(size=(T, N, IN))
    got = f(xv)
    t = torch.nn.LSTM(IN, H).double()
    t.load_state_dict({k: torch.tensor(v) for k, v in lstm.state_dict().items()})
    tx = torch.tensor(xv)
    tout, (_, tc) = t(tx)
    tloss = (tout * torch.tensor(w)).sum() + tc.sum()
    tgrads = torch.autograd.grad(tloss, list(t.parameters()))
    np.testing.assert_allclose(got[0], tloss.item(), rtol=1e-9)
    for g, tg in zip(got[1:], tgrads):
        np.testing.assert_allclose(g, tg.numpy(), rtol=1e-9, atol=1e-9)
