"""The functions of the packed GEMM path, shared by every packed GEMM of a module.

A GEMM's sizes, strides, offsets and blocking reach these functions at run time, in its
descriptor (a constant i64 array: FIELDS, then four values per batch axis); only what
changes the code's structure is fixed when it is written. Per module and dtype there is
one micro-kernel, one macro-kernel, one work loop and one team body; one packing function
per layout of A and of B in use, and a few helpers. An MLP step's eight GEMMs take about
a dozen functions instead of the fifty they took with one set per GEMM: LLVM's time grows
with the code it is given, and this was most of a cold compile.

* pack_a: rows i0..i0+mb, depth p0..p0+kc of A into scratch: as rows (A contiguous along
  k: a copy, rows A_LD = PARAMS.kc apart) or as k-major micro-panels of MR rows.
* pack_b: depth p0..p0+kc, columns j0..j0+nb of B into k-major panels of NR columns, a
  partial last panel padded with zeros; B contiguous along k is transposed in registers
  (vl x vl blocks; a partial group of columns through a zero-padded block on the stack;
  the last kc % vl rows by the shared edge copier). GEMMs of few rows read B where it is
  instead ("direct").
* micro: an MR x NR tile of accumulators updated with llvm.fma over kc, A's element
  (i, p) at i * a_rs + p * a_ps (either packing). It stores `rows` rows and `cols`
  columns (masked stores: an edge tile writes nothing outside the output; a direct B is
  read with masked loads: nothing past a row's end). Edge tiles compute all MR rows; the
  rows past the edge come from scratch and are never stored.
* macro: the tiles of one packed block; work: one thread's share of the work units
  (MC rows > KC depth > NC columns > macro), calling the GEMM's packing functions and
  macro-kernel through pointers (its `fns` table); team: the GOMP_parallel body. A GEMM
  with fewer tiles than threads also splits its depth: units after the first slice sum
  into partial products in scratch, which add_partials adds to C once all are done."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from llvmlite import ir

from graphc.backends.llvm.loops import counted_loop
from graphc.backends.llvm.scalar import F32, F64, I1, I32, I64
from graphc.backends.llvm.vector_consts import splat

PTR = ir.PointerType()
VOID = ir.VoidType()

# The descriptor: one i64 each, then (size, a, b, c batch strides) per batch axis.
FIELDS = ("m", "n", "k", "a_s0", "a_s1", "b_s0", "b_s1", "c_s0", "c_s1", "a_offset",
          "b_offset", "c_offset", "kc", "mc", "nc", "part_rows", "part_cols", "parts",
          "col_parts", "units", "a_size", "per_thread", "threads", "a_rs", "a_ps", "a_panel",
          "b_panel", "ldb", "b_direct", "alpha_bits", "accumulate", "ksplit", "k_len",
          "partials", "a_direct") + tuple(f"b{axis}_{what}{i}" for axis in "kn"
                                          for what in ("size", "st") for i in range(4))
# (b{k,n}_size{i}, b{k,n}_st{i}: an implicit GEMM's B, graphc/schedule/implicit.py: the
# sub-axes its k and n are read through, unused ones of size 1; others: k and n, 1s.)


class _Fields(dict):
    """A descriptor's fields by name, loaded on first use (Kernels.fields)."""

    def __init__(self, b: ir.IRBuilder, desc: ir.Value, names: list[str]) -> None:
        super().__init__()
        # The loads go at the end of the builder's block, which ends here: `b` goes on in
        # a new block (a builder's place in a block would move under later insertions).
        self._block, self._desc = b.block, desc
        self._index = {name: i for i, name in enumerate(names)}
        rest = b.append_basic_block("fields")
        b.branch(rest)
        b.position_at_end(rest)

    def __missing__(self, name: str) -> ir.Value:
        at = ir.IRBuilder(self._block)
        at.position_before(self._block.terminator)
        slot = at.gep(self._desc, [ir.Constant(I64, self._index[name])], source_etype=I64)
        value = self[name] = at.load(slot, typ=I64)
        return value


@dataclass(frozen=True)
class Variant:
    """The layouts a packed GEMM's functions are written for (each function's name says
    which of them it depends on)."""

    dtype: str
    a_layout: str  # "rows" (contiguous along k), "trans" (along m), "strided"
    # "direct" (read in place), "packed" (panels packed ahead: gemm.prepack_b), "rows"
    # (along n), "trans" (along k), "strided", "grouped" (an implicit GEMM's B: rows and
    # columns at offsets from its sub-axes)
    b_layout: str
    cs1: bool  # output contiguous along n
    batch_dims: int
    order: str  # "rows": A micro-panels outside B's; "cols": the other way round

    @property
    def name(self) -> str:
        return (f"gemm_{self.dtype}_a{self.a_layout}_b{self.b_layout}_"
                f"{'cs1' if self.cs1 else 'csn'}_{self.batch_dims}d_{self.order}")


class GemmKernels:
    """Writes (once per module) the shared functions of one variant with one blocking."""

    def __init__(self, module: ir.Module, variant: Variant, params) -> None:
        self.module, self.v = module, variant
        self.et = F32 if variant.dtype == "float32" else F64
        self.esize = 4 if variant.dtype == "float32" else 8
        self.mr, self.vl, self.nv, self.nr = params.mr, params.vl, params.nv, params.nr
        self.a_ld = params.kc  # packed A rows: this far apart, whatever a GEMM's kc
        self.vt = ir.VectorType(self.et, self.vl)
        self.fma = self._intrinsic("llvm.fma", self.vt, 3)

    # -- helpers --------------------------------------------------------------------------
    def _existing(self, name: str):
        return self.module.globals.get(name)

    def _intrinsic(self, name: str, t: ir.Type, nargs: int) -> ir.Function:
        suffix = f"v{t.count}{'f32' if t.element == F32 else 'f64'}" \
            if isinstance(t, ir.VectorType) else ("f32" if t == F32 else "f64")
        full = f"{name}.{suffix}"
        return self._existing(full) or ir.Function(
            self.module, ir.FunctionType(t, [t] * nargs), full)

    def _masked(self, kind: str) -> ir.Function:
        t = self.vt
        suffix = f"v{t.count}{'f32' if self.et == F32 else 'f64'}.p0"
        mask_t = ir.VectorType(I1, self.vl)
        if kind == "load":
            name, ftype = f"llvm.masked.load.{suffix}", ir.FunctionType(t, [PTR, I32, mask_t, t])
        else:
            name, ftype = f"llvm.masked.store.{suffix}", ir.FunctionType(
                VOID, [t, PTR, I32, mask_t])
        return self._existing(name) or ir.Function(self.module, ftype, name)

    def _function(self, name: str, args: list[ir.Type], noalias: int = 0,
                  driver: bool = False) -> ir.Function:
        """The module's function `name`: the one written already (its blocks are there:
        one copy a module), else a new, empty one."""
        existing = self._existing(name)
        if existing is not None:
            return existing
        fn = ir.Function(self.module, ir.FunctionType(VOID, args), name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        if driver:
            # Loops over blocks and tiles that call the packing and micro-kernels: LLVM's
            # optimizer buys them nothing measurable, and skipping it saves an eighth of
            # an MLP step's compile time.
            fn.attributes.add("optnone")
        else:
            # optsize: no loop unrolling by LLVM. The micro-kernel is unrolled by hand and
            # the packing loops are bound by memory: less compile time, the same GFLOP/s
            # (measured with benchmarks/bench_gemm.py).
            fn.attributes.add("optsize")
        for arg in fn.args[:noalias]:
            arg.add_attribute("noalias")
        return fn

    @staticmethod
    def _c(v: int) -> ir.Constant:
        return ir.Constant(I64, v)

    def _gep(self, b: ir.IRBuilder, ptr: ir.Value, index) -> ir.Value:
        if isinstance(index, int):
            if index == 0:
                return ptr
            index = self._c(index)
        return b.gep(ptr, [index], inbounds=True, source_etype=self.et)

    @staticmethod
    def _min(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
        return b.select(b.icmp_signed("<", x, y), x, y)

    def _mul(self, b: ir.IRBuilder, x: ir.Value, c) -> ir.Value:
        if isinstance(c, int):
            if c == 0:
                return self._c(0)
            return x if c == 1 else b.mul(x, self._c(c))
        return b.mul(x, c)

    @contextlib.contextmanager
    def _range(self, b: ir.IRBuilder, start, stop, step) -> Iterator[ir.Value]:
        """for (x = start; x < stop; x += step); step an int or an i64 value (> 0)."""
        start = self._c(start) if isinstance(start, int) else start
        stop = self._c(stop) if isinstance(stop, int) else stop
        span = b.sub(stop, start)
        if isinstance(step, int) and step == 1:
            count = span
        else:
            step_v = self._c(step) if isinstance(step, int) else step
            count = b.sdiv(b.add(span, b.sub(step_v, self._c(1))), step_v)
        with counted_loop(b, count, "x") as i:
            yield b.add(start, self._mul(b, i, step))

    def _splat(self, b: ir.IRBuilder, x: ir.Value, t: ir.VectorType) -> ir.Value:
        return splat(b, x, t)

    def _lane_mask(self, b: ir.IRBuilder, lanes: ir.Value) -> ir.Value:
        """<vl x i1>: lane j is on when j < lanes."""
        iota = ir.Constant(ir.VectorType(I64, self.vl), list(range(self.vl)))
        return b.icmp_signed("<", iota, self._splat(b, lanes, ir.VectorType(I64, self.vl)))

    def _load_masked(self, b, ptr, mask) -> ir.Value:
        return b.call(self._masked("load"), [ptr, ir.Constant(I32, self.esize), mask,
                                             ir.Constant(self.vt, None)])

    def _store_masked(self, b, value, ptr, mask) -> None:
        b.call(self._masked("store"), [value, ptr, ir.Constant(I32, self.esize), mask])

    @staticmethod
    def fields(b: ir.IRBuilder, desc: ir.Value, batch_dims: int) -> dict:
        """The descriptor's values, each loaded at the end of the builder's block (a
        function's entry) the first time it is asked for: a function reads a few of its
        51+ fields, and each load written costs IR-writing and LLVM time. The builder goes
        on in a new block."""
        names = list(FIELDS) + [f"{what}{axis}" for axis in range(batch_dims)
                                for what in ("size", "a_bs", "b_bs", "c_bs")]
        return _Fields(b, desc, names)

    # -- the micro-kernel ----------------------------------------------------------------
    def micro(self) -> ir.Function:
        """(apanel, bpanel, c, kc, first, ldc, ldb, csc, a_rs, a_ps, rows, cols, alpha):
        C[rows, cols] (+)= alpha * Apanel[MR, kc] Bpanel[kc, NR] (= when `first`), A's
        element (i, p) at apanel[i * a_rs + p * a_ps], B's row p at bpanel + p * ldb. All
        MR x NR are computed; `rows` rows and `cols` columns are stored (masked stores)."""
        v = self.v
        direct = v.b_layout == "direct"
        name = f"gemm_{v.dtype}_micro_{'cs1' if v.cs1 else 'csn'}{'_bdirect' if direct else ''}"
        fn = self._function(name, [PTR, PTR, PTR, I64, I1, I64, I64, I64, I64, I64, I64, I64,
                                   self.et], 3)
        if fn.blocks:
            return fn
        ap, bp, cp, kc, first, ldc, ldb, csc, a_rs, a_ps, rows, cols, alpha = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        masks = [self._lane_mask(b, b.sub(cols, self._c(j * self.vl))) for j in range(self.nv)]
        arows = [self._gep(b, ap, b.mul(a_rs, self._c(i)) if i else self._c(0))
                 for i in range(self.mr)]
        entry = b.block
        loop = fn.append_basic_block("k")
        done = fn.append_basic_block("store")
        b.branch(loop)
        b.position_at_end(loop)
        vt, zero = self.vt, ir.Constant(self.vt, None)
        p = b.phi(I64, "p")
        p.add_incoming(self._c(0), entry)
        acc = [[b.phi(vt, f"acc{i}_{j}") for j in range(self.nv)] for i in range(self.mr)]
        for row in acc:
            for phi in row:
                phi.add_incoming(zero, entry)
        bk = self._gep(b, bp, b.mul(p, ldb))
        bvec = []
        for j in range(self.nv):
            ptr = self._gep(b, bk, j * self.vl)
            if direct:  # B where it is: only the tile's lanes, nothing past a row's end
                bvec.append(self._load_masked(b, ptr, masks[j]))
            else:  # a packed panel, zero-padded to NR columns
                ld = b.load(ptr, typ=vt)
                ld.align = 64
                bvec.append(ld)
        ak = b.mul(p, a_ps)
        new = []
        for i in range(self.mr):
            xs = self._splat(b, b.load(self._gep(b, arows[i], ak), typ=self.et), vt)
            new.append([b.call(self.fma, [xs, bvec[j], acc[i][j]]) for j in range(self.nv)])
        pn = b.add(p, self._c(1))
        for i in range(self.mr):
            for j in range(self.nv):
                acc[i][j].add_incoming(new[i][j], loop)
        p.add_incoming(pn, loop)
        b.cbranch(b.icmp_signed("<", pn, kc), loop, done)
        b.position_at_end(done)
        self._store_tile(b, cp, ldc, csc, new, rows, cols, masks, first, alpha)
        b.ret_void()
        return fn

    def _store_tile(self, b, cp, ldc, csc, tile, rows, cols, masks, first, alpha) -> None:
        """C = alpha * tile + (first ? 0 : C), one code path for both (the old value is
        loaded either way and dropped on the first k slice: less code for LLVM)."""
        scale = self._splat(b, alpha, self.vt)
        zero_v, zero = ir.Constant(self.vt, None), ir.Constant(self.et, 0.0)
        for i, row in enumerate(tile):
            with b.if_then(b.icmp_signed("<", self._c(i), rows)):
                rowp = self._gep(b, cp, b.mul(ldc, self._c(i)) if i else self._c(0))
                for j, value in enumerate(row):
                    if self.v.cs1:
                        ptr = self._gep(b, rowp, j * self.vl)
                        old = b.select(first, zero_v, self._load_masked(b, ptr, masks[j]))
                        self._store_masked(b, b.call(self.fma, [scale, value, old]), ptr,
                                           masks[j])
                        continue
                    for lane in range(self.vl):  # an output not contiguous along n
                        col = j * self.vl + lane
                        with b.if_then(b.icmp_signed("<", self._c(col), cols)):
                            ptr = self._gep(b, rowp, b.mul(self._c(col), csc))
                            x = b.fmul(b.extract_element(value, ir.Constant(I32, lane)), alpha)
                            old = b.select(first, zero, b.load(ptr, typ=self.et))
                            b.store(b.fadd(old, x), ptr)

    # -- packing --------------------------------------------------------------------------
    def pack_a(self) -> ir.Function:
        """(src, dst, desc, i0, mb, p0, kc)."""
        name = f"gemm_{self.v.dtype}_pack_a_{self.v.a_layout}"
        fn = self._function(name, [PTR, PTR, PTR, I64, I64, I64, I64], 2)
        if fn.blocks:
            return fn
        src, dst, desc, i0, mb, p0, kc = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        d = self.fields(b, desc, 0)
        sm, sk, kcb, mr = d["a_s0"], d["a_s1"], d["kc"], self.mr
        if self.v.a_layout == "rows":
            with counted_loop(b, mb, "r") as r:
                srow = self._gep(b, src, b.add(b.mul(b.add(i0, r), sm), p0))
                drow = self._gep(b, dst, self._mul(b, r, self.a_ld))
                with counted_loop(b, kc, "p") as p:
                    b.store(b.load(self._gep(b, srow, p), typ=self.et), self._gep(b, drow, p))
            b.ret_void()
            return fn
        full = b.sdiv(mb, self._c(mr))
        rest = b.sub(mb, b.mul(full, self._c(mr)))
        panel_size = b.mul(kcb, self._c(mr))
        if self.v.a_layout == "trans":  # each k row read once, across all panels
            with counted_loop(b, kc, "p") as p:
                srow = self._gep(b, src, b.add(i0, b.mul(b.add(p0, p), sk)))
                drow = self._gep(b, dst, self._mul(b, p, mr))
                with counted_loop(b, full, "q") as q:
                    self._copy(b, self._gep(b, srow, self._mul(b, q, mr)),
                               self._gep(b, drow, b.mul(q, panel_size)), mr)
                spart = self._gep(b, srow, self._mul(b, full, mr))
                dpart = self._gep(b, drow, b.mul(full, panel_size))
                with counted_loop(b, rest, "i") as i:
                    b.store(b.load(self._gep(b, spart, i), typ=self.et), self._gep(b, dpart, i))
            b.ret_void()
            return fn

        def panel(q, rows) -> None:
            row0 = b.add(i0, self._mul(b, q, mr))
            spanel = self._gep(b, src, b.add(b.mul(row0, sm), b.mul(p0, sk)))
            dpanel = self._gep(b, dst, b.mul(q, panel_size))
            with counted_loop(b, kc, "p") as p:
                s = self._gep(b, spanel, b.mul(p, sk))
                dd = self._gep(b, dpanel, self._mul(b, p, mr))
                if isinstance(rows, int):
                    for i in range(rows):
                        b.store(b.load(self._gep(b, s, b.mul(self._c(i), sm)), typ=self.et),
                                self._gep(b, dd, i))
                else:
                    with counted_loop(b, rows, "i") as i:
                        b.store(b.load(self._gep(b, s, b.mul(i, sm)), typ=self.et),
                                self._gep(b, dd, i))

        with counted_loop(b, full, "q") as q:
            panel(q, mr)
        with b.if_then(b.icmp_signed(">", rest, self._c(0))):
            panel(full, rest)
        b.ret_void()
        return fn

    def pack_b(self) -> ir.Function:
        """(src, dst, desc, p0, kc, j0, nb): panels dst[r * NR * KC + p * NR + j]."""
        name = f"gemm_{self.v.dtype}_pack_b_{self.v.b_layout}"
        fn = self._function(name, [PTR, PTR, PTR, I64, I64, I64, I64], 2)
        if fn.blocks:
            return fn
        src, dst, desc, p0, kc, j0, nb = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        d = self.fields(b, desc, 0)
        sk, sn, nr, vl = d["b_s0"], d["b_s1"], self.nr, self.vl
        panel_size = b.mul(d["kc"], self._c(nr))
        layout = self.v.b_layout
        if layout == "grouped":  # where each row and column of the block starts in B
            # (in the entry; a whole last panel's room: its offsets are read as vectors)
            offsets = (b.alloca(I64, size=kc), b.alloca(I64, size=b.add(nb, self._c(nr))),
                       b.alloca(I64, size=3 * nr))  # (chunks: see _pack_b_grouped)
            slots = b.alloca(I64, size=5)
            self._sub_offsets(b, d, "k", p0, kc, offsets[0], slots)
            self._sub_offsets(b, d, "n", j0, nb, offsets[1], slots)
        # one code path for every panel, a partial last one included (cols < NR columns,
        # zeros after them): less code for LLVM, the same speed
        with counted_loop(b, b.sdiv(b.add(nb, self._c(nr - 1)), self._c(nr)), "r") as r:
            col0 = self._mul(b, r, nr)
            cols = self._min(b, self._c(nr), b.sub(nb, col0))
            spanel = self._gep(b, src, b.add(b.mul(b.add(j0, col0), sn), b.mul(p0, sk)))
            dpanel = self._gep(b, dst, b.mul(r, panel_size))
            if layout == "rows":  # whole vectors (masked: nothing read past the last column)
                masks = [self._lane_mask(b, b.sub(cols, self._c(j * vl)))
                         for j in range(self.nv)]
                with counted_loop(b, kc, "p") as p:
                    s = self._gep(b, spanel, b.mul(p, sk))
                    dd = self._gep(b, dpanel, self._mul(b, p, nr))
                    for j in range(self.nv):
                        x = self._load_masked(b, self._gep(b, s, j * vl), masks[j])
                        st = b.store(x, self._gep(b, dd, j * vl))
                        st.align = 64
            elif layout == "grouped":
                self._pack_b_grouped(b, src, dpanel, kc, offsets, self._mul(b, r, nr), cols)
            elif layout == "trans":
                self._pack_b_transposed(b, spanel, dpanel, kc, sn, cols)
            else:
                self._pack_b_edge(b, spanel, dpanel, kc, cols, sk, sn, nr)
        b.ret_void()
        return fn

    def _sub_offsets(self, b, d: dict, axis: str, start, count, table, slots) -> None:
        """table[i] for x = start + i < start + count: the offset in B of row (axis "k")
        or column ("n") x of an implicit GEMM. x is split into its sub-axes once; then the
        sub-indices count up like an odometer (selects, no division per entry)."""
        sizes = [d[f"b{axis}_size{sub}"] for sub in range(4)]
        strides = [d[f"b{axis}_st{sub}"] for sub in range(4)]
        x, index = start, [self._c(0)] * 4
        for sub in reversed(range(4)):
            index[sub] = b.urem(x, sizes[sub])
            x = b.udiv(x, sizes[sub])
        # slots: the four sub-indices and the offset (an entry alloca: kept in registers)
        off = self._c(0)
        for sub in range(4):
            off = b.add(off, b.mul(index[sub], strides[sub]))
            b.store(index[sub], b.gep(slots, [self._c(sub)], source_etype=I64))
        b.store(off, b.gep(slots, [self._c(4)], source_etype=I64))
        with counted_loop(b, count, f"{axis}off") as i:
            off = b.load(b.gep(slots, [self._c(4)], source_etype=I64), typ=I64)
            b.store(off, b.gep(table, [i], inbounds=True, source_etype=I64))
            carry = ir.Constant(I1, 1)
            for sub in reversed(range(4)):
                where = b.gep(slots, [self._c(sub)], source_etype=I64)
                bumped = b.add(b.load(where, typ=I64), b.zext(carry, I64))
                wrap = b.icmp_unsigned("==", bumped, sizes[sub])
                b.store(b.select(wrap, self._c(0), bumped), where)
                step = b.select(wrap, b.mul(b.sub(self._c(1), sizes[sub]), strides[sub]),
                                strides[sub])
                off = b.add(off, b.select(carry, step, self._c(0)))
                carry = b.and_(carry, wrap)
            b.store(off, b.gep(slots, [self._c(4)], source_etype=I64))

    def _pack_b_grouped(self, b, src, dpanel, kc, offsets, col0, cols) -> None:
        """A panel of an implicit GEMM's B (a convolution's columns, read from the image):
        dpanel[p * NR + jj] = src[koff[p] + noff[col0 + jj]] for jj < cols, 0 after. The
        panel's columns fall into chunks contiguous in B (a run along an image row, at
        most vl long), the same for every row p: found once, then each row is a masked
        vector load and store per chunk (a gather is microcoded on AMD cores)."""
        koff, noff, chunks = offsets
        vl, nr = self.vl, self.nr
        cols = self._min(b, self._c(nr), cols)
        # chunks[3c], [3c+1], [3c+2]: column in the panel, offset in B, length. The chunk
        # being grown lives in scalars (entry allocas: registers after mem2reg) and is
        # written out when the next one starts: the loop's chain stays out of memory.
        entry = b.function.entry_basic_block
        with b.goto_block(entry):
            b.position_at_start(entry)
            count_slot, start_slot, begin_slot, length_slot = (b.alloca(I64) for _ in range(4))
        for slot in (count_slot, begin_slot, length_slot):
            b.store(self._c(0), slot)
        ptr = lambda i: b.gep(chunks, [i], inbounds=True, source_etype=I64)  # noqa: E731

        def flush(c) -> None:  # the chunk being grown, written as chunk c
            base = b.mul(c, self._c(3))
            b.store(b.load(start_slot, typ=I64), ptr(base))
            b.store(b.load(begin_slot, typ=I64), ptr(b.add(base, self._c(1))))
            b.store(b.load(length_slot, typ=I64), ptr(b.add(base, self._c(2))))

        with counted_loop(b, cols, "cj") as jj:
            c = b.load(count_slot, typ=I64)
            at = b.load(b.gep(noff, [b.add(col0, jj)], inbounds=True, source_etype=I64),
                        typ=I64)
            length = b.load(length_slot, typ=I64)
            fits = b.and_(b.icmp_signed(">", c, self._c(0)), b.and_(
                b.icmp_signed("<", length, self._c(vl)),
                b.icmp_signed("==", b.add(b.load(begin_slot, typ=I64), length), at)))
            with b.if_else(fits) as (grow, new):
                with grow:
                    b.store(b.add(length, self._c(1)), length_slot)
                with new:
                    with b.if_then(b.icmp_signed(">", c, self._c(0))):
                        flush(b.sub(c, self._c(1)))
                    b.store(jj, start_slot)
                    b.store(at, begin_slot)
                    b.store(self._c(1), length_slot)
                    b.store(b.add(c, self._c(1)), count_slot)
        last = b.load(count_slot, typ=I64)
        with b.if_then(b.icmp_signed(">", last, self._c(0))):
            flush(b.sub(last, self._c(1)))
        count = b.load(count_slot, typ=I64)
        partial = b.icmp_signed("<", cols, self._c(nr))
        with counted_loop(b, kc, "gp") as p:
            at = b.load(b.gep(koff, [p], inbounds=True, source_etype=I64), typ=I64)
            row = self._gep(b, src, at)
            drow = self._gep(b, dpanel, self._mul(b, p, nr))
            with b.if_then(partial):
                for j in range(self.nv):
                    st = b.store(ir.Constant(self.vt, None), self._gep(b, drow, j * vl))
                    st.align = 64
            with counted_loop(b, count, "gc") as c:
                base = b.mul(c, self._c(3))
                mask = self._lane_mask(b, b.load(ptr(b.add(base, self._c(2))), typ=I64))
                x = self._load_masked(b, self._gep(b, row, b.load(
                    ptr(b.add(base, self._c(1))), typ=I64)), mask)
                self._store_masked(b, x, self._gep(b, drow, b.load(ptr(base), typ=I64)), mask)

    def _gather(self) -> ir.Function:
        t = self.vt
        name = f"llvm.masked.gather.v{t.count}{'f32' if self.et == F32 else 'f64'}.v{t.count}p0"
        ftype = ir.FunctionType(t, [ir.VectorType(PTR, t.count), I32,
                                    ir.VectorType(I1, t.count), t])
        return self._existing(name) or ir.Function(self.module, ftype, name)

    def _pack_b_transposed(self, b, spanel, dpanel, kc, sn, cols) -> None:
        """A panel of B stored transposed (contiguous along k), `cols` of its NR columns
        there: vl x vl blocks by the module's shared in-register transpose, the rest (a
        partial group of columns, the last kc % vl rows) by plain loops."""
        vl, nr = self.vl, self.nr
        blocks = b.sdiv(kc, self._c(vl))
        with counted_loop(b, blocks, "pb") as pb:
            p = self._mul(b, pb, vl)
            for jb in range(self.nv):
                group = self._gep(b, spanel, b.add(p, b.mul(self._c(jb * vl), sn)))
                target = self._gep(b, dpanel, b.add(self._mul(b, p, nr), self._c(jb * vl)))
                left = b.sub(cols, self._c(jb * vl))  # this group's columns in B
                with b.if_else(b.icmp_signed(">=", left, self._c(vl))) as (whole, part):
                    with whole:
                        b.call(self.transpose_block(), [group, sn, target])
                    with part:
                        b.call(self.transpose_partial(), [group, sn, target, left])
        p = self._mul(b, blocks, vl)
        self._pack_b_edge(b, self._gep(b, spanel, p), self._gep(b, dpanel, self._mul(b, p, nr)),
                          b.sub(kc, p), cols, self._c(1), sn, nr)

    def transpose_partial(self) -> ir.Function:
        """(src, sn, dst, cols): transpose_block for a group of fewer than vl columns (cols,
        clamped to [0, vl]): their contiguous runs are copied into a zero-padded vl x vl
        block on the stack, which is transposed whole (a strided copy element by element
        cost conv weight gradients, 25 columns of 36,864 rows, a third of their time)."""
        name = f"gemm_{self.v.dtype}_transpose_partial"
        fn = self._function(name, [PTR, I64, PTR, I64], 0)
        if fn.blocks:
            return fn
        src, sn, dst, cols = fn.args
        vl = self.vl
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        block = b.alloca(self.et, size=vl * vl)
        block.align = 64
        block.type = PTR  # an untyped pointer, as everywhere else (vectors are stored)
        cols = self._min(b, self._c(vl), b.select(b.icmp_signed("<", cols, self._c(0)),
                                                  self._c(0), cols))
        with counted_loop(b, cols, "jj") as jj:
            x = b.load(self._gep(b, src, b.mul(jj, sn)), typ=self.vt)
            x.align = self.esize
            st = b.store(x, self._gep(b, block, b.mul(jj, self._c(vl))))
            st.align = 64
        with counted_loop(b, b.sub(self._c(vl), cols), "jz") as jz:
            row = b.mul(b.add(cols, jz), self._c(vl))
            st = b.store(ir.Constant(self.vt, None), self._gep(b, block, row))
            st.align = 64
        b.call(self.transpose_block(), [block, self._c(vl), dst])
        b.ret_void()
        return fn

    def _pack_b_edge(self, b, src, dst, depth, cols, sk, sn, width: int) -> None:
        """dst[pp * NR + jj] = src[pp * sk + jj * sn] for jj < cols, 0 for jj < width
        (cols may be out of [0, width]: clamped), by a call to the shared edge copier."""
        b.call(self.edge_copier(), [src, dst, depth, cols, sk, sn, self._c(width)])

    def edge_copier(self) -> ir.Function:
        """(src, dst, depth, cols, sk, sn, width): what the packing of B does where whole
        vectors or blocks do not fit, one function for every such place (less code)."""
        name = f"gemm_{self.v.dtype}_pack_b_edge"
        fn = self._function(name, [PTR, PTR, I64, I64, I64, I64, I64], 2)
        if fn.blocks:
            return fn
        src, dst, depth, cols, sk, sn, width = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        zero = ir.Constant(self.et, 0.0)
        cols = self._min(b, width, b.select(b.icmp_signed("<", cols, self._c(0)),
                                            self._c(0), cols))
        with counted_loop(b, depth, "epp") as pp:
            row = self._gep(b, dst, self._mul(b, pp, self.nr))
            srow = self._gep(b, src, b.mul(pp, sk))
            with counted_loop(b, cols, "ejj") as jj:
                x = b.load(self._gep(b, srow, b.mul(jj, sn)), typ=self.et)
                b.store(x, self._gep(b, row, jj))
            with counted_loop(b, b.sub(width, cols), "ezz") as jz:
                b.store(zero, self._gep(b, row, b.add(cols, jz)))
        b.ret_void()
        return fn

    def transpose_block(self) -> ir.Function:
        """(src, sn, dst): vl rows of vl elements at src + jj*sn, transposed in registers
        into vl vectors at dst + pp*NR. One per module and dtype."""
        name = f"gemm_{self.v.dtype}_transpose_block"
        existing = self._existing(name)
        if existing is not None:
            return existing
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR, I64, PTR]), name)
        fn.linkage = "internal"
        for attr in ("noinline", "nounwind", "optsize"):
            fn.attributes.add(attr)
        src, sn, dst = fn.args
        src.add_attribute("noalias")
        dst.add_attribute("noalias")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        rows = []
        for jj in range(self.vl):
            x = b.load(self._gep(b, src, b.mul(sn, self._c(jj)) if jj else self._c(0)),
                       typ=self.vt)
            x.align = self.esize
            rows.append(x)
        for pp, vec in enumerate(self._transpose(b, rows)):
            st = b.store(vec, self._gep(b, dst, pp * self.nr))
            st.align = 64
        b.ret_void()
        return fn

    def _copy(self, b, src, dst, count: int) -> None:
        """count contiguous elements as one vector (no loop for LLVM to widen into scatters)."""
        t = ir.VectorType(self.et, count) if count > 1 else self.et
        x = b.load(src, typ=t)
        x.align = self.esize
        st = b.store(x, dst)
        st.align = self.esize

    def _transpose(self, b: ir.IRBuilder, rows: list) -> list:
        """The transpose of a vl x vl block held as vl row vectors: log2(vl) rounds of
        interleaving row i with row i + vl/2."""
        n = len(rows)
        h = n // 2
        mt = ir.VectorType(I32, n)
        lo = ir.Constant(mt, [x for j in range(h) for x in (j, n + j)])
        hi = ir.Constant(mt, [x for j in range(h, n) for x in (j, n + j)])
        for _ in range(n.bit_length() - 1):
            new = []
            for i in range(h):
                new.append(b.shuffle_vector(rows[i], rows[i + h], lo))
                new.append(b.shuffle_vector(rows[i], rows[i + h], hi))
            rows = new
        return rows

    # -- blocking -------------------------------------------------------------------------
    def macro(self) -> ir.Function:
        """(apack, bpack, c, desc, ldc, csc, mb, nb, kc, first): C[mb, nb] (+)= the packed
        blocks, C's rows ldc apart and its columns csc."""
        v = self.v
        name = f"{self.micro().name}_macro_{v.order}"
        fn = self._function(name, [PTR, PTR, PTR, PTR, I64, I64, I64, I64, I64, I1], 3,
                            driver=True)
        if fn.blocks:
            return fn
        ap, bp, cp, desc, ldc, csc, mb, nb, kc, first = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        d = self.fields(b, desc, 0)
        mr, nr = self.mr, self.nr
        panels_q = b.sdiv(b.add(mb, self._c(mr - 1)), self._c(mr))
        panels_r = b.sdiv(b.add(nb, self._c(nr - 1)), self._c(nr))
        micro = self.micro()
        alpha = b.bitcast(d["alpha_bits"], F64)  # (the descriptor holds a double's bits)
        if self.et != F64:
            alpha = b.fptrunc(alpha, self.et)

        def tile(q, r) -> None:
            row0, col0 = self._mul(b, q, mr), self._mul(b, r, nr)
            rows = self._min(b, self._c(mr), b.sub(mb, row0))
            cols = self._min(b, self._c(nr), b.sub(nb, col0))
            c = self._gep(b, cp, b.add(b.mul(row0, ldc), b.mul(col0, csc)))
            b.call(micro, [self._gep(b, ap, b.mul(q, d["a_panel"])),
                           self._gep(b, bp, b.mul(r, d["b_panel"])), c, kc, first, ldc,
                           d["ldb"], csc, d["a_rs"], d["a_ps"], rows, cols, alpha])

        outer, inner = (panels_q, panels_r) if v.order == "rows" else (panels_r, panels_q)
        with counted_loop(b, outer, "o") as o:
            with counted_loop(b, inner, "i") as i:
                tile(o, i) if v.order == "rows" else tile(i, o)
        b.ret_void()
        return fn

    def functions(self) -> list[ir.Function]:
        """What work() calls for this variant: pack_a, pack_b (None: B read in place),
        macro."""
        pack_b = None if self.v.b_layout in ("direct", "packed") else self.pack_b()
        return [self.pack_a(), pack_b, self.macro()]

    def work(self) -> ir.Function:
        """(a, b, c, scratch, desc, fns, t, T): thread t of T does its share of the work
        units (a batch item's rows or columns, whole micro-panels), each with its own loops
        over the blocks: MC rows (pack A) > KC depth > NC columns (pack B) > the
        macro-kernel. fns: the variant's [pack_a, pack_b or null, macro]."""
        name = f"gemm_{self.v.dtype}_work_{self.v.batch_dims}d"
        fn = self._function(name, [PTR, PTR, PTR, PTR, PTR, PTR, I64, I64], driver=True)
        if fn.blocks:
            return fn
        a0, b0, c0, scratch0, desc, fns, t, nt = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        d = self.fields(b, desc, self.v.batch_dims)
        pack_t = ir.FunctionType(VOID, [PTR, PTR, PTR, I64, I64, I64, I64])
        macro_t = ir.FunctionType(VOID, [PTR, PTR, PTR, PTR, I64, I64, I64, I64, I64, I1])
        pack_a, pack_b, macro = (
            _Callee(b.load(b.gep(fns, [self._c(i)], source_etype=PTR), typ=PTR), ftype)
            for i, ftype in enumerate((pack_t, pack_t, macro_t)))
        apack = self._gep(b, scratch0, b.mul(t, d["per_thread"]))
        bpack = self._gep(b, apack, d["a_size"])
        direct = b.icmp_signed("!=", d["b_direct"], self._c(0))
        a_direct = b.icmp_signed("!=", d["a_direct"], self._c(0))
        overwrite = b.icmp_signed("==", d["accumulate"], self._c(0))  # (else out += ...)
        units = d["units"]
        u0 = b.sdiv(b.mul(t, units), nt)
        u1 = b.sdiv(b.mul(b.add(t, self._c(1)), units), nt)
        with self._range(b, u0, u1, 1) as u:
            # unit u: (item, part, kpart); kpart > 0 computes its slice of the depth into a
            # partial product of its own (row-major, m x n, in scratch), added to C later
            kpart = b.srem(u, d["ksplit"])
            rest = b.sdiv(u, d["ksplit"])
            item = b.sdiv(rest, d["parts"])
            part = b.srem(rest, d["parts"])
            k0 = b.mul(kpart, d["k_len"])
            k1 = self._min(b, b.add(k0, d["k_len"]), d["k"])
            into_c = b.icmp_signed("==", kpart, self._c(0))
            partial = self._gep(b, scratch0, b.add(d["partials"], b.mul(
                b.sub(kpart, self._c(1)), b.mul(d["m"], d["n"]))))
            offs = {key: d[f"{key}_offset"] for key in "abc"}
            rem = item
            for axis in reversed(range(self.v.batch_dims)):  # the item's multi-index
                size = d[f"size{axis}"]
                idx = b.srem(rem, size)
                rem = b.sdiv(rem, size)
                for key in "abc":
                    offs[key] = b.add(offs[key], b.mul(idx, d[f"{key}_bs{axis}"]))
            pa, pb, pc = (self._gep(b, x, offs[key]) for x, key in
                          ((a0, "a"), (b0, "b"), (c0, "c")))
            pc = b.select(into_c, pc, partial)
            ldc = b.select(into_c, d["c_s0"], d["n"])
            csc = b.select(into_c, d["c_s1"], self._c(1))
            fresh = b.or_(b.not_(into_c), overwrite)  # a partial starts from nothing
            r0 = b.mul(b.sdiv(part, d["col_parts"]), d["part_rows"])
            r1 = self._min(b, b.add(r0, d["part_rows"]), d["m"])
            j0 = b.mul(b.srem(part, d["col_parts"]), d["part_cols"])
            j1 = self._min(b, b.add(j0, d["part_cols"]), d["n"])
            with self._range(b, r0, r1, d["mc"]) as ic:
                mb = self._min(b, d["mc"], b.sub(r1, ic))
                crow = self._gep(b, pc, b.mul(ic, ldc))
                with self._range(b, k0, k1, d["kc"]) as pk:
                    kc = self._min(b, d["kc"], b.sub(k1, pk))
                    first = b.and_(fresh, b.icmp_signed("==", pk, k0))
                    # A's rows read where they are (its block at row ic, depth pk), or
                    # packed here
                    with b.if_then(b.not_(a_direct)):
                        b.call(pack_a, [pa, apack, desc, ic, mb, pk, kc])
                    ablock = b.select(a_direct, self._gep(b, pa, b.add(
                        b.mul(ic, d["a_s0"]), b.mul(pk, d["a_s1"]))), apack)
                    with self._range(b, j0, j1, d["nc"]) as jc:
                        nb = self._min(b, d["nc"], b.sub(j1, jc))
                        # B read where it is (its block at depth pk, column jc: B itself,
                        # or panels packed once ahead), or packed here
                        in_place = self._gep(b, pb, b.add(b.mul(pk, d["b_s0"]),
                                                          b.mul(jc, d["b_s1"])))
                        with b.if_then(b.not_(direct)):
                            b.call(pack_b, [pb, bpack, desc, pk, kc, jc, nb])
                        block = b.select(direct, in_place, bpack)
                        b.call(macro, [ablock, block, self._gep(b, crow, b.mul(jc, csc)),
                                       desc, ldc, csc, mb, nb, kc, first])
        b.ret_void()
        return fn

    def add_partials(self) -> ir.Function:
        """(c, scratch, desc): C += the partial products of depth slices 1 .. ksplit-1
        (a GEMM with too few rows and columns to share out splits its depth instead)."""
        name = f"gemm_{self.v.dtype}_add_partials"
        fn = self._function(name, [PTR, PTR, PTR], 2)
        if fn.blocks:
            return fn
        c0, scratch, desc = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        d = self.fields(b, desc, 0)
        c = self._gep(b, c0, d["c_offset"])
        mn = b.mul(d["m"], d["n"])
        with counted_loop(b, b.sub(d["ksplit"], self._c(1)), "kp") as kp:
            part = self._gep(b, scratch, b.add(d["partials"], b.mul(kp, mn)))
            with counted_loop(b, d["m"], "i") as i:
                crow = self._gep(b, c, b.mul(i, d["c_s0"]))
                prow = self._gep(b, part, b.mul(i, d["n"]))
                with counted_loop(b, d["n"], "j") as j:
                    ptr = self._gep(b, crow, b.mul(j, d["c_s1"]))
                    x = b.load(self._gep(b, prow, j), typ=self.et)
                    b.store(b.fadd(b.load(ptr, typ=self.et), x), ptr)
        b.ret_void()
        return fn

    def team(self) -> ir.Function:
        """(ctx): the GOMP_parallel body; ctx holds a, b, c, scratch, desc and fns."""
        name = f"gemm_{self.v.dtype}_team_{self.v.batch_dims}d"
        fn = self._function(name, [PTR], driver=True)
        if fn.blocks:
            return fn
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        ctx = fn.args[0]
        ptrs = [b.load(b.gep(ctx, [self._c(i)], source_etype=PTR), typ=PTR) for i in range(6)]
        d = self.fields(b, ptrs[4], 0)
        t = b.sext(b.call(self._declare("omp_get_thread_num", I32, []), []), I64)
        nt = b.sext(b.call(self._declare("omp_get_num_threads", I32, []), []), I64)
        # never more threads than the scratch has room for (libgomp gives at most that)
        nt = self._min(b, nt, d["threads"])
        with b.if_then(b.icmp_signed("<", t, nt)):
            b.call(self.work(), ptrs + [t, nt])
        b.ret_void()
        return fn

    def _declare(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        return self._existing(name) or ir.Function(self.module, ir.FunctionType(ret, args), name)


class _Callee:
    """A function pointer and its type: what IRBuilder.call needs for an indirect call."""

    def __init__(self, value: ir.Value, ftype: ir.FunctionType) -> None:
        self.value, self.function_type, self.type = value, ftype, value.type

    def get_reference(self) -> str:
        return self.value.get_reference()
