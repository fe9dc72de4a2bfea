"""The loop order of a col2im (windows_grad adding overlapping windows back onto the image):
the columns it reads are walked in memory order, the image axis threads split stays
outermost, and values stay those of the reference."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.schedule import ir
from graphc.schedule.collapse import reorder_elementwise


def _col2im_kernel() -> ir.Elementwise:
    """W5's second convolution's data gradient: columns [C*KH*KW, N*OH*OW] added onto the
    image [N, C, 12, 12] over the space (n, c, oh, kh, ow, kw), as the scheduler makes it."""
    load = ir.Load(ir.Access(1, (64, 102400, 8, 20480, 1, 4096), 0), np.dtype(np.float32))
    store = ir.Store(ir.Access(0, (1152, 144, 12, 12, 1, 1), 0), load, accumulate="atomic")
    return ir.Elementwise((64, 8, 8, 5, 8, 5), (store,), ("windows_grad",))


def test_col2im_walks_its_columns_in_order_and_keeps_the_image_axis_outermost():
    k = reorder_elementwise(_col2im_kernel())
    (store,) = k.stores
    (load,) = ir.expr_loads(store.value)
    assert k.shape == (64, 8, 5, 5, 8, 8)  # n, c, kh, kw, oh, ow
    assert load.access.strides == (64, 102400, 20480, 4096, 8, 1)
    assert store.access.strides == (1152, 144, 12, 1, 12, 1)
    assert store.accumulate == "atomic"


def test_plain_stores_keep_the_order_of_what_they_write():
    load = ir.Load(ir.Access(1, (1, 64), 0), np.dtype(np.float32))
    k = ir.Elementwise((64, 64), (ir.Store(ir.Access(0, (64, 1), 0), load),), ())
    assert reorder_elementwise(k) == k


def _conv_data_grad(backend: str, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    xp = gc.placeholder(x.shape, name="x_col2im")
    wp = gc.placeholder(w.shape, name="w_col2im")
    y = gc.nn.conv2d(xp, wp)
    loss = gc.sum(y * y)
    return gc.function([xp, wp], gc.grad(loss, xp), backend=backend)(x, w)


def test_col2im_data_gradient_matches_the_reference():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 8, 12, 12)).astype(np.float32)
    w = rng.normal(size=(16, 8, 5, 5)).astype(np.float32) * 0.1
    want = _conv_data_grad("numpy", x.astype(np.float64), w.astype(np.float64))
    got = _conv_data_grad("llvm", x, w)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
