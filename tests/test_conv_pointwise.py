"""1x1 convolutions as one matrix product per image (graphc/nn/conv.py: _pointwise): values
against the definition on every backend, gradients against finite differences, for strides,
padding, groups and odd sizes; and no im2col copy or col2im in the compiled step."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from conv_reference import conv_ref

RNG = np.random.default_rng(11)

CASES = [  # (x shape, w shape, stride, padding, groups)
    ((2, 4, 7, 7), (6, 4, 1, 1), 1, 0, 1),
    ((3, 4, 7, 8), (6, 2, 1, 1), 2, 0, 2),
    ((2, 4, 9, 9), (4, 1, 1, 1), 3, 1, 4),  # depthwise, strided, padded
    ((1, 3, 5, 5), (2, 3, 1, 1), 2, 2, 1),  # padding wider than the stride
    ((2, 1, 1, 1), (3, 1, 1, 1), 1, 0, 1),
]
BACKENDS = [("numpy", None), ("numpy", {"mode": "kernels"}), ("llvm", None)]


@pytest.mark.parametrize("xs,ws,stride,padding,groups", CASES)
def test_pointwise_conv_matches_the_definition_on_every_backend(xs, ws, stride, padding,
                                                                 groups):
    xv, wv = RNG.normal(size=xs), RNG.normal(size=ws)
    x = gc.placeholder((None,) + xs[1:], "float64", name="x")
    w = gc.placeholder(ws, "float64", name="w")
    y = gc.nn.conv2d(x, w, stride=stride, padding=padding, groups=groups, dilation=2)
    want = conv_ref(xv, wv, stride, padding, groups)
    assert y.shape == (None,) + want.shape[1:]
    for backend, options in BACKENDS:
        got = gc.function([x, w], y, backend=backend, backend_options=options)(xv, wv)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=backend)


@pytest.mark.parametrize("xs,ws,stride,padding,groups", CASES)
def test_pointwise_conv_gradients_match_finite_differences(xs, ws, stride, padding, groups):
    xv, wv = RNG.normal(size=xs), RNG.normal(size=ws)
    result = gc.check_grad(lambda a, b: gc.sum(gc.tanh(gc.nn.conv2d(
        a, b, stride=stride, padding=padding, groups=groups))), xv, wv, max_entries=60)
    assert result, str(result)


def test_a_pointwise_step_has_no_im2col_copy_or_col2im():
    x = gc.placeholder((8, 16, 14, 14), name="x")
    w = gc.parameter(RNG.normal(size=(32, 16, 1, 1)).astype(np.float32), name="w")
    loss = gc.sum(gc.tanh(gc.nn.conv2d(x, w)))
    f = gc.function([x], loss, updates={w: w - 0.1 * gc.grad(loss, w)})
    nodes = {n.op for n in f.graph.nodes()}
    assert not nodes & {"windows", "windows_grad"}
    kinds = [k.kind for k in f.schedule().kernels]
    assert kinds.count("gemm") == 2  # the forward product and the weight gradient's
    xv = RNG.normal(size=(8, 16, 14, 14)).astype(np.float32)
    wv = w.value.copy()
    f(xv)
    h = np.tanh(np.einsum("oc,nchw->nohw", wv[:, :, 0, 0], xv))
    grad = np.einsum("nohw,nchw->oc", 1 - h * h, xv)[:, :, None, None]
    np.testing.assert_allclose(w.value, wv - 0.1 * grad, rtol=1e-4, atol=1e-4)
