"""Elementwise kernels and float sums written as explicit vector loops (vector_loop.py) and
compiled with the light pipeline: the same numbers as numpy (vector bodies, scalar rests,
broadcasts, nan, sums over several blocks), gradients through them, and which kernels are
written so."""
from __future__ import annotations

from types import SimpleNamespace

import llvmlite.binding as llvm
import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import codegen, jit
from graphc.schedule import ir as kir


def _light(f, *shapes) -> list[bool]:
    """Per unit of the compiled shapes' schedule: whether it is written in vectors."""
    schedule = f.schedule(*shapes)
    return [u.vectors for u in codegen.plan_units(schedule).units]


@pytest.mark.parametrize("n", [16, 37, 200])
def test_elementwise_rows_in_vectors_match_numpy(n):
    rng = np.random.default_rng(n)
    x = gc.placeholder((3, n), name="x")
    row = gc.placeholder((1, n), name="row")  # broadcast along the rows
    col = gc.placeholder((3, 1), name="col")  # the same for every lane of a row
    out = gc.where(x > col, x * row + col, gc.maximum(x, -col) / (col * col + 1))
    f = gc.function([x, row, col], [out, gc.minimum(x, row) - x])
    xv = rng.normal(size=(3, n)).astype(np.float32)
    xv[1, n - 1] = np.nan  # in the scalar rest (or the last vector)
    xv[2, 3] = np.nan  # in a vector
    rv = rng.normal(size=(1, n)).astype(np.float32)
    cv = rng.normal(size=(3, 1)).astype(np.float32)
    got, low = f(xv, rv, cv)
    want = np.where(xv > cv, xv * rv + cv, np.maximum(xv, -cv) / (cv * cv + 1))
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(low, np.minimum(xv, rv) - xv, rtol=1e-6, equal_nan=True)
    assert any(_light(f, xv.shape, rv.shape, cv.shape))
    assert "<16 x float>" in f.source and jit.LIGHT.strip() in f.source


@pytest.mark.parametrize("n", [16, 37, 64, 83, 5000])  # 83: 2 pairs, 1 vector, a rest;
# 5000: two blocks of 2048 and a rest
def test_sums_along_rows_in_vectors_match_numpy(n):
    rng = np.random.default_rng(n)
    x = gc.placeholder((4, n), name="x")
    y = gc.placeholder((4, n), name="y")
    s = gc.placeholder((4, 1), name="s")
    f = gc.function([x, y, s], [gc.sum(x * y / s, axis=1), gc.sum(x - s)])
    xv, yv = (rng.normal(size=(4, n)).astype(np.float32) for _ in range(2))
    sv = rng.uniform(1, 2, size=(4, 1)).astype(np.float32)
    rows, total = f(xv, yv, sv)
    x64, y64, s64 = (a.astype(np.float64) for a in (xv, yv, sv))
    np.testing.assert_allclose(rows, (x64 * y64 / s64).sum(axis=1), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(total, (x64 - s64).sum(), rtol=1e-5, atol=1e-3)
    assert any(_light(f, xv.shape, yv.shape, sv.shape))


def test_batchnorm_like_sums_over_outer_and_inner_axes():
    """W6's BatchNorm statistics: sums over (batch, pixels) per channel, the channel's mean
    broadcast along each row."""
    rng = np.random.default_rng(0)
    x = gc.placeholder((8, 3, 80), name="x")
    mean = gc.placeholder((1, 3, 1), name="mean")
    f = gc.function([x, mean], gc.sum(gc.square(x - mean), axis=(0, 2)))
    xv = rng.normal(size=(8, 3, 80)).astype(np.float32)
    mv = rng.normal(size=(1, 3, 1)).astype(np.float32)
    want = np.square(xv.astype(np.float64) - mv).sum(axis=(0, 2))
    np.testing.assert_allclose(f(xv, mv), want, rtol=1e-5)
    assert any(_light(f, xv.shape, mv.shape))


def test_gradients_through_vector_kernels_match_numpy():
    rng = np.random.default_rng(1)
    n = 40
    x = gc.placeholder((5, n), name="x")
    w = gc.parameter(rng.normal(size=(1, n)).astype(np.float32), name="w")
    b = gc.parameter(rng.normal(size=(5, 1)).astype(np.float32), name="b")
    loss = gc.sum(gc.square(gc.relu(x * w + b)))
    f = gc.function([x], gc.grad(loss, [w, b]))
    xv = rng.normal(size=(5, n)).astype(np.float32)
    wv, bv = (p.value.astype(np.float64) for p in (w, b))
    z = xv * wv + bv
    dz = 2 * np.maximum(z, 0) * (z > 0)
    gw, gb = f(xv)
    np.testing.assert_allclose(gw, (dz * xv).sum(axis=0, keepdims=True), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gb, dz.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-5)
    assert any(_light(f, xv.shape))


def test_libm_calls_and_short_rows_keep_o3():
    x = gc.placeholder((4, 40), name="x")
    assert not any(_light(gc.function([x], gc.exp(x) + 1), (4, 40)))
    short = gc.placeholder((40, 10), name="short")  # rows of 10 (a broadcast keeps them)
    scale = gc.placeholder((40, 1), name="scale")
    assert not any(_light(gc.function([short, scale], short * scale), (40, 10), (40, 1)))
    assert any(_light(gc.function([x], x * 2 + 1), (4, 40)))


def test_an_im2col_like_copy_of_rows_of_28_is_in_vectors():
    """Rows of 28 read from a padded image (a window nest's copy): a vector and a masked
    one per row, the same numbers."""
    rng = np.random.default_rng(3)
    img = gc.placeholder((2, 3, 30, 30), name="img")
    f = gc.function([img], img[:, :, 1:29, 1:29] * 2 + 1)
    iv = rng.normal(size=(2, 3, 30, 30)).astype(np.float32)
    np.testing.assert_allclose(f(iv), iv[:, :, 1:29, 1:29] * 2 + 1, rtol=1e-6)
    assert any(_light(f, iv.shape))


def test_the_light_pipeline_does_not_vectorize_loops():
    """Light modules get a few cheap passes, not O3: a scalar loop stays scalar there."""
    text = """define void @f(ptr noalias %a, ptr noalias %b) {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %loop]
  %p = getelementptr float, ptr %a, i64 %i
  %v = load float, ptr %p
  %w = fadd float %v, 1.0
  %q = getelementptr float, ptr %b, i64 %i
  store float %w, ptr %q
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, 1024
  br i1 %more, label %loop, label %done
done:
  ret void
}"""
    assert jit.is_light([jit.LIGHT + text]) and not jit.is_light([jit.LIGHT + text, text])
    jit._init()
    for light in (False, True):
        module = llvm.parse_assembly(text)
        module.triple = llvm.get_default_triple()
        jit.optimize_module(module, light=light)
        assert ("x float>" in str(module)) == (not light)


def _stand_in(buffers, offsets):
    """What vectorizable reads of a schedule: buffers and the memory plan's offsets."""
    bufs = {bid: kir.Buffer(bid, np.dtype("float32"), shape, role)
            for bid, (shape, role) in buffers.items()}
    return SimpleNamespace(buffers=bufs, plan=SimpleNamespace(offsets=offsets))


def _shifted_copy(src_offset: int) -> kir.Elementwise:
    """out[i, j] = x[i, j + src_offset] * 2 over (4, 32) rows of 40."""
    f32 = np.dtype("float32")
    load = kir.Load(kir.Access(1, (40, 1), src_offset), f32)
    body = kir.Apply("mul", (load, kir.Const(2.0, f32)), f32)
    return kir.Elementwise((4, 32), (kir.Store(kir.Access(0, (40, 1)), body),))


def test_reads_of_memory_a_store_may_overlap_keep_the_scalar_loop():
    """A vector reads 16 lanes before it stores any: where a load may see what an earlier
    lane's store wrote (arena temporaries sharing bytes, other elements), the scalar loop
    stays; the same element read and written (an update in place) is fine."""
    from graphc.backends.llvm import vector_loop
    apart = _stand_in({0: ((160,), "temp"), 1: ((168,), "temp")}, {0: 0, 1: 4096})
    shared = _stand_in({0: ((160,), "temp"), 1: ((168,), "temp")}, {0: 0, 1: 0})
    assert vector_loop.vectorizable(_shifted_copy(1), apart)
    assert not vector_loop.vectorizable(_shifted_copy(1), shared)
    in_place = _stand_in({0: ((160,), "temp"), 1: ((160,), "temp")}, {0: 0, 1: 0})
    assert not vector_loop.vectorizable(_shifted_copy(0), in_place)  # other buffers
    same = kir.Elementwise((4, 32), (kir.Store(kir.Access(0, (40, 1)), kir.Apply(
        "mul", (kir.Load(kir.Access(0, (40, 1)), np.dtype("float32")),
                kir.Const(2.0, np.dtype("float32"))), np.dtype("float32"))),))
    assert vector_loop.vectorizable(same, in_place)


def test_light_units_count_about_half_in_the_processes_deal(monkeypatch):
    """Units are queued largest first: a light unit costs about half an O3 one (W6's GEMM
    unit, the longest module, came last behind two light batches and ended alone)."""
    x = gc.placeholder((300, 400), name="x")
    col = gc.placeholder((300, 1), name="col")
    f = gc.function([x, col], gc.maximum(x * col, 0.0))
    schedule = f.schedule((300, 400), (300, 1))
    light = codegen.plan_units(schedule).units
    monkeypatch.setattr(codegen, "explicit_vectors", lambda k, s: False)
    o3 = codegen.plan_units(schedule).units
    assert [u.light for u in light] == [True] and [u.light for u in o3] == [False]
    assert light[0].cost == (o3[0].cost + 1) // 2 < o3[0].cost


@pytest.mark.parametrize("n", [28, 14])  # rows of 30 and 16 after padding
def test_padding_guarded_loads_in_vectors_match_numpy(n):
    """pad: loads guarded along the rows (a lane mask) and across them (whole rows)."""
    rng = np.random.default_rng(n)
    x = gc.placeholder((2, 3, n, n), name="x")
    f = gc.function([x], gc.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))) * 3 - 1)
    xv = rng.normal(size=(2, 3, n, n)).astype(np.float32)
    want = np.pad(xv, ((0, 0), (0, 0), (1, 1), (1, 1))) * 3 - 1
    np.testing.assert_allclose(f(xv), want, rtol=1e-6)
    assert any(_light(f, xv.shape))


def test_concatenated_rows_in_vectors_match_numpy():
    rng = np.random.default_rng(5)
    a = gc.placeholder((4, 20), name="a")
    b = gc.placeholder((4, 13), name="b")
    f = gc.function([a, b], gc.concatenate([a, b], axis=1) * 2)
    av, bv = rng.normal(size=(4, 20)).astype(np.float32), rng.normal(size=(4, 13)).astype(
        np.float32)
    np.testing.assert_allclose(f(av, bv), np.concatenate([av, bv], axis=1) * 2, rtol=1e-6)


def test_light_modules_get_the_fast_code_generator_and_others_o3(monkeypatch):
    """A light module's object code comes from the level-0 target machine, every other
    module's (the entry point's, an O3 kernel's) from the O3 one; the results stay right."""
    jit._init()
    made: list[int] = []
    real = jit._new_machine

    def counted(opt: int = 3):
        made.append(opt)
        return real(opt)
    monkeypatch.setattr(jit, "_new_machine", counted)
    monkeypatch.setattr(jit, "_fast_machines", {})
    emitted: list[bool] = []
    real_code_machine = jit.code_machine

    def code_machine(light: bool, machine=None):
        emitted.append(light)
        return real_code_machine(light, machine)
    monkeypatch.setattr(jit, "code_machine", code_machine)
    light = "; graphc pipeline: light\n" + _ADD_ONE
    jit._object_of(light)
    jit._object_of(_ADD_ONE)
    assert emitted == [True, False]
    assert 0 in made and made.count(0) == 1  # one fast machine for the process
    jit._object_of(light)
    assert made.count(0) == 1

    x = gc.placeholder((4, 40), name="x")
    f = gc.function([x], gc.maximum(x * 2.0 - 1.0, 0.0))
    xv = np.random.default_rng(0).normal(size=(4, 40)).astype(np.float32)
    np.testing.assert_allclose(f(xv), np.maximum(xv * 2 - 1, 0), rtol=1e-6)
    assert any(_light(f, xv.shape))


_ADD_ONE = """define void @add_one(ptr noalias %p) {
entry:
  %v = load <16 x float>, ptr %p
  %w = fadd <16 x float> %v, splat (float 1.0)
  store <16 x float> %w, ptr %p
  ret void
}
"""


def test_a_light_sum_keeps_its_accumulators_in_registers():
    """Level-0 code generation with the fast register allocator would spill a blocked
    sum's vector accumulators to the stack every iteration (W3's sums took 1.5x as long):
    the optimizing allocator is asked for, so the light code uses the stack about as
    little as O3's."""
    n = 1 << 16
    x = gc.placeholder((n,), name="x")
    y = gc.placeholder((n,), name="y")
    f = gc.function([x, y], gc.sum(x * y))
    schedule = f.schedule((n,), (n,))
    writer = codegen.ModuleWriter(schedule)
    unit = next(u for u in writer.plan.units if u.vectors)
    stack_uses = []
    for light in (True, False):
        module = llvm.parse_assembly(writer.unit_text(unit))
        jit.optimize_module(module, light=True)
        stack_uses.append(jit.assembly(module, light).count("(%rsp)"))
    assert stack_uses[0] <= stack_uses[1] + 4, stack_uses
    xv = np.linspace(-1, 1, n, dtype=np.float32)
    np.testing.assert_allclose(f(xv, xv), (xv.astype(np.float64) ** 2).sum(), rtol=1e-5)
