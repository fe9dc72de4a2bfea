"""A Loop kernel on the cuda backend: a host loop over the body's kernels. The body's kernels
are rendered once, reading a pointer table of the body's own; each step launches them with
that step's table (a sequence's slice at step t, a carry's half of its double buffer), and
the tables of every step are made, from the outer table, before the first launch."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np

from graphc.schedule import ir as kir
from graphc.backends.cuda.collective import Collective
from graphc.backends.cuda.source import Launch, Writer

# How a body slot's pointer is found at each step (LoopLaunch.binds):
FIXED, STEP, CARRY_IN, CARRY_OUT = range(4)


@dataclass(frozen=True)
class LoopLaunch:
    """The launches of a loop's body, run `length` times. binds: per body slot, (slot, how,
    outer slot, byte offset, outer slot 2, offset 2, outer slot 3, offset 3, byte stride):
    FIXED is outer 1; STEP outer 1 + t * stride; CARRY_IN at step 0 outer 1 (init), then
    the buffer the step before wrote; CARRY_OUT outer 1 (final) at the steps an even number
    of steps before the last, else outer 2 (spare). (For CARRY_IN outers 2, 3 are final,
    spare.)"""

    kernel: int
    length: int
    reverse: bool
    slots: int
    binds: tuple[tuple[int, ...], ...]
    body: tuple["AnyLaunch", ...]
    can_fail: bool


AnyLaunch = Union[Launch, LoopLaunch, Collective]


def _where(w: Writer, bid: int) -> tuple[int, int]:
    """(slot, byte offset) of an outer buffer: its own slot, or the arena's."""
    if w.schedule.buffers[bid].role == "temp":
        return w.slots.arena_slot, w.slots.offsets.get(bid, 0)
    return w.slots.slot[bid], 0


def _renamed(lines: list[str], launches: list[Any], index: int, suffix: str
             ) -> tuple[list[str], list[Any]]:
    """A body kernel's text and launches with its names (k<index>_...) made its own."""
    pattern = re.compile(rf"\bk{index}_(\w+)")

    def name(text: str) -> str:
        return pattern.sub(lambda m: f"{m.group(0)}_{suffix}", text)

    def launch(L: Any) -> Any:
        if isinstance(L, LoopLaunch):  # (a nested loop's body: its text is renamed too)
            return dataclasses.replace(L, body=tuple(launch(x) for x in L.body))
        return dataclasses.replace(L, name=name(L.name))
    return [name(ln) for ln in lines], [launch(L) for L in launches]


def emit_loop(w: Writer, index: int, k: kir.Loop, guard: bool) -> tuple[list[str], list[Any]]:
    from graphc.backends.cuda.kernels import EMITTERS
    path = w.loop_path + f"L{index if w.position is None else w.position}_"
    body = Writer(k.body)
    body.loop_path = path
    lines: list[str] = []
    launches: list[Any] = []
    for j, kernel in enumerate(k.body.kernels):
        body.position = j
        # (index: a failing body kernel reports the loop's status, whose message is the
        # loop's error)
        mine, theirs = EMITTERS[kernel.kind](body, index, kernel, guard or k.can_fail)
        mine, theirs = _renamed(mine, theirs, index, f"{path}{j}")
        if mine:
            lines += [f"// loop kernel {index}, body kernel {j}: {kernel.header()}"] + mine
        launches += theirs
    error = k.error()
    if error is not None:
        w.errors[index] = error[1]
    binds = []
    slot = body.slots.slot
    for c in k.carries:
        binds.append((slot[c.inside], CARRY_IN, *_where(w, c.init), *_where(w, c.final),
                      *_where(w, c.spare), 0))
        binds.append((slot[c.out], CARRY_OUT, *_where(w, c.final), *_where(w, c.spare), 0, 0,
                      0))
    for s in k.xs + k.ys:
        binds.append((slot[s.inner], STEP, *_where(w, s.outer), 0, 0, 0, 0,
                      k.body.buffers[s.inner].nbytes))
    for v in k.invariants:
        binds.append((slot[v.inner], FIXED, *_where(w, v.outer), 0, 0, 0, 0, 0))
    if k.arena >= 0:
        binds.append((body.slots.arena_slot, FIXED, *_where(w, k.arena), 0, 0, 0, 0, 0))
    loop = LoopLaunch(index, k.length, k.reverse, body.slots.count, tuple(binds),
                      tuple(launches), k.can_fail)
    return lines, [loop]


def step_tables(loop: LoopLaunch, outer: np.ndarray) -> np.ndarray:
    """The body's pointer table at every step, (length, slots) uint64, from the values of
    the outer table."""
    n = loop.length
    rows = np.zeros((n, loop.slots), np.uint64)
    step = np.arange(n, dtype=np.int64)
    t = (n - 1 - step) if loop.reverse else step
    writes_final = (n - 1 - step) % 2 == 0
    for slot, how, s1, o1, s2, o2, s3, o3, stride in loop.binds:
        a = int(outer[s1]) + o1
        if how == FIXED:
            rows[:, slot] = a
        elif how == STEP:
            rows[:, slot] = (a + t * stride).astype(np.uint64)
        elif how == CARRY_OUT:
            rows[:, slot] = np.where(writes_final, a, int(outer[s2]) + o2).astype(np.uint64)
        else:
            before = np.where(writes_final, int(outer[s3]) + o3, int(outer[s2]) + o2)
            rows[:, slot] = np.where(step == 0, a, before).astype(np.uint64)
    return rows


def launch_meta(launches: Sequence[AnyLaunch]) -> list[Any]:
    """Launches (loops with their bodies, host reductions) as JSON-able values, for the
    disk cache."""
    out: list[Any] = []
    for L in launches:
        if isinstance(L, Collective):
            out.append(L.meta())
        elif isinstance(L, LoopLaunch):
            out.append(["loop", L.kernel, L.length, L.reverse, L.slots,
                        [list(b) for b in L.binds], launch_meta(L.body), L.can_fail])
        else:
            out.append([L.name, L.kernel, list(L.grid), L.block, L.sync, L.can_fail])
    return out


def launches_from(meta: list[Any]) -> tuple[AnyLaunch, ...]:
    out: list[AnyLaunch] = []
    for m in meta:
        if isinstance(m, dict):
            out.append(Collective.from_meta(m))
        elif m[0] == "loop":
            _, kernel, length, reverse, slots, binds, body, can_fail = m
            out.append(LoopLaunch(int(kernel), int(length), bool(reverse), int(slots),
                                  tuple(tuple(int(v) for v in b) for b in binds),
                                  launches_from(body), bool(can_fail)))
        else:
            n, k, g, b, s, f = m
            out.append(Launch(str(n), int(k), (int(g[0]), int(g[1]), int(g[2])), int(b),
                              bool(s), bool(f)))
    return tuple(out)


def flat_launches(launches: Sequence[AnyLaunch]) -> list[Launch]:
    """Every kernel launch, loops' bodies included (each function once)."""
    out: list[Launch] = []
    for L in launches:
        if isinstance(L, LoopLaunch):
            out += flat_launches(L.body)
        elif isinstance(L, Launch):
            out.append(L)
    return out
