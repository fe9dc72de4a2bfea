"""Deep, small GEMMs whose operands are both contiguous along the depth (a convolution's
weight gradient dW = g @ cols^T: a few hundred outputs, each a sum over every output pixel
of the batch) computed as register blocks of dot products, with no packing.

The packed path copies B (transposed, in 16x16 blocks) before multiplying: here every
element of B serves only m multiply-adds, so that copy cost more than the product. Instead
RI rows of A and RJ rows of B^T are read where they lie, a vector of the depth at a time,
into RI x RJ vector accumulators; the depth is cut into chunks (an RJ-row block of B^T
stays in L1 while the rows of A stream past it) and split over the threads, each summing
into partial products of its own that one pass adds into C at the end (alpha, and += C for
a parameter update folded into the GEMM).

Compile time follows the code here (W6: these functions were two thirds of the GEMM unit's
LLVM time): a tile's 16 accumulators are summed pairwise into whole vectors and added into
the partials, kept in padded 4x4 tiles, with no branch per output; the depth's tail is one
masked vector; and the loops carry no unrolling (each body is 16 FMAs on independent
accumulators already; unrolled, W6's weight gradients ran no faster)."""
from __future__ import annotations

import struct

from llvmlite import ir

from graphc.backends.llvm import parallel
from graphc.backends.llvm.loops import counted_loop
from graphc.backends.llvm.scalar import F32, F64
from graphc.backends.llvm.tables import constant_table
from graphc.backends.llvm.vector_consts import splat

I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

RI, RJ = 4, 4  # the register block: 16 accumulators and 8 loaded vectors of 32 registers
CHUNK = 1024  # depth per pass over the outputs (elements)
MIN_DEPTH = 512
DEPTH_RATIO = 8  # the depth at least this many times the longer side of the output
MAX_OUTPUTS = 1 << 16
MIN_RUN = 8  # an implicit B's shortest run along the depth (graphc.schedule.implicit)


def suitable(spec) -> bool:
    """Whether a canonical GEMM (gemm._Spec) takes this path: one batch item, A's rows and
    B's columns contiguous along the depth (an implicit B: in runs, its depth's last
    sub-axis), and a depth that dwarfs the output."""
    if spec.b_sub is None:
        along = spec.b.s0 == 1
    else:  # (the same rule as the scheduler's: graphc.schedule.implicit.deep)
        run, stride = spec.b_sub[0][-1]
        along = stride == 1 and run >= MIN_RUN and all(isinstance(v, int) for v in spec.flat())
    return (along and spec.nbatch == 1 and spec.a.s1 == 1
            and spec.k >= MIN_DEPTH
            and spec.k >= DEPTH_RATIO * max(spec.m, spec.n)
            and spec.m * spec.n <= MAX_OUTPUTS)


def _offsets(axes) -> list[int]:
    """The offset of each index of the row-major sub-axes ((size, stride), ...)."""
    out = [0]
    for size, stride in axes:
        out = [o + i * stride for o in out for i in range(size)]
    return out


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def tile_words(m: int, n: int) -> int:
    """Elements of one thread's partial products: whole RI x RJ tiles, row-major by tile,
    each tile's elements row-major (a tile is stored as whole vectors, edges included)."""
    return -(-m // RI) * -(-n // RJ) * RI * RJ


def lane_order(vl: int) -> list[list[int]]:
    """Which accumulator each lane of `_tile_sums`'s vectors sums, before its final
    shuffle: RI * RJ vectors are added pairwise, each step halving the lanes every sum
    spans, until a vector's lanes are single sums."""
    groups = [[q] * vl for q in range(RI * RJ)]  # lane -> accumulator, per vector
    span = vl
    while span > 1 and len(groups) > 1:
        half = span // 2
        merged = []
        for a, bv in zip(groups[::2], groups[1::2]):
            both = a + bv
            merged.append([both[j] for j in _halves(vl, span, 0)])
        groups, span = merged, half
    return groups


def _halves(vl: int, span: int, which: int) -> list[int]:
    """Shuffle indices into the concatenation of two vectors whose sums each span `span`
    lanes: the first (which=0) or second half of each sum's lanes, the first vector's
    sums first."""
    half = span // 2
    return [base + which * half + j for base in range(0, 2 * vl, span) for j in range(half)]


# The descriptor each GEMM passes to the shared functions (i64 values).
FIELDS = ("m", "n", "k", "a_s0", "b_s1", "c_s0", "c_s1", "partials", "alpha_bits",
          "accumulate", "run", "rows", "chunk_rows")


class DotGemm:
    """One such GEMM: its descriptor and partial products, and calls to the functions every
    dot-product GEMM of one dtype in a module shares (sizes and strides are data)."""

    def __init__(self, module: ir.Module, spec, threads: int, name: str) -> None:
        self.module, self.s, self.threads, self.name = module, spec, threads, name
        self.et = F32 if spec.dtype == "float32" else F64
        self.vl = 16 if spec.dtype == "float32" else 8
        self.vt = ir.VectorType(self.et, self.vl)
        self.prefix = f"gemm_dot_{spec.dtype}"
        count = threads * tile_words(spec.m, spec.n)
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
        run = rows = 0
        if spec.b_sub is not None:
            k_axes, n_axes = spec.b_sub
            run = k_axes[-1][0]
            row_offsets, col_offsets = _offsets(k_axes[:-1]), _offsets(n_axes)
            rows = len(row_offsets)
            self.tables = (constant_table(module, f"{name}_dot_rows", row_offsets),
                           constant_table(module, f"{name}_dot_cols", col_offsets))
        values = dict(m=spec.m, n=spec.n, k=spec.k, a_s0=spec.a.s0, b_s1=spec.b.s1,
                      c_s0=spec.c.s0, c_s1=spec.c.s1, partials=threads, alpha_bits=alpha,
                      accumulate=int(spec.accumulate), run=run, rows=rows,
                      chunk_rows=max(1, CHUNK // max(run, 1)))
        self.desc = constant_table(module, f"{name}_dot_desc", [values[f] for f in FIELDS])

    # -- the kernel's own code: operands' addresses, the team, the final sum ---------------
    def emit(self, b: ir.IRBuilder, bases: dict) -> None:
        s = self.s
        extra = list(self.tables or ())
        entry = b.function.entry_basic_block
        with b.goto_block(entry):
            b.position_at_start(entry)
            args = b.alloca(PTR, size=4 + len(extra))
        a0 = b.gep(bases[s.a.buffer], [_c(s.a.offset)], source_etype=self.et)
        b0 = b.gep(bases[s.b.buffer], [_c(s.b.offset)], source_etype=self.et)
        # (globals reach the shared functions as arguments: pointers typed as data)
        for i, value in enumerate([a0, b0, self.partials, self.desc] + extra):
            b.store(value, b.gep(args, [_c(i)], source_etype=PTR))
        part = self._part() if self.tables is None else self._part_rows()
        if self.threads > 1:
            parallel.emit_team_call(self.module, b, args, part, self.threads,
                                    f"{self.name}_dot")
        else:
            b.call(part, [args, _c(0), _c(1)])
        c0 = b.gep(bases[s.c.buffer], [_c(s.c.offset)], source_etype=self.et)
        b.call(self._finish(), [c0, self.partials, self.desc])

    @staticmethod
    def _fields(b: ir.IRBuilder, desc: ir.Value) -> dict:
        return {f: b.load(b.gep(desc, [_c(i)], source_etype=I64), typ=I64)
                for i, f in enumerate(FIELDS)}

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
        partial = self._zero_partials(b, partials, d, t, nt)
        # the depth in whole vectors, shared out evenly
        nvec = b.sdiv(b.add(k, _c(vl - 1)), _c(vl))
        lo = b.mul(b.sdiv(b.mul(t, nvec), nt), _c(vl))
        hi_v = b.mul(b.sdiv(b.mul(b.add(t, _c(1)), nvec), nt), _c(vl))
        hi = b.select(b.icmp_signed("<", hi_v, k), hi_v, k)
        span = b.sub(hi, lo)
        positive = b.select(b.icmp_signed(">", span, _c(0)), span, _c(0))
        chunks = b.sdiv(b.add(positive, _c(CHUNK - 1)), _c(CHUNK))
        fma_name = f"llvm.fma.v{vl}{'f32' if et == F32 else 'f64'}"
        fma = self.module.globals.get(fma_name) or ir.Function(
            self.module, ir.FunctionType(vt, [vt] * 3), fma_name)
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
                        for r in range(RI):
                            for c in range(RJ):
                                slot = b.gep(acc_slot, [_c(r * RJ + c)], source_etype=vt)
                                b.store(b.call(fma, [av[r], bv[c], b.load(slot, typ=vt)]),
                                        slot)
                    # the chunk's last elements: one masked vector (no loop to compile)
                    left = b.sub(clen, tail_from)
                    with b.if_then(b.icmp_signed(">", left, _c(0))):
                        mask = self._lane_mask(b, left)
                        av = [self._masked_vec(b, p, tail_from, mask) for p in a_rows]
                        bv = [self._masked_vec(b, p, tail_from, mask) for p in b_rows]
                        for r in range(RI):
                            for c in range(RJ):
                                slot = b.gep(acc_slot, [_c(r * RJ + c)], source_etype=vt)
                                b.store(b.call(fma, [av[r], bv[c], b.load(slot, typ=vt)]),
                                        slot)
                    self._add_tile(b, acc_slot, ib, jb, col_blocks, partial)
        b.ret_void()
        return fn

    # -- part_rows: the same for an implicit B, the depth in rows of `run` elements -------
    def _part_rows(self) -> ir.Function:
        """part for a B whose depth is rows of `run` contiguous elements, each row's offset
        in B from a table (and each column's): a row is its whole vectors and one masked
        vector of the rest, for A as for B. Threads share out the rows."""
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
        a_base, b_base, partials, desc, row_off, col_off = [
            b.load(b.gep(args, [_c(i)], source_etype=PTR), typ=PTR) for i in range(6)]
        d = self._fields(b, desc)
        m, n, run, rows = d["m"], d["n"], d["run"], d["rows"]
        partial = self._zero_partials(b, partials, d, t, nt)
        lo = b.sdiv(b.mul(t, rows), nt)
        hi = b.sdiv(b.mul(b.add(t, _c(1)), rows), nt)
        chunk_rows = d["chunk_rows"]
        chunks = b.sdiv(b.add(b.sub(hi, lo), b.sub(chunk_rows, _c(1))), chunk_rows)
        full = b.sdiv(run, _c(vl))
        tail_at = b.mul(full, _c(vl))
        # the last vector of a row: lanes below run - tail_at
        rest = b.sub(run, tail_at)
        tail = self._lane_mask(b, rest)
        has_tail = b.icmp_signed(">", rest, _c(0))
        fma_name = f"llvm.fma.v{vl}{'f32' if et == F32 else 'f64'}"
        fma = self.module.globals.get(fma_name) or ir.Function(
            self.module, ir.FunctionType(vt, [vt] * 3), fma_name)
        zero_v = ir.Constant(vt, None)
        col_blocks = b.sdiv(b.add(n, _c(RJ - 1)), _c(RJ))
        row_blocks = b.sdiv(b.add(m, _c(RI - 1)), _c(RI))

        def accumulate(av: list, bv: list) -> None:
            for r in range(RI):
                for c in range(RJ):
                    slot = b.gep(acc_slot, [_c(r * RJ + c)], source_etype=vt)
                    b.store(b.call(fma, [av[r], bv[c], b.load(slot, typ=vt)]), slot)

        with counted_loop(b, chunks, "ch") as ch:
            r0 = b.add(lo, b.mul(ch, chunk_rows))
            left = b.sub(hi, r0)
            count = b.select(b.icmp_signed("<", left, chunk_rows), left, chunk_rows)
            with counted_loop(b, col_blocks, "jb") as jb:
                cols = [self._clamped(b, b.add(b.mul(jb, _c(RJ)), _c(c)), n) for c in
                        range(RJ)]
                b_cols = [b.gep(b_base, [b.load(b.gep(col_off, [j], source_etype=I64),
                                                typ=I64)], source_etype=et) for j in cols]
                with counted_loop(b, row_blocks, "ib") as ib:
                    rows_i = [self._clamped(b, b.add(b.mul(ib, _c(RI)), _c(r)), m) for r in
                              range(RI)]
                    a_rows = [b.gep(a_base, [b.mul(i, d["a_s0"])], source_etype=et)
                              for i in rows_i]
                    for q in range(RI * RJ):
                        b.store(zero_v, b.gep(acc_slot, [_c(q)], source_etype=vt))
                    with counted_loop(b, count, "rr") as rr:
                        row = b.add(r0, rr)
                        b_at = b.load(b.gep(row_off, [row], source_etype=I64), typ=I64)
                        a_at = b.mul(row, run)
                        a_here = [b.gep(p, [a_at], source_etype=et) for p in a_rows]
                        b_here = [b.gep(p, [b_at], source_etype=et) for p in b_cols]
                        with counted_loop(b, full, "v", unroll=False) as v:
                            at = b.mul(v, _c(vl))
                            accumulate([self._load_vec(b, p, at) for p in a_here],
                                       [self._load_vec(b, p, at) for p in b_here])
                        with b.if_then(has_tail):
                            accumulate([self._masked_vec(b, p, tail_at, tail) for p in a_here],
                                       [self._masked_vec(b, p, tail_at, tail) for p in b_here])
                    self._add_tile(b, acc_slot, ib, jb, col_blocks, partial)
        b.ret_void()
        return fn

    def _zero_partials(self, b: ir.IRBuilder, partials: ir.Value, d: dict, t: ir.Value,
                       nt: ir.Value) -> ir.Value:
        """Zeroes the partial products this thread owns (its own; with fewer threads than
        partials, run alone, every one whose index is congruent to it); returns its own."""
        words = self._tile_words(b, d["m"], d["n"])
        size = b.mul(words, _c(4 if self.et == F32 else 8))
        owned = b.sdiv(b.add(b.sub(d["partials"], t), b.sub(nt, _c(1))), nt)
        memset = self.module.declare_intrinsic("llvm.memset", [PTR, I64])
        with counted_loop(b, owned, "q", unroll=False) as i:
            q = b.add(t, b.mul(i, nt))
            base = b.gep(partials, [b.mul(q, words)], source_etype=self.et)
            b.call(memset, [base, ir.Constant(ir.IntType(8), 0), size,
                            ir.Constant(ir.IntType(1), 0)])
        return b.gep(partials, [b.mul(t, words)], source_etype=self.et)

    @staticmethod
    def _tile_words(b: ir.IRBuilder, m: ir.Value, n: ir.Value) -> ir.Value:
        """tile_words(m, n) of run-time sizes."""
        row_blocks = b.sdiv(b.add(m, _c(RI - 1)), _c(RI))
        col_blocks = b.sdiv(b.add(n, _c(RJ - 1)), _c(RJ))
        return b.mul(b.mul(row_blocks, col_blocks), _c(RI * RJ))

    def _add_tile(self, b: ir.IRBuilder, acc_slot: ir.Value, ib: ir.Value, jb: ir.Value,
                  col_blocks: ir.Value, partial: ir.Value) -> None:
        """Adds the RI x RJ tile of vector accumulators at (ib, jb), each summed across its
        lanes, into `partial`'s tile (tile_words' layout) as whole vectors: the sums of
        rows or columns past m or n land in the tile's padding, never read."""
        vl, vt = self.vl, self.vt
        sums = [b.load(b.gep(acc_slot, [_c(q)], source_etype=vt), typ=vt)
                for q in range(RI * RJ)]
        span = vl
        while span > 1 and len(sums) > 1:
            shuffle = [ir.Constant(ir.VectorType(ir.IntType(32), vl), _halves(vl, span, w))
                       for w in (0, 1)]
            sums = [b.fadd(b.shuffle_vector(x, y, shuffle[0]), b.shuffle_vector(x, y, shuffle[1]))
                    for x, y in zip(sums[::2], sums[1::2])]
            span //= 2
        tile = b.gep(partial, [b.mul(b.add(b.mul(ib, col_blocks), jb), _c(RI * RJ))],
                     source_etype=self.et)
        for v, (x, labels) in enumerate(zip(sums, lane_order(vl))):
            # lane l of vector v: accumulator v * vl + l (the tile's row-major order)
            order = [labels.index(v * vl + lane) for lane in range(vl)]
            x = b.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), vl), order))
            at = b.gep(tile, [_c(v * vl)], source_etype=self.et)
            b.store(b.fadd(b.load(at, typ=vt, align=64), x), at, align=64)

    def _lane_mask(self, b: ir.IRBuilder, count: ir.Value) -> ir.Value:
        """<vl x i1>: lane j is on when j < count."""
        vl = self.vl
        lanes = ir.Constant(ir.VectorType(I64, vl), list(range(vl)))
        return b.icmp_signed("<", lanes, splat(b, count, ir.VectorType(I64, vl)))

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
        # more compile time (~0.07 s of CPU) than they could ever save
        fn.attributes.add("optsize")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        c0, partials, desc = fn.args
        running = b.alloca(et)  # the sum over the partials (promoted to a register)
        d = self._fields(b, desc)
        words = self._tile_words(b, d["m"], d["n"])
        col_blocks = b.sdiv(b.add(d["n"], _c(RJ - 1)), _c(RJ))
        alpha = b.bitcast(d["alpha_bits"], ir.DoubleType())
        if et == F32:
            alpha = b.fptrunc(alpha, F32)
        accumulate = b.icmp_signed("!=", d["accumulate"], _c(0))
        with counted_loop(b, d["m"], "i", unroll=False) as i:
            with counted_loop(b, d["n"], "j", unroll=False) as j:
                # (i, j) in tile_words' layout
                tile = b.add(b.mul(b.sdiv(i, _c(RI)), col_blocks), b.sdiv(j, _c(RJ)))
                flat = b.add(b.mul(tile, _c(RI * RJ)),
                             b.add(b.mul(b.srem(i, _c(RI)), _c(RJ)), b.srem(j, _c(RJ))))
                b.store(b.load(b.gep(partials, [flat], source_etype=et), typ=et), running)
                with counted_loop(b, b.sub(d["partials"], _c(1)), "q", unroll=False) as q:
                    at = b.gep(partials, [b.add(flat, b.mul(b.add(q, _c(1)), words))],
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
