"""The cyclic collector is paused while graphc compiles, and left as the user had it."""
from __future__ import annotations

import gc

import numpy as np

import graphc as gc_
from graphc.collector import collector_paused


def test_paused_inside_and_restored_after_nesting():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner use does not turn it back on early
    assert gc.isenabled()


def test_a_user_who_turned_it_off_keeps_it_off():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_compiling_and_differentiating_leave_it_on_even_when_they_fail():
    x = gc_.placeholder((3,), "float64", name="x")
    f = gc_.function([x], gc_.grad(gc_.sum(gc_.tanh(x)), [x]), backend="llvm")
    np.testing.assert_allclose(f(np.zeros(3))[0], np.ones(3))
    assert gc.isenabled()
    try:
        gc_.grad(x, [x])  # not a scalar: an error raised inside
    except Exception:
        pass
    assert gc.isenabled()


def test_a_symbolic_compile_runs_with_it_paused(monkeypatch, tmp_path):
    """Lowering and unit planning with symbolic sizes make many small objects, as a
    specialised compile does: the collector is off there too, and on again after."""
    from graphc.backends.llvm import codegen
    from graphc.schedule import lower

    seen: list[bool] = []

    def spy(fn):
        def wrapped(*args, **kwargs):
            seen.append(gc.isenabled())
            return fn(*args, **kwargs)
        return wrapped
    monkeypatch.setattr(lower, "lower_graph", spy(lower.lower_graph))
    monkeypatch.setattr(codegen, "plan_units", spy(codegen.plan_units))
    x = gc_.placeholder((None, 3), "float64", name="x")
    f = gc_.function([x], gc_.sum(gc_.tanh(x)), backend="llvm",
                     backend_options={"sizes": "symbolic", "cache_dir": str(tmp_path)})
    np.testing.assert_allclose(f(np.zeros((2, 3))), 0.0)
    assert f._exe.symbolic is not None  # (the symbolic path did run)
    assert seen and not any(seen)
    assert gc.isenabled()
