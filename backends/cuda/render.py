"""Renders a kernel schedule as one CUDA C source: the prelude, then each kernel's
functions in order, and the launches that run them (a launch list, not host code: the CuPy
runtime and the emulator each walk it)."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from graphc.runtime.slots import SlotMap
from graphc.schedule import ir as kir
from graphc.backends.cuda.loop import AnyLaunch
from graphc.backends.cuda import softmax
from graphc.backends.cuda.kernels import EMITTERS
from graphc.backends.cuda.source import Writer

PRELUDE = (Path(__file__).parent / "prelude.cuh").read_text()


@dataclass(frozen=True)
class Rendered:
    """A schedule as CUDA: the source, its launches in order (and the host's reductions
    across processes between them), where each buffer goes, and the messages of the kernels
    that can fail."""

    source: str
    launches: tuple[AnyLaunch, ...]
    slots: SlotMap
    errors: dict[int, str]


_POINTER = re.compile(r"^  \w[\w ]*\* __restrict__ (b\d+) = ")


def _tidy(lines: list[str]) -> list[str]:
    """The kernels' lines without the pointers a function never uses (each function
    declares one per buffer of its kernel; a check reads only the indices)."""
    out: list[str] = []
    start = 0
    for i in range(len(lines) + 1):
        if i == len(lines) or (lines[i].startswith("extern") and i > start):
            function = lines[start:i]
            text = "\n".join(function)
            for line in function:
                m = _POINTER.match(line)
                if m is None or len(re.findall(rf"\b{m.group(1)}\b", text)) > 1:
                    out.append(line)
            start = i
    return out


def render(schedule: kir.Schedule) -> Rendered:
    w = Writer(schedule)
    parts = [PRELUDE]
    launches: list[AnyLaunch] = []
    # kernels after a check skip their work once it has failed (no check moves: plan)
    failed = [False] + list(itertools.accumulate((k.can_fail for k in schedule.kernels),
                                                 lambda a, b: a or b))
    for step in softmax.plan(schedule):
        if isinstance(step, softmax.RowSoftmax):
            lines, mine = softmax.emit_row_softmax(w, step, failed[step.last])
            heads = "\n".join(f"// kernel {i}: {schedule.kernels[i].header()}"
                               for i in step.members)
            parts.append(f"{heads}\n// (one kernel: the rows kept on chip)\n"
                         + "\n".join(_tidy(lines)))
            launches += mine
            continue
        i, k = step, schedule.kernels[step]
        try:
            emit = EMITTERS[k.kind]
        except KeyError:
            raise NotImplementedError(f"cuda: no lowering of the kernel kind {k.kind!r}") \
                from None
        lines, mine = emit(w, i, k, failed[i])
        if lines:
            parts.append(f"// kernel {i}: {k.header()}\n" + "\n".join(_tidy(lines)))
        launches += mine
    return Rendered("\n\n".join(parts) + "\n", tuple(launches), w.slots, dict(w.errors))
