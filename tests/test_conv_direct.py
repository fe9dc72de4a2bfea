"""Direct convolutions (graphc/schedule/direct_conv.py, backends/llvm/conv_direct.py): the
scheduler marks shallow implicit GEMMs direct, and the llvm kernel's values and both
gradients equal the unoptimized numpy graph, the numpy kernel runner (the same schedule)
and finite differences, for strides, padding, groups, dilation and odd sizes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import graphc as gc
from conv_reference import conv_ref
from graphc.backends.llvm import LLVM_POLICY
from graphc.backends.llvm.backend import LLVMBackend
from graphc.backends.numpy.kernels import KernelExecutable
from graphc.schedule import SchedulePolicy, schedule_graph
from graphc.schedule import ir
from graphc.schedule.direct_conv import MIN_ROW, choose_direct, eligible

RNG = np.random.default_rng(2020)
# Strided rows are direct only where a policy asks (llvm's keeps stride 1: measured).
STRIDED = dataclasses.replace(LLVM_POLICY, direct_conv_stride=2)

CASES = [  # (x shape, w shape, stride, padding, groups, dilation)
    ((3, 1, 28, 28), (8, 1, 5, 5), 1, 0, 1, 1),  # W5's first convolution (rows of 24)
    ((2, 1, 28, 28), (16, 1, 3, 3), 1, 1, 1, 1),  # W6's first, padded (rows of 28)
    ((2, 2, 13, 41), (11, 2, 3, 3), 1, 0, 1, 1),  # rows of 39: a whole tile and a tail;
    #                                               11 channels: a block of 8 and 3
    ((2, 3, 11, 11), (3, 3, 3, 3), 1, (1, 2), 1, 1),  # odd sizes, uneven padding
    ((2, 4, 12, 14), (6, 2, 3, 3), 1, 1, 2, 1),  # groups
    ((2, 5, 10, 12), (5, 1, 3, 3), 1, 1, 5, 1),  # depthwise
    ((2, 2, 13, 14), (3, 2, 3, 3), 1, 1, 1, 2),  # dilated taps
    ((2, 3, 17, 51), (4, 3, 3, 3), 2, 1, 1, 1),  # stride 2 (STRIDED), rows of 26
    ((2, 2, 20, 25), (5, 2, 2, 2), 2, 0, 1, 1),  # stride 2, even kernel, rows of 12
    ((16, 1, 28, 28), (20, 1, 5, 5), 1, 2, 1, 1),  # large enough for a thread team
    ((2, 8, 12, 12), (16, 8, 5, 5), 1, 0, 1, 1),  # W5's second: rows of 8, two a vector
    ((1, 3, 14, 12), (4, 3, 5, 5), 1, 0, 1, 1),  # rows of 8, 10 of them: one vector a time
]
IDS = [f"x{c[0]}-w{c[1]}-s{c[2]}-p{c[3]}-g{c[4]}-d{c[5]}".replace(" ", "") for c in CASES]


def _step(xs, ws, stride, padding, groups, dilation, dtype, backend, optimize=True,
          options=None):
    x = gc.placeholder((None,) + xs[1:], dtype, name="x")
    w = gc.placeholder(ws, dtype, name="w")
    y = gc.nn.conv2d(gc.relu(x) + 0.5, w, stride=stride, padding=padding, groups=groups,
                     dilation=dilation)
    loss = gc.sum(gc.tanh(y) * gc.sin(y))
    gx, gw = gc.grad(loss, [x, w])
    return gc.function([x, w], [y, gx, gw], backend=backend, optimize=optimize,
                       backend_options=options)


def _forward_direct(schedule: ir.Schedule, m: int) -> list[ir.Gemm]:
    return [k for k in schedule.kernels if isinstance(k, ir.Gemm) and k.direct and k.m == m]


def _policy(stride: int, monkeypatch) -> SchedulePolicy:
    """The llvm policy, or for a strided case STRIDED put in its place (no disk cache: its
    key does not hold the policy)."""
    if stride == 1:
        return LLVM_POLICY
    monkeypatch.setattr(LLVMBackend, "policy", STRIDED)
    monkeypatch.setenv("GRAPHC_CACHE", "0")
    return STRIDED


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("xs,ws,stride,padding,groups,dilation", CASES, ids=IDS)
def test_direct_convolution_matches_the_references(xs, ws, stride, padding, groups,
                                                   dilation, dtype, monkeypatch):
    policy = _policy(stride, monkeypatch)
    xv, wv = RNG.normal(size=xs).astype(dtype), RNG.normal(size=ws).astype(dtype)
    f = _step(xs, ws, stride, padding, groups, dilation, dtype, "llvm")
    got = f(xv, wv)
    schedule = schedule_graph(f.graph, [xs, ws], policy=policy)
    # the forward product (m = output channels per group) is computed directly
    assert _forward_direct(schedule, ws[0] // groups), [k.header() for k in schedule.kernels]
    want = _step(xs, ws, stride, padding, groups, dilation, "float64", "numpy",
                 optimize=False)(xv.astype(np.float64), wv.astype(np.float64))
    tol = 1e-9 if dtype == "float64" else 2e-4
    if dilation == 1 and isinstance(padding, int):
        np.testing.assert_allclose(want[0], conv_ref(np.maximum(xv, 0) + 0.5, wv, stride,
                                                     padding, groups), rtol=tol, atol=tol)
    kernels = KernelExecutable(f.graph, policy=policy).run([xv, wv])
    for name, results in (("llvm", got), ("numpy kernels", kernels)):
        for what, r, g in zip(("y", "dx", "dw"), want, results):
            scale = max(1.0, float(np.abs(r).max()))
            np.testing.assert_allclose(g, r, rtol=tol, atol=tol * scale,
                                       err_msg=f"{name} {what}")


@pytest.mark.parametrize("case", [0, 3, 4, 6, 7], ids=[IDS[i] for i in (0, 3, 4, 6, 7)])
def test_direct_convolution_gradients_match_finite_differences(case, monkeypatch):
    xs, ws, stride, padding, groups, dilation = CASES[case]
    policy = _policy(stride, monkeypatch)
    xs = (1,) + xs[1:]
    xv, wv = RNG.normal(size=xs), RNG.normal(size=ws)

    def loss(a, b):
        return gc.sum(gc.tanh(gc.nn.conv2d(a, b, stride=stride, padding=padding,
                                           groups=groups, dilation=dilation)))
    x = gc.placeholder(xs, "float64", name="x")
    w = gc.placeholder(ws, "float64", name="w")
    f = gc.function([x, w], loss(x, w), backend="llvm")
    assert _forward_direct(schedule_graph(f.graph, policy=policy), ws[0] // groups)
    result = gc.check_grad(loss, xv, wv, max_entries=40, backend="llvm")
    assert result, str(result)


def test_deeper_convolutions_loop_over_input_channels(monkeypatch):
    """Past MAX_UNROLL taps, the leading sub-axes of the depth (input channels) are a loop
    over a table of offsets (the threshold raised: whatever the llvm policy's is)."""
    deeper = dataclasses.replace(LLVM_POLICY, direct_conv_depth=512)
    monkeypatch.setattr(LLVMBackend, "policy", deeper)
    xs, ws = (2, 12, 14, 14), (10, 12, 3, 3)  # depth 108: 12 channels x 9 unrolled taps
    for dtype in ("float64", "float32"):
        xv, wv = RNG.normal(size=xs).astype(dtype), RNG.normal(size=ws).astype(dtype)
        f = _step(xs, ws, 1, 1, 1, 1, dtype, "llvm", options={"cache_dir": None})
        got = f(xv, wv)
        schedule = schedule_graph(f.graph, [xs, ws], policy=deeper)
        assert [k for k in _forward_direct(schedule, 10) if k.k == 108]
        want = KernelExecutable(f.graph, policy=SchedulePolicy(implicit_gemm=True)).run(
            [xv, wv])
        tol = 1e-9 if dtype == "float64" else 1e-3
        for what, r, g in zip(("y", "dx", "dw"), want, got):
            np.testing.assert_allclose(g, r, rtol=tol, atol=tol, err_msg=f"{dtype} {what}")


def test_folded_update_into_a_direct_convolution():
    """p = p - 0.1 * conv(x, w), an update folded into the GEMM (alpha, out +=)."""
    xs, ws = (1, 2, 12, 26), (3, 2, 3, 3)
    xv, wv = RNG.normal(size=xs), RNG.normal(size=ws)
    start = RNG.normal(size=(1, 3, 10, 24))
    x = gc.placeholder(xs, "float64", name="x")
    p = gc.parameter(start.copy(), name="p")
    y = gc.nn.conv2d(x, gc.constant(wv))
    f = gc.function([x], gc.sum(p), updates={p: p - 0.1 * y}, backend="llvm")
    f(xv)
    f(xv)
    schedule = schedule_graph(f.graph, policy=LLVM_POLICY)
    folded = [k for k in schedule.kernels if isinstance(k, ir.Gemm) and k.direct]
    assert folded and folded[0].accumulate and folded[0].alpha == pytest.approx(-0.1)
    np.testing.assert_allclose(p.value, start - 0.2 * conv_ref(xv, wv, 1, 0, 1),
                               rtol=1e-10, atol=1e-10)


def test_the_policy_threshold_decides():
    """Depth above the threshold, rows shorter than MIN_ROW or too short for their vectors,
    strides the policy does not take, or a threshold of 0 keep the implicit GEMM; the
    default policy (numpy, cuda) never marks one."""
    gemm = ir.Gemm((1,), 4, 2 * 9 * 12, 18, ir.Access(0, (0, 18, 1), 0),
                   ir.Access(1, (0, 120, 12, 1, 1200, 12, 1), 0),
                   ir.Access(2, (0, 216, 1), 0), np.dtype("float32"),
                   b_split=((2, 3, 3), (2, 9, 12)))
    assert eligible(gemm, 18) and not eligible(gemm, 17)
    strided = dataclasses.replace(gemm, b=ir.Access(1, (0, 120, 12, 1, 1200, 24, 2), 0))
    assert eligible(strided, 32, 2) and not eligible(strided, 32)
    short = dataclasses.replace(gemm, n=2 * 9 * (MIN_ROW - 1),
                                b_split=((2, 3, 3), (2, 9, MIN_ROW - 1)))
    assert not eligible(short, 32)
    sparse = dataclasses.replace(gemm, n=2 * 9 * 17, b_split=((2, 3, 3), (2, 9, 17)))
    assert not eligible(sparse, 32)  # rows of 17: two vectors, 15 of their 32 lanes empty
    turned = dataclasses.replace(gemm, out=ir.Access(2, (0, 1, 4), 0))
    assert not eligible(turned, 32)
    assert choose_direct([gemm], SchedulePolicy())[0] is gemm
    (chosen,) = choose_direct([gemm], LLVM_POLICY)
    assert chosen.direct and chosen.header().endswith(" direct")


def test_a_direct_convolution_is_a_unit_of_its_own_not_in_the_gemm_unit():
    """Its code is all its own (no shared GEMM functions): in the GEMM unit it made that one
    unit, compiled in one process, several times larger (W6: 0.34 -> 0.80 MB of IR); as a
    unit of its own it is compiled wherever the processes have room."""
    from graphc.backends.llvm import codegen
    x = gc.placeholder((4, 1, 28, 28), "float32", name="x")
    w = gc.parameter(RNG.normal(size=(8, 1, 5, 5)).astype(np.float32), name="w")
    v = gc.parameter(RNG.normal(size=(8 * 24 * 24, 40)).astype(np.float32), name="v")
    loss = gc.sum(gc.tanh(gc.reshape(gc.nn.conv2d(x, w), (4, -1)) @ v))
    schedule = schedule_graph(gc.function([x], loss).graph, policy=LLVM_POLICY)
    plan = codegen.plan_units(schedule)
    direct = [i for i, k in enumerate(schedule.kernels) if isinstance(k, ir.Gemm) and k.direct]
    assert direct
    for unit in plan.units:
        if set(unit.members) & set(direct):
            assert unit.members == (direct[0],) and not unit.alone
    assert any(u.alone for u in plan.units)  # the plain product's GEMM unit
