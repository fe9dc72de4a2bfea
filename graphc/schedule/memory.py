"""The buffer plan: temporaries share one arena, reusing memory once a buffer is dead."""
from __future__ import annotations

from dataclasses import dataclass


ALIGN = 64  # bytes: a cache line, and room for 512-bit vector loads


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class MemoryPlan:
    offsets: dict[int, int]  # temp buffer id -> byte offset in the arena
    lifetimes: dict[int, tuple[int, int]]  # buffer id -> (first kernel, last kernel)
    arena_bytes: int  # peak intermediate memory with reuse
    unshared_bytes: int  # what the temporaries would take without reuse

    def __str__(self) -> str:
        def n(x: object) -> str:  # (a loop body's plan with symbolic sizes: expressions)
            return f"{x:,}" if isinstance(x, int) else str(x)
        return (f"memory plan: {len(self.offsets)} temporaries, arena {n(self.arena_bytes)} B "
                f"(without reuse {n(self.unshared_bytes)} B)")


def lifetimes(schedule) -> dict[int, tuple[int, int]]:
    """For each buffer, the first kernel that touches it and the last."""
    spans: dict[int, tuple[int, int]] = {}
    for k, kernel in enumerate(schedule.kernels):
        for bid in kernel.reads() | kernel.writes():
            first, _ = spans.get(bid, (k, k))
            spans[bid] = (first, k)
    return spans


def plan_memory(schedule, spans: dict[int, tuple[int, int]] | None = None) -> MemoryPlan:
    """Greedy placement, largest temporaries first (then in order of first use): each takes
    the lowest offset free of every temporary placed so far whose lifetime overlaps its
    own. Placed in order of first use, small early buffers fragmented the arena for the
    large ones after them (W5: 10.7 MB for 6.9 MB ever live at once; by size: 7.7 MB, W6
    111 -> 92 MB). `spans`: the schedule's lifetimes, where the caller has them (they do
    not depend on sizes)."""
    spans = lifetimes(schedule) if spans is None else spans
    temps = [(b.id, b.nbytes) for b in schedule.buffers.values()
             if b.role == "temp" and b.id in spans]
    return place(temps, spans)


def place(temps: list[tuple[int, int]], spans: dict[int, tuple[int, int]]) -> MemoryPlan:
    """plan_memory's placement of `temps` ((buffer id, bytes), in buffer order), from sizes
    alone: a symbolic program's binding has its numbers, not Buffer objects."""
    # (a symbolic program places its temporaries anew for every batch size: kept lean)
    order = sorted(temps, key=lambda t: (-t[1], spans[t[0]][0]))
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    offsets: dict[int, int] = {}
    arena = 0
    for bid, nbytes in order:
        first, last = spans[bid]
        size = _aligned(nbytes if nbytes > 0 else 1)
        busy = [(o, e) for o, e, lo, hi in placed if hi >= first and lo <= last]
        busy.sort()
        offset = 0
        for o, e in busy:
            if offset + size <= o:
                break
            if e > offset:
                offset = e
        offsets[bid] = offset
        placed.append((offset, offset + size, first, last))
        if offset + size > arena:
            arena = offset + size
    unshared = sum(_aligned(max(nbytes, 1)) for _, nbytes in temps)
    return MemoryPlan(offsets, spans, arena, unshared)
