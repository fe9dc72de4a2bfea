"""The pieces every CUDA kernel template is written with: buffer pointers, index arithmetic
and kernel bodies (core ops spelled by backends/cuda/scalar.py) as C text."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from graphc.runtime.slots import SlotMap
from graphc.schedule import ir as kir
from graphc.schedule.scalar import lower_expr
from graphc.backends.cuda import scalar
from graphc.backends.cuda.scalar import constant, ctype

BLOCK = 256  # threads per block of every kernel (8 warps)
WARP = 32
MAX_GRID = 4096  # blocks of a grid-stride loop: enough to fill any current GPU


@dataclass(frozen=True)
class Launch:
    """One kernel launch: `name` in the source, its grid and block, and whether its threads
    meet at barriers or warp operations (the emulator then runs them as fibers)."""

    name: str
    kernel: int  # the index of the IR kernel it computes
    grid: tuple[int, int, int]
    block: int
    sync: bool
    can_fail: bool


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def kernel_name(index: int, kernel: kir.Kernel) -> str:
    """k<index>_<kind>_<the graph ops it computes>, a C identifier."""
    words: tuple[str, ...] = getattr(kernel, "fused", ())
    what = getattr(kernel, "what", "")
    if not words and what:
        words = (str(what).split(" ")[0],)
    op = getattr(kernel, "op", "")
    parts = [f"k{index}", kernel.kind] + ([op] if op else []) + list(words[:4])
    return re.sub(r"[^0-9A-Za-z_]", "_", "_".join(parts))[:80]


def address(access: kir.Access, idx: list[str]) -> str:
    """offset + sum(stride * index): the flat element an access reads at `idx`."""
    terms = [f"{s}LL * {i}" if s != 1 else i for s, i in zip(access.strides, idx) if s]
    if access.offset or not terms:
        terms.append(f"{access.offset}LL")
    return " + ".join(terms)


def decompose(flat: str, shape: tuple[int, ...], names: list[str], lines: list[str],
              indent: str) -> None:
    """Lines that split the flat row-major position `flat` over `shape` into `names`."""
    if not shape:
        return
    rest = f"{names[0]}_rest"
    lines.append(f"{indent}long long {rest} = {flat};")
    for axis in range(len(shape) - 1, 0, -1):
        lines.append(f"{indent}const long long {names[axis]} = {rest} % {shape[axis]}LL; "
                     f"{rest} /= {shape[axis]}LL;")
    lines.append(f"{indent}const long long {names[0]} = {rest};")


class Writer:
    """Writes the C text of one schedule's kernels: buffers by slot (temporaries at their
    offset in the arena), bodies lowered to core ops once (shared nodes stay shared)."""

    def __init__(self, schedule: kir.Schedule) -> None:
        self.schedule = schedule
        self.slots = SlotMap(schedule)
        self._lowered: dict[int, kir.Expr] = {}
        self._memo: dict[int, kir.Expr] = {}
        self._count = 0
        self.errors: dict[int, str] = {}  # kernel index -> the message of its failure
        # in a loop's body (backends/cuda/loop.py): the loops it is in, and the position of
        # the kernel being written (its names are made unique with them)
        self.loop_path = ""
        self.position: int | None = None

    def dtype(self, bid: int) -> np.dtype:
        return np.dtype(self.schedule.buffers[bid].dtype)

    def pointers(self, kernel: kir.Kernel, indent: str = "  ") -> list[str]:
        """Declarations of a typed pointer per buffer the kernel touches."""
        lines = []
        for bid in sorted(kernel.reads() | kernel.writes()):
            t = ctype(self.dtype(bid))
            if self.schedule.buffers[bid].role == "temp":
                where = (f"(char*)slots[{self.slots.arena_slot}] + "
                         f"{self.slots.offsets.get(bid, 0)}")
            else:
                where = f"slots[{self.slots.slot[bid]}]"
            lines.append(f"{indent}{t}* __restrict__ b{bid} = ({t}*)({where});")
        return lines

    def ref(self, bid: int, flat: str) -> str:
        """Element `flat` of buffer `bid`, its index through GC_IX and the element through
        GC_GLOBAL (the identity on a GPU; the emulator checks the index against the
        buffer's size and the writes for races)."""
        return f"GC_GLOBAL(b{bid}[GC_IX({flat}, {self.schedule.buffers[bid].size})])"

    def at(self, access: kir.Access, idx: list[str]) -> str:
        """The element an access reaches at the iteration indices `idx`."""
        return self.ref(access.buffer, address(access, idx))

    def fresh(self) -> str:
        self._count += 1
        return f"v{self._count}"

    def lowered(self, body: kir.Expr) -> kir.Expr:
        """`body` lowered to core ops (once: shared nodes stay shared)."""
        e = self._lowered.get(id(body))
        if e is None:
            e = self._lowered[id(body)] = lower_expr(body, self._memo)
        return e

    def value(self, body: kir.Expr, idx: list[str], lines: list[str], indent: str,
              memo: dict[int, str],
              known: Sequence[tuple[kir.Expr, str]] = ()) -> str:
        """Lines computing `body` at the iteration indices `idx`; the name of its value.
        A guarded load reads memory only inside its bounds. `known`: lowered
        sub-expressions whose values are already held (by C name): nothing below them is
        computed."""
        e = self.lowered(body)
        for x in _postorder_known(e, known, memo):
            if id(x) in memo:
                continue
            if isinstance(x, kir.Const):
                memo[id(x)] = constant(x.dtype, x.value)
                continue
            if isinstance(x, kir.Load):
                at = f"{self.at(x.access, idx)}"
                if x.guard is not None:
                    inside = " && ".join(self._bound(b, idx) for b in x.guard.bounds) or "true"
                    text = f"({inside}) ? {at} : {memo[id(x.guard.otherwise)]}"
                else:
                    text = at
            elif isinstance(x, kir.Index):
                text = f"({ctype(x.dtype)}){idx[x.axis]}"
            else:
                text = scalar.spell(x, [memo[id(a)] for a in x.args])
            name = self.fresh()
            lines.append(f"{indent}const {ctype(x.dtype)} {name} = {text};")
            memo[id(x)] = name
        return memo[id(e)]

    @staticmethod
    def _bound(bound: kir.Bound, idx: list[str]) -> str:
        terms = [f"{scale}LL * {idx[axis]}" for axis, scale in bound.terms]
        at = " + ".join(terms + [f"{bound.offset}LL"])
        return f"({bound.lo}LL <= {at} && {at} < {bound.hi}LL)"


def _postorder_known(expr: kir.Expr, known: Sequence[tuple[kir.Expr, str]],
                     memo: dict[int, str]) -> Iterator[kir.Expr]:
    """kir.postorder, except that a node equal to one of `known` gets its name in `memo`
    and its sub-expressions are not visited."""
    if not known:
        yield from kir.postorder(expr)
        return
    done: set[int] = set()
    stack: list[tuple[kir.Expr, bool]] = [(expr, False)]
    while stack:
        e, ready = stack.pop()
        if id(e) in done:
            continue
        if not ready and id(e) not in memo:
            name = next((n for k, n in known if k is e or (type(k) is type(e) and k == e)),
                        None)
            if name is not None:
                memo[id(e)] = name
        kids = () if id(e) in memo else kir.children(e)
        if kids and not ready:
            stack.append((e, True))
            stack.extend((k, False) for k in reversed(kids) if id(k) not in done)
            continue
        done.add(id(e))
        yield e
