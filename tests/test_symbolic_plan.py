"""The symbolic program's per-binding plan in the disk cache (backends/llvm/symbolic_plan.py):
JSON round trips, a warm start that neither optimizes nor schedules, and damaged or foreign
plans that are a cache miss, never a wrong result."""
from __future__ import annotations

import json

import numpy as np
import pytest

import graphc as gc
from graphc import sizes
from graphc.backends.llvm.symbolic_plan import (VERSION, PlanFormatError, SymbolicPlan,
                                                decode_dim, encode_dim)
from graphc.runtime.cache import CompileCache

from test_symbolic_sizes import agree, mlp_data, mlp_step


def test_sizes_survive_json():
    n, m = sizes.named("N"), sizes.fresh()
    (var_n,), (var_m,) = n.atoms(), m.atoms()
    dims = [7, 0, n, 784 * n + 3, n * m - 2 * m, sizes.floordiv(n + 1, 2),
            sizes.minimum(n, m), sizes.maximum(n - 1, 0), sizes.isqrt(n * m)]
    number = {var_n: 0, var_m: 1}
    for d in dims:
        back = decode_dim(json.loads(json.dumps(encode_dim(d, number))), [n, m])
        for values in ({var_n: 5, var_m: 9}, {var_n: 64, var_m: 1}):
            assert sizes.evaluate(back, values) == sizes.evaluate(d, values)
    with pytest.raises(PlanFormatError):
        decode_dim({"p": [[[2], 1]]}, [n, m])  # symbol out of range
    with pytest.raises(PlanFormatError):
        decode_dim("N", [n])


def _step(folder):
    options = {"sizes": "symbolic", "cache_dir": str(folder)}
    return mlp_step("llvm", options)


def _entry(f):
    disk = f._exe.disk
    payload, meta = disk.get(f._exe.symbolic.key)
    return disk, payload, meta


def test_the_plan_keeps_the_schedules_lifetimes(tmp_path):
    """The symbolic plan takes its kernels' lifetimes from the schedule's memory plan (made
    for the representative binding): the same as counted afresh (they do not depend on
    sizes)."""
    from graphc.schedule.memory import lifetimes
    f, _ = _step(tmp_path)
    f(*mlp_data(8, 0))
    schedule = f._exe.symbolic.schedule
    assert schedule.plan.lifetimes == lifetimes(schedule)


def test_a_warm_start_plans_bindings_from_the_stored_plan(tmp_path):
    f, _ = _step(tmp_path)
    f(*mlp_data(8, 0))
    assert f.compile_times["cached"] is False
    _, _, meta = _entry(f)
    assert meta["plan"]["version"] == VERSION
    # a round trip through JSON gives the same plan
    plan = f._exe.symbolic.plan
    again = SymbolicPlan.from_meta(json.loads(json.dumps(meta["plan"])),
                                   plan.to_meta(f._exe.program.raw_graph.inputs)[1],
                                   f._exe.program.raw_graph.inputs, len(plan.params))
    assert again.to_meta(f._exe.program.raw_graph.inputs)[0] == meta["plan"]

    g, pg = _step(tmp_path)  # the same program built again: its entry is loaded
    ref, pr = mlp_step("numpy")
    for n in (8, 3, 40, 1):
        data = mlp_data(n, n)
        agree(g(*data), ref(*data))
        agree([p.value for p in pg], [p.value for p in pr])
    times = g.compile_times
    assert times["cached"] is True and "optimize and schedule" not in times
    assert g._exe.symbolic._schedule is None  # nothing scheduled
    assert g._exe.compiled == {} and times["bindings"] == 4


def test_a_cached_gather_names_the_bad_index(tmp_path):
    def build():
        x = gc.placeholder(("N", 3), name="x")
        i = gc.placeholder(("K",), "int64", name="i")
        return gc.function([x, i], gc.take(x, i, axis=0),
                           backend_options={"sizes": "symbolic", "cache_dir": str(tmp_path)})
    a = np.arange(15, dtype=np.float32).reshape(5, 3)
    build()(a, np.array([4, -1]))
    f = build()
    np.testing.assert_array_equal(f(a[:2], np.array([1, 0, 1])), a[[1, 0, 1]])
    assert f.compile_times["cached"] is True
    with pytest.raises(IndexError, match="index 2"):
        f(a[:2], np.array([0, 2]))


@pytest.mark.parametrize("damage", ["version", "slot", "symbol", "type", "missing"])
def test_a_damaged_or_foreign_plan_is_a_cache_miss(tmp_path, damage):
    f, _ = _step(tmp_path)
    f(*mlp_data(8, 0))
    disk, payload, meta = _entry(f)
    plan = meta["plan"]
    if damage == "version":
        plan["version"] = VERSION + 1
    elif damage == "slot":
        plan["kernels"][0][0] = [10 ** 6]
    elif damage == "symbol":
        plan["symbols"] = [[0, 1]]  # axis 1 of x is 12, not a size given at call time
    elif damage == "type":
        plan["temps"] = "nothing"
    else:
        del meta["plan"]
    # signed with the user's key like a real entry: only the plan's checks stand in the way
    assert CompileCache(disk.folder).put(f._exe.symbolic.key, payload, meta)
    g, pg = _step(tmp_path)
    ref, pr = mlp_step("numpy")
    data = mlp_data(5, 1)
    agree(g(*data), ref(*data))
    agree([p.value for p in pg], [p.value for p in pr])
    assert g.compile_times["cached"] is False and g.compile_times["symbolic"] is True


def test_auto_is_the_default_and_specialize_an_option(monkeypatch):
    # (auto by default: W2's per-call time and W4's compile times measured level with
    # specialize once a call at known shapes took the specialised path's cost: docs/sizes.md)
    monkeypatch.delenv("GRAPHC_SIZES", raising=False)
    f, _ = mlp_step("llvm", {"cache_dir": None})
    f(*mlp_data(4, 0))
    f(*mlp_data(6, 1))
    assert f.compile_times["symbolic"] is True and f._exe.compiled == {}
    for how in ("specialize", "symbolic"):
        monkeypatch.setenv("GRAPHC_SIZES", how)
        g, _ = mlp_step("llvm", {"cache_dir": None})
        g(*mlp_data(4, 0))
        g(*mlp_data(6, 1))
        assert ("symbolic" in g.compile_times) == (how == "symbolic")
        assert len(g._exe.compiled) == (2 if how == "specialize" else 0)
