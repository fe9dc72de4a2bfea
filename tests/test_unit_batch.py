"""GEMM batch axes of one item read no stride (graphc/schedule/unit_batch.py): a
convolution and its data gradient, which differed only in the batch stride of their
weights, share one compiled function, and the results are the reference's."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import sizes
from graphc.schedule import ir
from graphc.schedule.unit_batch import unit_batch_strides


def test_only_strides_of_unit_batch_axes_become_zero():
    gemm = ir.Gemm(batch=(1, 3), m=4, n=5, k=6, a=ir.Access(0, (72, 24, 6, 1)),
                   b=ir.Access(1, (90, 30, 5, 1)), out=ir.Access(2, (60, 20, 5, 1)),
                   dtype=np.dtype(np.float32))
    got = unit_batch_strides(gemm)
    assert got.a.strides == (0, 24, 6, 1) and got.b.strides == (0, 30, 5, 1)
    assert got.out.strides == (0, 20, 5, 1)
    assert unit_batch_strides(got) is got  # (nothing left to change: the same kernel)
    wide = ir.Gemm(batch=(2,), m=4, n=5, k=6, a=ir.Access(0, (24, 6, 1)),
                   b=ir.Access(1, (30, 5, 1)), out=ir.Access(2, (20, 5, 1)),
                   dtype=np.dtype(np.float32))
    assert unit_batch_strides(wide) is wide


def _two_convs(batch):
    rng = np.random.default_rng(7)
    x = gc.placeholder((batch, 8, 12, 12), name="x")
    w1 = gc.parameter(rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32), name="w1")
    w2 = gc.parameter(rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32), name="w2")
    h = gc.relu(gc.nn.conv2d(x, w1, padding=1))
    loss = gc.name(gc.sum(gc.square(gc.nn.conv2d(h, w2, padding=1))), "loss")
    return [x], [loss, *gc.grad(loss, [w1, w2])]


@pytest.mark.parametrize("batch", [16, "N"])
def test_a_convolution_and_its_data_gradient_share_one_function(tmp_path, batch):
    from graphc.backends.llvm.codegen import plan_units
    inputs, outputs = _two_convs(batch)
    step = gc.function(inputs, outputs, backend_options={"cache_dir": str(tmp_path)})
    xv = np.random.default_rng(8).normal(size=(16, 8, 12, 12)).astype(np.float32)
    for got, want in zip(step(xv), gc.function(inputs, outputs, backend="numpy")(xv)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
    program = step._exe.last
    schedule = program._schedule or program.schedule
    direct = [i for i, k in enumerate(schedule.kernels)
              if isinstance(k, ir.Gemm) and k.direct and (k.m, k.k) == (8, 72)]
    assert len(direct) >= 3  # both forwards and the data gradient of the second
    assert all(s == 0 for i in direct for k in [schedule.kernels[i]]
               for x in (k.a, k.b, k.out) for s in x.strides[:len(k.batch)])
    representative = getattr(program, "representative", None)  # (symbolic sizes: one)
    with sizes.representative(representative or {}):
        functions = plan_units(schedule).functions
    assert len({functions[i] for i in direct}) == 1
