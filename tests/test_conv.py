"""conv2d and pooling: against loops written from the definitions, gradients against finite
differences, and the same values on every backend."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from conv_reference import conv_ref, pool_ref

RNG = np.random.default_rng(7)


CONV_CASES = [  # (x shape, w shape, stride, padding, groups)
    ((2, 3, 7, 7), (4, 3, 3, 3), 1, 0, 1),
    ((1, 2, 8, 6), (5, 2, 3, 2), 2, 1, 1),
    ((2, 4, 9, 9), (6, 2, 3, 3), 2, 1, 2),
    ((2, 4, 5, 5), (4, 1, 3, 3), 1, 1, 4),  # depthwise
    ((3, 1, 28, 28), (8, 1, 5, 5), 1, 0, 1),
    ((1, 2, 4, 4), (3, 2, 1, 1), 1, 0, 1),  # 1x1
]
BACKENDS = [("numpy", None), ("numpy", {"mode": "kernels"}), ("llvm", None)]


@pytest.mark.slow
@pytest.mark.parametrize("xs,ws,stride,padding,groups", CONV_CASES)
def test_conv2d_matches_the_definition_on_every_backend(xs, ws, stride, padding, groups):
    xv, wv = RNG.normal(size=xs), RNG.normal(size=ws)
    x = gc.placeholder((None,) + xs[1:], "float64", name="x")
    w = gc.placeholder(ws, "float64", name="w")
    y = gc.nn.conv2d(x, w, stride=stride, padding=padding, groups=groups)
    want = conv_ref(xv, wv, stride, padding, groups)
    assert y.shape == (None,) + want.shape[1:]
    for backend, options in BACKENDS:
        got = gc.function([x, w], y, backend=backend, backend_options=options)(xv, wv)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=backend)


@pytest.mark.parametrize("xs,ws,stride,padding,groups", CONV_CASES[:4])
def test_conv2d_gradients_match_finite_differences(xs, ws, stride, padding, groups):
    xv, wv = RNG.normal(size=xs), RNG.normal(size=ws)
    result = gc.check_grad(lambda a, b: gc.sum(gc.tanh(gc.nn.conv2d(
        a, b, stride=stride, padding=padding, groups=groups))), xv, wv, max_entries=60)
    assert result, str(result)


@pytest.mark.slow
@pytest.mark.parametrize("k,s", [(2, 2), (3, 2), (3, 1), (2, 1)])
def test_pooling_matches_the_definition_and_differentiates(k, s):
    xv = RNG.normal(size=(2, 3, 7, 8))
    x = gc.placeholder((None, 3, 7, 8), "float64", name="x")
    outs = [gc.nn.max_pool2d(x, k, s), gc.nn.avg_pool2d(x, k, s)]
    loss = gc.sum(outs[0] ** 2) + gc.sum(gc.sin(outs[1]))
    want = [pool_ref(xv, k, s, np.max), pool_ref(xv, k, s, np.mean)]
    ref_grad = None
    for backend, options in BACKENDS:
        f = gc.function([x], outs + [gc.grad(loss, x)], backend=backend, backend_options=options)
        got = f(xv)
        for g, w in zip(got[:2], want):
            np.testing.assert_allclose(g, w, rtol=1e-12, err_msg=backend)
        ref_grad = got[2] if ref_grad is None else ref_grad
        np.testing.assert_allclose(got[2], ref_grad, rtol=1e-10, atol=1e-12, err_msg=backend)
    assert gc.check_grad(lambda a: gc.sum(gc.nn.max_pool2d(a, k, s) ** 2)
                         + gc.sum(gc.sin(gc.nn.avg_pool2d(a, k, s))), xv, max_entries=80)


def test_conv_rejects_bad_arguments():
    x = gc.placeholder((None, 3, 8, 8), name="x")
    with pytest.raises(ValueError, match="groups"):
        gc.nn.conv2d(x, gc.placeholder((4, 2, 3, 3)))
    with pytest.raises(ValueError, match="NCHW"):
        gc.nn.max_pool2d(gc.placeholder((3, 8, 8)), 2)
    with pytest.raises(gc.ShapeError, match="larger"):
        gc.nn.conv2d(x, gc.placeholder((4, 3, 9, 9)))
    with pytest.raises(TypeError, match="stride"):
        gc.nn.conv2d(x, gc.placeholder((4, 3, 3, 3)), stride="2")


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 6, 4)])
def test_pooling_gradient_when_windows_tile_the_input_exactly(shape):
    """Disjoint windows covering every element: the gradient is a plain scatter, no zeros."""
    xv = RNG.normal(size=shape)
    x = gc.placeholder(shape, "float64", name="x")
    loss = gc.sum(gc.nn.max_pool2d(x, 2) ** 2) + gc.sum(gc.nn.avg_pool2d(x, 2) * 3.0)
    grads = [gc.function([x], gc.grad(loss, x), backend=b, backend_options=o)(xv)
             for b, o in BACKENDS]
    for g in grads[1:]:
        np.testing.assert_allclose(g, grads[0], rtol=1e-12)
    assert gc.check_grad(lambda a: gc.sum(gc.nn.max_pool2d(a, 2) ** 2)
                         + gc.sum(gc.nn.avg_pool2d(a, 2) * 3.0), xv)
