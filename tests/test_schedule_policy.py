"""Target policy reaches the neutral scheduler as a SchedulePolicy: a narrow GEMM is turned
around with the llvm backend's policy and not with narrow_gemm=None; max_fused_depth bounds
fused chains; each backend schedules with its own policy."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import LLVM_POLICY
from graphc.schedule import DEFAULT_POLICY, SchedulePolicy, schedule_graph
from graphc.schedule.lower import Lowering


def _narrow(backend: str = "numpy", **kw):
    a = gc.placeholder((100, 5), "float64", name="a")
    b = gc.placeholder((5, 4), "float64", name="b")
    return gc.function([a, b], a @ b, backend=backend, **kw)


def _gemm(schedule):
    (gemm,) = [k for k in schedule.kernels if k.kind == "gemm"]
    return gemm


def test_the_policies():
    assert DEFAULT_POLICY == SchedulePolicy(narrow_gemm=None, max_fused_depth=48)
    assert LLVM_POLICY == SchedulePolicy(narrow_gemm=32, max_fused_depth=48, implicit_gemm=True,
                                         implicit_deep_gemm=True, implicit_outer_gemm=True,
                                         direct_conv_depth=288,
                                         direct_conv_stride=2)
    assert DEFAULT_POLICY.direct_conv_depth == 0 and DEFAULT_POLICY.direct_conv_stride == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        LLVM_POLICY.narrow_gemm = 8  # type: ignore[misc]


def test_a_narrow_gemm_is_turned_around_only_when_the_policy_says_so():
    graph = _narrow().graph
    turned = _gemm(schedule_graph(graph, policy=LLVM_POLICY))
    assert (turned.m, turned.n) == (4, 100)  # C^T = B^T A^T: the long side is the wide one
    assert turned.out.strides == (1, 4)
    for policy in (SchedulePolicy(narrow_gemm=None), DEFAULT_POLICY):
        kept = _gemm(schedule_graph(graph, policy=policy))
        assert (kept.m, kept.n) == (100, 4) and kept.out.strides == (4, 1)
    assert (_gemm(schedule_graph(graph)).m, _gemm(schedule_graph(graph)).n) == (100, 4)
    small = _gemm(schedule_graph(graph, policy=SchedulePolicy(narrow_gemm=4)))
    assert (small.m, small.n) == (100, 4)  # 4 columns is not fewer than 4


def _chain_stores(depth: int) -> int:
    x = gc.placeholder((16,), "float64", name="x")
    y = x
    for _ in range(12):
        y = gc.sin(y) + 1.0
    graph = gc.function([x], y, backend="numpy", optimize=False).graph
    lowering = Lowering(graph, SchedulePolicy(max_fused_depth=depth))
    lowering.run()
    return sum(len(k.stores) for k in lowering.kernels)  # (before merging kernels)


def test_max_fused_depth_bounds_fused_chains():
    # 24 ops: one store with the default bound; with a short one, the lowering stores
    # intermediates and reloads them (the merge pass may then put them back into one kernel,
    # computed again where they are read, and drop the stores nobody reads any more)
    assert _chain_stores(48) == 1
    assert _chain_stores(4) > _chain_stores(8) > 1


def test_each_backend_schedules_with_its_own_policy(tmp_path):
    args = [np.linspace(-1, 1, 500).reshape(100, 5), np.linspace(0, 1, 20).reshape(5, 4)]
    f = _narrow("llvm", backend_options={"cache_dir": str(tmp_path)})
    assert (_gemm(f._exe.last.schedule).m, _gemm(f.schedule()).m) == (4, 4)
    g = _narrow("numpy", backend_options={"mode": "kernels"})
    np.testing.assert_allclose(g(*args), args[0] @ args[1], rtol=1e-12)
    (runner,) = g._exe.cache.values()
    assert _gemm(runner.schedule).m == 100 and _gemm(g.schedule()).m == 100
    np.testing.assert_allclose(f(*args), args[0] @ args[1], rtol=1e-12)
