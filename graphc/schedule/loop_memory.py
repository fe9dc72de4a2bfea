"""The memory plan of a loop body whose sizes are symbols: offsets that are size expressions,
right for every binding, so that the Loop kernel's code computes them from the sizes it is
given and its body's arena is one more temporary of the outer plan."""
from __future__ import annotations

from typing import Mapping, cast

from graphc import sizes
from graphc.schedule.memory import ALIGN, MemoryPlan, lifetimes, plan_memory


def aligned(nbytes: sizes.Dim) -> sizes.Dim:
    """A byte count rounded up to ALIGN for every binding: each coefficient rounded up (a
    polynomial never below the size, and a multiple of ALIGN at any values of its symbols,
    sizes being >= 0). An atom such as a floordiv is rounded the same way."""
    if isinstance(nbytes, int):
        return (max(nbytes, 1) + ALIGN - 1) // ALIGN * ALIGN
    total: sizes.Dim = 0
    for mono, coeff in nbytes.terms:
        term: sizes.Dim = (coeff + ALIGN - 1) // ALIGN * ALIGN if coeff > 0 else 0
        for atom in mono:
            term = sizes.mul(term, sizes.Size.of(atom))
        total = sizes.add(total, term)
    return total if not isinstance(total, int) or total > 0 else ALIGN


def _clear(offset: sizes.Dim, size: sizes.Dim, other: tuple[sizes.Dim, sizes.Dim]) -> bool:
    """Whether [offset, offset + size) misses `other` (start, end) for every binding."""
    start, end = other
    return sizes._never_below(offset, end) or sizes._never_below(start, sizes.add(offset, size))


def place_symbolic(nbytes: Mapping[int, sizes.Dim], spans: Mapping[int, tuple[int, int]]
                   ) -> MemoryPlan:
    """First fit with sizes as expressions, in order of first use: each temporary takes the
    first candidate offset (0, then the end of each temporary placed so far whose lifetime
    overlaps its own) that is provably clear of all of those for every binding, else the
    highest of their ends (always clear). Temporaries used by one kernel never share bytes,
    as in plan_memory."""
    order = sorted(nbytes, key=lambda b: (spans[b][0], b))
    placed: list[tuple[sizes.Dim, sizes.Dim, int, int]] = []  # (offset, end, first, last)
    offsets: dict[int, sizes.Dim] = {}
    arena: sizes.Dim = 0
    unshared: sizes.Dim = 0
    for bid in order:
        first, last = spans[bid]
        size = aligned(nbytes[bid])
        unshared = sizes.add(unshared, size)
        busy = [(o, e) for o, e, lo, hi in placed if hi >= first and lo <= last]
        chosen: sizes.Dim | None = None
        for candidate in [0] + [e for _, e in busy]:
            if all(_clear(candidate, size, other) for other in busy):
                chosen = candidate
                break
        if chosen is None:
            chosen = 0
            for _, e in busy:
                chosen = sizes.maximum(chosen, e)
        end = sizes.add(chosen, size)
        offsets[bid] = chosen
        placed.append((chosen, end, first, last))
        arena = sizes.maximum(arena, end)
    return MemoryPlan(cast("dict[int, int]", offsets), dict(spans), cast(int, arena),
                      cast(int, unshared))


def body_plan(schedule) -> MemoryPlan:
    """A loop body's plan: plan_memory's where its temporaries' sizes are numbers,
    place_symbolic's where any is a symbol (the same placement for every binding)."""
    spans = lifetimes(schedule)
    temps = {b.id: b.nbytes for b in schedule.buffers.values()
             if b.role == "temp" and b.id in spans}
    if all(isinstance(n, int) for n in temps.values()):
        return plan_memory(schedule, spans)
    return place_symbolic(temps, spans)


__all__ = ["aligned", "body_plan", "place_symbolic"]
