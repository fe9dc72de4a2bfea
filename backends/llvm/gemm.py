"""GEMM kernels: out[b, i, j] = sum_p a[b, i, p] * c[b, p, j] over any strides.

Floating-point GEMMs of some size take the packed path, generated here in full (no BLAS):

* packing: panels of A (MR rows) and of B (NR columns) are copied from whatever strides the
  operands have (transposed, sliced, broadcast batch dims) into contiguous, 64-byte aligned
  scratch, so a transpose costs only the packing. A row-major A is packed as rows (a plain
  copy); any other A as k-major micro-panels; B always as k-major panels of NR columns.
* cache blocking: KC deep slices; MC rows of A packed at a time, NC columns of B packed at
  a time (sizes for Zen 4: 32 KiB L1d, 1 MiB L2 per core, 32 MiB L3; see PARAMS).
* a register-blocked micro-kernel in vector IR: an MR x (NV vectors) tile of accumulators
  (float32: 8 x 32 in <16 x float>, float64: 8 x 16 in <8 x double>) updated with
  llvm.fma, A broadcast from its packed panel, B loaded as whole vectors.
* edges: the shapes are static, so the row edge (m % MR) and the column edge (n % NR) get
  their own micro-kernels (fewer rows, fewer vectors, a partial last vector stored in
  power-of-two pieces): nothing outside the buffers is read or written.
* threads: large GEMMs (PARALLEL_MIN_MACS) split their work over a team of threads from
  libgomp's GOMP_parallel: batch items, and the rows (or, for few rows, the columns) of an
  item in whole micro-panels; each thread packs into its own scratch, so no barriers.
  Where libgomp cannot be loaded the code is single-threaded; so is it in a fork()ed child
  (libgomp's thread pool does not survive fork: the code checks a flag that an at-fork
  handler clears).
* scratch: one zero-initialised, page-aligned global per packed GEMM in its module,
  (MC x KC + KC x NC) elements per thread: at most 1 MiB per thread with these PARAMS.

Settings, read when a function is compiled (and part of the compile cache's key):
GRAPHC_NUM_THREADS: the thread count for GEMMs (default: the cores this process may run
on, os.sched_getaffinity, else os.cpu_count()); GRAPHC_NUM_THREADS=1 gives single-threaded
code. GRAPHC_NO_OPENMP=1: never load libgomp (single-threaded code).

Integer GEMMs and small float GEMMs take a plain loop nest (j innermost, which LLVM
vectorizes when the output and B are contiguous along j)."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
from llvmlite import ir

from graphc.backends.llvm.loops import counted_loop, loop_nest
from graphc.backends.llvm.threads import (  # noqa: F401 (re-exported)
    PARALLEL_FLAG, emit_team_condition, num_threads, openmp_available)
from graphc.backends.llvm.scalar import F32, F64, I1, I32, I64, constant
from graphc.schedule import ir as kir

PTR = ir.PointerType()
VOID = ir.VoidType()


@dataclass(frozen=True)
class Params:
    """Blocking for one dtype. vl: lanes per vector; mr x (nv * vl): the register tile;
    kc: depth of a packed slice; mc: rows of A packed at a time (multiple of mr); nc: columns
    of B packed at a time (multiple of nv * vl); order: "rows" runs the micro-panels of A
    outside those of B (an A micro-panel stays in L1, the B block streams from L2), "cols"
    the other way round."""

    vl: int
    mr: int
    nv: int
    kc: int
    mc: int
    nc: int
    order: str = "rows"

    @property
    def nr(self) -> int:
        return self.nv * self.vl


PARAMS = {
    "float32": Params(vl=16, mr=8, nv=2, kc=256, mc=512, nc=512),
    "float64": Params(vl=8, mr=8, nv=2, kc=256, mc=256, nc=256),
}

# The packed path from this many multiply-adds (per batch item) on; smaller ones loop.
PACKED_MIN_MACS = 2048
# GEMMs with at most this many rows read B unpacked (see _PackedGemm.b_direct).
DIRECT_B_MAX_M = 16
# Threads from this many multiply-adds (all batch items) on.
PARALLEL_MIN_MACS = 64 * 64 * 64


def emit_gemm(writer, b: ir.IRBuilder, fn: ir.Function, bases: dict, k: kir.Gemm) -> None:
    dtype = np.dtype(k.dtype)
    if dtype.kind == "f" and k.k > 0 and k.m * k.n * k.k >= PACKED_MIN_MACS:
        spec = _Spec.of(k)
        threads = num_threads()
        macs = k.m * k.n * k.k * spec.nbatch
        if threads > 1 and macs >= PARALLEL_MIN_MACS and openmp_available():
            threads = min(threads, spec.max_units())
        else:
            threads = 1
        _PackedGemm(writer.module, spec, PARAMS[dtype.name], threads, fn.name).emit(b, bases)
        return
    _emit_loops(writer, b, bases, k)


def _emit_loops(writer, b: ir.IRBuilder, bases: dict, k: kir.Gemm) -> None:
    is_float = np.dtype(k.dtype).kind == "f"
    zero = constant(k.dtype, 0)
    with loop_nest(b, k.batch + (k.m, k.n), "z") as zx:
        writer.store(b, bases, k.out, zx, zero)
    if k.k == 0:
        return
    with loop_nest(b, k.batch, "b") as bx:
        with counted_loop(b, k.m, "i") as i:
            with counted_loop(b, k.k, "p") as p:
                a_ip = writer.load(b, bases, k.a, bx + [i, p])
                with counted_loop(b, k.n, "j") as j:
                    acc = writer.load(b, bases, k.out, bx + [i, j])
                    c_pj = writer.load(b, bases, k.b, bx + [p, j])
                    if is_float:
                        prod = b.fmul(a_ip, c_pj)
                        prod.flags.append("contract")
                        total = b.fadd(acc, prod)
                        total.flags.append("contract")
                    else:
                        total = b.add(acc, b.mul(a_ip, c_pj))
                    writer.store(b, bases, k.out, bx + [i, j], total)


# ---- the packed path --------------------------------------------------------------------

@dataclass(frozen=True)
class _Operand:
    buffer: int
    batch: tuple[int, ...]  # strides over the batch dims
    s0: int  # stride of the first matrix axis
    s1: int  # stride of the second
    offset: int


@dataclass(frozen=True)
class _Spec:
    """A GEMM in canonical form: the output's column stride is 1 when either of its matrix
    strides is (a column-major output swaps the operands: out^T = b^T a^T)."""

    dtype: str
    batch: tuple[int, ...]
    m: int
    n: int
    k: int
    a: _Operand  # (m, k)
    b: _Operand  # (k, n)
    c: _Operand  # (m, n)

    @staticmethod
    def of(g: kir.Gemm) -> "_Spec":
        nb = len(g.batch)

        def operand(acc: kir.Access) -> _Operand:
            s = tuple(acc.strides)
            return _Operand(acc.buffer, s[:nb], s[nb], s[nb + 1], acc.offset)

        a, b, c = operand(g.a), operand(g.b), operand(g.out)
        spec = _Spec(np.dtype(g.dtype).name, tuple(g.batch), g.m, g.n, g.k, a, b, c)
        if c.s1 != 1 and c.s0 == 1:
            spec = _Spec(spec.dtype, spec.batch, g.n, g.m, g.k,
                         replace(b, s0=b.s1, s1=b.s0), replace(a, s0=a.s1, s1=a.s0),
                         replace(c, s0=c.s1, s1=c.s0))
        return spec

    @property
    def nbatch(self) -> int:
        return math.prod(self.batch)

    def max_units(self) -> int:
        p = PARAMS[self.dtype]
        return self.nbatch * max(1, _ceil(self.m, p.mr), _ceil(self.n, p.nr))


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _even_block(size: int, most: int, unit: int) -> int:
    """The block for cutting `size` into as few blocks of at most `most` as can be, of
    near-equal sizes rounded up to a multiple of `unit`."""
    return _ceil(_ceil(size, _ceil(size, most)), unit) * unit


class _PackedGemm:
    """Emits the functions of one packed GEMM and the call to them."""

    def __init__(self, module: ir.Module, spec: _Spec, params: Params, threads: int,
                 name: str) -> None:
        self.module, self.s, self.threads, self.name = module, spec, threads, name
        self.et = F32 if spec.dtype == "float32" else F64
        self.esize = 4 if spec.dtype == "float32" else 8
        p = params
        self.mr, self.vl, self.nv = p.mr, p.vl, p.nv
        self.nr = p.nr
        # Blocks no larger than the problem (they size the scratch) and split evenly.
        self.kc = min(spec.k, _even_block(spec.k, p.kc, self.vl))
        # Work units: (batch item, part of its rows or of its columns), so that the units
        # share out evenly over the threads; parts are whole micro-panels, so only the
        # matrix's last row (column) panel is ever partial.
        want = threads // math.gcd(spec.nbatch, threads) if threads > 1 else 1
        row_panels, col_panels = _ceil(spec.m, self.mr), _ceil(spec.n, self.nr)
        self.row_parts = self.col_parts = 1
        if row_panels >= col_panels:
            self.row_parts = max(1, min(want, row_panels))
        else:
            self.col_parts = max(1, min(want, col_panels))
        self.part_rows = _ceil(row_panels, self.row_parts) * self.mr
        self.part_cols = _ceil(col_panels, self.col_parts) * self.nr
        self.parts = self.row_parts * self.col_parts
        self.units = spec.nbatch * self.parts
        self.mc = _even_block(self.part_rows, p.mc, self.mr)
        self.nc = _even_block(self.part_cols, p.nc, self.nr)
        self.order = p.order
        # A panels are rows (a copy) when A is contiguous along k, else k-major.
        self.a_rows = spec.a.s1 == 1
        # Few rows: each element of B serves only `m` multiply-adds, so packing B would cost
        # as much as the product. B contiguous along n is then read where it is (row by row;
        # a partial last vector loads only its lanes: nothing read past a row's end).
        self.b_direct = spec.b.s1 == 1 and spec.m <= DIRECT_B_MAX_M
        # Packed A rows are p.kc apart whatever this GEMM's kc: the micro-kernels then
        # depend on the dtype and tile only, and one copy serves every GEMM of a module.
        self.a_ld = p.kc
        self.vt = ir.VectorType(self.et, self.vl)
        self.a_size = _ceil(self.mc * (self.a_ld if self.a_rows else self.kc), 16) * 16 + 16
        self.b_size = _ceil(self.nc * self.kc, 16) * 16 + 16
        self.per_thread = self.a_size + self.b_size
        scratch_t = ir.ArrayType(self.et, self.per_thread * threads)
        self.scratch = ir.GlobalVariable(module, scratch_t, f"{name}_scratch")
        self.scratch.linkage = "internal"
        self.scratch.initializer = ir.Constant(scratch_t, None)
        self.scratch.align = 4096
        self.fma = self._intrinsic("llvm.fma", self.vt, 3)

    # -- helpers --------------------------------------------------------------------------
    def _intrinsic(self, name: str, t: ir.Type, nargs: int) -> ir.Function:
        suffix = f"v{t.count}{'f32' if t.element == F32 else 'f64'}" \
            if isinstance(t, ir.VectorType) else ("f32" if t == F32 else "f64")
        full = f"{name}.{suffix}"
        fn = self.module.globals.get(full)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(t, [t] * nargs), full)
        return fn

    def _function(self, suffix: str, args: list[ir.Type], noalias: int = 0,
                  inline: bool = True) -> ir.Function:
        fn = ir.Function(self.module, ir.FunctionType(VOID, args), f"{self.name}_{suffix}")
        fn.linkage = "internal"
        if not inline:
            fn.attributes.add("noinline")
        for arg in fn.args[:noalias]:
            arg.add_attribute("noalias")
        fn.attributes.add("nounwind")
        # optsize: no loop unrolling by LLVM. The micro-kernel is unrolled by hand and the
        # packing loops are bound by memory: 24 % less compile time for an MLP step, the same
        # GFLOP/s (measured with benchmarks/bench_gemm.py).
        fn.attributes.add("optsize")
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

    def _mul(self, b: ir.IRBuilder, x: ir.Value, c: int) -> ir.Value:
        if c == 0:
            return self._c(0)
        return x if c == 1 else b.mul(x, self._c(c))

    @contextlib.contextmanager
    def _range(self, b: ir.IRBuilder, start, stop, step: int, name: str
               ) -> Iterator[ir.Value]:
        """for (x = start; x < stop; x += step): start/stop i64 values or ints."""
        start = self._c(start) if isinstance(start, int) else start
        stop = self._c(stop) if isinstance(stop, int) else stop
        span = b.sub(stop, start)
        count = b.sdiv(b.add(span, self._c(step - 1)), self._c(step)) if step > 1 else span
        with counted_loop(b, count, name) as i:
            yield b.add(start, self._mul(b, i, step))

    def _if(self, b: ir.IRBuilder, cond: ir.Value):
        return b.if_then(cond)

    def _splat(self, b: ir.IRBuilder, x: ir.Value, t: ir.VectorType) -> ir.Value:
        v = b.insert_element(ir.Constant(t, ir.Undefined), x, ir.Constant(I32, 0))
        return b.shuffle_vector(v, ir.Constant(t, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, t.count), [0] * t.count))

    # -- the micro-kernel -----------------------------------------------------------------
    def micro(self, rows: int, nvec: int, last_lanes: int) -> ir.Function:
        """C[rows, cols] (+)= Apanel[rows, kc] Bpanel[kc, cols], cols = (nvec - 1) vectors
        and last_lanes lanes; args (apanel, bpanel, c, kc, first, ldc). Shared by every
        GEMM of the module with the same dtype, tile, A layout and output column stride."""
        layout = "rows" if self.a_rows else "kmajor"
        name = (f"gemm_{self.s.dtype}_micro{rows}x{nvec}x{last_lanes}_{layout}"
                f"_cs{self.s.c.s1}{'_bdirect' if self.b_direct else ''}")
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        fn = ir.Function(self.module,
                         ir.FunctionType(VOID, [PTR, PTR, PTR, I64, I1, I64, I64]), name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        fn.attributes.add("optsize")  # (see _function)
        for arg in fn.args[:3]:
            arg.add_attribute("noalias")
        ap, bp, cp, kc, first, ldc, ldb = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        entry = b.block
        loop = fn.append_basic_block("k")
        done = fn.append_basic_block("store")
        b.branch(loop)
        b.position_at_end(loop)
        vt, zero = self.vt, ir.Constant(self.vt, None)
        p = b.phi(I64, "p")
        p.add_incoming(self._c(0), entry)
        acc = [[b.phi(vt, f"acc{i}_{v}") for v in range(nvec)] for i in range(rows)]
        for row in acc:
            for phi in row:
                phi.add_incoming(zero, entry)
        bk = self._gep(b, bp, b.mul(p, ldb))  # ldb: NR for a packed panel, else B's row stride
        bvec = []
        for v in range(nvec):
            ptr = self._gep(b, bk, v * self.vl)
            lanes = last_lanes if v == nvec - 1 else self.vl
            if not self.b_direct:
                ld = b.load(ptr, typ=vt)
                ld.align = 64
            elif lanes == self.vl:
                ld = b.load(ptr, typ=vt)
                ld.align = self.esize
            else:  # exactly `lanes` elements: nothing read past the row
                ld = self._load_padded(b, ptr, lanes)
            bvec.append(ld)
        if self.a_rows:
            ak = self._gep(b, ap, p)
            a_stride = self.a_ld
        else:
            ak = self._gep(b, ap, self._mul(b, p, self.mr))
            a_stride = 1
        new = []
        for i in range(rows):
            x = b.load(self._gep(b, ak, i * a_stride), typ=self.et)
            xs = self._splat(b, x, vt)
            new.append([b.call(self.fma, [xs, bvec[v], acc[i][v]]) for v in range(nvec)])
        pn = b.add(p, self._c(1))
        for i in range(rows):
            for v in range(nvec):
                acc[i][v].add_incoming(new[i][v], loop)
        p.add_incoming(pn, loop)
        b.cbranch(b.icmp_signed("<", pn, kc), loop, done)
        b.position_at_end(done)
        with b.if_else(first) as (then, otherwise):
            with then:
                self._store_tile(b, cp, ldc, new, last_lanes, accumulate=False)
            with otherwise:
                self._store_tile(b, cp, ldc, new, last_lanes, accumulate=True)
        b.ret_void()
        return fn

    def _store_tile(self, b, cp, ldc: ir.Value, tile, last_lanes: int, accumulate: bool
                    ) -> None:
        csc = self.s.c.s1
        vl = self.vl
        for i, row in enumerate(tile):
            rowp = self._gep(b, cp, b.mul(ldc, self._c(i)) if i else self._c(0))
            for v, value in enumerate(row):
                lanes = last_lanes if v == len(row) - 1 else vl
                if csc != 1:
                    for lane in range(lanes):
                        ptr = self._gep(b, rowp, (v * vl + lane) * csc)
                        x = b.extract_element(value, ir.Constant(I32, lane))
                        if accumulate:
                            x = b.fadd(b.load(ptr, typ=self.et), x)
                        b.store(x, ptr)
                    continue
                # Contiguous: the whole vector, or power-of-two pieces of a partial one.
                pieces, start = [], 0
                for size in (16, 8, 4, 2, 1):
                    while lanes - start >= size and size <= vl:
                        pieces.append((start, size))
                        start += size
                for start, size in pieces:
                    ptr = self._gep(b, rowp, v * vl + start)
                    if size == 1:
                        x = b.extract_element(value, ir.Constant(I32, start))
                        t = self.et
                    elif size == vl:
                        x, t = value, self.vt
                    else:
                        t = ir.VectorType(self.et, size)
                        x = b.shuffle_vector(value, ir.Constant(self.vt, ir.Undefined),
                                             ir.Constant(ir.VectorType(I32, size),
                                                         list(range(start, start + size))))
                    if accumulate:
                        old = b.load(ptr, typ=t)
                        old.align = self.esize
                        x = b.fadd(old, x)
                    st = b.store(x, ptr)
                    st.align = self.esize

    # -- packing --------------------------------------------------------------------------
    def pack_a(self) -> ir.Function:
        """(src, dst, i0, mb, p0, kc): rows i0..i0+mb, depth p0..p0+kc of A into dst: as rows
        dst[r * KC + p] when A is contiguous along k, else as k-major micro-panels
        dst[q * MR * KC + p * MR + i]. Only the matrix's last panel can be partial (it holds
        m % MR rows; the micro-kernel for it reads no more)."""
        fn = self._function("pack_a", [PTR, PTR, I64, I64, I64, I64], 2, inline=False)
        src, dst, i0, mb, p0, kc = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        sm, sk = self.s.a.s0, self.s.a.s1
        mr, rest = self.mr, self.s.m % self.mr
        if self.a_rows:
            with counted_loop(b, mb, "r") as r:
                srow = self._gep(b, src, b.add(self._mul(b, b.add(i0, r), sm), p0))
                drow = self._gep(b, dst, self._mul(b, r, self.a_ld))
                with counted_loop(b, kc, "p") as p:
                    b.store(b.load(self._gep(b, srow, p), typ=self.et), self._gep(b, drow, p))
            b.ret_void()
            return fn
        full = b.sdiv(mb, self._c(mr))
        partial = b.icmp_signed("<", b.mul(full, self._c(mr)), mb) if rest else None
        if sm == 1:  # transposed A: each k row read once, across all panels, as vectors
            with counted_loop(b, kc, "p") as p:
                srow = self._gep(b, src, b.add(i0, self._mul(b, b.add(p0, p), sk)))
                drow = self._gep(b, dst, self._mul(b, p, mr))
                with counted_loop(b, full, "q") as q:
                    self._copy(b, self._gep(b, srow, self._mul(b, q, mr)),
                               self._gep(b, drow, self._mul(b, q, mr * self.kc)), mr)
                if rest:
                    with self._if(b, partial):
                        self._copy(b, self._gep(b, srow, self._mul(b, full, mr)),
                                   self._gep(b, drow, self._mul(b, full, mr * self.kc)), rest)
            b.ret_void()
            return fn

        def panel(q, rows: int) -> None:
            row0 = b.add(i0, self._mul(b, q, mr))
            spanel = self._gep(b, src, b.add(self._mul(b, row0, sm), self._mul(b, p0, sk)))
            dpanel = self._gep(b, dst, self._mul(b, q, mr * self.kc))
            with counted_loop(b, kc, "p") as p:
                s = self._gep(b, spanel, self._mul(b, p, sk))
                d = self._gep(b, dpanel, self._mul(b, p, mr))
                for i in range(rows):
                    b.store(b.load(self._gep(b, s, i * sm), typ=self.et), self._gep(b, d, i))

        with counted_loop(b, full, "q") as q:
            panel(q, mr)
        if rest:
            with self._if(b, partial):
                panel(full, rest)
        b.ret_void()
        return fn

    def pack_b(self) -> ir.Function:
        """(src, dst, p0, kc, j0, nb): depth p0..p0+kc, columns j0..j0+nb of B into panels of
        NR columns, dst[r * NR * KC + p * NR + j]. Only the matrix's last panel can be
        partial (n % NR columns); its other columns are zeroed."""
        fn = self._function("pack_b", [PTR, PTR, I64, I64, I64, I64], 2, inline=False)
        src, dst, p0, kc, j0, nb = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        sk, sn = self.s.b.s0, self.s.b.s1
        nr, rest = self.nr, self.s.n % self.nr
        full = b.sdiv(nb, self._c(nr))

        def panel(r, cols: int) -> None:
            col0 = b.add(j0, self._mul(b, r, nr))
            spanel = self._gep(b, src, b.add(self._mul(b, col0, sn), self._mul(b, p0, sk)))
            dpanel = self._gep(b, dst, self._mul(b, r, nr * self.kc))
            if sk == 1 and sn != 1:
                self._pack_b_transposed(b, spanel, dpanel, kc, cols)
                return
            with counted_loop(b, kc, "p") as p:
                s = self._gep(b, spanel, self._mul(b, p, sk))
                d = self._gep(b, dpanel, self._mul(b, p, nr))
                if sn == 1:  # whole vectors, a partial one padded with zeros
                    for v in range(self.nv):
                        lanes = max(0, min(self.vl, cols - v * self.vl))
                        x = self._load_padded(b, self._gep(b, s, v * self.vl), lanes)
                        st = b.store(x, self._gep(b, d, v * self.vl))
                        st.align = 64
                else:
                    zero = ir.Constant(self.et, 0.0)
                    for j in range(nr):
                        x = b.load(self._gep(b, s, j * sn), typ=self.et) if j < cols else zero
                        b.store(x, self._gep(b, d, j))

        with counted_loop(b, full, "r") as r:
            panel(r, nr)
        if rest:
            with self._if(b, b.icmp_signed("<", b.mul(full, self._c(nr)), nb)):
                panel(full, rest)
        b.ret_void()
        return fn

    def _pack_b_transposed(self, b, spanel, dpanel, kc, cols: int) -> None:
        """A panel of B stored transposed (contiguous along k): whole vl x vl blocks by the
        module's shared in-register transpose, edges (a partial group of columns, the last
        few rows of k) by a plain loop."""
        vl, nr = self.vl, self.nr
        sn = self.s.b.s1
        blocks = b.sdiv(kc, self._c(vl))

        def block(p, depth: int) -> None:
            for jb in range(self.nv):
                group = self._gep(b, spanel, b.add(p, self._c(jb * vl * sn)))
                target = self._gep(b, dpanel, b.add(self._mul(b, p, nr), self._c(jb * vl)))
                if depth == vl and (jb + 1) * vl <= cols:
                    b.call(self.transpose_block(), [group, self._c(sn), target])
                else:
                    self._pack_b_edge(b, group, target, depth, cols - jb * vl)

        with counted_loop(b, blocks, "pb") as pb:
            block(self._mul(b, pb, vl), vl)
        # A partial block: only in the last k slice, of (k % KC) % vl rows.
        depth = (self.s.k % self.kc or self.kc) % vl
        if depth:
            with self._if(b, b.icmp_signed("<", b.mul(blocks, self._c(vl)), kc)):
                block(self._mul(b, blocks, vl), depth)

    def _pack_b_edge(self, b, src, dst, depth: int, cols: int) -> None:
        """dst[pp * NR + jj] = src[pp + jj * sn] for jj < cols, 0 for the other lanes."""
        sn, nr = self.s.b.s1, self.nr
        zero = ir.Constant(self.et, 0.0)
        with counted_loop(b, depth, "epp") as pp:
            row = self._gep(b, dst, self._mul(b, pp, nr))
            with counted_loop(b, self.vl, "ejj") as jj:
                inside = b.icmp_signed("<", jj, self._c(max(cols, 0)))
                with b.if_else(inside) as (then, otherwise):
                    with then:
                        x = b.load(self._gep(b, src, b.add(pp, self._mul(b, jj, sn))),
                                   typ=self.et)
                        b.store(x, self._gep(b, row, jj))
                    with otherwise:
                        b.store(zero, self._gep(b, row, jj))

    def transpose_block(self) -> ir.Function:
        """(src, sn, dst): vl rows of vl elements at src + jj*sn, transposed in registers
        into vl vectors at dst + pp*NR. One per module and dtype."""
        name = f"gemm_{self.s.dtype}_transpose_block"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR, I64, PTR]), name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        fn.attributes.add("optsize")
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

    def _load_padded(self, b, ptr, lanes: int) -> ir.Value:
        """A full vector from `lanes` contiguous elements, zeros after them."""
        vl = self.vl
        if lanes == 0:
            return ir.Constant(self.vt, None)
        if lanes == vl:
            x = b.load(ptr, typ=self.vt)
            x.align = self.esize
            return x
        if lanes == 1:
            x = b.load(ptr, typ=self.et)
            return b.insert_element(ir.Constant(self.vt, None), x, ir.Constant(I32, 0))
        t = ir.VectorType(self.et, lanes)
        x = b.load(ptr, typ=t)
        x.align = self.esize
        mask = list(range(lanes)) + [lanes] * (vl - lanes)  # lane `lanes` of zeros
        return b.shuffle_vector(x, ir.Constant(t, None),
                                ir.Constant(ir.VectorType(I32, vl), mask))

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
        """(apack, bpack, c, mb, nb, kc, first): C[mb, nb] (+)= the packed blocks."""
        fn = self._function("macro", [PTR, PTR, PTR, I64, I64, I64, I1], 3, inline=False)
        ap, bp, cp, mb, nb, kc, first = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        s = self.s
        mr, nr, vl = self.mr, self.nr, self.vl
        row_edge, col_edge = s.m % mr, s.n % nr
        edge_nvec = _ceil(col_edge, vl)
        edge_lanes = col_edge - (edge_nvec - 1) * vl if col_edge else 0
        ldc, csc = s.c.s0, s.c.s1
        full_q = b.sdiv(mb, self._c(mr))
        full_r = b.sdiv(nb, self._c(nr))
        a_panel = mr * (self.a_ld if self.a_rows else self.kc)
        ldc_arg = self._c(ldc)
        # B panels: packed (NR columns by kc, one after another), or B itself
        b_panel = nr if self.b_direct else nr * self.kc
        ldb_arg = self._c(s.b.s0 if self.b_direct else nr)

        def tiles_of_row(q, rows: int) -> None:
            apanel = self._gep(b, ap, self._mul(b, q, a_panel))
            crow = self._gep(b, cp, self._mul(b, q, mr * ldc))
            f = self.micro(rows, self.nv, vl)
            with counted_loop(b, full_r, "r") as r:
                b.call(f, [apanel, self._gep(b, bp, self._mul(b, r, b_panel)),
                           self._gep(b, crow, self._mul(b, r, nr * csc)), kc, first, ldc_arg, ldb_arg])
            if col_edge:
                with self._if(b, b.icmp_signed("<", b.mul(full_r, self._c(nr)), nb)):
                    f = self.micro(rows, edge_nvec, edge_lanes)
                    b.call(f, [apanel, self._gep(b, bp, self._mul(b, full_r, b_panel)),
                               self._gep(b, crow, self._mul(b, full_r, nr * csc)), kc, first, ldc_arg, ldb_arg])

        def tiles_of_col(r, nvec: int, lanes: int) -> None:
            bpanel = self._gep(b, bp, self._mul(b, r, b_panel))
            ccol = self._gep(b, cp, self._mul(b, r, nr * csc))
            f = self.micro(mr, nvec, lanes)
            with counted_loop(b, full_q, "q") as q:
                b.call(f, [self._gep(b, ap, self._mul(b, q, a_panel)), bpanel,
                           self._gep(b, ccol, self._mul(b, q, mr * ldc)), kc, first, ldc_arg, ldb_arg])
            if row_edge:
                with self._if(b, b.icmp_signed("<", b.mul(full_q, self._c(mr)), mb)):
                    f = self.micro(row_edge, nvec, lanes)
                    b.call(f, [self._gep(b, ap, self._mul(b, full_q, a_panel)), bpanel,
                               self._gep(b, ccol, self._mul(b, full_q, mr * ldc)), kc, first, ldc_arg, ldb_arg])

        if self.order == "rows":
            with counted_loop(b, full_q, "q") as q:
                tiles_of_row(q, mr)
            if row_edge:
                with self._if(b, b.icmp_signed("<", b.mul(full_q, self._c(mr)), mb)):
                    tiles_of_row(full_q, row_edge)
        else:
            with counted_loop(b, full_r, "r") as r:
                tiles_of_col(r, self.nv, vl)
            if col_edge:
                with self._if(b, b.icmp_signed("<", b.mul(full_r, self._c(nr)), nb)):
                    tiles_of_col(full_r, edge_nvec, edge_lanes)
        b.ret_void()
        return fn

    def work(self) -> ir.Function:
        """(a, b, c, t, T): thread t of T does its share of the work units (a batch item's
        rows or columns, whole micro-panels), each with its own loops over the blocks:
        MC rows (pack A) > KC depth > NC columns (pack B) > the macro-kernel."""
        fn = self._function("work", [PTR, PTR, PTR, I64, I64])
        a0, b0, c0, t, nt = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        s = self.s
        pack_a, macro = self.pack_a(), self.macro()
        pack_b = None if self.b_direct else self.pack_b()
        scratch = self._gep(b, self.scratch, self._mul(b, t, self.per_thread))
        apack = scratch
        bpack = self._gep(b, scratch, self.a_size)
        units = self._c(self.units)
        u0 = b.sdiv(b.mul(t, units), nt)
        u1 = b.sdiv(b.mul(b.add(t, self._c(1)), units), nt)
        with self._range(b, u0, u1, 1, "u") as u:
            item = b.sdiv(u, self._c(self.parts))
            part = b.srem(u, self._c(self.parts))
            # batch offsets from the item's multi-index
            offs = {"a": self._c(s.a.offset), "b": self._c(s.b.offset), "c": self._c(s.c.offset)}
            rem = item
            for axis in reversed(range(len(s.batch))):
                idx = b.srem(rem, self._c(s.batch[axis]))
                rem = b.sdiv(rem, self._c(s.batch[axis]))
                for key, op in (("a", s.a), ("b", s.b), ("c", s.c)):
                    if op.batch[axis]:
                        offs[key] = b.add(offs[key], self._mul(b, idx, op.batch[axis]))
            pa, pb, pc = (self._gep(b, x, offs[key]) for x, key in
                          ((a0, "a"), (b0, "b"), (c0, "c")))
            r0 = self._mul(b, b.sdiv(part, self._c(self.col_parts)), self.part_rows)
            r1 = self._min(b, b.add(r0, self._c(self.part_rows)), self._c(s.m))
            c0 = self._mul(b, b.srem(part, self._c(self.col_parts)), self.part_cols)
            c1 = self._min(b, b.add(c0, self._c(self.part_cols)), self._c(s.n))
            with self._range(b, r0, r1, self.mc, "jc") as jc:
                mb = self._min(b, self._c(self.mc), b.sub(r1, jc))
                crow = self._gep(b, pc, self._mul(b, jc, s.c.s0))
                with self._range(b, 0, s.k, self.kc, "pc") as pk:
                    kc = self._min(b, self._c(self.kc), b.sub(self._c(s.k), pk))
                    first = b.icmp_signed("==", pk, self._c(0))
                    b.call(pack_a, [pa, apack, jc, mb, pk, kc])
                    with self._range(b, c0, c1, self.nc, "ic") as ic:
                        nb = self._min(b, self._c(self.nc), b.sub(c1, ic))
                        if pack_b is not None:
                            b.call(pack_b, [pb, bpack, pk, kc, ic, nb])
                            bblock = bpack
                        else:  # B read in place: its block starts at row pk, column ic
                            bblock = self._gep(b, pb, b.add(self._mul(b, pk, s.b.s0), ic))
                        b.call(macro, [apack, bblock, self._gep(b, crow, self._mul(b, ic, s.c.s1)),
                                       mb, nb, kc, first])
        b.ret_void()
        return fn

    # -- the call -------------------------------------------------------------------------
    def emit(self, b: ir.IRBuilder, bases: dict) -> None:
        s = self.s
        work = self.work()
        args = [bases[s.a.buffer], bases[s.b.buffer], bases[s.c.buffer]]
        if self.threads == 1:
            b.call(work, args + [self._c(0), self._c(1)])
            return
        body = self._function("parallel", [PTR])
        bb = ir.IRBuilder(body.append_basic_block("entry"))
        ctx = body.args[0]
        ptrs = [bb.load(bb.gep(ctx, [self._c(i)], source_etype=PTR), typ=PTR) for i in range(3)]
        tid = self._declare("omp_get_thread_num", I32, [])
        tnum = self._declare("omp_get_num_threads", I32, [])
        t = bb.sext(bb.call(tid, []), I64)
        # never more threads than the scratch has room for (libgomp gives at most that)
        nt = self._min(bb, bb.sext(bb.call(tnum, []), I64), self._c(self.threads))
        with bb.if_then(bb.icmp_signed("<", t, nt)):
            bb.call(work, ptrs + [t, nt])
        bb.ret_void()
        entry = b.function.entry_basic_block
        with b.goto_block(entry):
            b.position_at_start(entry)
            slot = b.alloca(PTR, size=3)
        for i, p in enumerate(args):
            b.store(p, b.gep(slot, [self._c(i)], source_etype=PTR))
        ok = emit_team_condition(self.module, b)
        with b.if_else(ok) as (team, alone):
            with team:
                gomp = self._declare("GOMP_parallel", VOID, [PTR, PTR, I32, I32])
                b.call(gomp, [body, slot, ir.Constant(I32, self.threads), ir.Constant(I32, 0)])
            with alone:
                b.call(work, args + [self._c(0), self._c(1)])

    def _declare(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret, args), name)
        return fn
