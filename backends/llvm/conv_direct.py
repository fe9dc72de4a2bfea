"""Direct convolutions (an implicit GEMM the scheduler marked `direct`:
graphc/schedule/direct_conv.py): out[b, o, pixels] = sum_p w[b, o, p] * image[b, p, pixels]
computed a row of output pixels at a time, each weight broadcast over vectors of the
row's input pixels, with no packing of B.

A tile is MR output channels by NV vectors of one row of output pixels: MR x NV vector
accumulators stay in registers while the kernel's taps go by; per tap, NV vectors of the
image are loaded (where the tap's window row lies: its offset is a constant) and each
serves MR fused multiply-adds with weights broadcast from memory. The kernel's taps (the
depth's trailing sub-axes, up to MAX_UNROLL of them) are unrolled with their offsets as
constants; any leading sub-axes (input channels) are a loop reading a table of offsets.
Rows' ends are masked loads and stores: nothing outside the row is read or written. Rows
of up to MAX_NV vectors go side by side where that fills more lanes (a vector may hold one
row's end and the next one's start, each a masked load merging into it; the output rows
are contiguous, so the stores are whole). A stride-2 row reads two vectors of the image
and keeps every other lane.

Threads share out the rows of output pixels of all batch items (images x output rows, per
group), in contiguous ranges; each writes only its rows, so there is nothing to combine.
Before a work item, the image lines the next one reads are prefetched: a work item reads
every input channel's window rows (one channel a stride apart, which the hardware
prefetcher does not follow), and W6's images (2-3.7 MB) do not stay in a core's L2."""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from graphc.backends.llvm import parallel
from graphc.backends.llvm.loops import counted_loop
from graphc.backends.llvm.scalar import F32, F64
from graphc.backends.llvm.size_values import as_value
from graphc.backends.llvm.tables import constant_table
from graphc.backends.llvm.threads import num_threads, openmp_available
from graphc.backends.llvm.vector_consts import splat
from graphc import sizes
from graphc.schedule import ir as kir
from graphc.sizes import Dim

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

MR = 8  # output channels per tile
NV = 2  # vectors of output pixels per tile (with MR: 16 of the 32 vector registers)
MAX_NV = 3  # ... or up to this many where rows side by side fill them (24 registers)
MAX_UNROLL = 64  # taps unrolled at most (the rest of the depth is a loop)
# Threads from this many multiply-adds on (as the GEMMs: gemm.PARALLEL_MIN_MACS).
PARALLEL_MIN_MACS = 64 * 64 * 64
LINE = 64  # bytes in a cache line (what one prefetch brings)
# Images from this size on are prefetched (half a 1 MB L2: W6's are 2-3.7 MB; W5's, 0.2-0.3
# MB, stay in L2, where the prefetches would only cost instructions).
PREFETCH_MIN_BYTES = 512 << 10


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _line_points(taps: list[int], span: int, line: int) -> list[int]:
    """Offsets, one in each cache line of `line` elements (wherever the lines start), that
    the spans [tap, tap + span) of the taps cover together."""
    runs: list[list[int]] = []
    for lo in sorted(taps):
        if runs and lo <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], lo + span)
        else:
            runs.append([lo, lo + span])
    points: list[int] = []
    for lo, hi in runs:
        points += list(range(lo, hi, line))
        if (hi - 1 - lo) % line:
            points.append(hi - 1)
    return points


def _offsets(axes: list[tuple[int, int]]) -> list[int]:
    """The offset of each index of the row-major sub-axes ((size, stride), ...)."""
    out = [0]
    for size, stride in axes:
        out = [o + i * stride for o in out for i in range(size)]
    return out


class _Geometry:
    """A direct convolution's sizes and strides, from its kir.Gemm: ints, but for the image
    count (the first of n's sub-axes) where it is a call-time size, and with it the
    output's strides and the work items' count (graphc.schedule.direct_conv.eligible)."""

    def __init__(self, k: kir.Gemm) -> None:
        assert k.b_split is not None
        nb = len(k.batch)
        self.batch = [int(d) for d in k.batch]
        self.a_batch, self.b_batch = ([int(s) for s in acc.strides[:nb]] for acc in (k.a, k.b))
        self.o_batch: list[Dim] = list(k.out.strides[:nb])
        self.m, self.depth = int(k.m), int(k.k)
        self.a_s0, self.a_s1 = int(k.a.strides[nb]), int(k.a.strides[nb + 1])
        self.o_s0: Dim = k.out.strides[nb]
        ks, ns = k.b_split
        strides = [int(s) for s in k.b.strides[nb:]]
        k_axes = list(zip((int(d) for d in ks), strides[:len(ks)]))
        n_axes: list[tuple[Dim, int]] = list(zip(ns, strides[len(ks):]))
        # the depth: unrolled taps (its trailing sub-axes) inside a loop over the rest
        cut = len(k_axes) - 1
        while cut > 0 and math.prod(d for d, _ in k_axes[cut - 1:]) <= MAX_UNROLL:
            cut -= 1
        self.taps = _offsets(k_axes[cut:])
        self.outer = _offsets(k_axes[:cut])
        row, self.step = n_axes[-1]  # a row of output pixels, their stride in B
        self.row = int(row)
        self.row_axes = n_axes[:-1]  # images x output rows (B's strides)
        self.rows: Dim = math.prod((d for d, _ in self.row_axes), start=1)
        # (the rows of the images known now: a call-time image count multiplies them)
        fixed = math.prod(d for d, _ in self.row_axes if isinstance(d, int))
        # rows no longer than MAX_NV vectors may go side by side, `group` of them a work
        # item over `vectors` vectors, a row's end and the next one's start sharing a
        # vector, where whole groups fill the rows and that fills more lanes (W5's first
        # convolution: 2 rows of 24 in 3 vectors; its second, 4 rows of 8 in 2)
        vl = 16 if np.dtype(k.dtype) == np.float32 else 8
        self.group, self.vectors = 1, -(-self.row // vl)
        if self.step == 1 and self.row <= MAX_NV * vl:
            def use(gv: tuple[int, int]) -> tuple[float, int]:
                return gv[0] * self.row / (gv[1] * vl), gv[1]  # (ties: more vectors)
            fits = [(n, -(-n * self.row // vl)) for n in range(1, MAX_NV * vl + 1)
                    if fixed % n == 0 and n * self.row <= MAX_NV * vl]
            self.group, self.vectors = max(fits, key=use)
        groups = sizes.exact_quotient(self.rows, self.group)
        assert groups is not None  # (the group divides the rows of one image)
        self.groups: Dim = groups
        self.items = math.prod(self.batch)
        self.offsets = (int(k.a.offset), int(k.b.offset), int(k.out.offset))
        self.alpha, self.accumulate = float(k.alpha), bool(k.accumulate)
        # the bytes of the image the kernel reads (from its first element to its last; at
        # the representative binding where the image count is a call-time size)
        spans = list(zip(self.batch, self.b_batch)) + k_axes + n_axes
        self.image_bytes = (1 + sum((sizes.hint(d) - 1) * abs(s) for d, s in spans
                                    if sizes.hint(d) > 0)) * (4 if vl == 16 else 8)

    def work(self) -> Dim:
        """Work items: batch items times groups of rows."""
        return self.items * self.groups

    def dynamic(self) -> list[Dim]:
        """The call-time values the thread parts take from their arguments (after the
        three operands): the work items' count, the output's row stride, its batch
        strides (ints where they are known: then constants in the code)."""
        return [self.work(), self.o_s0, *self.o_batch]


def emit(module: ir.Module, b: ir.IRBuilder, bases: dict, k: kir.Gemm, name: str) -> None:
    """k's code where the builder stands: its operands' addresses, then its rows on a team
    of threads (or alone)."""
    g = _Geometry(k)
    et = F32 if np.dtype(k.dtype) == np.float32 else F64
    entry = b.function.entry_basic_block
    dynamic = g.dynamic()
    with b.goto_block(entry):
        b.position_at_start(entry)
        args = b.alloca(PTR, size=3 + len(dynamic))
    for i, (acc, off) in enumerate(zip((k.a, k.b, k.out), g.offsets)):
        b.store(b.gep(bases[acc.buffer], [_c(off)], source_etype=et),
                b.gep(args, [_c(i)], source_etype=PTR))
    for i, d in enumerate(dynamic):  # (call-time sizes: read by the parts from here)
        if not isinstance(d, int):
            b.store(b.inttoptr(as_value(b, d), PTR), b.gep(args, [_c(3 + i)], source_etype=PTR))
    part = _Part(module, g, et, f"{name}_direct").function
    work = sizes.hint(g.work())
    macs = g.m * g.depth * g.row * g.items * sizes.hint(g.rows)
    threads = min(num_threads(), work)
    if threads > 1 and macs >= PARALLEL_MIN_MACS and openmp_available():
        parallel.emit_team_call(module, b, args, part, threads, f"{name}_direct")
    else:
        b.call(part, [args, _c(0), _c(1)])


class _Part:
    """part(args, t, nt): thread t's share of the rows of output pixels."""

    def __init__(self, module: ir.Module, g: _Geometry, et: ir.Type, name: str) -> None:
        self.module, self.g, self.et = module, g, et
        self.vl = 16 if et == F32 else 8
        self.vt = ir.VectorType(et, self.vl)
        fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I64, I64]), f"{name}_part")
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        self.function = fn
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.b = b
        # accumulators: promoted to registers (constant indices) across the depth's loop
        self.slots = b.alloca(self.vt, size=MR * MAX_NV)
        args, t, nt = fn.args
        a0, b0, o0 = (b.load(b.gep(args, [_c(i)], source_etype=PTR), typ=PTR)
                      for i in range(3))
        # call-time values from the arguments, known ones as constants
        work, self.o_s0, *self.o_batch = (
            _c(d) if isinstance(d, int) else
            b.ptrtoint(b.load(b.gep(args, [_c(3 + i)], source_etype=PTR), typ=PTR), I64)
            for i, d in enumerate(g.dynamic()))
        self.groups = _c(g.groups) if isinstance(g.groups, int) else \
            b.sdiv(work, _c(g.items))
        self.table = constant_table(self.module, f"{name}_outer", g.outer) \
            if len(g.outer) > 1 else None
        lo = b.sdiv(b.mul(t, work), nt)
        hi = b.sdiv(b.mul(b.add(t, _c(1)), work), nt)
        with counted_loop(b, b.sub(hi, lo), "w", unroll=False) as w:
            here = b.add(lo, w)
            if g.image_bytes >= PREFETCH_MIN_BYTES:
                nxt = b.add(here, _c(1))
                self._prefetch(b.select(b.icmp_signed("<", nxt, hi), nxt, here), b0)
            self._item(here, a0, b0, o0)
        b.ret_void()

    def _prefetch(self, w: ir.Value, b0: ir.Value) -> None:
        """Asks for the image lines work item w reads (while this one computes): an image
        the previous kernel did not leave in this core's cache otherwise costs a miss per
        tap row and input channel at a time (the hardware prefetcher does not follow the
        channels' stride)."""
        b, g, et = self.b, self.g, self.et
        item, first = b.udiv(w, self.groups), b.mul(b.urem(w, self.groups), _c(g.group))
        (b_at,) = self._split(item, g.batch, (g.b_batch,))
        starts = []
        for j in range(g.group):
            (at,) = self._split(b.add(first, _c(j)), [d for d, _ in g.row_axes],
                                ([s for _, s in g.row_axes],))
            starts.append(b.gep(b0, [b.add(b_at, at)], source_etype=et))
        points = _line_points(g.taps, (g.row - 1) * g.step + 1,
                              LINE // (4 if et == F32 else 8))
        fn = self._intrinsic("llvm.prefetch.p0", VOID, [PTR, I32, I32, I32])
        # (a read, kept in every cache level, of data)
        flags = [ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)]

        def channel(off: ir.Value) -> None:
            for start in starts:
                for p in points:
                    b.call(fn, [b.gep(start, [b.add(off, _c(p))], source_etype=et)] + flags)
        if self.table is None:
            channel(_c(g.outer[0]))
        else:
            with counted_loop(b, _c(len(g.outer)), "pf", unroll=False) as c:
                channel(b.load(b.gep(self.table, [c], source_etype=I64), typ=I64))

    def _item(self, w: ir.Value, a0: ir.Value, b0: ir.Value, o0: ir.Value) -> None:
        """Work item w: (batch item, `group` consecutive rows of output pixels), all output
        channels."""
        b, g, et = self.b, self.g, self.et
        item, first = b.udiv(w, self.groups), b.mul(b.urem(w, self.groups), _c(g.group))
        a_at, b_at, o_at = self._split(item, g.batch, (g.a_batch, g.b_batch, self.o_batch))
        a_ptr = b.gep(a0, [a_at], source_etype=et)
        o_ptr = b.gep(o0, [b.add(o_at, b.mul(first, _c(g.row)))], source_etype=et)

        def row_ptr(j: int) -> ir.Value:  # B where row first + j starts
            (at,) = self._split(b.add(first, _c(j)), [d for d, _ in g.row_axes],
                                ([s for _, s in g.row_axes],))
            return b.gep(b0, [b.add(b_at, at)], source_etype=et)

        vl = self.vl
        if g.group > 1:
            # rows side by side: row j in lanes j*row.. of the group's vectors laid end to
            # end; vector v holds the part of each row that falls in lanes v*vl..
            starts = [row_ptr(j) for j in range(g.group)]
            segs = []
            for v in range(g.vectors):
                vec = []
                for j in range(g.group):
                    lo, hi = max(j * g.row, v * vl), min((j + 1) * g.row, (v + 1) * vl)
                    if lo < hi:
                        at = b.gep(starts[j], [_c(v * vl - j * g.row)], source_etype=et)
                        vec.append((at, lo - v * vl, hi - v * vl))
                segs.append(vec)
            self._blocks(lambda rows, r0: self._tile(rows, r0, segs, vl, a_ptr, o_ptr))
            return
        b_ptr = row_ptr(0)
        chunk = NV * vl
        full, rest = divmod(g.row, chunk)

        def along(x0: ir.Value, lanes: list[int]) -> list[list[tuple[ir.Value, int, int]]]:
            at = b.gep(b_ptr, [b.mul(x0, _c(g.step))], source_etype=et)
            return [[(b.gep(at, [_c(v * vl * g.step)], source_etype=et), 0, n)]
                    for v, n in enumerate(lanes)]

        def row_tiles(rows: int, r0: ir.Value) -> None:
            if full:
                with counted_loop(b, _c(full), "x", unroll=False) as x:
                    x0 = b.mul(x, _c(chunk))
                    self._tile(rows, r0, along(x0, [vl] * NV), vl, a_ptr,
                               b.gep(o_ptr, [x0], source_etype=et))
            if rest:
                lanes = [min(vl, rest - v * vl) for v in range(-(-rest // vl))]
                x0 = _c(full * chunk)
                self._tile(rows, r0, along(x0, lanes), vl, a_ptr,
                           b.gep(o_ptr, [x0], source_etype=et))
        self._blocks(row_tiles)

    def _blocks(self, tiles) -> None:
        """tiles(rows, r0) for each block of MR output channels, then the rest."""
        b, g = self.b, self.g
        if g.m // MR:
            with counted_loop(b, _c(g.m // MR), "mb", unroll=False) as mb:
                tiles(MR, b.mul(mb, _c(MR)))
        if g.m % MR:
            tiles(g.m % MR, _c(g.m - g.m % MR))

    def _split(self, index: ir.Value, sizes: list, strides: tuple[list, ...]
               ) -> list[ir.Value]:
        """For each list of strides (ints, or values read at run time), the offset of
        `index` decomposed over `sizes` (row-major; the first size is never read: an
        index lies below their product, so what is left is the first digit, and it may be
        a call-time image count)."""
        b = self.b
        totals: list[ir.Value] = [_c(0) for _ in strides]
        x = index
        for axis in reversed(range(len(sizes))):
            digit = x if axis == 0 else b.urem(x, _c(sizes[axis]))
            if axis:
                x = b.udiv(x, _c(sizes[axis]))
            totals = [b.add(tot, b.mul(digit, s[axis] if isinstance(s[axis], ir.Value)
                                       else _c(s[axis]))) for tot, s in zip(totals, strides)]
        return totals

    # -- one tile: `rows` output channels from r0, by vectors of output pixels -------------
    def _tile(self, rows: int, r0: ir.Value, segs: list[list[tuple[ir.Value, int, int]]],
              spacing: int, a_ptr: ir.Value, o_ptr: ir.Value) -> None:
        """segs[v]: where vector v's lanes come from, (B at the tap-less window, first
        lane, lane past the last) each; vector v is stored at o_ptr + v * spacing, its
        lanes up to the last segment's end."""
        b, g, et, vt = self.b, self.g, self.et, self.vt
        nv = len(segs)
        for q in range(rows * nv):
            b.store(ir.Constant(vt, None), self._slot(q))
        row_a = b.gep(a_ptr, [b.mul(r0, _c(g.a_s0))], source_etype=et)
        if self.table is None:
            self._taps(rows, segs, row_a, _c(g.outer[0]))
        else:
            with counted_loop(b, _c(len(g.outer)), "c", unroll=False) as c:
                off = b.load(b.gep(self.table, [c], source_etype=I64), typ=I64)
                a_c = b.gep(row_a, [b.mul(c, _c(len(g.taps) * g.a_s1))], source_etype=et)
                self._taps(rows, segs, a_c, off)
        out = b.gep(o_ptr, [b.mul(r0, self.o_s0)], source_etype=et)
        for r in range(rows):
            for v, vec in enumerate(segs):
                n = vec[-1][2]
                at = b.gep(out, [b.add(b.mul(_c(r), self.o_s0), _c(v * spacing))], source_etype=et)
                value = b.load(self._slot(r * nv + v), typ=vt)
                if g.alpha != 1.0:
                    value = b.fmul(value, self._splat(ir.Constant(et, g.alpha)))
                if g.accumulate:
                    value = b.fadd(value, self._load(at, n))
                self._store(value, at, n)

    def _taps(self, rows: int, segs: list[list[tuple[ir.Value, int, int]]], a_row: ir.Value,
              extra: ir.Value) -> None:
        """The unrolled taps' multiply-adds into the tile's accumulators (`extra`: the
        offset in B of the input channel)."""
        b, g, et, vt = self.b, self.g, self.et, self.vt
        nv = len(segs)
        acc = [b.load(self._slot(q), typ=vt) for q in range(rows * nv)]
        for t, off in enumerate(g.taps):
            pixels = []
            for vec in segs:
                if self._halves(vec):
                    lower, upper = (b.gep(base, [b.add(extra, _c(off + lo))], source_etype=et)
                                    for base, lo, _ in vec)
                    pixels.append(self._joined(lower, upper))
                    continue
                value: ir.Value = ir.Constant(vt, None)
                for base, lo, hi in vec:
                    at = b.gep(base, [b.add(extra, _c(off))], source_etype=et)
                    value = self._pixels(at, lo, hi, value)
                pixels.append(value)
            for r in range(rows):
                weight = b.load(b.gep(a_row, [_c(r * g.a_s0 + t * g.a_s1)], source_etype=et),
                                typ=et)
                w = self._splat(weight)
                for v in range(nv):
                    acc[r * nv + v] = b.call(self._fma(), [w, pixels[v], acc[r * nv + v]])
        for q, value in enumerate(acc):
            b.store(value, self._slot(q))

    def _halves(self, vec: list[tuple[ir.Value, int, int]]) -> bool:
        """Whether a vector is two rows' halves side by side (the end of a row of 8 or 24
        and the next one's start): then two half-vector loads joined, cheaper than two
        masked loads merged (the same change as llvm/gemm_dot_pairs.py)."""
        h = self.vl // 2
        return self.g.step == 1 and [(lo, hi) for _, lo, hi in vec] == [(0, h), (h, self.vl)]

    def _joined(self, lower: ir.Value, upper: ir.Value) -> ir.Value:
        """The vector of half a vector from `lower` and half from `upper`."""
        b, h = self.b, self.vl // 2
        half_t = ir.VectorType(self.et, h)
        lanes = ir.Constant(ir.VectorType(I32, self.vl), list(range(self.vl)))
        return b.shuffle_vector(b.load(lower, typ=half_t, align=self._align().constant),
                                b.load(upper, typ=half_t, align=self._align().constant),
                                lanes)

    def _pixels(self, at: ir.Value, lo: int, hi: int, other: ir.Value) -> ir.Value:
        """Lanes lo..hi-1 of output pixels' input values read from `at` (lane i at
        i * step), `other`'s lanes elsewhere (nothing else is read)."""
        if self.g.step == 1:
            return self._load(at, hi, lo, other)
        # stride 2 (lo == 0): elements 0, 2, ..., 2(hi-1) of two vectors' span
        last = 2 * (hi - 1)
        low = self._load(at, min(self.vl, last + 1))
        high = (self._load(self.b.gep(at, [_c(self.vl)], source_etype=self.et),
                           last + 1 - self.vl)
                if last >= self.vl else ir.Constant(self.vt, None))
        evens = ir.Constant(ir.VectorType(I32, self.vl), [2 * i for i in range(self.vl)])
        return self.b.shuffle_vector(low, high, evens)

    # -- vector helpers -------------------------------------------------------------------
    def _slot(self, q: int) -> ir.Value:
        return self.b.gep(self.slots, [_c(q)], source_etype=self.vt)

    def _splat(self, x: ir.Value) -> ir.Value:
        return splat(self.b, x, self.vt)  # (written in a few characters)

    def _mask(self, n: int, lo: int = 0) -> ir.Constant:
        return ir.Constant(ir.VectorType(I1, self.vl),
                           [int(lo <= i < n) for i in range(self.vl)])

    def _intrinsic(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        fn = self.module.globals.get(name)
        return fn if fn is not None else ir.Function(self.module, ir.FunctionType(ret, args),
                                                     name)

    def _kind(self) -> str:
        return f"v{self.vl}{'f32' if self.et == F32 else 'f64'}"

    def _fma(self) -> ir.Function:
        return self._intrinsic(f"llvm.fma.{self._kind()}", self.vt, [self.vt] * 3)

    def _align(self) -> ir.Constant:
        return ir.Constant(I32, 4 if self.et == F32 else 8)

    def _load(self, at: ir.Value, n: int, lo: int = 0, other: ir.Value | None = None
              ) -> ir.Value:
        """A vector from `at`: lanes lo..n-1 (the rest `other`'s, or zero; not read)."""
        if n >= self.vl and lo == 0:
            return self.b.load(at, typ=self.vt, align=4 if self.et == F32 else 8)
        fn = self._intrinsic(f"llvm.masked.load.{self._kind()}.p0", self.vt,
                             [PTR, I32, ir.VectorType(I1, self.vl), self.vt])
        return self.b.call(fn, [at, self._align(), self._mask(n, lo),
                                other if other is not None else ir.Constant(self.vt, None)])

    def _store(self, value: ir.Value, at: ir.Value, n: int) -> None:
        if n >= self.vl:
            self.b.store(value, at, align=4 if self.et == F32 else 8)
            return
        fn = self._intrinsic(f"llvm.masked.store.{self._kind()}.p0", VOID,
                             [self.vt, PTR, I32, ir.VectorType(I1, self.vl)])
        self.b.call(fn, [value, at, self._align(), self._mask(n)])
