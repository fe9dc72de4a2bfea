"""Softmax rows kept on chip: the neutral schedule computes softmax, log_softmax and
cross-entropy as a row max, a row sum of exp(x - max) and an elementwise kernel using both,
each reading the row from global memory. `plan` finds that chain and `emit_row_softmax`
computes it as one kernel: a warp (rows up to 1024 floats) or a block (up to 4096) per row
holding the row in registers, or, for longer rows, a block per row with the online softmax
(running max and rescaled sum in one pass) and a second pass for the elementwise part."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from graphc.schedule import ir as kir
from graphc.backends.cuda.scalar import constant, ctype
from graphc.backends.cuda.source import BLOCK, WARP, Launch, Writer, cdiv, decompose, size

# Bytes of a row a thread holds in registers: 128 a lane of a warp (rows up to 1024 floats,
# 512 doubles a warp), 64 a thread of a block (4096 floats, 2048 doubles); longer rows are
# online. (More made ptxas use over 200 registers for doubles: one block a multiprocessor.)
WARP_KEEP_BYTES = 128
BLOCK_KEEP_BYTES = 64
WINDOW = 8  # how many kernels apart the chain's members may be
_NO_MOVE = ("loop", "all_reduce")  # host steps: nothing moves past them


@dataclass(frozen=True)
class RowSoftmax:
    """Kernels `first` (row max), `second` (row sum of exp(x - max)) and, if found, `third`
    (an elementwise kernel over the same space using both) computed by one kernel, launched
    where the last of them was. write_max / write_sum: whether a kernel outside the chain
    reads the row max / sum, so they still go to memory."""

    first: int
    second: int
    third: int | None
    write_max: bool
    write_sum: bool

    @property
    def members(self) -> tuple[int, ...]:
        return (self.first, self.second) + (() if self.third is None else (self.third,))

    @property
    def last(self) -> int:
        return self.members[-1]


Step = Union[int, RowSoftmax]  # a kernel of the schedule, or a fused chain


def _footprint(s: kir.Schedule, bid: int) -> tuple[int, int, int]:
    """(space, first byte, end): temporaries share the arena (space -1), so two buffers
    conflict when their bytes overlap, not only when their ids are equal."""
    b = s.buffers[bid]
    if b.role == "temp" and s.plan is not None:
        start = s.plan.offsets.get(bid, 0)
        return -1, start, start + b.nbytes
    return bid, 0, b.nbytes


def _overlap(s: kir.Schedule, a: set[int], b: set[int]) -> bool:
    fa = [_footprint(s, x) for x in a]
    return any(x[0] == y[0] and x[1] < y[2] and y[1] < x[2]
               for x in fa for y in (_footprint(s, z) for z in b))


def _conflict(s: kir.Schedule, k: kir.Kernel, other: kir.Kernel) -> bool:
    """Whether `k` and `other` may not swap places."""
    if other.kind in _NO_MOVE or k.kind in _NO_MOVE:
        return True
    return (_overlap(s, k.writes(), other.reads() | other.writes())
            or _overlap(s, k.reads(), other.writes()))


def _row_max(k: kir.Kernel) -> bool:
    return (isinstance(k, kir.Reduce) and k.op == "max" and np.dtype(k.out_dtype).kind == "f"
            and np.dtype(k.body.dtype) == np.dtype(k.out_dtype) and size(k.shape) > 0
            and sum(1 for _ in kir.postorder(k.body)) <= 64
            and k.out.buffer not in {ld.access.buffer for ld in kir.expr_loads(k.body)})


def sum_of_exp(first: kir.Reduce, k: kir.Kernel) -> bool:
    """Whether `k` is the row sum of exp(x - max) over the rows `first` takes the max of."""
    if not (isinstance(k, kir.Reduce) and k.op == "sum" and k.shape == first.shape
            and k.axes == first.axes and np.dtype(k.out_dtype) == np.dtype(first.out_dtype)):
        return False
    dt = np.dtype(first.out_dtype)
    m = kir.Load(first.out, dt)
    want = kir.Apply("exp", (kir.Apply("sub", (first.body, m), dt),), dt)
    return bool(k.body == want)


def _uses_row(s: kir.Schedule, first: kir.Reduce, second: kir.Reduce, k: kir.Kernel) -> bool:
    """Whether `k` is an elementwise kernel over the rows' space whose reads of the max and
    the sum are the row's own, and whose stores touch nothing the chain reads."""
    if not (isinstance(k, kir.Elementwise) and k.shape == first.shape
            and all(st.accumulate == "" for st in k.stores)):
        return False
    mine = {first.out: np.dtype(first.out_dtype), second.out: np.dtype(second.out_dtype)}
    used = False
    for body in k.bodies():
        for ld in kir.expr_loads(body):
            if _overlap(s, {ld.access.buffer}, {first.out.buffer, second.out.buffer}):
                if ld.access not in mine or ld.guard is not None:
                    return False
                used = True
    chain_reads = first.reads() | second.reads() | k.reads()
    return used and not _overlap(s, k.writes(), chain_reads | first.writes() | second.writes())


def _find(s: kir.Schedule, i: int, taken: set[int]) -> RowSoftmax | None:
    ks = s.kernels
    first = ks[i]
    if not _row_max(first):
        return None
    assert isinstance(first, kir.Reduce)
    second: int | None = None
    for j in range(i + 1, min(len(ks), i + 1 + WINDOW)):
        if j not in taken and sum_of_exp(first, ks[j]):
            second = j
            break
        if j in taken or _conflict(s, first, ks[j]):
            return None
    if second is None:
        return None
    k2 = ks[second]
    assert isinstance(k2, kir.Reduce)
    third: int | None = None
    for p in range(second + 1, min(len(ks), second + 1 + WINDOW)):
        if p not in taken and _uses_row(s, first, k2, ks[p]):
            # (kernels between the sum and here must let the max and the sum move past)
            if all(not _conflict(s, first, ks[q]) and not _conflict(s, k2, ks[q])
                   for q in range(second + 1, p)):
                third = p
            break
        if p in taken or _conflict(s, first, ks[p]) or _conflict(s, k2, ks[p]):
            break
    members = {i, second} | ({third} if third is not None else set())

    def read_elsewhere(bid: int) -> bool:
        return s.buffers[bid].role != "temp" or any(
            bid in k.reads() for q, k in enumerate(ks) if q not in members)
    return RowSoftmax(i, second, third, read_elsewhere(first.out.buffer),
                      read_elsewhere(k2.out.buffer))


def plan(s: kir.Schedule) -> list[Step]:
    """The schedule's kernels in launch order, each softmax chain as one step where its
    last member was (what lies between was checked to commute with the moved members)."""
    groups: dict[int, RowSoftmax] = {}
    taken: set[int] = set()
    for i in range(len(s.kernels)):
        if i in taken:
            continue
        g = _find(s, i, taken)
        if g is not None:
            groups[g.last] = g
            taken.update(g.members)
    return [groups[i] if i in groups else i for i in range(len(s.kernels))
            if i in groups or i not in taken]


def layout(length: int, dtype: np.dtype) -> tuple[int, int]:
    """(threads a row, values of the row each holds; 0: none, the online softmax)."""
    item = np.dtype(dtype).itemsize
    if length <= WARP * (WARP_KEEP_BYTES // item):
        return WARP, cdiv(length, WARP)
    if length <= BLOCK * (BLOCK_KEEP_BYTES // item):
        return BLOCK, cdiv(length, BLOCK)
    return BLOCK, 0


# ---- the kernel ----------------------------------------------------------------------------

def _names(k: kir.Reduce) -> tuple[list[int], tuple[int, ...], tuple[int, ...], list[str]]:
    kept = [a for a in range(len(k.shape)) if a not in k.axes]
    names = [f"o{a}" if a in kept else f"r{a}" for a in range(len(k.shape))]
    return (kept, tuple(k.shape[a] for a in kept), tuple(k.shape[a] for a in k.axes), names)


def emit_row_softmax(w: Writer, g: RowSoftmax, guard: bool) -> tuple[list[str], list[Launch]]:
    ks = w.schedule.kernels
    first, second = ks[g.first], ks[g.second]
    third = ks[g.third] if g.third is not None else None
    assert isinstance(first, kir.Reduce) and isinstance(second, kir.Reduce)
    dt = np.dtype(first.out_dtype)
    vt = ctype(dt)
    kept, kept_shape, red_shape, names = _names(first)
    rows, length = size(kept_shape), size(red_shape)
    words = list(getattr(third, "fused", ())[:3]) if third is not None else ["max", "sum"]
    name = f"k{g.first}_softmax_rows_" + "_".join(words)
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in name)[:80]

    lines = [f'extern "C" __global__ void __launch_bounds__({BLOCK}, 1)',
             f"{name}(void* const* __restrict__ slots, int* __restrict__ status) {{"]
    if guard:
        lines.append("  if (*(volatile int*)status) return;")
    seen: set[str] = set()
    for k in (first, second) + ((third,) if third is not None else ()):
        for line in w.pointers(k):
            if line not in seen:
                seen.add(line)
                lines.append(line)

    x_expr, m_load = w.lowered(first.body), w.lowered(kir.Load(first.out, dt))
    s_load = w.lowered(kir.Load(second.out, dt))
    ninf = constant(dt, -np.inf)
    kept_names = [names[a] for a in kept]
    red_names = [names[a] for a in first.axes]

    def rescale(a: str, b: str, indent: str) -> str:
        """exp(a - b), spelled as the sum's own body spells it."""
        return w.value(second.body, [""] * len(names), lines, indent, {},
                       known=[(x_expr, a), (m_load, b)])

    def element(j: str, indent: str, x: str | None) -> None:
        """The elementwise part at position j of the row (x: the row value, if held)."""
        if third is None:
            return
        assert isinstance(third, kir.Elementwise)
        decompose(j, red_shape, red_names, lines, indent)
        known = [(m_load, "m"), (s_load, "s")] + ([(x_expr, x)] if x else [])
        memo: dict[int, str] = {}
        values = [w.value(st.value, names, lines, indent, memo, known=known)
                  for st in third.stores]
        for st, v in zip(third.stores, values):
            lines.append(f"{indent}{w.at(st.access, names)} = {v};")

    threads, keep = layout(length, dt)
    per_block = threads == BLOCK
    if per_block:
        lines += ["  const long long row = blockIdx.x;", "  const int lane = threadIdx.x;"]
    else:
        lines += [f"  const long long row = (long long)blockIdx.x * {BLOCK // WARP} + "
                  "threadIdx.x / 32;", "  const int lane = threadIdx.x % 32;",
                  f"  if (row >= {rows}LL) return;  // (whole warps leave together)"]
    decompose("row", kept_shape, kept_names, lines, "  ")

    def across(indent: str, online: bool) -> None:
        """Every thread of the row gets the row's max m (and, online, its sum s): butterfly
        shuffles (a + b == b + a, so every lane ends with the same bits), then the warps'
        results through shared memory, combined in one order by every thread."""
        def pair(mo: str, so: str | None, ind: str) -> None:
            if so is None:
                lines.append(f"{ind}m = gc_maximum(m, {mo});")
                return
            lines.append(f"{ind}{{ const {vt} mn = gc_maximum(m, {mo});")
            r1, r2 = rescale("m", "mn", ind + "  "), rescale(mo, "mn", ind + "  ")
            lines.append(f"{ind}  s = (m == mn ? s : s * {r1}) + ({mo} == mn ? {so} : "
                         f"{so} * {r2}); m = mn; }}")
        lines.append(f"{indent}for (int d = 16; d > 0; d >>= 1) {{")
        lines.append(f"{indent}  const {vt} mo = __shfl_xor_sync(0xffffffffu, m, d);")
        if online:
            lines.append(f"{indent}  const {vt} so = __shfl_xor_sync(0xffffffffu, s, d);")
        pair("mo", "so" if online else None, indent + "  ")
        lines.append(f"{indent}}}")
        if not per_block:
            return
        warps = BLOCK // WARP
        lines.append(f"{indent}if (lane % 32 == 0) {{ GC_SHARED(part_m[lane / 32]) = m;"
                     + (" GC_SHARED(part_s[lane / 32]) = s;" if online else "") + " }")
        lines.append(f"{indent}__syncthreads();")
        lines.append(f"{indent}m = GC_SHARED(part_m[0]);"
                     + (" s = GC_SHARED(part_s[0]);" if online else ""))
        lines.append(f"{indent}for (int q = 1; q < {warps}; ++q) {{")
        lines.append(f"{indent}  const {vt} mo = GC_SHARED(part_m[q]);")
        if online:
            lines.append(f"{indent}  const {vt} so = GC_SHARED(part_s[q]);")
        pair("mo", "so" if online else None, indent + "  ")
        lines.append(f"{indent}}}")

    def sum_across(indent: str) -> None:
        lines.append(f"{indent}for (int d = 16; d > 0; d >>= 1) "
                     f"s = s + __shfl_xor_sync(0xffffffffu, s, d);")
        if per_block:
            lines.extend([f"{indent}if (lane % 32 == 0) GC_SHARED(part_s[lane / 32]) = s;",
                      f"{indent}__syncthreads();", f"{indent}s = GC_SHARED(part_s[0]);",
                      f"{indent}for (int q = 1; q < {BLOCK // WARP}; ++q) "
                      f"s = s + GC_SHARED(part_s[q]);"])

    if per_block:
        lines += [f"  __shared__ {vt} part_m[{BLOCK // WARP}];",
                  f"  __shared__ {vt} part_s[{BLOCK // WARP}];"]
    zero = constant(dt, 0)
    online = keep == 0
    if online:
        # one pass: m the running max, s the sum of exp(x - m), rescaled when m grows
        # (-inf elements add 0, so a row starting with -inf does not make s nan)
        lines += [f"  {vt} m = {ninf};", f"  {vt} s = {zero};",
                  f"  for (long long j = lane; j < {length}LL; j += {threads}) {{"]
        decompose("j", red_shape, red_names, lines, "    ")
        xv = w.value(first.body, names, lines, "    ", {})
        lines.append(f"    const {vt} mn = gc_maximum(m, {xv});")
        r_old, r_x = rescale("m", "mn", "    "), rescale(xv, "mn", "    ")
        lines += [f"    s = (m == mn ? s : s * {r_old}) + ({xv} == {ninf} ? {zero} : {r_x});",
                  "    m = mn;", "  }"]
        across("  ", True)
        # (a row of -inf only: the two-pass sum is exp(-inf - -inf) summed, nan)
        lines.append(f"  if (m == {ninf}) s = {rescale('m', 'm', '  ')};")
    else:
        ragged = keep * threads != length
        lines += [f"  {vt} x[{keep}];", f"  {vt} m = {ninf};", "  #pragma unroll",
                  f"  for (int t = 0; t < {keep}; ++t) {{",
                  f"    const long long j = lane + (long long)t * {threads};",
                  f"    x[t] = {ninf};"]
        if ragged:
            lines.append(f"    if (j >= {length}LL) continue;")
        decompose("j", red_shape, red_names, lines, "    ")
        xv = w.value(first.body, names, lines, "    ", {})
        lines += [f"    x[t] = {xv};", "    m = gc_maximum(m, x[t]);", "  }"]
        across("  ", False)
        lines += [f"  {vt} s = {zero};", "  #pragma unroll",
                  f"  for (int t = 0; t < {keep}; ++t) {{"]
        if ragged:
            lines.append(f"    if (lane + (long long)t * {threads} >= {length}LL) continue;")
        lines += [f"    s = s + {rescale('x[t]', 'm', '    ')};", "  }"]
        sum_across("  ")
    out_idx = [names[a] if a in kept else "0" for a in range(len(names))]
    stores = ([f"{w.at(first.out, out_idx)} = m;"] if g.write_max else []) + \
        ([f"{w.at(second.out, out_idx)} = s;"] if g.write_sum else [])
    if stores:
        lines.append("  if (lane == 0) { " + " ".join(stores) + " }")
    if third is not None:
        if online:
            lines.append(f"  for (long long j = lane; j < {length}LL; j += {threads}) {{")
            element("j", "    ", None)
        else:
            lines += ["  #pragma unroll", f"  for (int t = 0; t < {keep}; ++t) {{",
                      f"    const long long j = lane + (long long)t * {threads};"]
            if ragged:
                lines.append(f"    if (j >= {length}LL) continue;")
            element("j", "    ", "x[t]")
        lines.append("  }")
    lines.append("}")
    grid = (rows if per_block else cdiv(rows, BLOCK // WARP), 1, 1)
    return lines, [Launch(name, g.first, grid, BLOCK, True, False)]
