"""gc.nn.conv2d's dilation= and the pools' padding=: values and gradients against
torch.nn.functional on both backends, finite differences in float64, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from test_grad_rules import fd_check

RNG = np.random.default_rng(5)
CONV = [dict(stride=1, padding=0, dilation=2), dict(stride=2, padding=1, dilation=(2, 3)),
        dict(stride=1, padding=2, dilation=(1, 2), groups=2)]
POOL = [dict(size=3, stride=2, padding=1), dict(size=(2, 4), stride=1, padding=(1, 2)),
        dict(size=2, padding=1)]


def test_dilated_conv_and_padded_pools_against_finite_differences():
    x = RNG.standard_normal((1, 2, 7, 8))
    w = RNG.standard_normal((2, 2, 2, 2))
    fd_check(lambda a, b: gc.nn.conv2d(a, b, stride=2, padding=1, dilation=(2, 3)), [x, w])
    # distinct values: max pooling has no ties there
    xd = RNG.permutation(2 * 7 * 8).reshape(1, 2, 7, 8) * 0.1
    fd_check(lambda a: gc.nn.max_pool2d(a, 3, 2, padding=1) * 1.0, [xd])
    fd_check(lambda a: gc.nn.avg_pool2d(a, (2, 4), 1, padding=(1, 2)), [x])


@pytest.mark.slow  # (importing torch takes seconds)
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_against_pytorch(backend, dtype):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    tol = 1e-4 if dtype == "float32" else 1e-11
    xs = RNG.standard_normal((2, 4, 9, 10)).astype(dtype)
    x = gc.placeholder(xs.shape, dtype, name="x")
    for args in CONV:
        ws = RNG.standard_normal((6, 4 // args.get("groups", 1), 3, 2)).astype(dtype)
        w = gc.placeholder(ws.shape, dtype, name="w")
        y = gc.nn.conv2d(x, w, **args)
        cs = RNG.standard_normal(y.shape).astype(dtype)
        f = gc.function([x, w], [y] + gc.grad(gc.sum(y * cs), [x, w]), backend=backend)
        got = f(xs, ws)
        tx, tw = torch.tensor(xs, requires_grad=True), torch.tensor(ws, requires_grad=True)
        ty = tf.conv2d(tx, tw, **args)
        (ty * torch.tensor(cs)).sum().backward()
        for g, want in zip(got, [ty.detach(), tx.grad, tw.grad]):
            np.testing.assert_allclose(g, want.numpy(), rtol=tol, atol=tol, err_msg=str(args))
    for args in POOL:
        size = args["size"]
        targs = dict(kernel_size=size, stride=args.get("stride", size),
                     padding=args["padding"])
        for ours, theirs in [(gc.nn.max_pool2d, tf.max_pool2d), (gc.nn.avg_pool2d,
                                                                  tf.avg_pool2d)]:
            y = ours(x, **args)
            cs = RNG.standard_normal(y.shape).astype(dtype)
            got = gc.function([x], [y, gc.grad(gc.sum(y * cs), x)], backend=backend)(xs)
            tx = torch.tensor(xs, requires_grad=True)
            ty = theirs(tx, **targs)
            (ty * torch.tensor(cs)).sum().backward()
            for g, want in zip(got, [ty.detach(), tx.grad]):
                np.testing.assert_allclose(g, want.numpy(), rtol=tol, atol=tol,
                                           err_msg=f"{ours.__name__} {args}")


def test_padded_max_pool_of_all_negative_input_and_ints():
    xs = -np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    x = gc.placeholder(xs.shape, "float32", name="x")
    got = gc.function([x], gc.nn.max_pool2d(x, 2, padding=1), backend="llvm")(xs)
    # the padded -inf never wins: corner windows hold one real entry
    np.testing.assert_array_equal(got[0, 0], [[-1, -2, -4], [-5, -6, -8], [-13, -14, -16]])
    xi = gc.placeholder((1, 1, 4, 4), "int64", name="xi")
    got = gc.function([xi], gc.nn.max_pool2d(xi, 2, padding=1), backend="llvm")(
        xs.astype(np.int64))
    assert got.dtype == np.int64 and got[0, 0, 0, 0] == -1


def test_bad_arguments():
    x = gc.placeholder((1, 2, 6, 6), "float32", name="x")
    w = gc.constant(np.ones((2, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        gc.nn.conv2d(x, w, dilation=0)
    with pytest.raises(Exception, match="window"):
        gc.nn.conv2d(x, w, dilation=3)  # spans 7 > 6
    with pytest.raises(ValueError, match="at most half the window"):
        gc.nn.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="padding must be"):
        gc.nn.avg_pool2d(x, 3, padding=-1)
