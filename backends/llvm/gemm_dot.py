"""Deep, small GEMMs whose operands are both contiguous along the depth (a convolution's
weight gradient dW = g @ cols^T: a few hundred outputs, each a sum over every output pixel
of the batch) computed as register blocks of dot products, with no packing.

The packed path copies B (transposed, in 16x16 blocks) before multiplying: here every
element of B serves only m multiply-adds, so that copy cost more than the product. Instead
RI rows of A and RJ rows of B^T are read where they lie, a vector of the depth at a time,
into RI x RJ vector accumulators; the depth is cut into chunks (an RJ-row block of B^T
stays in L1 while the rows of A stream past it) and split over the threads, each summing
into partial products of its own that one pass adds into C at the end (alpha, and += C for
a parameter update folded into the GEMM)."""
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

# The register block: 24 accumulators, 4 vectors of A and one of B at a time of the 32
# registers. 4 x 6 measured 14-23 % faster than 4 x 4 on W6's weight gradients (16 and
# 32 channels, one thread): fewer loads and less per-row overhead per multiply-add.
RI, RJ = 4, 6
CHUNK = 1024  # depth per pass over the outputs (elements)
MIN_DEPTH = 512
SHORT_ROW = 2  # rows of the depth up to this many vectors: no loop over a row's vectors
DEPTH_RATIO = 8  # the depth at least this many times the longer side of the output
MAX_OUTPUTS = 1 << 16
MIN_RUN = 8  # an implicit B's shortest run along the depth (graphc.schedule.implicit)


def suitable(spec) -> bool:
    """Whether a canonical GEMM (gemm._Spec) takes this path: one batch item, A's rows and
    B's columns contiguous along the depth (an implicit B: in runs, its depth's last
    sub-axis), and a depth that dwarfs the output. An implicit B's depth may run over a
    call-time image count (its first sub-axis; then the depth and A's row stride are
    call-time sizes, judged at the representative binding)."""
    if spec.b_sub is None:
        if not all(isinstance(v, int) for v in spec.flat()):
            return False
        along = spec.b.s0 == 1
    else:  # (the same rule as the scheduler's: graphc.schedule.implicit.deep)
        run, stride = spec.b_sub[0][-1]
        along = stride == 1 and isinstance(run, int) and run >= MIN_RUN and _known(spec)
    k = hint(spec.k)
    return (along and spec.nbatch == 1 and spec.a.s1 == 1
            and k >= MIN_DEPTH
            and k >= DEPTH_RATIO * max(spec.m, spec.n)
            and spec.m * spec.n <= MAX_OUTPUTS)


def _known(spec) -> bool:
    """Whether an implicit B's GEMM has every size and stride as an int but for those a
    call-time image count gives (the depth's first sub-axis, the depth, A's strides)."""
    k_axes, n_axes = spec.b_sub
    fixed = [spec.m, spec.n, *spec.batch, spec.a.s1, spec.a.offset, *spec.b.batch,
             spec.b.offset, *spec.c.batch, spec.c.s0, spec.c.s1, spec.c.offset,
             k_axes[0][1], *(v for ax in k_axes[1:] for v in ax),
             *(v for ax in n_axes for v in ax)]
    return all(isinstance(v, int) for v in fixed)


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
FIELDS = ("m", "n", "k", "a_s0", "b_s1", "c_s0", "c_s1", "partials", "alpha_bits",
          "accumulate", "run", "rows", "chunk_rows", "image_rows", "image_stride")


class DotGemm:
    """One such GEMM: its descriptor and partial products, and calls to the functions every
    dot-product GEMM of one dtype in a module shares (sizes and strides are data)."""

    def __init__(self, module: ir.Module, spec, threads: int, name: str) -> None:
        self.module, self.s, self.threads, self.name = module, spec, threads, name
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
        run = image_rows = image_stride = 0
        rows: object = 0
        if spec.b_sub is not None:
            k_axes, n_axes = spec.b_sub
            run = k_axes[-1][0]
            chunk_rows = max(1, CHUNK // max(run, 1))
            images = 1
            if not isinstance(k_axes[0][0], int):  # images known at call time: the table
                image_stride = k_axes[0][1]          # holds the rows of as many images as
                k_axes = k_axes[1:]                  # a chunk from any row may reach
                images = -(-chunk_rows // math.prod(d for d, _ in k_axes[:-1])) + 1
            image_rows = math.prod(d for d, _ in k_axes[:-1])
            row_offsets = _offsets([(images, image_stride)] + list(k_axes[:-1]))
            col_offsets = _offsets(n_axes)
            rows = exact_quotient(spec.k, run)  # (a call-time size where the images are)
            assert rows is not None
            self.tables = (constant_table(module, f"{name}_dot_rows", row_offsets),
                           constant_table(module, f"{name}_dot_cols", col_offsets))
        self.values = dict(m=spec.m, n=spec.n, k=spec.k, a_s0=spec.a.s0, b_s1=spec.b.s1,
                           c_s0=spec.c.s0, c_s1=spec.c.s1, partials=threads,
                           alpha_bits=alpha, accumulate=int(spec.accumulate), run=run,
                           rows=rows, chunk_rows=max(1, CHUNK // max(run, 1)),
                           image_rows=image_rows, image_stride=image_stride)
        self.run, self.image_rows = run, image_rows
        self.desc: ir.Value | None = None
        if all(isinstance(v, int) for v in self.values.values()):
            self.desc = constant_table(module, f"{name}_dot_desc",
                                       [self.values[f] for f in FIELDS])

    # -- the kernel's own code: operands' addresses, the team, the final sum ---------------
    def emit(self, b: ir.IRBuilder, bases: dict) -> None:
        s = self.s
        extra = list(self.tables or ())
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
        elif paired(self.run, self.image_rows, self.vl):
            part = part_pairs(self, self.run)
        else:
            part = self._part_rows(self._short_rows())
        if self.threads > 1:
            parallel.emit_team_call(self.module, b, args, part, self.threads,
                                    f"{self.name}_dot")
        else:
            b.call(part, [args, _c(0), _c(1)])
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
        zero_v = ir.Constant(vt, None)
        col_blocks = b.sdiv(b.add(n, _c(RJ - 1)), _c(RJ))
        row_blocks = b.sdiv(b.add(m, _c(RI - 1)), _c(RI))
        with counted_loop(b, chunks, "ch") as ch:
            start = b.add(lo, b.mul(ch, _c(CHUNK)))
            rest = b.sub(hi, start)
            clen = b.select(b.icmp_signed("<", rest, _c(CHUNK)), rest, _c(CHUNK))
            full = b.sdiv(clen, _c(vl))
            tail_from = b.mul(full, _c(vl))
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
                    with counted_loop(b, b.sub(clen, tail_from), "e") as e:
                        at = b.add(tail_from, e)
                        ae = [b.load(b.gep(p, [at], source_etype=et), typ=et) for p in a_rows]
                        be = [b.load(b.gep(p, [at], source_etype=et), typ=et) for p in b_rows]
                        for r in range(RI):
                            for c in range(RJ):
                                slot = b.gep(acc_slot, [_c(r * RJ + c)], source_etype=vt)
                                old = b.load(slot, typ=vt)
                                lane = b.extract_element(old, _c(0))
                                total = b.fadd(lane, b.fmul(ae[r], be[c]))
                                b.store(b.insert_element(old, total, _c(0)), slot)
                    self._add_tile(b, acc_slot, ib, jb, m, n, partial, vt, et)
        b.ret_void()
        return fn

    # -- part_rows: the same for an implicit B, the depth in rows of `run` elements -------
    def _short_rows(self) -> bool:
        """Whether the depth's rows are at most SHORT_ROW vectors long (implicit B)."""
        return self.s.b_sub[0][-1][0] <= SHORT_ROW * self.vl

    def _part_rows(self, short: bool) -> ir.Function:
        """part for a B whose depth is rows of `run` contiguous elements, each row's offset
        in B from a table (and each column's): a row is its whole vectors and one masked
        vector of the rest, for A as for B. Threads share out the rows. `short` (rows of
        at most SHORT_ROW vectors): two loops over the rows, one for rows of one masked
        vector, one for a whole vector and a masked one, chosen once: a loop over a row's
        vectors, whose setup spilled the row pointers, cost more than the multiply-adds of
        rows this short (W6: 14 and 28 elements). (Code of its own per row length ran as
        fast, but two such functions in W6's GEMM unit made it 30 % larger: compile time.)"""
        name = f"{self.prefix}_part_rows" + ("_short" if short else "")
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
        a_base, b_base, partials, desc, row_off, col_off = [
            b.load(b.gep(args, [_c(i)], source_etype=PTR), typ=PTR) for i in range(6)]
        d = self._fields(b, desc)
        m, n, run, rows = d["m"], d["n"], d["run"], d["rows"]
        partial = self.zero_partials(b, d, partials, t, nt)
        lo = b.sdiv(b.mul(t, rows), nt)
        hi = b.sdiv(b.mul(b.add(t, _c(1)), rows), nt)
        chunk_rows = d["chunk_rows"]
        full = b.sdiv(run, _c(vl))
        tail_at = b.mul(full, _c(vl))
        lanes = ir.Constant(ir.VectorType(I64, vl), list(range(vl)))
        # the last vector of a row: lanes below run - tail_at
        rest = b.sub(run, tail_at)
        tail = b.icmp_signed("<", lanes, self._splat_i64(b, rest))
        has_tail = b.icmp_signed(">", rest, _c(0))
        # a short row: one vector, lanes below run; or two, the second's below run - vl
        second = b.icmp_signed(">", run, _c(vl))
        first = b.icmp_signed("<", lanes, self._splat_i64(b, run))
        last = b.icmp_signed("<", lanes, self._splat_i64(b, b.sub(run, _c(vl))))
        fma = self.fma()
        zero_v = ir.Constant(vt, None)
        col_blocks = b.sdiv(b.add(n, _c(RJ - 1)), _c(RJ))
        row_blocks = b.sdiv(b.add(m, _c(RI - 1)), _c(RI))

        accumulate = functools.partial(self.accumulate, b, fma, acc_slot)

        def chunk(r0: ir.Value, count: ir.Value, b_img: ir.Value, tab: ir.Value) -> None:
            with counted_loop(b, col_blocks, "jb") as jb:
                cols = [self._clamped(b, b.add(b.mul(jb, _c(RJ)), _c(c)), n) for c in
                        range(RJ)]
                b_cols = [b.gep(b_img, [b.load(b.gep(col_off, [j], source_etype=I64),
                                               typ=I64)], source_etype=et) for j in cols]
                # the next block's rows of B, while this one's multiply-adds run
                self.prefetch_columns(b, b_img, col_off, tab, _c(0), count, run,
                                      b.add(jb, _c(1)), n)
                with counted_loop(b, row_blocks, "ib") as ib:
                    rows_i = [self._clamped(b, b.add(b.mul(ib, _c(RI)), _c(r)), m) for r in
                              range(RI)]
                    a_rows = [b.gep(a_base, [b.mul(i, d["a_s0"])], source_etype=et)
                              for i in rows_i]
                    for q in range(RI * RJ):
                        b.store(zero_v, b.gep(acc_slot, [_c(q)], source_etype=vt))
                    def rows_loop(row_body) -> None:
                        with counted_loop(b, count, "rr") as rr:
                            row = b.add(r0, rr)
                            b_at = b.load(b.gep(tab, [rr], source_etype=I64), typ=I64)
                            a_at = b.mul(row, run)
                            row_body([b.gep(p, [a_at], source_etype=et) for p in a_rows],
                                     [b.gep(p, [b_at], source_etype=et) for p in b_cols])

                    def one_vector(ah: list, bh: list) -> None:
                        accumulate([self._masked_vec(b, p, _c(0), first) for p in ah],
                                   [self._masked_vec(b, p, _c(0), first) for p in bh])

                    def two_vectors(ah: list, bh: list) -> None:
                        accumulate([self._load_vec(b, p, _c(0)) for p in ah],
                                   [self._load_vec(b, p, _c(0)) for p in bh])
                        accumulate([self._masked_vec(b, p, _c(vl), last) for p in ah],
                                   [self._masked_vec(b, p, _c(vl), last) for p in bh])

                    def any_row(ah: list, bh: list) -> None:
                        with counted_loop(b, full, "v", unroll=False) as v:
                            at = b.mul(v, _c(vl))
                            accumulate([self._load_vec(b, p, at) for p in ah],
                                       [self._load_vec(b, p, at) for p in bh])
                        with b.if_then(has_tail):
                            accumulate([self._masked_vec(b, p, tail_at, tail) for p in ah],
                                       [self._masked_vec(b, p, tail_at, tail) for p in bh])

                    if short:  # chosen once, outside the rows' loop
                        with b.if_else(second) as (two, one):
                            with two:
                                rows_loop(two_vectors)
                            with one:
                                rows_loop(one_vector)
                    else:
                        rows_loop(any_row)
                    self._add_tile(b, acc_slot, ib, jb, m, n, partial, vt, et)
        self.image_chunks(b, d, lo, hi, chunk_rows, d["image_rows"], b_base, row_off, chunk)
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
        prefetcher does not follow. A block past n prefetches the last columns again
        (harmless)."""
        fn = self.module.globals.get("llvm.prefetch.p0") or ir.Function(
            self.module, ir.FunctionType(VOID, [PTR, I32, I32, I32]), "llvm.prefetch.p0")
        # (a read, kept in every cache level, of data)
        flags = [ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)]
        last = b.sub(run, _c(1))
        line = _c(64 // (4 if self.et == F32 else 8))
        cols = [b.gep(b_base, [b.load(b.gep(col_off, [self._clamped(
            b, b.add(b.mul(jb, _c(rj)), _c(c)), n)], source_etype=I64), typ=I64)],
            source_etype=self.et) for c in range(rj)]

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
        lanes, into `partial` (row-major, n columns), skipping what lies past m or n. One
        branch a tile: a tile inside m x n adds straight; an edge tile's sums go through a
        loop over its part inside (a branch per output was ri * rj blocks that LLVM
        unswitched and duplicated: compile time)."""
        i0, j0 = b.mul(ib, _c(ri)), b.mul(jb, _c(rj))
        sums = [self._hsum(b, b.load(b.gep(acc_slot, [_c(q)], source_etype=vt), typ=vt))
                for q in range(ri * rj)]
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

    def _load_vec(self, b: ir.IRBuilder, row: ir.Value, at: ir.Value) -> ir.Value:
        ptr = b.gep(row, [at], source_etype=self.et)
        return b.load(ptr, typ=self.vt, align=4 if self.et == F32 else 8)  # rows: unaligned

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
