"""A convolution's weight gradient dW = dY @ cols^T (an implicit, deep GEMM: m output
channels by n = channels x taps, summed over every output pixel of the batch) as outer
products: A's columns (one pixel's m channels of dY) are vectors, and each of B's elements
(an image value the pixel's window holds) is broadcast against them.

gemm_dot.py computes the same products as dot products along the depth: every output is a
vector accumulator whose lanes are summed when a chunk of the depth ends, and a chunk is
short (its copies of A and B must stay in L1), so those sums and the copies cost a third
of its time (W6's weight gradients ran at ~60 % of the GEMM rate). Here the accumulators
are outputs already, m lanes each, and a pixel's B elements need no copy: each is one
broadcast load, from the image where it lies, a constant offset from its pixel's row.

Per chunk of a thread's rows of pixels (one image's), A's block is first transposed into
scratch (pixel-major, m lanes a pixel, 16 x 16 blocks through shuffles). Then for each
block of columns (`per_block` of B's leading column sub-axis, e.g. 3 input channels, by
the trailing ones, e.g. 3 x 3 taps: at most MAX_ACCS vector accumulators), every pixel of
the chunk loads its A vectors and does the block's multiply-adds; the accumulators are
added into the thread's partial products (n x m, column-major) when the block ends.
`finish` sums the threads' partials into C (alpha, and += C for an update folded in).

Each product's function is its own: its sizes, offsets and strides are constants (the
image count, and with it A's row stride, may be call-time values), so a broadcast is one
load at a constant displacement from the row's pointer. It reads its row table (a global
of the program) directly, so it is compiled with the program's GEMM drivers at O3, not
in the shared GEMM library at O1 (gemm_library.py): passed the table instead, it moved
there, and W6's weight gradients ran 5-25 % slower (one thread, CPU time, alternating:
32 channels 1.39-1.40 -> 1.72-1.80 ms); `optsize` on it saved 4 % of that module's
compile time and cost 2-10 % of their speed."""
from __future__ import annotations

import hashlib
import math

from llvmlite import ir

from graphc.backends.llvm import gemm_dot, parallel
from graphc.backends.llvm.loops import counted_loop
from graphc.backends.llvm.scalar import F32
from graphc.backends.llvm.size_values import as_value
from graphc.backends.llvm.tables import constant_table
from graphc.backends.llvm.transpose_rounds import emit_transpose
from graphc.backends.llvm.vector_consts import splat
from graphc.sizes import exact_quotient, hint

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

# Vector accumulators of a block of columns: with A's vectors and a broadcast, within the
# 32 vector registers.
MAX_ACCS = 28
# A's transposed chunk stays in L1 while every block of columns reads it.
CHUNK_BYTES = 24 << 10
# The least share of the vectors' lanes that m fills (m = 16, 32: all; m = 6: not taken).
MIN_LANE_USE = 0.75


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _offsets(axes) -> list[int]:
    """The offset of each index of the row-major sub-axes ((size, stride), ...)."""
    out = [0]
    for size, stride in axes:
        out = [o + i * stride for o in out for i in range(size)]
    return out


class _Geometry:
    """A product's shape as this path reads it, all ints but the image count."""

    def __init__(self, spec) -> None:
        k_axes, n_axes = spec.b_sub
        self.vl = 16 if spec.dtype == "float32" else 8
        self.m, self.n = spec.m, spec.n
        self.mv = -(-spec.m // self.vl)  # A's vectors a pixel
        self.run, self.step = k_axes[-1]
        if len(k_axes) >= 2:  # images (a call-time count, or not), then their rows
            self.images, self.image_stride = k_axes[0]
            self.row_offsets = _offsets(k_axes[1:-1])
        else:
            self.images, self.image_stride = 1, 0
            self.row_offsets = [0]
        self.image_rows = len(self.row_offsets)
        self.outer, self.outer_stride = n_axes[0]
        self.taps = _offsets(n_axes[1:])  # one block item's columns
        es = 4 if spec.dtype == "float32" else 8
        taps = len(self.taps)
        # A's vectors a block reads (all of a pixel's, or the most that divide them and
        # fit with the taps: the blocks then go over each group of them in turn)
        self.group = max(v for v in range(1, self.mv + 1)
                         if self.mv % v == 0 and v * taps <= MAX_ACCS)
        most = min(self.outer, max(1, MAX_ACCS // (self.group * taps)))
        # blocks that share the items out evenly where that keeps half the accumulators
        # (one loop body, not two: compile time; W6's 16 channels, 8 blocks of 2 ran as
        # fast as 5 of 3 and 1 of 1)
        even = max(d for d in range(1, most + 1) if self.outer % d == 0)
        self.per_block = even if 2 * even >= most else most
        self.chunk_rows = max(1, min(self.image_rows,
                                     CHUNK_BYTES // (self.run * self.mv * self.vl * es)))

    def key(self, dtype: str) -> str:
        text = repr((dtype, self.m, self.n, self.run, self.step, self.image_stride,
                     self.row_offsets, self.outer, self.outer_stride, self.taps,
                     self.group, self.per_block, self.chunk_rows))
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def suitable(spec) -> bool:
    """Whether an implicit GEMM takes this path: deep (gemm_dot's rules: a depth that
    dwarfs the output, judged at the representative binding where it is a call-time
    size), B's sub-axes known but for the image count, m filling its vectors, and a block
    item's columns (a kernel's taps) few enough for the accumulators of one of A's
    vectors (graphc.schedule.implicit.outer_product: the scheduler's side of this rule).
    Rows of the depth of any length and stride."""
    if spec.b_sub is None or spec.nbatch != 1 or spec.a.s1 != 1:
        return False
    k_axes, n_axes = spec.b_sub
    rest = [v for ax in k_axes[1:] for v in ax] + [k_axes[0][1]] + \
        [v for ax in n_axes for v in ax]
    if len(k_axes) < 2:
        rest.append(k_axes[0][0])
    fixed = [spec.m, spec.n, spec.a.offset, spec.b.offset, spec.c.s0, spec.c.s1,
             spec.c.offset]
    if not all(isinstance(v, int) for v in rest + fixed):
        return False
    vl = 16 if spec.dtype == "float32" else 8
    mv = -(-spec.m // vl)
    taps = math.prod(d for d, _ in n_axes[1:])
    k = hint(spec.k)
    deep = k >= gemm_dot.MIN_DEPTH and k >= gemm_dot.DEPTH_RATIO * max(spec.m, spec.n) \
        and spec.m * spec.n <= gemm_dot.MAX_OUTPUTS
    return deep and spec.m / (mv * vl) >= MIN_LANE_USE and taps <= MAX_ACCS


class BroadcastGemm:
    """One such GEMM: its partial products, its part function and the call."""

    def __init__(self, module: ir.Module, spec, threads: int, name: str,
                 min_macs: int = 0) -> None:
        """`threads`: the team's size; `min_macs`: where the depth is a call-time size, the
        multiply-adds from which the call runs on the team (fewer: alone)."""
        self.module, self.s, self.threads, self.name = module, spec, threads, name
        self.min_macs = min_macs
        self.g = _Geometry(spec)
        self.et = F32 if spec.dtype == "float32" else ir.DoubleType()
        self.vt = ir.VectorType(self.et, self.g.vl)
        g = self.g
        self.mp = g.mv * g.vl  # a pixel's lanes in the scratch, a column's in the partials
        part_t = ir.ArrayType(self.et, threads * g.n * self.mp)
        self.partials = ir.GlobalVariable(module, part_t, f"{name}_bcast_partials")
        self.partials.linkage = "internal"
        self.partials.initializer = ir.Constant(part_t, None)
        self.partials.align = 64
        pixels = -(-g.chunk_rows * g.run // g.vl) * g.vl
        scratch_t = ir.ArrayType(self.et, threads * pixels * self.mp)
        self.scratch = ir.GlobalVariable(module, scratch_t, f"{name}_bcast_scratch")
        self.scratch.linkage = "internal"
        self.scratch.initializer = ir.Constant(scratch_t, None)
        self.scratch.align = 64
        self.scratch_step = pixels * self.mp  # one thread's scratch (elements)

    def emit(self, b: ir.IRBuilder, bases: dict) -> None:
        s, g = self.s, self.g
        rows = exact_quotient(s.k, g.run)
        assert rows is not None
        entry = b.function.entry_basic_block
        with b.goto_block(entry):
            b.position_at_start(entry)
            args = b.alloca(PTR, size=5)
            desc = b.alloca(I64, size=2)
        b.store(as_value(b, rows), b.gep(desc, [_c(0)], source_etype=I64))
        b.store(as_value(b, s.a.s0), b.gep(desc, [_c(1)], source_etype=I64))
        a0 = b.gep(bases[s.a.buffer], [_c(s.a.offset)], source_etype=self.et)
        b0 = b.gep(bases[s.b.buffer], [_c(s.b.offset)], source_etype=self.et)
        for i, value in enumerate([a0, b0, self.partials, desc, self.scratch]):
            b.store(value, b.gep(args, [_c(i)], source_etype=PTR))
        part = self._part()
        parallel.emit_call_by_depth(self.module, b, args, part, self.threads,
                                    f"{self.name}_bcast", s.k, s.m * s.n, self.min_macs)
        c0 = b.gep(bases[s.c.buffer], [_c(s.c.offset)], source_etype=self.et)
        alpha = ir.Constant(ir.DoubleType(), float(s.alpha))
        b.call(self._finish(), [c0, self.partials, _c(s.m), _c(s.n), _c(self.mp),
                                _c(self.threads), _c(s.c.s0), _c(s.c.s1), alpha,
                                _c(int(s.accumulate))])

    # -- part(args, t, nt): thread t's share of the rows into its partial products ---------
    def _part(self) -> ir.Function:
        g, et, mp = self.g, self.et, self.mp
        name = f"gemm_bcast_{g.key(self.s.dtype)}_part"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR, I64, I64]), name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        args, t, nt = fn.args
        a_base, b_base, partials, desc, scratch = [
            b.load(b.gep(args, [_c(i)], source_etype=PTR), typ=PTR) for i in range(5)]
        rows = b.load(desc, typ=I64)
        a_s0 = b.load(b.gep(desc, [_c(1)], source_etype=I64), typ=I64)
        n_mp = g.n * mp
        # thread t's partials: zeroed, with those of the threads not running (alone: all)
        memset = self.module.declare_intrinsic("llvm.memset", [PTR, I64])
        es = 4 if et == F32 else 8
        owned = b.sdiv(b.add(b.sub(_c(self.threads), t), b.sub(nt, _c(1))), nt)
        with counted_loop(b, owned, "z", unroll=False) as i:
            at = b.gep(partials, [b.mul(b.add(t, b.mul(i, nt)), _c(n_mp))], source_etype=et)
            b.call(memset, [at, ir.Constant(ir.IntType(8), 0), _c(n_mp * es),
                            ir.Constant(I1, 0)])
        partial = b.gep(partials, [b.mul(t, _c(n_mp))], source_etype=et)
        at_t = b.gep(scratch, [b.mul(t, _c(self.scratch_step))], source_etype=et)
        row_tab = constant_table(self.module, f"{name}_rows", g.row_offsets)
        lo = b.sdiv(b.mul(t, rows), nt)
        hi = b.sdiv(b.mul(b.add(t, _c(1)), rows), nt)
        ir_ = _c(g.image_rows)
        # the images lo .. hi - 1 reach, each's rows in chunks (a chunk never crosses one)
        first_image = b.sdiv(lo, ir_)
        span = b.select(b.icmp_signed(">", hi, lo),
                        b.sub(b.sdiv(b.sub(hi, _c(1)), ir_), b.sub(first_image, _c(1))),
                        _c(0))
        with counted_loop(b, span, "img", unroll=False) as q:
            image = b.add(first_image, q)
            start = b.mul(image, ir_)
            r0 = self._larger(b, lo, start)
            r1 = self._smaller(b, hi, b.add(start, ir_))
            count = b.sub(r1, r0)
            chunks = b.sdiv(b.add(count, _c(g.chunk_rows - 1)), _c(g.chunk_rows))
            b_img = b.gep(b_base, [b.mul(image, _c(g.image_stride))], source_etype=et)
            with counted_loop(b, chunks, "ch", unroll=False) as ch:
                u0 = b.add(r0, b.mul(ch, _c(g.chunk_rows)))
                cnt = self._smaller(b, _c(g.chunk_rows), b.sub(r1, u0))
                pixels = b.mul(cnt, _c(g.run))
                a_chunk = b.gep(a_base, [b.mul(u0, _c(g.run))], source_etype=et)
                b.call(self._transpose_function(),
                       [a_chunk, a_s0, pixels, at_t, _c(g.m), _c(g.mv)])
                tab = b.gep(row_tab, [b.sub(u0, start)], source_etype=I64)
                self._blocks(b, b_img, tab, cnt, at_t, partial)
        b.ret_void()
        return fn

    def _transpose_function(self) -> ir.Function:
        """transpose(a_chunk, a_s0, pixels, out, m, mv): A's rows 0 .. m of a chunk's
        `pixels` into `out`, pixel-major (mv vectors a pixel, zeros past m; the last
        block's lanes past the pixels are written too: out has room). One a module and
        dtype; blocks of vl rows by vl pixels (transpose_rounds.py)."""
        vl, et, vt = self.g.vl, self.et, self.vt
        name = f"gemm_bcast_{self.s.dtype}_transpose"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        fn = ir.Function(self.module, ir.FunctionType(
            VOID, [PTR, I64, I64, PTR, I64, I64]), name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        a_chunk, a_s0, pixels, out, m, mv = fn.args
        block = b.alloca(vt, size=vl)
        lanes = ir.Constant(ir.VectorType(I64, vl), list(range(vl)))
        vi = ir.VectorType(I64, vl)
        blocks = b.sdiv(b.add(pixels, _c(vl - 1)), _c(vl))
        mp = b.mul(mv, _c(vl))
        none = ir.Constant(ir.VectorType(I1, vl), None)
        with counted_loop(b, blocks, "tb", unroll=False) as blk:
            p0 = b.mul(blk, _c(vl))
            mask = b.icmp_signed("<", lanes, splat(b, b.sub(pixels, p0), vi))
            with counted_loop(b, mv, "tv", unroll=False) as v:
                def read(i: ir.Value) -> ir.Value:  # (A's row v * vl + i; past m: zeros)
                    r = b.add(b.mul(v, _c(vl)), i)
                    row = b.gep(a_chunk, [b.add(b.mul(r, a_s0), p0)], source_etype=et)
                    return self._masked_load(b, row, b.select(b.icmp_signed("<", r, m),
                                                              mask, none))

                def write(i: ir.Value, x: ir.Value) -> None:  # (pixel p0 + i's vector v)
                    at = b.add(b.mul(b.add(p0, i), mp), b.mul(v, _c(vl)))
                    b.store(x, b.gep(out, [at], source_etype=et), align=64)
                emit_transpose(b, vt, block, read, write)
        b.ret_void()
        return fn

    def _blocks(self, b: ir.IRBuilder, b_img: ir.Value, tab: ir.Value, cnt: ir.Value,
                at_t: ir.Value, partial: ir.Value) -> None:
        """Every block of columns, for each group of A's vectors, over the chunk's rows,
        added into the partials."""
        g = self.g
        whole, rest = divmod(g.outer, g.per_block)
        with counted_loop(b, _c(g.mv // g.group), "vg", unroll=False) as vg:
            v0 = b.mul(vg, _c(g.group))
            with counted_loop(b, _c(whole), "cb", unroll=False) as cb:
                self._block(b, b_img, tab, cnt, at_t, partial, v0,
                            b.mul(cb, _c(g.per_block)), g.per_block)
            if rest:
                self._block(b, b_img, tab, cnt, at_t, partial, v0,
                            _c(whole * g.per_block), rest)

    def _block(self, b: ir.IRBuilder, b_img: ir.Value, tab: ir.Value, cnt: ir.Value,
               at_t: ir.Value, partial: ir.Value, v0: ir.Value, first: ir.Value,
               items: int) -> None:
        """Columns first * taps .. (first + items) * taps by A's vectors v0 .. v0 + group:
        their accumulators over the chunk's pixels, then added into the partials."""
        g, et, vt, vl, mp = self.g, self.et, self.vt, self.g.vl, self.mp
        cols = [j * g.outer_stride + tap for j in range(items) for tap in g.taps]
        nv = g.group
        accs = b.alloca(vt, size=nv * len(cols))  # (promoted to registers)
        zero = ir.Constant(vt, None)
        for q in range(nv * len(cols)):
            b.store(zero, b.gep(accs, [_c(q)], source_etype=vt))
        fma = self._fma()
        block_img = b.gep(b_img, [b.mul(first, _c(g.outer_stride))], source_etype=et)
        a_group = b.gep(at_t, [b.mul(v0, _c(vl))], source_etype=et)
        with counted_loop(b, cnt, "r", unroll=False) as r:
            row = b.gep(block_img, [b.load(b.gep(tab, [r], source_etype=I64), typ=I64)],
                        source_etype=et)
            a_row = b.gep(a_group, [b.mul(r, _c(g.run * mp))], source_etype=et)
            with counted_loop(b, _c(g.run), "x", unroll=False) as x:
                av = [b.load(b.gep(a_row, [b.add(b.mul(x, _c(mp)), _c(v * vl))],
                                   source_etype=et), typ=vt, align=64)
                      for v in range(nv)]
                px = b.gep(row, [b.mul(x, _c(g.step))], source_etype=et)
                for j, col in enumerate(cols):
                    e = b.load(b.gep(px, [_c(col)], source_etype=et), typ=et)
                    bv = splat(b, e, vt)
                    for v in range(nv):
                        slot = b.gep(accs, [_c(j * nv + v)], source_etype=vt)
                        b.store(b.call(fma, [av[v], bv, b.load(slot, typ=vt)]), slot)
        col0 = b.mul(first, _c(len(g.taps)))
        out = b.gep(partial, [b.mul(v0, _c(vl))], source_etype=et)
        for j in range(len(cols)):
            for v in range(nv):
                at = b.add(b.mul(b.add(col0, _c(j)), _c(mp)), _c(v * vl))
                p = b.gep(out, [at], source_etype=et)
                acc = b.load(b.gep(accs, [_c(j * nv + v)], source_etype=vt), typ=vt)
                b.store(b.fadd(b.load(p, typ=vt, align=64), acc), p, align=64)

    # -- finish: C = alpha * (sum of the partials) (+ C) -----------------------------------
    def _finish(self) -> ir.Function:
        name = f"gemm_bcast_{self.s.dtype}_finish"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        et = self.et
        fn = ir.Function(self.module, ir.FunctionType(
            VOID, [PTR, PTR, I64, I64, I64, I64, I64, I64, ir.DoubleType(), I64]), name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.attributes.add("optsize")  # (m x n sums once a call)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        c0, partials, m, n, mp, parts, c_s0, c_s1, alpha, accumulate = fn.args
        running = b.alloca(et)
        if et == F32:
            alpha = b.fptrunc(alpha, F32)
        add_c = b.icmp_signed("!=", accumulate, _c(0))
        n_mp = b.mul(n, mp)
        with counted_loop(b, n, "j", unroll=False) as j:
            with counted_loop(b, m, "i", unroll=False) as i:
                flat = b.add(b.mul(j, mp), i)
                b.store(ir.Constant(et, 0.0), running)
                with counted_loop(b, parts, "q", unroll=False) as q:
                    at = b.gep(partials, [b.add(flat, b.mul(q, n_mp))], source_etype=et)
                    b.store(b.fadd(b.load(running, typ=et), b.load(at, typ=et)), running)
                total = b.fmul(b.load(running, typ=et), alpha)
                out = b.gep(c0, [b.add(b.mul(i, c_s0), b.mul(j, c_s1))], source_etype=et)
                total = b.select(add_c, b.fadd(b.load(out, typ=et), total), total)
                b.store(total, out)
        b.ret_void()
        return fn

    # -- helpers ---------------------------------------------------------------------------
    def _fma(self) -> ir.Function:
        name = f"llvm.fma.v{self.g.vl}{'f32' if self.et == F32 else 'f64'}"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        return ir.Function(self.module, ir.FunctionType(self.vt, [self.vt] * 3), name)

    def _masked_load(self, b: ir.IRBuilder, ptr: ir.Value, mask: ir.Value) -> ir.Value:
        vl = self.g.vl
        kind = "f32" if self.et == F32 else "f64"
        name = f"llvm.masked.load.v{vl}{kind}.p0"
        fn = self.module.globals.get(name) or ir.Function(self.module, ir.FunctionType(
            self.vt, [PTR, I32, ir.VectorType(I1, vl), self.vt]), name)
        return b.call(fn, [ptr, ir.Constant(I32, 4 if self.et == F32 else 8), mask,
                           ir.Constant(self.vt, None)])

    @staticmethod
    def _smaller(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
        return b.select(b.icmp_signed("<", x, y), x, y)

    @staticmethod
    def _larger(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
        return b.select(b.icmp_signed(">", x, y), x, y)
