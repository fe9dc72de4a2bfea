"""Target policy: the choices a backend makes for the scheduler (GEMM orientation, fusion depth)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SchedulePolicy:
    """What the neutral scheduler asks a target. narrow_gemm: a GEMM with fewer columns than
    this (and more rows than columns) is computed turned around (C^T = B^T A^T), so the long
    side is the one a target's vector tiles cover; None never turns one. max_fused_depth:
    longer chains of fused elementwise ops are stored and reloaded, bounding kernel bodies.
    bucket_bytes: all_reduce operands smaller than this are packed together into buffers of
    at least this size, each reduced by one call (graphc.schedule.buckets). PyTorch DDP's
    25 MiB (docs/distributed.md). first_bucket_bytes: the same for the first bucket (of the
    gradients ready first), DDP's 1 MiB: its reduction starts early in the backward pass;
    None: bucket_bytes. overlap_reductions: a reduction with kernels after it that do not
    touch its buffer starts non-blocking and is waited for before the first that does
    (graphc.schedule.overlap); False keeps every reduction a blocking call.
    progress_reductions: with overlap, a test of the reductions in flight after each kernel
    between a start and its wait, so that MPI advances them (False: only the wait does).
    implicit_gemm: a matrix product whose B operand is a convolution's columns (a reshape of
    sliding windows) reads them from the image through B's sub-axes (ir.Gemm.b_split)
    instead of from an im2col buffer; only for targets whose GEMM packs such a B.
    implicit_gemm_or_specialize: lowering with call-time sizes, where implicit_gemm would
    be considered but call-time sizes other than the image count stand in the way, raise
    NotSymbolic (the program is then specialised per shape: the in-place columns need
    those sizes as numbers) instead of storing an im2col buffer. A call-time batch alone
    is read in place (graphc.schedule.implicit.only_images).
    implicit_deep_gemm: with implicit_gemm, a deep product with a small output (a
    convolution's weight gradient) reads its columns from the image too, along the depth
    (graphc.schedule.implicit.deep), where the target computes such products as dot
    products along the depth.
    implicit_outer_gemm: with implicit_deep_gemm, such a product whose m fills the target's
    vectors and whose columns' trailing sub-axes (a kernel's taps) are few reads its
    depth in rows of any length and stride (graphc.schedule.implicit.outer_product),
    where the target computes it as outer products, each element of B broadcast.
    max_kernel_buffers: neighbouring elementwise kernels are merged only while the merged
    kernel touches at most this many buffers (a GPU kernel keeps a pointer per buffer in
    registers); None: no limit.
    direct_conv_depth: an implicit GEMM (a convolution) whose depth (input channels times
    kernel taps) is at most this, whose output rows run contiguously, is marked a direct
    convolution (ir.Gemm.direct; graphc.schedule.direct_conv): weights broadcast over
    vectors of input pixels, no packing. 0: never. direct_conv_stride: the largest stride
    between a row's output pixels a direct convolution takes (graphc.schedule.direct_conv
    handles 1 and 2; llvm takes 2: its weight gradient reads the padded image's rows at
    stride 2 in place)."""

    narrow_gemm: int | None = None
    max_fused_depth: int = 48
    bucket_bytes: int = 25 << 20
    first_bucket_bytes: int | None = 1 << 20
    overlap_reductions: bool = True
    progress_reductions: bool = True
    implicit_gemm: bool = False
    implicit_gemm_or_specialize: bool = False
    implicit_deep_gemm: bool = False
    implicit_outer_gemm: bool = False
    max_kernel_buffers: int | None = None
    direct_conv_depth: int = 0
    direct_conv_stride: int = 1


# No target's preferences: what the numpy kernel runner and plain schedule_graph calls use.
DEFAULT_POLICY = SchedulePolicy()
