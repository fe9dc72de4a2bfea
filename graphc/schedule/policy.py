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
    25 MiB: the reductions block (no overlap), so fewer calls are better (docs/distributed.md)."""

    narrow_gemm: int | None = None
    max_fused_depth: int = 48
    bucket_bytes: int = 25 << 20


# No target's preferences: what the numpy kernel runner and plain schedule_graph calls use.
DEFAULT_POLICY = SchedulePolicy()
