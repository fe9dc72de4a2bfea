"""Implicit-GEMM convolutions (graphc/schedule/implicit.py) and the data gradient as a
convolution (graphc/passes/conv_grad.py): values and both gradients against the definition,
the unoptimized numpy graph and finite differences, for strides, padding, groups, dilation,
even kernels and odd sizes; the schedule reads the columns in place where it pays."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from conv_reference import conv_ref
from graphc.backends.llvm import LLVM_POLICY
from graphc.backends.numpy.kernels import KernelExecutable
from graphc.passes.conv_grad import MAX_GROWTH
from graphc.schedule import SchedulePolicy, schedule_graph
from graphc.schedule.direct_conv import direct_rows
from graphc.schedule.implicit import deep as implicit_deep

RNG = np.random.default_rng(20)

CASES = [  # (x shape, w shape, stride, padding, groups, dilation): widths >= 8 (MIN_RUN)
    ((2, 3, 16, 14), (4, 3, 3, 3), 1, 1, 1, 1),
    ((2, 4, 16, 18), (6, 2, 3, 3), 1, 1, 2, 1),  # groups
    ((1, 3, 11, 10), (2, 3, 5, 5), 1, 2, 1, 1),  # 5x5 on 11x10: only the kept 11x10 computed
    ((1, 3, 12, 13), (2, 3, 5, 5), 1, 0, 1, 1),  # unpadded 5x5 on 12x13: keeps col2im
    ((2, 3, 16, 14), (4, 3, 3, 3), 1, (1, 2), 1, 1),  # padded unevenly
    ((2, 3, 16, 14), (4, 3, 3, 3), 1, 3, 1, 1),  # padding past the taps: the whole map
    ((2, 2, 9, 11), (3, 2, 2, 2), 1, 0, 1, 1),  # even kernel, no padding
    ((2, 2, 13, 12), (3, 2, 3, 3), 1, 1, 1, 2),  # dilated taps
    ((2, 3, 17, 18), (4, 3, 3, 3), 2, 1, 1, 1),  # stride 2: keeps the im2col buffer
    ((3, 6, 16, 12), (6, 1, 3, 3), 1, 1, 6, 1),  # depthwise
    ((4, 16, 16, 16), (16, 16, 3, 3), 1, 1, 1, 1),  # large enough for a thread team
    ((4, 3, 16, 16), (4, 3, 3, 3), 1, 1, 1, 1),  # deep weight gradient: rows of 16
    ((8, 2, 12, 14), (3, 2, 3, 3), 1, 1, 1, 1),  # deep, rows of 14 (masked vectors)
    ((8, 8, 16, 30), (8, 8, 3, 3), 1, 0, 1, 1),  # deep, rows of 28, a thread team
]
IDS = [f"x{c[0]}-w{c[1]}-s{c[2]}-p{c[3]}-g{c[4]}-d{c[5]}".replace(" ", "") for c in CASES]


def _step(xs, ws, stride, padding, groups, dilation, backend, optimize=True):
    x = gc.placeholder((None,) + xs[1:], "float64", name="x")
    w = gc.placeholder(ws, "float64", name="w")
    y = gc.nn.conv2d(gc.relu(x) + 0.5, w, stride=stride, padding=padding, groups=groups,
                     dilation=dilation)
    loss = gc.sum(gc.tanh(y) * gc.sin(y))
    gx, gw = gc.grad(loss, [x, w])
    return gc.function([x, w], [y, gx, gw], backend=backend, optimize=optimize)


@pytest.mark.parametrize("xs,ws,stride,padding,groups,dilation", CASES, ids=IDS)
def test_values_and_gradients_match_the_unoptimized_reference(xs, ws, stride, padding,
                                                               groups, dilation):
    xv, wv = RNG.normal(size=xs), RNG.normal(size=ws)
    want = _step(xs, ws, stride, padding, groups, dilation, "numpy", optimize=False)(xv, wv)
    if dilation == 1 and isinstance(padding, int):
        np.testing.assert_allclose(want[0], conv_ref(np.maximum(xv, 0) + 0.5, wv, stride,
                                                     padding, groups), rtol=1e-10, atol=1e-10)
    f = _step(xs, ws, stride, padding, groups, dilation, "llvm")
    got = f(xv, wv)
    schedule = schedule_graph(f.graph, [xs, ws], policy=LLVM_POLICY)
    implicit = [k for k in schedule.kernels if k.kind == "gemm" and k.b_split]
    # the forward product's and (undilated, where the maps it computes are not much
    # larger) the data gradient's, as a convolution: over the unpadded input where the
    # padding is within the kernel's taps (the border is not computed), else the padded one
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    oh, ow = (xs[2] + 2 * ph - ws[2] + 1, xs[3] + 2 * pw - ws[3] + 1)
    rows = xs[2] if ph <= ws[2] - 1 else oh + ws[2] - 1
    cols = xs[3] if pw <= ws[3] - 1 else ow + ws[3] - 1
    as_conv = stride == dilation == 1 and rows * cols <= MAX_GROWTH * oh * ow
    # and the weight gradient's, read along its depth (rows of ow), where it is deep
    k = xs[0] * oh * ow
    deep_dw = stride == groups == 1 and implicit_deep(
        ws[0], ws[1] * ws[2] * ws[3], k, ((ow, 1),))
    # a strided forward product reads its image in place only as a direct convolution
    strided_ow = (xs[3] + 2 * pw - dilation * (ws[3] - 1) - 1) // stride + 1
    strided_oh = (xs[2] + 2 * ph - dilation * (ws[2] - 1) - 1) // stride + 1
    direct = direct_rows(ws[1] * ws[2] * ws[3], ((xs[0], 0), (strided_oh, 0), (strided_ow, stride)),
                         LLVM_POLICY.direct_conv_depth, LLVM_POLICY.direct_conv_stride)
    assert len(implicit) == (int(direct) if stride > 1 else 1 + as_conv + deep_dw)
    assert ("windows_grad" in {n.op for n in f.graph.nodes()}) == (not as_conv)
    kernels = KernelExecutable(f.graph, policy=SchedulePolicy(implicit_gemm=True))
    deep = KernelExecutable(f.graph, policy=SchedulePolicy(implicit_gemm=True,
                                                           implicit_deep_gemm=True))
    for name, results in (("llvm", got), ("numpy kernels", kernels.run([xv, wv])),
                          ("numpy kernels, deep", deep.run([xv, wv]))):
        for what, r, g in zip(("y", "dx", "dw"), want, results):
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-9, err_msg=f"{name} {what}")


# (all but the dilated, depthwise and large cases: finite differences cost a call each)
FD = [i for i, c in enumerate(CASES) if c[5] == 1 and c[4] < c[0][1] and c[0][1] < 16]


@pytest.mark.parametrize("xs,ws,stride,padding,groups,dilation", [CASES[i] for i in FD],
                         ids=[IDS[i] for i in FD])
def test_gradients_match_finite_differences(xs, ws, stride, padding, groups, dilation):
    xv, wv = RNG.normal(size=xs), RNG.normal(size=ws)
    result = gc.check_grad(lambda a, b: gc.sum(gc.tanh(gc.nn.conv2d(
        a, b, stride=stride, padding=padding, groups=groups, dilation=dilation))), xv, wv,
        max_entries=40)
    assert result, str(result)


def _gemms(xs, ws, stride=1, padding=1):
    x = gc.placeholder(xs, "float32", name="x")
    w = gc.parameter(RNG.normal(size=ws).astype(np.float32), name="w")
    loss = gc.sum(gc.tanh(gc.nn.conv2d(gc.relu(x), w, stride=stride, padding=padding)))
    gx = gc.grad(loss, x)
    f = gc.function([x], [loss, gx], updates={w: w - 0.1 * gc.grad(loss, w)})
    ops = {n.op for n in f.graph.nodes()}
    gemms = [k for k in schedule_graph(f.graph, policy=LLVM_POLICY).kernels
             if k.kind == "gemm"]
    return ops, gemms


def test_a_stride_1_step_reads_its_columns_in_place_and_has_no_col2im():
    ops, gemms = _gemms((4, 8, 16, 16), (8, 8, 3, 3))
    assert "windows_grad" not in ops  # the data gradient is a convolution
    implicit = [k for k in gemms if k.b_split is not None]
    # the forward product, the data gradient's and the weight gradient's (runs of 3 taps
    # are too short to pack, but it is deep: read along its depth, rows of 16 pixels)
    assert len(implicit) == 3 and len(gemms) == 3
    assert implicit[0].b_split == ((8, 3, 3), (4, 16, 16))
    # over the input's own 16x16 (dY padded by 1): not the padded input's border
    assert implicit[1].b_split == ((8, 3, 3), (4, 16, 16))
    assert implicit[2].b_split == ((4, 16, 16), (8, 3, 3)) and implicit[2].accumulate


@pytest.mark.parametrize("xs", [(8, 3, 16, 24), (4, 8, 20, 13)])
def test_a_deep_float32_weight_gradient_matches_numpy(xs):
    """The dot-product path's float32 vectors (16 lanes; rows of 24: one whole and one
    masked, rows of 13)."""
    x = gc.placeholder(xs, "float32", name="x")
    w = gc.placeholder((8, xs[1], 3, 3), "float32", name="w")
    loss = gc.sum(gc.tanh(gc.nn.conv2d(x, w, padding=1)))
    args = [RNG.normal(size=xs).astype(np.float32),
            RNG.normal(size=(8, xs[1], 3, 3)).astype(np.float32)]
    f = gc.function([x, w], gc.grad(loss, w), backend="llvm")
    gemms = [k for k in schedule_graph(f.graph, policy=LLVM_POLICY).kernels
             if k.kind == "gemm"]
    assert gemms[-1].b_split is not None and gemms[-1].b_split[0][-1] == xs[3]
    want = gc.function([x, w], gc.grad(loss, w), backend="numpy", optimize=False)(*args)
    np.testing.assert_allclose(f(*args), want, rtol=2e-4, atol=2e-3)


def test_without_deep_products_the_weight_gradient_reads_stored_columns():
    x = gc.placeholder((4, 8, 16, 16), "float32", name="x")
    w = gc.placeholder((8, 8, 3, 3), "float32", name="w")
    loss = gc.sum(gc.tanh(gc.nn.conv2d(gc.relu(x), w, padding=1)))
    graph = gc.function([x, w], [loss, gc.grad(loss, w)], backend="numpy").graph
    policy = SchedulePolicy(implicit_gemm=True)
    gemms = [k for k in schedule_graph(graph, policy=policy).kernels if k.kind == "gemm"]
    assert [k.b_split is not None for k in gemms] == [True, False]


def test_short_rows_and_strides_keep_the_im2col_buffer():
    assert not [k for k in _gemms((4, 8, 12, 12), (8, 8, 3, 3), stride=2)[1]
                if k.b_split is not None]
    assert not [k for k in _gemms((4, 8, 5, 5), (8, 8, 3, 3))[1] if k.b_split is not None]


def test_a_stride_2_step_reads_its_image_in_place_but_a_1x1_projection_does_not():
    """llvm takes stride-2 convolutions directly (rows of 14 output pixels, every other
    input pixel) and their weight gradients read the padded image's rows at stride 2; a
    1x1 stride-2 convolution's per-image products keep their columns (read in place as
    a plain implicit GEMM they ran twice as long)."""
    _, gemms = _gemms((4, 8, 28, 28), (16, 8, 3, 3), stride=2)
    implicit = [k for k in gemms if k.b_split is not None]
    forward = [k for k in implicit if k.direct]
    assert len(forward) == 1 and forward[0].b_split[1][-1] == 14
    (weight,) = [k for k in implicit if k.accumulate]
    assert weight.b_split[0] == (4, 14, 14)
    assert weight.b.strides[len(weight.batch) + 2] == 2  # every other pixel of a row
    _, gemms = _gemms((4, 8, 28, 28), (16, 8, 1, 1), stride=2, padding=0)
    assert not [k for k in gemms if k.b_split is not None and
                any(d != 1 for d in k.batch)]


def test_a_one_channel_weight_gradient_keeps_its_side_and_reads_the_image():
    """n = 9 taps is narrower than a vector tile, which would turn the product around (B
    then A, its columns copied); deep enough to be read along its depth, it keeps its
    side: dY's rows against the image's rows in place, no im2col copy."""
    _, gemms = _gemms((64, 1, 28, 28), (16, 1, 3, 3))
    (weight,) = [k for k in gemms if k.accumulate]
    assert (weight.m, weight.n) == (16, 9) and weight.b_split == ((64, 28, 28), (3, 3))
    x = gc.placeholder((None, 1, 28, 28), "float32", name="x1")
    w0 = (RNG.normal(size=(16, 1, 3, 3)) * 0.3).astype(np.float32)
    w = gc.parameter(w0.copy(), name="w1")
    g = gc.placeholder((None, 16, 28, 28), "float32", name="g1")
    f = gc.function([x, g], [gc.grad(gc.sum(gc.nn.conv2d(x, w, padding=1) * g), w)])
    xv = RNG.normal(size=(5, 1, 28, 28)).astype(np.float32)
    gv = RNG.normal(size=(5, 16, 28, 28)).astype(np.float32)
    pad = np.pad(xv.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((16, 1, 3, 3))
    for i in range(3):
        for j in range(3):
            want[:, :, i, j] = np.einsum("nohw,nchw->oc", gv, pad[:, :, i:i + 28, j:j + 28])
    got, = f(xv, gv)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())


def test_the_default_and_cuda_policies_never_read_columns_in_place():
    from graphc.backends.cuda.backend import CUDA_POLICY
    x = gc.placeholder((2, 3, 12, 12), "float32", name="x")
    w = gc.placeholder((4, 3, 3, 3), "float32", name="w")
    graph = gc.function([x, w], gc.nn.conv2d(x, w, padding=1), backend="numpy").graph
    for policy in (SchedulePolicy(), CUDA_POLICY):
        assert all(k.b_split is None for k in schedule_graph(graph, policy=policy).kernels
                   if k.kind == "gemm")


def test_a_reshape_strides_express_is_read_as_a_plain_b():
    """A stored (T, N, K) value reshaped to (T*N, K) for a product (an RNN's weight
    gradient over its steps) is a plain view of B, not sub-axes: packed as any B is."""
    h = gc.placeholder((6, 4, 16), "float32", name="h")
    g = gc.placeholder((6, 4, 64), "float32", name="g")
    out = gc.transpose(gc.reshape(h, (-1, 16))) @ gc.reshape(g, (-1, 64))
    f = gc.function([h, g], out, backend="llvm")
    gemms = [k for k in schedule_graph(f.graph, policy=LLVM_POLICY).kernels
             if k.kind == "gemm"]
    assert len(gemms) == 1 and gemms[0].b_split is None and gemms[0].k == 24
    hv, gv = RNG.normal(size=(6, 4, 16)).astype(np.float32), RNG.normal(size=(6, 4, 64))
    np.testing.assert_allclose(f(hv, gv.astype(np.float32)),
                               hv.reshape(-1, 16).T @ gv.reshape(-1, 64),
                               rtol=1e-5, atol=1e-5)
