"""The kernel listing: one kernel a line with its kind, shape, what it fused, what it reads
and writes."""
from __future__ import annotations

from graphc.schedule import ir


def _acc(a: ir.Access) -> str:
    return f"b{a.buffer}"


def kernel_line(k: ir.Kernel) -> str:
    reads = ",".join(f"b{b}" for b in sorted(k.reads()))
    writes = ",".join(f"b{b}" for b in sorted(k.writes()))
    if isinstance(k, ir.Elementwise):
        what = f"elementwise {list(k.shape)} fused[{' '.join(k.fused)}]"
    elif isinstance(k, ir.Reduce):
        what = f"reduce/{k.op} {list(k.shape)} axes={list(k.axes)} fused[{' '.join(k.fused)}]"
    elif isinstance(k, ir.Gemm):
        ta = k.a.strides[-2] < k.a.strides[-1]
        tb = k.b.strides[-2] < k.b.strides[-1]
        what = (f"gemm batch={list(k.batch)} m={k.m} n={k.n} k={k.k}"
                f"{' A^T' if ta else ''}{' B^T' if tb else ''}"
                f"{f' alpha={k.alpha:g}' if k.alpha != 1 else ''}"
                f"{' out+=' if k.accumulate else ''}")
    elif isinstance(k, ir.Gather):
        what = f"gather axis={k.axis} x={list(k.x_shape)} idx={list(k.idx_shape)}"
    elif isinstance(k, ir.IndexCheck):
        what = f"index_check {list(k.shape)} in [0, {k.size}) for {k.what}"
    elif isinstance(k, ir.ValueCheck):
        what = f"value_check {list(k.shape)} >= 0: {k.message}"
    else:
        what = f"scatter_add axis={k.axis} out={list(k.out_shape)} idx={list(k.idx_shape)}"
    return f"{what}  {reads or '-'} -> {writes}"


def schedule_listing(schedule) -> str:
    lines = [f"{len(schedule.kernels)} kernels, {len(schedule.buffers)} buffers"]
    for i, k in enumerate(schedule.kernels):
        lines.append(f"  k{i:<3} {kernel_line(k)}")
    lines.append("buffers:")
    for b in schedule.buffers.values():
        where = ""
        if schedule.plan is not None and b.id in schedule.plan.offsets:
            where = f" @arena+{schedule.plan.offsets[b.id]}"
        lines.append(f"  {b}{where}")
    if schedule.plan is not None:
        lines.append(str(schedule.plan))
    return "\n".join(lines)
