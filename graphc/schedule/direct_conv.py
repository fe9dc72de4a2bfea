"""Direct convolutions: an implicit GEMM of small depth (a first layer's 1 input channel times
5x5 taps: depth 25) marked to be computed by broadcasting each weight over vectors of input
pixels, a row of output pixels at a time, instead of packing B from the image.

Why it pays: with a depth of 25 the packed GEMM copies every column of B (25 values
gathered from the image) to use each of them for only m = 8 multiply-adds; the copy, not
the arithmetic, bounds it (W5's first convolution: ~50 GFLOP/s). Read directly, a vector of
input pixels is loaded once per tap and serves m fused multiply-adds from registers.
It measured faster up to depths of 288 too (W6's 32->32 3x3: 0.8x the implicit GEMM's
time), where rows fill the vectors. The threshold is the target's
(SchedulePolicy.direct_conv_depth), measured there (benchmarks/bench_conv_direct.py)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from graphc.schedule import ir
from graphc.schedule.policy import SchedulePolicy

# The shortest row of output pixels a direct convolution takes: it computes a row at a
# time in whole vectors, so shorter rows would leave most of each vector's lanes empty.
MIN_ROW = 8
# A row is computed in vectors of (float32) LANES, the last one masked, or rows of at
# most half a vector side by side (where whole groups of them fill the rows; the llvm
# kernel also packs longer rows across vectors, not counted here): rows that
# leave more than a quarter of the lanes empty keep the GEMM (W5's second convolution,
# rows of 8, one a vector: 0.29 ms direct against 0.24 ms; benchmarks/bench_conv_direct.py).
LANES = 16
MIN_USE = 0.75
# The longest a row's pixels may stand apart in the image (the convolution's stride) that
# the kernels take: stride 2 reads two vectors of the image and keeps every other lane.
# The policy's direct_conv_stride may ask for less.
MAX_STRIDE = 2


def direct_rows(k: int, n_axes: tuple[tuple[int, int], ...], depth: int,
                max_stride: int = 1) -> bool:
    """Whether a product of depth `k` whose B's columns are the (size, stride) sub-axes
    `n_axes` (the last: a row of output pixels) is shallow enough, and its rows fit, for
    a direct convolution under the threshold `depth` and pixels at most `max_stride` apart
    (then the scheduler reads its B in place even where the rows are strided or short).
    The depth and the row must be ints; the first sub-axis (the image index) may be a
    call-time size: rows side by side are then grouped within an image."""
    size, stride = n_axes[-1]
    if not (isinstance(k, int) and isinstance(size, int) and isinstance(stride, int)):
        return False
    rows = math.prod(d for d, _ in n_axes[:-1] if isinstance(d, int))
    per = LANES // size if 0 < size and stride == 1 else 1
    if per > 1 and rows % per == 0:  # short rows side by side in a vector
        use = per * size / LANES
    else:
        use = size / (LANES * -(-size // LANES)) if size > 0 else 0.0
    return (0 < k <= depth and size >= MIN_ROW and use >= MIN_USE
            and 1 <= stride <= min(max_stride, MAX_STRIDE))


def eligible(k: ir.Gemm, depth: int, max_stride: int = 1) -> bool:
    """Whether `k` may be computed directly: an implicit GEMM of depth at most `depth`, a
    float dtype, its output's columns (the output pixels) contiguous and its B's columns
    in rows of MIN_ROW or more pixels at most `max_stride` apart that fill MIN_USE of their
    vectors' lanes. Sizes are ints, but for the image count (the first of n's sub-axes),
    and with it n and the output's strides: the kernel takes those at run time."""
    if k.b_split is None or np.dtype(k.dtype).name not in ("float32", "float64"):
        return False
    fixed = (k.m, k.k) + tuple(k.batch) + tuple(k.b_split[0]) + tuple(k.b_split[1][1:])
    strides = tuple(k.a.strides) + tuple(k.b.strides) + (k.a.offset, k.b.offset,
                                                         k.out.offset, k.out.strides[-1])
    if not all(isinstance(v, int) for v in fixed + strides):
        return False
    n_axes = tuple(zip(k.b_split[1], k.b.strides[-len(k.b_split[1]):]))
    return k.out.strides[-1] == 1 and direct_rows(k.k, n_axes, depth, max_stride)


def choose_direct(kernels: list[ir.Kernel], policy: SchedulePolicy) -> list[ir.Kernel]:
    """The kernels with each eligible implicit GEMM marked direct (ir.Gemm.direct)."""
    if policy.direct_conv_depth <= 0:
        return kernels
    return [dataclasses.replace(k, direct=True)
            if isinstance(k, ir.Gemm)
            and eligible(k, policy.direct_conv_depth, policy.direct_conv_stride) else k
            for k in kernels]
