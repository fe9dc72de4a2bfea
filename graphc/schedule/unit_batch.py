"""GEMMs whose batch axes have one item read no batch stride: each operand's stride along
such an axis is made 0, as every index along it is. Two GEMMs that differed only there (W6:
a convolution and its data gradient, the weights read from a parameter with batch stride 0
in one and from a rotated copy in the other) then have one signature, so they share one
compiled function (codegen.plan_units), and a symbolic batch stride (an output's, which
grows with the call-time batch) no longer makes the kernel read a size it does not use."""
from __future__ import annotations

import dataclasses

from graphc.schedule import ir


def _zeroed(access: ir.Access, axes: list[int]) -> ir.Access:
    strides = tuple(0 if i in axes else s for i, s in enumerate(access.strides))
    return access if strides == access.strides else dataclasses.replace(access,
                                                                         strides=strides)


def unit_batch_strides(kernel: ir.Kernel) -> ir.Kernel:
    """`kernel` with the strides of its GEMM batch axes of extent 1 set to 0 (any other
    kernel as it is)."""
    if not isinstance(kernel, ir.Gemm):
        return kernel
    axes = [i for i, size in enumerate(kernel.batch) if size == 1]
    if not axes:
        return kernel
    a, b, out = (_zeroed(x, axes) for x in (kernel.a, kernel.b, kernel.out))
    if (a, b, out) == (kernel.a, kernel.b, kernel.out):
        return kernel
    return dataclasses.replace(kernel, a=a, b=b, out=out)
