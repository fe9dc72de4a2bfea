"""128-bit vector loads and stores in the cuda backend's elementwise kernels: which accesses
are whole vectors, results equal to numpy on the emulator (rows, broadcasts, guarded and
strided loads, flat kernels with a scalar tail, misaligned arguments), the emulator's report
of a misaligned vector access, and PTX with v4/v2 loads and stores."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda import ptx, vector
from graphc.backends.cuda.render import render
from graphc.backends.cuda.source import Writer
from graphc.schedule import schedule_graph

RNG = np.random.default_rng(8)


@pytest.fixture
def small(monkeypatch):
    """Vectors from the first element (the tests' arrays are small)."""
    monkeypatch.setattr(vector, "MIN_ELEMENTS", 0)


def _program():
    x = gc.placeholder((6, 8), "float32", name="x")
    b = gc.placeholder((8,), "float32", name="b")
    c = gc.placeholder((6, 1), "float32", name="c")
    y = gc.placeholder((7, 3), "float64", name="y")
    i = gc.placeholder((5, 4), "int32", name="i")
    outs = [gc.tanh(x + b) * c,  # rows: x whole, b whole (a row), c one value for all lanes
            x[:, 1:5] * 2.0,  # loads at odd offsets: element by element; the store whole
            gc.exp(y) + 1.0,  # rows of 3 doubles: flat, 10 vectors and a tail of 1
            gc.concatenate([x, x * 3], axis=1),  # guarded loads
            x.T * 1.5,  # a strided load
            i * 3 + 1]  # int4
    args = [RNG.normal(size=(6, 8)).astype("float32"), RNG.normal(size=8).astype("float32"),
            RNG.normal(size=(6, 1)).astype("float32"), RNG.normal(size=(7, 3)),
            RNG.integers(-9, 9, size=(5, 4)).astype("int32")]
    return [x, b, c, y, i], outs, args


def test_plans_take_whole_vectors_where_aligned_and_contiguous(small):
    inputs, outs, _ = _program()
    f = gc.function(inputs, outs, backend="numpy")
    schedule = schedule_graph(f.graph)
    w = Writer(schedule)
    plans = {(k.fused, k.shape): vector.plan(w, k) for k in schedule.kernels
             if k.kind == "elementwise"}
    tanh = plans[("mul", "add", "tanh"), (6, 8)]  # (x * 3 of the concatenation fused in)
    assert tanh is not None and tanh.lanes == 4 and not tanh.flat
    assert {x.access.buffer for x in tanh.vector} == {0, 1}  # x and b
    assert len(tanh.uniform) == 1 and tanh.stores == (True, True)
    exp = plans[("exp", "add"), (21,)]
    assert exp is not None and exp.lanes == 2 and exp.flat and exp.stores == (True,)
    ints = plans[("mul", "add"), (20,)]
    assert ints is not None and ints.lanes == 4 and len(ints.vector) == 1
    cut = plans[("mul",), (6, 4)]  # x[:, 1:5]: loads at odd offsets, whole stores
    assert cut is not None and not cut.vector and cut.stores == (True,)
    assert plans[("concatenate",), (6, 16)] is not None
    assert plans[("mul",), (8, 6)] is None  # x.T: strided loads, rows of 6
    assert len(plans) == 6
    source = render(schedule).source
    assert source.count("const float4 ") == 2  # x once (two stores read it), b
    assert "float4{" in source and "double2{" in source and "int4{" in source
    assert "% 16ULL) == 0" in source  # the alignment test at run time


def test_small_kernels_stay_scalar():
    x = gc.placeholder((6, 8), "float32", name="x")
    f = gc.function([x], gc.tanh(x), backend="numpy")
    assert "float4" not in render(schedule_graph(f.graph)).source  # 48 < MIN_ELEMENTS
    assert vector.MIN_ELEMENTS > 48


def test_accumulating_and_one_byte_stores_stay_scalar(small):
    x = gc.placeholder((6, 8), "float32", name="x")
    f = gc.function([x], [x > 0.5], backend="numpy")  # bools: one byte an element
    schedule = schedule_graph(f.graph)
    w = Writer(schedule)
    assert all(vector.plan(w, k) is None for k in schedule.kernels if k.kind == "elementwise")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 3])
def test_vector_kernels_equal_numpy_aligned_or_not(small, tmp_path, seed):
    inputs, outs, args = _program()
    f = gc.function(inputs, outs, backend="cuda",
                    backend_options={"emulate": True, "seed": seed, "cache_dir": str(tmp_path)})
    g = gc.function(inputs, outs, backend="numpy")
    for call in (args, [_misaligned(a) for a in args]):
        for got, want in zip(f(*call), g(*call)):
            assert got.dtype == want.dtype
            np.testing.assert_allclose(got, want, rtol=1e-6)


def _misaligned(a: np.ndarray) -> np.ndarray:
    """A contiguous copy of `a` one element past a 16-byte boundary."""
    raw = np.empty(a.size + 16, a.dtype)
    start = (-raw.ctypes.data % 16) // a.itemsize + 1
    out = raw[start:start + a.size].reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % 16 and out.flags.c_contiguous
    return out


@pytest.mark.slow
def test_a_misaligned_vector_access_is_reported(small, tmp_path):
    """The emulator's check behind the run-time alignment test: without the test, a
    misaligned argument is reported."""
    from graphc.backends.cuda.emulate import compile_library
    from graphc.backends.cuda.runtime import EmulatedRunner
    from graphc.fingerprint import graph_fingerprint
    from graphc.runtime.layout import Layout
    x = gc.placeholder((4, 8), "float32", name="x")
    f = gc.function([x], gc.exp(x), backend="numpy")
    schedule = schedule_graph(f.graph)
    rendered = render(schedule)
    source = rendered.source.replace("const bool whole = (", "const bool whole = true || (")
    assert source != rendered.source
    _, storages = graph_fingerprint(f.program.raw_graph)
    layout = Layout.of(schedule, rendered.slots, rendered.errors, storages, [])
    runner = EmulatedRunner(compile_library(source), layout, rendered.launches, storages, 0)
    v = RNG.normal(size=(4, 8)).astype("float32")
    np.testing.assert_allclose(runner.run([v])[0], np.exp(v), rtol=1e-6)
    with pytest.raises(RuntimeError, match="misaligned vector access: address 0x[0-9a-f]+ is "
                                           "not a multiple of 16 bytes"):
        runner.run([_misaligned(v)])


@pytest.mark.slow
@pytest.mark.skipif(not ptx.available(), reason="neither NVRTC nor nvcc is installed")
def test_vector_kernels_assemble_with_vector_instructions(small):
    inputs, outs, _ = _program()
    f = gc.function(inputs, outs, backend="numpy")
    text, stats, _ = ptx.check_source(render(schedule_graph(f.graph)).source)
    # (128-bit instructions, in the global or the generic state space)
    for op in (r"ld(\.global)?(\.nc)?\.v4\.f32", r"st(\.global)?\.v4\.f32",
               r"ld(\.global)?(\.nc)?\.v2\.f64", r"st(\.global)?\.v2\.f64",
               r"st(\.global)?\.v4\.[usb]32"):
        assert re.search(op, text), op
    assert not [s for s in stats if s.spill_stores or s.spill_loads]
