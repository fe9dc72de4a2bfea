"""Softmax rows kept on chip (backends/cuda/softmax.py): the chain row max -> row sum of
exp(x - max) -> elementwise is one kernel, and the emulator's results equal the numpy
backend's for softmax, log_softmax and cross-entropy with their gradients, for rows held by a
warp, by a block, and too long to hold (online softmax), in any block and thread order (the
emulator's race, barrier and shuffle checks run on every launch)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda import CUDA_POLICY, softmax
from graphc.backends.cuda.render import render
from graphc.schedule import schedule_graph

TOL = {"float64": 1e-10, "float32": 1e-5}


def _emulated(inputs, outputs, seed: int = 0):
    return gc.function(inputs, outputs, backend="cuda",
                       backend_options={"emulate": True, "seed": seed})


def _check(inputs, outputs, args, dtype: str, seed: int = 0):
    """Emulated against numpy; returns the emulated function."""
    f = _emulated(inputs, outputs, seed)
    want = gc.function(inputs, outputs, backend="numpy")(*args)
    got = f(*args)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=TOL[dtype], atol=TOL[dtype])
    return f


def _launches(f) -> list[str]:
    return [L.name for L in render(schedule_graph(f.graph, policy=CUDA_POLICY)).launches]


def _program(n: int, dtype: str):
    """softmax, log_softmax, cross-entropy and the gradient of each, over rows of n."""
    x = gc.placeholder((5, n), dtype, name="x")
    labels = gc.placeholder((5,), "int64", name="labels")
    c = gc.constant(np.linspace(-1, 1, n).astype(dtype))
    sm, ls = gc.softmax(x, axis=-1), gc.log_softmax(x, axis=-1)
    ce = gc.nn.cross_entropy(x, labels)
    outs = [sm, ls, ce, gc.grad(gc.sum(sm * c), x), gc.grad(gc.sum(ls * c), x),
            gc.grad(ce, x)]
    rng = np.random.default_rng(n)
    args = [(rng.normal(size=(5, n)) * 3).astype(dtype), rng.integers(0, n, 5)]
    return [x, labels], outs, args


@pytest.mark.parametrize("n", [1, 7, 32, 33, 1000, 2000, 5000])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_log_softmax_cross_entropy_and_gradients_match_numpy(n, dtype):
    inputs, outputs, args = _program(n, dtype)
    f = _check(inputs, outputs, args, dtype, seed=n)  # (blocks and threads reordered)
    fused = [name for name in _launches(f) if "_softmax_rows_" in name]
    if n == 1:  # (the optimizer removes reductions over one element: no chain is left)
        assert not fused
    else:
        assert len(fused) == 1, _launches(f)  # (the optimizer shares one chain)
        assert "__shfl_xor_sync" in f.source
        threads, keep = softmax.layout(n, np.dtype(dtype))
        assert (f"x[{keep}];" in f.source) == (keep > 0)  # the values a thread holds
        assert ("__syncthreads" in f.source) == (threads == 256)


@pytest.mark.parametrize("n", [40, 2000, 5000])  # a warp, a block, online
def test_infinities_and_nan_in_rows_match_numpy(n):
    """Masked entries (-inf), rows that are all -inf, +inf and nan: the fused kernel's
    max and sum handle them as the separate kernels do (online: -inf first in a row)."""
    x = gc.placeholder((6, n), "float64", name="x")
    a = np.random.default_rng(0).normal(size=(6, n))
    a[0, : n // 2] = -np.inf  # masked first half (online: the running max starts at -inf)
    a[1, :] = -np.inf
    a[2, 3] = np.inf
    a[3, n - 1] = np.nan
    a[4, ::3] = -np.inf
    with np.errstate(invalid="ignore"):
        f = _check([x], [gc.softmax(x, axis=1), gc.log_softmax(x, axis=1)], [a], "float64")
    assert any("_softmax_rows_" in name for name in _launches(f))


@pytest.mark.parametrize("shape,axis", [((40, 6), 0), ((2, 50, 3), 1), ((3, 4, 300), -1)])
def test_rows_along_any_axis(shape, axis):
    x = gc.placeholder(shape, "float32", name="x")
    a = np.random.default_rng(1).normal(size=shape).astype("float32")
    ls = gc.log_softmax(x, axis=axis)
    f = _check([x], [ls, gc.grad(gc.sum(ls * ls), x)], [a], "float32", seed=7)
    assert any("_softmax_rows_" in name for name in _launches(f))


@pytest.mark.parametrize("n", [33, 2000, 5000])
def test_without_the_elementwise_kernel_the_max_and_sum_are_one_kernel(n, monkeypatch):
    """Where no elementwise kernel may join (here: refused on purpose), the max and the sum
    still run as one kernel, storing both for the kernel that reads them."""
    monkeypatch.setattr(softmax, "_uses_row", lambda *a: False)
    x = gc.placeholder((3, n), "float64", name="x")
    a = np.random.default_rng(2).normal(size=(3, n))
    f = _check([x], [gc.softmax(x, axis=1)], [a], "float64", seed=3)
    schedule = schedule_graph(f.graph, policy=CUDA_POLICY)
    (group,) = [s for s in softmax.plan(schedule) if isinstance(s, softmax.RowSoftmax)]
    assert group.third is None and group.write_max and group.write_sum
    assert [name.split("_", 1)[1] for name in _launches(f)] == [
        "softmax_rows_max_sum", "elementwise_log_softmax_exp"]


def test_the_chain_is_one_launch_where_three_were():
    inputs, outputs, _ = _program(33, "float32")
    f = gc.function(inputs, outputs[:1], backend="numpy")
    schedule = schedule_graph(f.graph, policy=CUDA_POLICY)
    kinds = [(k.kind, getattr(k, "op", "")) for k in schedule.kernels]
    assert kinds == [("reduce", "max"), ("reduce", "sum"), ("elementwise", "")]
    (launch,) = render(schedule).launches
    assert launch.name.startswith("k0_softmax_rows_") and launch.sync
    assert launch.grid == (1, 1, 1)  # five rows of 33: a warp each, one block


def test_kernels_between_the_chain_move_only_when_they_commute():
    """log_softmax's gradient puts unrelated kernels between the sum and the elementwise
    kernel that uses both: the plan launches the chain after them, and keeps every
    kernel once."""
    x = gc.placeholder((4, 33), "float64", name="x")
    w = gc.constant(np.arange(33.0))
    ls = gc.log_softmax(x, axis=1)
    f = _check([x], [ls, gc.grad(gc.sum(ls * w), x)],
               [np.random.default_rng(3).normal(size=(4, 33))], "float64")
    schedule = schedule_graph(f.graph, policy=CUDA_POLICY)
    steps = softmax.plan(schedule)
    covered = sorted(i for s in steps for i in (s.members if isinstance(s, softmax.RowSoftmax)
                                                else (s,)))
    assert covered == list(range(len(schedule.kernels)))
    assert any(isinstance(s, softmax.RowSoftmax) for s in steps)
