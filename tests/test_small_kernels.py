"""Small kernels (codegen.small_static: at most SMALL_KERNEL_ELEMENTS elements, every loop's
size static, no math library call) are compiled with the light pipeline though not written
as vectors: the same numbers as numpy; larger kernels, those calling exp and the like, and
those over call-time sizes keep O3."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc import sizes
from graphc.backends.llvm import codegen, jit


def _units(f, *shapes) -> list[codegen.Unit]:
    return list(codegen.plan_units(f.schedule(*shapes)).units)


def test_a_small_kernel_gets_the_light_pipeline_and_matches_numpy():
    x = gc.placeholder((6, 7), name="x")
    y = gc.placeholder((6, 7), name="y")
    # rows of 7 are too short for vector loops: O3 units before
    f = gc.function([x, y], [gc.sqrt(x * x) * y + 1, gc.sum(y * y, axis=1)])
    units = _units(f, (6, 7), (6, 7))
    assert units and all(u.light and not u.vectors for u in units)
    writer = codegen.ModuleWriter(f.schedule((6, 7), (6, 7)))
    assert all(writer.unit_text(u).startswith(jit.LIGHT) for u in units)
    rng = np.random.default_rng(0)
    xv, yv = rng.normal(size=(2, 6, 7)).astype(np.float32)
    got, total = f(xv, yv)
    np.testing.assert_allclose(got, np.sqrt(xv * xv) * yv + 1, rtol=1e-6)
    np.testing.assert_allclose(total, (yv * yv).sum(axis=1), rtol=1e-6)


def test_a_larger_kernel_keeps_o3():
    rows = codegen.SMALL_KERNEL_ELEMENTS // 3 + 1
    x = gc.placeholder((rows, 3), name="x")
    f = gc.function([x], gc.transpose(x) * 2 + 1)  # strided reads: no vector loop
    assert [u.light for u in _units(f, (rows, 3))] == [False]
    assert [u.light for u in _units(f, (rows - 1, 3))] == [True]


def test_a_small_kernel_calling_a_math_function_keeps_o3():
    """exp is a libm call a scalar loop makes per element; O3 vectorizes it (libmvec)."""
    x = gc.placeholder((64,), name="x")
    f = gc.function([x], gc.exp(x) + 1)
    assert [u.light for u in _units(f, (64,))] == [False]


def test_a_kernel_over_a_call_time_size_keeps_o3():
    """Its loops run as long as the call's batch: small with the first call's sizes (6
    elements here) says nothing of the next."""
    x = gc.placeholder((None, 3), name="x")
    f = gc.function([x], gc.exp(x) + 1)
    xv = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(f(xv), np.exp(xv) + 1, rtol=1e-6)
    program = f._exe.symbolic
    with sizes.representative(program.representative):
        units = codegen.plan_units(program.schedule).units
    kernels = [program.schedule.kernels[u.members[0]] for u in units]
    assert any(not all(isinstance(d, int) for d in k.shape) for k in kernels)
    assert not any(u.light for u in units)
