"""A symbolic plan's greedy placement of its temporaries (schedule.memory.place) written down
as straight-line Python from one binding's run of it: each temporary sits at 0 or at the end
of the temporary it sat on then, and a few comparisons of the new sizes (guards) prove that
the greedy placement would decide the same. Where a guard fails (sizes whose order or fit
differs, e.g. a batch of 1 where a bias outweighs an activation) the caller places them
the slow way.

Why the guards suffice: place() puts each temporary, in its order, at the lowest offset
where it overlaps no temporary placed before it that lives at the same time (the scan over
them sorted by offset finds exactly that one), and that lowest offset is 0 or the end of
one of them. So with the same order, a temporary's offset is the greedy one when it
overlaps none of those (feasible) and every lower candidate (0 and their ends) overlaps
one of them: the guards check one overlapping neighbour per lower candidate, and that
every other candidate stays at or above the offset."""
from __future__ import annotations

from typing import Callable, Sequence

from graphc.backends.llvm.int_code import function_of
from graphc.schedule.memory import ALIGN

Placer = Callable[[list[int]], "tuple[list[int], int] | None"]

# Above this (the sum over temporaries of (neighbours + 1) squared; writing takes about
# 2 us a unit) nothing is written: W1's step has 1,680, W5's 7,963 (~16 ms of a 1.7 s
# compile), an 8-layer MLP step 27,628, a 32-layer one 1.1 million (2.4 s).
MAX_GUARD_WORK = 10_000


def written_placement(nbytes: Sequence[int], neighbours: Sequence[Sequence[int]],
                      first: Sequence[int], width: int) -> Placer | None:
    """A function of the temporaries' bytes (in buffer order) giving each one's offset and
    the arena's bytes, or None where the guards fail; made from the placement of `nbytes`
    (any binding's sizes). `neighbours`, `first`, `width`: as _Placement's."""
    n = len(nbytes)
    # (the guards grow with the square of the temporaries alive at once: a 96-layer MLP's
    # step, whose activations live until its backward pass, would take seconds to write)
    if n == 0 or sum((len(ns) + 1) ** 2 for ns in neighbours) > MAX_GUARD_WORK:
        return None
    size = [-(-b // ALIGN) * ALIGN if b > 0 else ALIGN for b in nbytes]
    keys = [first[i] - b * width for i, b in enumerate(nbytes)]
    order = sorted(range(n), key=keys.__getitem__)
    lines = [f"a{i} = (s[{i}] + {ALIGN - 1}) // {ALIGN} * {ALIGN} or {ALIGN}"
             for i in range(n)]
    guards = []
    for x, y in zip(order, order[1:]):  # the same order (sorted is stable: ties by index)
        less = "<=" if x < y else "<"
        guards.append(f"{first[x]} - s[{x}] * {width} {less} {first[y]} - s[{y}] * {width}")
    offset = [0] * n
    end = [0] * n
    placed: set[int] = set()
    for i in order:
        earlier = [j for j in neighbours[i] if j in placed]
        at, on = 0, -1  # the greedy's offset, and whose end it is (-1: 0)
        for j in sorted(earlier, key=lambda j: (offset[j], end[j])):
            if at + size[i] <= offset[j]:
                break
            if end[j] > at:
                at, on = end[j], j
        offset[i], end[i] = at, at + size[i]
        placed.add(i)
        lines.append(f"o{i} = {'0' if on < 0 else f'e{on}'}")
        lines.append(f"e{i} = o{i} + a{i}")
        mine = []
        for j in earlier:  # feasible: clear of each earlier neighbour (the side it was)
            mine.append(f"o{i} + a{i} <= o{j}" if at + size[i] <= offset[j]
                        else f"e{j} <= o{i}")
        # lowest: every lower candidate overlaps one of them, every other stays above
        for c, j in ([] if on < 0 else [(0, -1)] + [(end[j], j) for j in earlier]):
            name = "0" if j < 0 else f"e{j}"
            if c >= at:
                if j != on:
                    mine.append(f"{name} >= o{i}")
                continue
            blocker = next(j for j in earlier if offset[j] < c + size[i] and end[j] > c)
            mine.append(f"o{blocker} < {name} + a{i} and e{blocker} > {name}")
        if mine:
            lines.append("if not (" + " and ".join(mine) + "): return None")
    if guards:
        lines.insert(0, "if not (" + " and ".join(guards) + "): return None")
    arena = f"max({', '.join(f'e{i}' for i in range(n))})" if n > 1 else "e0"
    lines.append(f"return [{', '.join(f'o{i}' for i in range(n))}], {arena}")
    return function_of("placement", "s", lines)
