"""Deep, small GEMMs whose operands are both contiguous along the depth (a convolution's
weight gradient dW = g @ cols^T: a few hundred outputs, each a sum over every output pixel
of the batch) computed as register blocks of dot products.

The packed path copies B (transposed, in 16x16 blocks) before multiplying: here every
element of B serves only m multiply-adds, so that copy cost more than the product. Instead
RI rows of A and RJ rows of B^T are read a vector of the depth at a time into RI x RJ
vector accumulators; the depth is cut into chunks (an RJ-row block of B^T stays in L1
while the rows of A stream past it) and split over the threads, each summing into partial
products of its own that one pass adds into C at the end (alpha, and += C for a parameter
update folded into the GEMM). A materialised B is read where it lies; an implicit B (a
convolution's columns read from the image, in rows of `run` elements) is copied a chunk
at a time, end to end and aligned, into scratch (part_rows), with A's chunk."""
from __future__ import annotations

import functools
import math
import struct

from llvmlite import ir

from graphc.backends.llvm import parallel
from graphc.backends.llvm.gemm_dot_pairs import paired, part_pairs
from graphc.backends.llvm.loops import counted_loop
from graphc.backends.llvm.scalar import F32, F64
from graphc.backends.llvm.size_values import as_value
from graphc.backends.llvm.tables import constant_table
from graphc.sizes import exact_quotient, hint

I64 = ir.IntType(64)
I32 = ir.IntType(32)
PTR = ir.PointerType()
VOID = ir.VoidType()

# The register block: 20 accumulators and the 9 vectors (4 of A, 5 of B) one step loads,
# 29 of the 32 registers. (4 x 6 had measured 14-23 % faster than 4 x 4 on Zen 5, but its
# 24 accumulators and 10 loaded vectors do not fit: LLVM, scheduling for an Intel core,
# loads all 10 first and keeps 4-8 accumulators on the stack, a store and a reload each
# step; on a Xeon (Sapphire Rapids class) 4 x 5 ran W6's weight gradients 1.25-1.35x
# faster than that 4 x 6.)
RI, RJ = 4, 5
CHUNK = 1024  # depth per pass over the outputs (elements)
# (part_rows, copying its chunks: W6's weight gradients one thread, 3 rounds, least, with
# 1024: 16 channels 2.49-2.56 ms, 32 channels 2.18-2.24; with 768: 2.35-2.37, 2.11-2.15)
ROWS_CHUNK = 768
MIN_DEPTH = 512
PANEL = 64  # A's rows copied at a time (part_rows; a multiple of RI)
L1_BYTES = 48 << 10  # a core's L1 data cache (Sapphire Rapids, Zen 4/5: 48 KiB)
DEPTH_RATIO = 8  # the depth at least this many times the longer side of the output
MAX_OUTPUTS = 1 << 16
MIN_RUN = 8  # an implicit B's shortest run along the depth (graphc.schedule.implicit)


def suitable(spec) -> bool:
    """Whether a canonical GEMM (gemm._Spec) takes this path: one batch item, A's rows and
    B's columns contiguous along the depth (an implicit B: in runs, its depth's last
    sub-axis), and a depth that dwarfs the output. An implicit B's depth may run over a
    call-time image count (its first sub-axis; then the depth and A's row stride are
    call-time sizes, judged at the representative binding)."""
    if spec.b_sub is None:  # (the depth may be a call-time size: k, and A's and B's
        along = spec.b.s0 == 1 and _known(spec)  # row strides, judged at the binding)
    else:  # (the same rule as the scheduler's: graphc.schedule.implicit.deep)
        run, stride = spec.b_sub[0][-1]
        along = stride in (1, 2) and isinstance(run, int) and run >= MIN_RUN and _known(spec)
    k = hint(spec.k)
    return (along and spec.nbatch == 1 and spec.a.s1 == 1
            and k >= MIN_DEPTH
            and k >= DEPTH_RATIO * max(spec.m, spec.n)
            and spec.m * spec.n <= MAX_OUTPUTS)


def _known(spec) -> bool:
    """Whether every size and stride is an int but for those a call-time depth gives: the
    depth and A's (and a materialised B's) row strides, an implicit B's depth's first
    sub-axis (a call-time image count), the batch strides (one batch item)."""
    fixed = [spec.m, spec.n, *spec.batch, spec.a.s1, spec.a.offset, spec.b.offset,
             spec.c.s0, spec.c.s1, spec.c.offset]
    if spec.b_sub is None:
        fixed.append(spec.b.s0)
    else:
        k_axes, n_axes = spec.b_sub
        fixed += [k_axes[0][1], *(v for ax in k_axes[1:] for v in ax),
                  *(v for ax in n_axes for v in ax)]
    return all(isinstance(v, int) for v in fixed)


def overreads(row_offsets: list[int], run: int, lanes: int) -> bool:
    """Whether each row's last vector may be read whole (past the row's end, up to a
    vector): the row offsets grow by at least as many elements, so that those lanes lie
    before the next row's end, which B holds, in every column (the depth's last row read
    masked)."""
    past = -run % lanes
    return all(q - p >= past for p, q in zip(row_offsets, row_offsets[1:]))


def _offsets(axes) -> list[int]:
    """The offset of each index of the row-major sub-axes ((size, stride), ...)."""
    out = [0]
    for size, stride in axes:
        out = [o + i * stride for o in out for i in range(size)]
    return out


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


# The descriptor each GEMM passes to the shared functions (i64 values).
# An implicit B's depth rows are images of `image_rows` rows each, `image_stride` apart in
# B, a row's offset within its image from the row table (one image: all the rows, 0).
# A copied (packed) chunk's rows are `cap` elements apart in the scratch, `panel` of A's.
FIELDS = ("m", "n", "k", "a_s0", "b_s1", "c_s0", "c_s1", "partials", "alpha_bits",
          "accumulate", "run", "rows", "chunk_rows", "image_rows", "image_stride", "cap",
          "panel", "overread", "step")


class DotGemm:
    """One such GEMM: its descriptor and partial products, and calls to the functions every
    dot-product GEMM of one dtype in a module shares (sizes and strides are data)."""

    def __init__(self, module: ir.Module, spec, threads: int, name: str,
                 min_macs: int = 0) -> None:
        """`threads`: the team's size; `min_macs`: where the depth is a call-time size, the
        multiply-adds from which the call runs on the team (fewer: alone)."""
        self.module, self.s, self.threads, self.name = module, spec, threads, name
        self.min_macs = min_macs
        self.et = F32 if spec.dtype == "float32" else F64
        self.vl = 16 if spec.dtype == "float32" else 8
        self.vt = ir.VectorType(self.et, self.vl)
        self.prefix = f"gemm_dot_{spec.dtype}"
        count = threads * spec.m * spec.n
        scratch_t = ir.ArrayType(self.et, count)
        self.partials = ir.GlobalVariable(module, scratch_t, f"{name}_dot_partials")
        self.partials.linkage = "internal"
        self.partials.initializer = ir.Constant(scratch_t, None)
        self.partials.align = 64
        alpha = struct.unpack("<q", struct.pack("<d", spec.alpha))[0]
        # An implicit B (a convolution's columns read from the image): the depth is rows
        # of `run` elements contiguous in B (and in A), each row's and each column's
        # offset in B a table of constants.
        self.tables: tuple[ir.GlobalVariable, ir.GlobalVariable] | None = None
        run = image_rows = image_stride = cap = panel = overread = 0
        chunk_rows = CHUNK
        rows: object = 0
        self.pack: ir.GlobalVariable | None = None
        self.pairs = False
        self.step = 1  # an implicit B's stride along a row of the depth (1 or 2)
        if spec.b_sub is not None:
            k_axes, n_axes = spec.b_sub
            run, self.step = k_axes[-1]
            images = 1
            call_time = not isinstance(k_axes[0][0], int)
            if call_time:  # images known at call time: the table holds the rows of as
                image_stride = k_axes[0][1]  # many images as a chunk from any row may reach
                k_axes = k_axes[1:]
            image_rows = math.prod(d for d, _ in k_axes[:-1])
            self.pairs = self.step == 1 and paired(run, image_rows, self.vl)
            chunk_rows = self._chunk_rows(run)
            if call_time:
                images = -(-chunk_rows // image_rows) + 1
            row_offsets = _offsets([(images, image_stride)] + list(k_axes[:-1]))
            col_offsets = _offsets(n_axes)
            rows = exact_quotient(spec.k, run)  # (a call-time size where the images are)
            assert rows is not None
            self.tables = (constant_table(module, f"{name}_dot_rows", row_offsets),
                           constant_table(module, f"{name}_dot_cols", col_offsets))
            if not self.pairs:  # (part_rows: the chunk's copy)
                cap = -(-(chunk_rows * run + self.vl) // self.vl) * self.vl
                panel = min(spec.m, PANEL)
                pack_t = ir.ArrayType(self.et, threads * (panel + RJ) * cap)
                self.pack = ir.GlobalVariable(module, pack_t, f"{name}_dot_pack")
                self.pack.linkage = "internal"
                self.pack.initializer = ir.Constant(pack_t, None)
                self.pack.align = 64
                # whether a row's last vector may be read whole: the lanes past the row
                # lie before the next row's end in every column (offsets that grow by at
                # least as many), inside B but after the depth's last row
                overread = int(self.step == 1 and overreads(row_offsets, run, self.vl))
        self.values = dict(m=spec.m, n=spec.n, k=spec.k, a_s0=spec.a.s0, b_s1=spec.b.s1,
                           c_s0=spec.c.s0, c_s1=spec.c.s1, partials=threads,
                           alpha_bits=alpha, accumulate=int(spec.accumulate), run=run,
                           rows=rows, chunk_rows=chunk_rows,
                           image_rows=image_rows, image_stride=image_stride, cap=cap,
                           panel=panel, overread=overread, step=self.step)
        self.run, self.image_rows = run, image_rows
        self.desc: ir.Value | None = None
        if all(isinstance(v, int) for v in self.values.values()):
            self.desc = constant_table(module, f"{name}_dot_desc",
                                       [self.values[f] for f in FIELDS])

    def _chunk_rows(self, run: int) -> int:
        """An implicit B's rows per chunk: ROWS_CHUNK elements' worth, or half as many where
        then the chunk's copies (A's rows and B's block of columns) fit in L1, which
        the multiply-adds read again for every block (the copy of A: for every column
        block); fewer chunks where they would not (each adds every tile's sums into the
        partials). W6's 16 channels (rows of 28, 16 of A): 18 rows, 2.43 ms against
        2.55 with 36 (one thread, the GEMM alone, ROWS_CHUNK 1024); 32 channels: all
        the rows of 14 kept."""
        es = 4 if self.et == F32 else 8
        if self.pairs:  # (gemm_dot_pairs: its own measured chunks)
            return max(1, CHUNK // run)
        rows = max(1, ROWS_CHUNK // run)
        half = max(1, rows // 2)
        cap = -(-(half * run + self.vl) // self.vl) * self.vl
        return half if (min(self.s.m, PANEL) + RJ) * cap * es <= L1_BYTES else rows

    # -- the kernel's own code: operands' addresses, the team, the final sum ---------------
    def emit(self, b: ir.IRBuilder, bases: dict) -> None:
        s = self.s
        extra = list(self.tables or ()) + ([self.pack] if self.pack is not None else [])
        entry = b.function.entry_basic_block
        with b.goto_block(entry):
            b.position_at_start(entry)
            args = b.alloca(PTR, size=4 + len(extra))
            desc = self.desc
            if desc is None:  # call-time sizes: the descriptor written at each call
                desc = b.alloca(I64, size=len(FIELDS))
        if self.desc is None:
            for i, f in enumerate(FIELDS):
                b.store(as_value(b, self.values[f]), b.gep(desc, [_c(i)], source_etype=I64))
        a0 = b.gep(bases[s.a.buffer], [_c(s.a.offset)], source_etype=self.et)
        b0 = b.gep(bases[s.b.buffer], [_c(s.b.offset)], source_etype=self.et)
        # (globals reach the shared functions as arguments: pointers typed as data)
        for i, value in enumerate([a0, b0, self.partials, desc] + extra):
            b.store(value, b.gep(args, [_c(i)], source_etype=PTR))
        if self.tables is None:
            part = self._part()
        elif self.pack is None:
            part = part_pairs(self, self.run)
        else:
            part = self._part_rows()
        parallel.emit_call_by_depth(self.module, b, args, part, self.threads,
                                    f"{self.name}_dot", s.k, s.m * s.n, self.min_macs)
        c0 = b.gep(bases[s.c.buffer], [_c(s.c.offset)], source_etype=self.et)
        b.call(self._finish(), [c0, self.partials, desc])

    @staticmethod
    def _fields(b: ir.IRBuilder, desc: ir.Value) -> dict:
        return {f: b.load(b.gep(desc, [_c(i)], source_etype=I64), typ=I64)
                for i, f in enumerate(FIELDS)}

    def zero_partials(self, b: ir.IRBuilder, d: dict, partials: ir.Value, t: ir.Value,
                      nt: ir.Value) -> ir.Value:
        """Zeroes the partial products thread t owns (its own, and with fewer threads than
        partials, run alone, every one its index is congruent to); returns its own."""
        et = self.et
        mn = b.mul(d["m"], d["n"])
        size = b.mul(mn, _c(4 if et == F32 else 8))
        memset = self.module.declare_intrinsic("llvm.memset", [PTR, I64])
        # the owned partials are t, t + nt, ...: no test per partial, and a memset where a
        # store loop was unrolled by 8 (compile time)
        owned = b.sdiv(b.add(b.sub(d["partials"], t), b.sub(nt, _c(1))), nt)
        with counted_loop(b, owned, "q", unroll=False) as i:
            base = b.gep(partials, [b.mul(b.add(t, b.mul(i, nt)), mn)], source_etype=et)
            b.call(memset, [base, ir.Constant(ir.IntType(8), 0), size,
                            ir.Constant(ir.IntType(1), 0)])
        return b.gep(partials, [b.mul(t, mn)], source_etype=et)

    def fma(self) -> ir.Function:
        """llvm.fma on this dtype's vectors (declared once a module)."""
        name = f"llvm.fma.v{self.vl}{'f32' if self.et == F32 else 'f64'}"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        return ir.Function(self.module, ir.FunctionType(self.vt, [self.vt] * 3), name)

    def accumulate(self, b: ir.IRBuilder, fma: ir.Function, acc_slot: ir.Value, av: list,
                   bv: list, ri: int = RI, rj: int = RJ) -> None:
        """The ri x rj register block's multiply-adds: acc[r * rj + c] += av[r] * bv[c]."""
        for r in range(ri):
            for c in range(rj):
                slot = b.gep(acc_slot, [_c(r * rj + c)], source_etype=self.vt)
                b.store(b.call(fma, [av[r], bv[c], b.load(slot, typ=self.vt)]), slot)

    # -- part(args, t, nt): thread t's share of the depth into its partial products --------
    def _part(self) -> ir.Function:
        name = f"{self.prefix}_part"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        et, vt, vl = self.et, self.vt, self.vl
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR, I64, I64]), name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        args, t, nt = fn.args
        acc_slot = b.alloca(vt, size=RI * RJ)  # promoted to registers (constant indices)
        a_base, b_base, partials, desc = [
            b.load(b.gep(args, [_c(i)], source_etype=PTR), typ=PTR) for i in range(4)]
        d = self._fields(b, desc)
        m, n, k = d["m"], d["n"], d["k"]
        partial = self.zero_partials(b, d, partials, t, nt)
        # the depth in whole vectors, shared out evenly
        nvec = b.sdiv(b.add(k, _c(vl - 1)), _c(vl))
        lo = b.mul(b.sdiv(b.mul(t, nvec), nt), _c(vl))
        hi_v = b.mul(b.sdiv(b.mul(b.add(t, _c(1)), nvec), nt), _c(vl))
        hi = b.select(b.icmp_signed("<", hi_v, k), hi_v, k)
        span = b.sub(hi, lo)
        positive = b.select(b.icmp_signed(">", span, _c(0)), span, _c(0))
        chunks = b.sdiv(b.add(positive, _c(CHUNK - 1)), _c(CHUNK))
        fma = self.fma()
        lanes = ir.Constant(ir.VectorType(I64, vl), list(range(vl)))
        zero_v = ir.Constant(vt, None)
        col_blocks = b.sdiv(b.add(n, _c(RJ - 1)), _c(RJ))
        row_blocks = b.sdiv(b.add(m, _c(RI - 1)), _c(RI))
        with counted_loop(b, chunks, "ch") as ch:
            start = b.add(lo, b.mul(ch, _c(CHUNK)))
            rest = b.sub(hi, start)
            clen = b.select(b.icmp_signed("<", rest, _c(CHUNK)), rest, _c(CHUNK))
            full = b.sdiv(clen, _c(vl))
            tail_from = b.mul(full, _c(vl))
            left = b.sub(clen, tail_from)
            has_tail = b.icmp_signed(">", left, _c(0))
            tail = b.icmp_signed("<", lanes, self._splat_i64(b, left))
            with counted_loop(b, col_blocks, "jb") as jb:
                cols = [self._clamped(b, b.add(b.mul(jb, _c(RJ)), _c(c)), n) for c in
                        range(RJ)]
                b_rows = [b.gep(b_base, [b.add(b.mul(j, d["b_s1"]), start)], source_etype=et)
                          for j in cols]
                with counted_loop(b, row_blocks, "ib") as ib:
                    rows = [self._clamped(b, b.add(b.mul(ib, _c(RI)), _c(r)), m) for r in
                            range(RI)]
                    a_rows = [b.gep(a_base, [b.add(b.mul(i, d["a_s0"]), start)],
                                    source_etype=et) for i in rows]
                    for q in range(RI * RJ):
                        b.store(zero_v, b.gep(acc_slot, [_c(q)], source_etype=vt))
                    with counted_loop(b, full, "v", unroll=False) as v:
                        at = b.mul(v, _c(vl))
                        av = [self._load_vec(b, p, at) for p in a_rows]
                        bv = [self._load_vec(b, p, at) for p in b_rows]
                        self.accumulate(b, fma, acc_slot, av, bv)
                    # the chunk's last elements: one masked vector (zeros past them)
                    with b.if_then(has_tail):
                        self.accumulate(
                            b, fma, acc_slot,
                            [self._masked_vec(b, p, tail_from, tail) for p in a_rows],
                            [self._masked_vec(b, p, tail_from, tail) for p in b_rows])
                    self._add_tile(b, acc_slot, ib, jb, m, n, partial, vt, et)
        b.ret_void()
        return fn

    # -- part_rows: the same for an implicit B, the depth in rows of `run` elements -------
    def _part_rows(self) -> ir.Function:
        """part for a B whose depth is rows of `run` contiguous elements, each row's offset
        in B from a table (and each column's). Each chunk of rows is first copied into
        per-thread scratch, its rows end to end (as a materialised B's would lie): A's
        PANEL rows at a time, B's RJ columns for each block of columns; the multiply-adds
        then read whole, aligned vectors of that copy, the depth's lanes all used but in
        the chunk's last vector (zeros past it). Read where they lie, a row of 14 or 28
        elements was one or two masked vectors that straddle cache lines, A's as B's:
        on an Intel Xeon (Sapphire Rapids class) such loads, not the multiply-adds, set
        the pace (W6's weight gradients at half the forward convolutions' rate). The copy
        costs a load and a store a vector, against RI (B) or the column blocks (A) uses.
        Rows whose elements lie 2 apart in B (the descriptor's step: a stride-2
        convolution's weight gradient from its padded image) are copied as the even
        lanes of two vectors, only the even elements read (_row_vec); one function for
        both, the step data (a second one cost W6's cold start ~0.03 s of LLVM)."""
        name = f"{self.prefix}_part_rows"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        et, vt, vl = self.et, self.vt, self.vl
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR, I64, I64]), name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        args, t, nt = fn.args
        acc_slot = b.alloca(vt, size=RI * RJ)  # promoted to registers (constant indices)
        a_base, b_base, partials, desc, row_off, col_off, pack = [
            b.load(b.gep(args, [_c(i)], source_etype=PTR), typ=PTR) for i in range(7)]
        d = self._fields(b, desc)
        m, n, run, rows, cap = d["m"], d["n"], d["run"], d["rows"], d["cap"]
        panel = d["panel"]
        partial = self.zero_partials(b, d, partials, t, nt)
        # this thread's scratch: `panel` rows of A, then RJ columns of B, `cap` apart
        a_pack = b.gep(pack, [b.mul(t, b.mul(b.add(panel, _c(RJ)), cap))], source_etype=et)
        b_pack = b.gep(a_pack, [b.mul(panel, cap)], source_etype=et)
        lo = b.sdiv(b.mul(t, rows), nt)
        hi = b.sdiv(b.mul(b.add(t, _c(1)), rows), nt)
        lanes = ir.Constant(ir.VectorType(I64, vl), list(range(vl)))
        overread = b.icmp_signed("!=", d["overread"], _c(0))
        row_vecs = b.sdiv(b.add(run, _c(vl - 1)), _c(vl))
        step = d["step"]
        span = b.add(b.mul(b.sub(run, _c(1)), step), _c(1))  # a row's extent in B
        row_whole = b.sdiv(run, _c(vl))  # a row's whole vectors, then its masked last
        tail_at = b.mul(row_whole, _c(vl))
        tail = b.icmp_signed("<", lanes, self._splat_i64(b, b.sub(run, tail_at)))
        zero_v = ir.Constant(vt, None)
        fma = self.fma()
        col_blocks = b.sdiv(b.add(n, _c(RJ - 1)), _c(RJ))
        panels = b.sdiv(b.add(m, b.sub(panel, _c(1))), panel)
        accumulate = functools.partial(self.accumulate, b, fma, acc_slot)

        def below(x: ir.Value) -> ir.Value:
            return b.icmp_signed("<", lanes, self._splat_i64(b, x))

        def store(ptr: ir.Value, at: ir.Value, x: ir.Value) -> None:
            b.store(x, b.gep(ptr, [at], source_etype=et), align=4 if et == F32 else 8)

        def chunk(r0: ir.Value, count: ir.Value, b_img: ir.Value, tab: ir.Value) -> None:
            length = b.mul(count, run)  # the chunk's depth
            vecs = b.sdiv(b.add(length, _c(vl - 1)), _c(vl))
            whole = b.sdiv(length, _c(vl))
            with counted_loop(b, panels, "pn") as pn:
                i0 = b.mul(pn, panel)
                in_panel = self._smaller(b, panel, b.sub(m, i0))
                # A's rows i0.. of the chunk: contiguous in A, copied to aligned rows
                with counted_loop(b, in_panel, "pa", unroll=False) as pa:
                    src = b.gep(a_base, [b.add(b.mul(b.add(i0, pa), d["a_s0"]),
                                               b.mul(r0, run))], source_etype=et)
                    dst = b.gep(a_pack, [b.mul(pa, cap)], source_etype=et)
                    with counted_loop(b, whole, "pv", unroll=False) as v:
                        at = b.mul(v, _c(vl))
                        b.store(self._load_vec(b, src, at), b.gep(dst, [at], source_etype=et))
                    at = b.mul(whole, _c(vl))
                    b.store(self._masked_vec(b, src, at, below(b.sub(length, at))),
                            b.gep(dst, [at], source_etype=et))
                row_blocks = b.sdiv(b.add(in_panel, _c(RI - 1)), _c(RI))
                with counted_loop(b, col_blocks, "jb") as jb:
                    # B's RJ columns of the chunk, row after row: a row's whole vectors,
                    # then its last masked to the row (the next row's overwrite the zeros
                    # past it; after the last, a vector of zeros)
                    cols = [b.gep(b_img, [b.load(b.gep(col_off, [self._clamped(
                        b, b.add(b.mul(jb, _c(RJ)), _c(c)), n)], source_etype=I64), typ=I64)],
                        source_etype=et) for c in range(RJ)]
                    dsts = [b.gep(b_pack, [b.mul(_c(c), cap)], source_etype=et)
                            for c in range(RJ)]
                    # (the lanes past a row read whole where that stays inside B: the
                    # next row's stores overwrite them; the chunk's last row masked)
                    whole_rows = b.select(overread, b.sub(count, _c(1)), _c(0))

                    def rows_from(first: ir.Value, last: ir.Value, masked: bool,
                                  step: int = 1) -> None:
                        with counted_loop(b, b.sub(last, first), "pr", unroll=False) as q:
                            rr = b.add(first, q)
                            at_b = b.load(b.gep(tab, [rr], source_etype=I64), typ=I64)
                            at_p = b.mul(rr, run)
                            srcs = [b.gep(p, [at_b], source_etype=et) for p in cols]
                            outs = [b.gep(p, [at_p], source_etype=et) for p in dsts]
                            whole = row_whole if masked else row_vecs
                            with counted_loop(b, whole, "pw", unroll=False) as w:
                                at = b.mul(w, _c(vl))
                                for src, out in zip(srcs, outs):
                                    store(out, at, self._row_vec(b, src, at, step))
                            if masked:
                                for src, out in zip(srcs, outs):
                                    store(out, tail_at, self._row_vec(b, src, tail_at, step,
                                                                      tail))
                    with b.if_else(b.icmp_signed("==", step, _c(2))) as (two, one):
                        with two:  # (never read past a row: every row masked)
                            rows_from(_c(0), count, True, 2)
                        with one:
                            rows_from(_c(0), whole_rows, False)
                            rows_from(whole_rows, count, True)
                    for dst in dsts:
                        store(dst, length, zero_v)
                    # the next block's rows of B, while this one's multiply-adds run
                    self.prefetch_columns(b, b_img, col_off, tab, _c(0), count, span,
                                          b.add(jb, _c(1)), n)
                    b_cols = [b.gep(b_pack, [b.mul(_c(c), cap)], source_etype=et)
                              for c in range(RJ)]
                    with counted_loop(b, row_blocks, "ib") as ib:
                        rows_i = [self._clamped(b, b.add(b.mul(ib, _c(RI)), _c(r)), in_panel)
                                  for r in range(RI)]
                        a_rows = [b.gep(a_pack, [b.mul(i, cap)], source_etype=et)
                                  for i in rows_i]
                        for q in range(RI * RJ):
                            b.store(zero_v, b.gep(acc_slot, [_c(q)], source_etype=vt))
                        with counted_loop(b, vecs, "v", unroll=False) as v:
                            at = b.mul(v, _c(vl))
                            accumulate([self._aligned_vec(b, p, at) for p in a_rows],
                                       [self._aligned_vec(b, p, at) for p in b_cols])
                        self._add_tile(b, acc_slot, b.add(ib, b.sdiv(i0, _c(RI))), jb, m, n,
                                       partial, vt, et)
        self.image_chunks(b, d, lo, hi, d["chunk_rows"], d["image_rows"], b_base, row_off,
                          chunk)
        b.ret_void()
        return fn

    def image_chunks(self, b: ir.IRBuilder, d: dict, lo: ir.Value, hi: ir.Value,
                     size: ir.Value, per_image: ir.Value, b_base: ir.Value,
                     row_off: ir.Value, chunk, unit: int = 1) -> None:
        """chunk(u0, count, b_img, tab) for the units (rows, or pairs of rows: `unit` rows
        each) lo .. hi in chunks of at most `size`: B's image of the chunk's first row at
        b_img, the chunk's rows' offsets from it tab[0...] (the row table holds one image's
        rows and as many more images' as a chunk starting in it may reach; one image
        where the depth is known when compiled: every row)."""
        left = b.sub(hi, lo)
        positive = b.select(b.icmp_signed(">", left, _c(0)), left, _c(0))
        chunks = b.sdiv(b.add(positive, b.sub(size, _c(1))), size)
        with counted_loop(b, chunks, "ch") as ch:
            u0 = b.add(lo, b.mul(ch, size))
            count = self._smaller(b, size, b.sub(hi, u0))
            image = b.sdiv(u0, per_image)
            first = b.sub(u0, b.mul(image, per_image))
            b_img = b.gep(b_base, [b.mul(image, d["image_stride"])], source_etype=self.et)
            tab = b.gep(row_off, [b.mul(first, _c(unit))], source_etype=I64)
            chunk(u0, count, b_img, tab)

    def prefetch_columns(self, b: ir.IRBuilder, b_base: ir.Value, col_off: ir.Value,
                         row_off: ir.Value, r0: ir.Value, count: ir.Value, run: ir.Value,
                         jb: ir.Value, n: ir.Value, rj: int = RJ) -> None:
        """Prefetches the rows r0 .. r0 + count of B's column block jb (a row's elements 0,
        run - 1 and, for rows longer than a line, the line's length: every line a row of up
        to two lines' elements touches), read next: W6's images (2-3.7 MB) do not stay in
        a core's L2, and B's rows lie a table's offsets apart, which the hardware
        prefetcher does not follow. Only the block's first and last columns: a convolution's
        columns in between lie between them, a few elements from one or the other, on the
        same lines (W6: 2-3 % faster than all five; prefetching is a hint, any lines are
        right). A block past n prefetches the last columns again (harmless)."""
        fn = self.module.globals.get("llvm.prefetch.p0") or ir.Function(
            self.module, ir.FunctionType(VOID, [PTR, I32, I32, I32]), "llvm.prefetch.p0")
        # (a read, kept in every cache level, of data)
        flags = [ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)]
        last = b.sub(run, _c(1))
        line = _c(64 // (4 if self.et == F32 else 8))
        ends = (0, rj - 1)  # (the block's first and last columns: see above)
        cols = [b.gep(b_base, [b.load(b.gep(col_off, [self._clamped(
            b, b.add(b.mul(jb, _c(rj)), _c(c)), n)], source_etype=I64), typ=I64)],
            source_etype=self.et) for c in ends]

        def rows(points: tuple) -> None:
            with counted_loop(b, count, "pf", unroll=False) as q:
                at = b.load(b.gep(row_off, [b.add(r0, q)], source_etype=I64), typ=I64)
                for p in cols:
                    row = b.gep(p, [at], source_etype=self.et)
                    for at_row in points:
                        b.call(fn, [b.gep(row, [at_row], source_etype=self.et)] + flags)
        # (chosen once: a row of at most a line's elements touches at most two lines)
        with b.if_else(b.icmp_signed(">", run, line)) as (longer, short):
            with longer:
                rows((_c(0), line, last))
            with short:
                rows((_c(0), last))

    def _add_tile(self, b: ir.IRBuilder, acc_slot: ir.Value, ib: ir.Value, jb: ir.Value,
                  m: ir.Value, n: ir.Value, partial: ir.Value, vt: ir.Type, et: ir.Type,
                  ri: int = RI, rj: int = RJ) -> None:
        """Adds the ri x rj tile of vector accumulators at (ib, jb), each summed across its
        lanes, into `partial` (row-major, n columns), skipping what lies past m or n: the
        accumulators copied to a stack buffer and handed to one function every part of
        the module shares (summing the lanes inline was ~0.04 s of LLVM in each of W6's
        two part functions, a tenth of W6's cold start; the copy and the call cost
        nothing measurable a tile)."""
        tile = self._entry_alloca(b, vt, ri * rj)
        for q in range(ri * rj):
            b.store(b.load(b.gep(acc_slot, [_c(q)], source_etype=vt), typ=vt),
                    b.gep(tile, [_c(q)], source_etype=vt))
        b.call(self._tile_function(ri, rj), [tile, partial, b.mul(ib, _c(ri)),
                                             b.mul(jb, _c(rj)), m, n])

    def _tile_function(self, ri: int, rj: int) -> ir.Function:
        """tile(accs, partial, i0, j0, m, n): the ri x rj tile's sums into the partials.
        One branch a tile: a tile inside m x n adds straight; an edge tile's sums go
        through a loop over its part inside (a branch per output was ri * rj blocks that
        LLVM unswitched and duplicated: compile time)."""
        name = f"{self.prefix}_tile{ri}x{rj}"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        et, vt = self.et, self.vt
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR, PTR, I64, I64, I64, I64]),
                         name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        tile, partial, i0, j0, m, n = fn.args
        sums = self._sums(b, [b.load(b.gep(tile, [_c(q)], source_etype=vt), typ=vt)
                              for q in range(ri * rj)])
        inside = b.and_(b.icmp_signed("<=", b.add(i0, _c(ri)), m),
                        b.icmp_signed("<=", b.add(j0, _c(rj)), n))
        with b.if_else(inside) as (whole, edge):
            with whole:
                for r in range(ri):
                    row = b.add(b.mul(b.add(i0, _c(r)), n), j0)
                    for c in range(rj):
                        at = b.gep(partial, [b.add(row, _c(c))], source_etype=et)
                        b.store(b.fadd(b.load(at, typ=et), sums[r * rj + c]), at)
            with edge:
                scratch = self._entry_alloca(b, et, ri * rj)
                for q, x in enumerate(sums):
                    b.store(x, b.gep(scratch, [_c(q)], source_etype=et))
                rows = self._smaller(b, _c(ri), b.sub(m, i0))
                cols = self._smaller(b, _c(rj), b.sub(n, j0))
                with counted_loop(b, rows, "er", unroll=False) as r:
                    row = b.add(b.mul(b.add(i0, r), n), j0)
                    with counted_loop(b, cols, "ec", unroll=False) as c:
                        x = b.load(b.gep(scratch, [b.add(b.mul(r, _c(rj)), c)],
                                         source_etype=et), typ=et)
                        at = b.gep(partial, [b.add(row, c)], source_etype=et)
                        b.store(b.fadd(b.load(at, typ=et), x), at)
        b.ret_void()
        return fn

    @staticmethod
    def _smaller(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
        return b.select(b.icmp_signed("<", x, y), x, y)

    @staticmethod
    def _entry_alloca(b: ir.IRBuilder, typ: ir.Type, count: int) -> ir.Value:
        """A stack array allocated at the function's entry (once, not per loop trip)."""
        entry = b.function.entry_basic_block
        with b.goto_block(entry):
            b.position_at_start(entry)
            return b.alloca(typ, size=count)

    def _splat_i64(self, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
        """x in every lane of an i64 vector."""
        vi = ir.VectorType(I64, self.vl)
        return b.shuffle_vector(b.insert_element(ir.Constant(vi, None), x, _c(0)),
                                ir.Constant(vi, None),
                                ir.Constant(ir.VectorType(ir.IntType(32), self.vl),
                                            [0] * self.vl))

    def _masked_vec(self, b: ir.IRBuilder, row: ir.Value, at: ir.Value, mask: ir.Value
                    ) -> ir.Value:
        """The lanes of `mask` from row[at:], zeros elsewhere (nothing past them is read)."""
        vl = self.vl
        kind = "f32" if self.et == F32 else "f64"
        name = f"llvm.masked.load.v{vl}{kind}.p0"
        fn = self.module.globals.get(name) or ir.Function(self.module, ir.FunctionType(
            self.vt, [PTR, ir.IntType(32), ir.VectorType(ir.IntType(1), vl), self.vt]), name)
        ptr = b.gep(row, [at], source_etype=self.et)
        return b.call(fn, [ptr, ir.Constant(ir.IntType(32), 4 if self.et == F32 else 8),
                           mask, ir.Constant(self.vt, None)])

    @staticmethod
    def _clamped(b: ir.IRBuilder, i: ir.Value, size: ir.Value) -> ir.Value:
        """i, or the last row past the edge (its sums are computed and never stored)."""
        return b.select(b.icmp_signed("<", i, size), i, b.sub(size, _c(1)))

    def _row_vec(self, b: ir.IRBuilder, row: ir.Value, at: ir.Value, step: int,
                 mask: ir.Value | None = None) -> ir.Value:
        """Elements at.. of a row of B whose elements lie `step` apart (the mask's lanes
        only, zeros elsewhere)."""
        if step == 1:
            return self._load_vec(b, row, at) if mask is None else \
                self._masked_vec(b, row, at, mask)
        vl = self.vl
        i32v = ir.VectorType(I32, vl)
        start = b.gep(row, [b.mul(at, _c(2))], source_etype=self.et)
        halves = []
        for h in (0, 1):
            if mask is None:
                even = ir.Constant(ir.VectorType(ir.IntType(1), vl),
                                   [int(i % 2 == 0) for i in range(vl)])
            else:
                spread = ir.Constant(i32v, [i // 2 + h * vl // 2 if i % 2 == 0 else vl
                                            for i in range(vl)])
                even = b.shuffle_vector(mask, ir.Constant(mask.type, None), spread)
            halves.append(self._masked_vec(b, start, _c(h * vl), even))
        return b.shuffle_vector(halves[0], halves[1],
                                ir.Constant(i32v, [2 * i for i in range(vl)]))

    def _aligned_vec(self, b: ir.IRBuilder, row: ir.Value, at: ir.Value) -> ir.Value:
        ptr = b.gep(row, [at], source_etype=self.et)
        return b.load(ptr, typ=self.vt, align=self.vl * (4 if self.et == F32 else 8))

    def _load_vec(self, b: ir.IRBuilder, row: ir.Value, at: ir.Value) -> ir.Value:
        ptr = b.gep(row, [at], source_etype=self.et)
        return b.load(ptr, typ=self.vt, align=4 if self.et == F32 else 8)  # rows: unaligned

    def _sums(self, b: ir.IRBuilder, accs: list) -> list:
        """Each vector's lanes' sum, four vectors at a time: two pairs each folded into one
        vector (half of each one's lanes, the two halves added: two shuffles and an add),
        the pairs folded alike, then the four lane groups summed within the vector: 13
        shuffles and adds for four sums where halving each vector alone took 32 (W6's
        weight gradients sum 20 accumulators a tile and chunk: 16 channels 2.45 -> 2.32
        ms, 32 channels 2.11 -> 2.07, one thread, the GEMM alone)."""
        vl = self.vl
        i32v = ir.VectorType(ir.IntType(32), vl)

        def fold(x: ir.Value, y: ir.Value, groups: int) -> ir.Value:
            """x and y, each `groups` groups of w lanes, as one of 2 * groups of w / 2."""
            w = vl // groups
            lo, hi = [], []
            for j in range(2 * groups):
                base, g = (0, j) if j < groups else (vl, j - groups)
                lo += [base + g * w + t for t in range(w // 2)]
                hi += [base + g * w + w // 2 + t for t in range(w // 2)]
            return b.fadd(b.shuffle_vector(x, y, ir.Constant(i32v, lo)),
                          b.shuffle_vector(x, y, ir.Constant(i32v, hi)))

        out = []
        whole = len(accs) // 4 * 4 if vl >= 4 else 0
        for q in range(0, whole, 4):
            a, c = fold(accs[q], accs[q + 1], 1), fold(accs[q + 2], accs[q + 3], 1)
            x = fold(a, c, 2)  # four groups of vl / 4 lanes
            w = vl // 4
            while w > 1:  # each group's lanes halved onto its first
                h = w // 2
                idx = [i + h if i % w < h else i for i in range(vl)]
                x = b.fadd(x, b.shuffle_vector(x, x, ir.Constant(i32v, idx)))
                w = h
            out += [b.extract_element(x, _c(g * (vl // 4))) for g in range(4)]
        return out + [self._hsum(b, x) for x in accs[whole:]]

    def _hsum(self, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
        """The lanes' sum, halving the vector each step."""
        width = self.vl // 2
        while width:
            mask = [i + width if i < width else i for i in range(self.vl)]
            x = b.fadd(x, b.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32),
                                                                           self.vl), mask)))
            width //= 2
        return b.extract_element(x, _c(0))

    # -- finish(c, partials, desc): C = alpha * (sum of the partials) (+ C) ----------------
    def _finish(self) -> ir.Function:
        name = f"{self.prefix}_finish"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        et = self.et
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR, PTR, PTR]), name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        # m x n sums once a call: O3's vectorized and unrolled copies of these loops cost
        # more compile time than they could save
        fn.attributes.add("optsize")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        c0, partials, desc = fn.args
        running = b.alloca(et)  # the sum over the partials (promoted to a register)
        d = self._fields(b, desc)
        mn = b.mul(d["m"], d["n"])
        alpha = b.bitcast(d["alpha_bits"], ir.DoubleType())
        if et == F32:
            alpha = b.fptrunc(alpha, F32)
        accumulate = b.icmp_signed("!=", d["accumulate"], _c(0))
        with counted_loop(b, d["m"], "i", unroll=False) as i:
            with counted_loop(b, d["n"], "j", unroll=False) as j:
                flat = b.add(b.mul(i, d["n"]), j)
                b.store(b.load(b.gep(partials, [flat], source_etype=et), typ=et), running)
                with counted_loop(b, b.sub(d["partials"], _c(1)), "q", unroll=False) as q:
                    at = b.gep(partials, [b.add(flat, b.mul(b.add(q, _c(1)), mn))],
                               source_etype=et)
                    b.store(b.fadd(b.load(running, typ=et), b.load(at, typ=et)), running)
                total = b.fmul(b.load(running, typ=et), alpha)
                out = b.gep(c0, [b.add(b.mul(i, d["c_s0"]), b.mul(j, d["c_s1"]))],
                            source_etype=et)
                old = b.load(out, typ=et)
                total = b.select(accumulate, b.fadd(old, total), total)
                b.store(total, out)
        b.ret_void()
        return fn
