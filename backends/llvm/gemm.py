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
* shared code: a GEMM's sizes, strides and blocking are data (a constant descriptor), so
  the GEMMs of a module with the same layouts share one set of functions
  (gemm_kernels.py); edges are handled at run time: an edge tile stores only its rows and
  lanes (masked stores), nothing outside the buffers is read or written.
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

Deep GEMMs with a small output whose operands are both contiguous along the depth (a
convolution's weight gradient) are blocks of dot products instead: gemm_dot.py.

Integer GEMMs and small float GEMMs take a plain loop nest (j innermost, which LLVM
vectorizes when the output and B are contiguous along j)."""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
from llvmlite import ir

from graphc.backends.llvm import conv_channels, conv_direct, gemm_bcast, gemm_dot
from graphc.backends.llvm.gemm_blocking import (  # noqa: F401 (DIRECT_A_MAX_M re-exported)
    DIRECT_A_MAX_M, Blocking, BlockingRecipe, even_block)
from graphc.backends.llvm.gemm_kernels import FIELDS, GemmKernels, Variant
from graphc.backends.llvm.loops import counted_loop, loop_nest
from graphc.backends.llvm.threads import (  # noqa: F401 (re-exported)
    emit_team_condition, num_threads, openmp_available)
from graphc.backends.llvm.scalar import F32, F64, I32, I64, constant
from graphc import sizes
from graphc.backends.llvm.size_values import runtime_descriptor_pointer
from graphc.backends.llvm.tables import constant_table
from graphc.schedule import ir as kir
from graphc.sizes import Size, SizeVar, hint, representative

if TYPE_CHECKING:  # (codegen imports this module)
    from graphc.backends.llvm.codegen import LazyBases

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


def packed(k: kir.Gemm) -> bool:
    """Whether a GEMM takes the packed path (else a plain loop nest). With symbolic sizes
    the representative binding decides: both paths are right for every size."""
    return np.dtype(k.dtype).kind == "f" and hint(k.k) > 0 and \
        hint(k.m) * hint(k.n) * hint(k.k) >= PACKED_MIN_MACS


def symbolic(k: kir.Gemm) -> bool:
    """Whether a GEMM's sizes or strides hold symbols (its blocking is then data the
    runtime computes for each binding: RuntimeGemm)."""
    split = () if k.b_split is None else tuple(k.b_split[0]) + tuple(k.b_split[1])
    return any(isinstance(v, Size) for v in (k.m, k.n, k.k) + tuple(k.batch) + split
               + tuple(k.a.strides) + tuple(k.b.strides) + tuple(k.out.strides)
               + (k.a.offset, k.b.offset, k.out.offset))


def _dot(k: kir.Gemm) -> bool:
    """Whether a packed GEMM is computed as dot products (gemm_dot.py) or outer products
    (gemm_bcast.py): deep, with a small output, not blocked and packed."""
    return packed(k) and _deep(_Spec.of(k)) is not None


def _deep(spec: "_Spec") -> type | None:
    """The class that computes a deep GEMM with a small output (a convolution's weight
    gradient), or None: outer products where m fills the vectors, else dot products."""
    if gemm_bcast.suitable(spec):
        return gemm_bcast.BroadcastGemm
    if gemm_dot.suitable(spec):
        return gemm_dot.DotGemm
    return None


def _team(k: kir.Gemm, spec: "_Spec") -> int:
    threads = num_threads()
    macs = hint(k.m) * hint(k.n) * hint(k.k) * hint(spec.nbatch)
    if not (threads > 1 and macs >= PARALLEL_MIN_MACS and openmp_available()):
        threads = 1  # (else _PackedGemm gives it at most as many threads as work units)
    return threads


def emit_gemm(writer, b: ir.IRBuilder, fn: ir.Function, bases: LazyBases, k: kir.Gemm,
              packed_b: ir.GlobalVariable | None = None) -> None:
    """k's code; `packed_b`: B's panels, packed already by prepack_b (a loop's body GEMM
    whose B is loop-invariant reads them instead of packing B again at every step)."""
    dtype = np.dtype(k.dtype)
    if k.direct:  # (a convolution of small depth, marked by the scheduler)
        direct = conv_channels if conv_channels.suitable(k) else conv_direct
        direct.emit(writer.module, b, bases, k, fn.name)
        return
    if packed(k):
        spec = _Spec.of(k)
        threads = _team(k, spec)
        if symbolic(k):
            deep = _deep(spec)
            if deep is not None:  # (a weight gradient over a call-time batch: the team,
                # or not, chosen at each call from its depth)
                team = num_threads() if openmp_available() else 1
                deep(writer.module, spec, team, fn.name,
                     min_macs=PARALLEL_MIN_MACS).emit(b, bases)
                return
            gemm = _PackedGemm(writer.module, spec, PARAMS[dtype.name], threads, fn.name,
                               runtime=True)
            gemm.desc = runtime_descriptor_pointer(b)
            gemm.emit(b, bases)
            return
        deep = _deep(spec)
        if deep is not None:
            deep(writer.module, spec, threads, fn.name).emit(b, bases)
            return
        gemm = _PackedGemm(writer.module, spec, PARAMS[dtype.name], threads, fn.name,
                           prepacked=packed_b is not None)
        gemm.emit(b, bases if packed_b is None else bases.with_value(spec.b.buffer, packed_b))
        return
    _emit_loops(writer, b, bases, k)


class RuntimeGemm:
    """A symbolic GEMM as its code was written (packed or not, layouts and team decided on
    the representative binding, as emit_gemm did): `descriptor` gives its blocking for
    any binding (empty where the code takes none)."""

    def __init__(self, k: kir.Gemm | None, representative_binding: Mapping[SizeVar, int]
                 ) -> None:
        self.packed = False
        if k is None:  # (restored)
            return
        with representative(representative_binding):
            # (a direct convolution, or a dot-product GEMM, takes its sizes from its
            # kernel's size values: no descriptor)
            self.packed = symbolic(k) and packed(k) and not k.direct and not _dot(k)
            if self.packed:
                self.spec = _Spec.of(k)
                self.params = PARAMS[np.dtype(k.dtype).name]
                self.layouts = _layouts(self.spec, direct_b=False)
                self.team = _team(k, self.spec)

    @staticmethod
    def restored(spec: "_Spec", team: int, layouts: tuple[str, str]) -> "RuntimeGemm":
        """A packed GEMM's blocking inputs as a cache entry stored them (symbolic_plan.py)."""
        g = RuntimeGemm(None, {})
        g.packed, g.spec, g.team, g.layouts = True, spec, team, layouts
        g.params = PARAMS[spec.dtype]
        return g

    def descriptor(self, binding: Mapping[SizeVar, int]) -> list[int]:
        if not self.packed:
            return []
        return self.descriptor_of([sizes.evaluate(d, binding) for d in self.spec.flat()])

    def descriptor_of(self, values: Sequence[int]) -> list[int]:
        """`descriptor` for the values of the spec's `flat()` sizes (a packed GEMM)."""
        key = (self._template, tuple(values))
        desc = _DESCRIPTORS.get(key)
        if desc is None:
            nb = len(self.spec.batch)
            if 0 in (values[nb], values[nb + 1], values[nb + 2]):  # (m, n, k)
                from graphc.schedule.symbolic import NotSymbolic
                raise NotSymbolic("a packed GEMM with an empty side (its code skips nothing)")
            desc = self._recipe(values).desc
            if len(_DESCRIPTORS) >= _MAX_DESCRIPTORS:
                _DESCRIPTORS.pop(next(iter(_DESCRIPTORS)))
            _DESCRIPTORS[key] = desc
        return list(desc)

    @functools.cached_property
    def _recipe(self) -> BlockingRecipe:
        return _recipe(self.spec, self.params, self.team, self.layouts)

    @functools.cached_property
    def _template(self) -> int:
        """A number shared by the GEMMs whose blocking depends on nothing but their sizes'
        values (buffers aside): a deep MLP's identical layers share their descriptors."""
        def bare(o: _Operand) -> _Operand:
            return replace(o, buffer=0)
        spec = self.spec
        shape = (replace(spec, a=bare(spec.a), b=bare(spec.b), c=bare(spec.c)),
                 self.params, self.team, self.layouts)
        return _TEMPLATES.setdefault(shape, len(_TEMPLATES))


# Descriptors by (GEMM template, its sizes' values): made once for any binding and GEMM
# with these sizes (a binding evicted from a program's MAX_BINDINGS, its identical layers).
_DESCRIPTORS: dict[tuple[int, tuple[int, ...]], list[int]] = {}
_MAX_DESCRIPTORS = 4096
_TEMPLATES: dict[tuple, int] = {}


def prepackable(k: kir.Gemm) -> int | None:
    """The buffer of k's B operand (in canonical form) when its panels could be packed once
    ahead (prepack_b): a packed GEMM of one item that would pack B; else None."""
    if not packed(k) or k.batch or symbolic(k) or k.direct:
        return None
    spec = _Spec.of(k)
    if _deep(spec) is not None or _b_layout(spec) == "direct":
        return None
    return spec.b.buffer


def prepack_b(module: ir.Module, b: ir.IRBuilder, k: kir.Gemm, source: ir.Value,
              name: str) -> ir.GlobalVariable:
    """Packs all of k's B (at `source`) into a new global of the module, as panels of NR
    columns by the whole depth (zero-padded to whole panels), the layout emit_gemm reads
    with `packed_b`; returns that global. Written where the builder stands."""
    spec = _Spec.of(k)
    p = PARAMS[spec.dtype]
    bo = spec.b
    panels = _ceil(spec.n, p.nr)
    et = F32 if spec.dtype == "float32" else F64
    store_t = ir.ArrayType(et, panels * p.nr * spec.k)
    store = ir.GlobalVariable(module, store_t, f"{name}_packed_b")
    store.linkage = "internal"
    store.initializer = ir.Constant(store_t, None)
    store.align = 4096
    # pack_b reads B's strides and the panel depth (kc: here the whole depth) from a
    # descriptor; the other fields are not read.
    values = dict.fromkeys(FIELDS, 0)
    values.update(b_s0=bo.s0, b_s1=bo.s1, kc=spec.k)
    desc = constant_table(module, f"{name}_pack_desc", [values[f] for f in FIELDS])
    variant = Variant(spec.dtype, "rows", _b_layout(spec), True, 0, p.order)
    pack = GemmKernels(module, variant, p).pack_b()
    start = b.gep(source, [ir.Constant(I64, bo.offset)], source_etype=et)
    b.call(pack, [start, store, desc, ir.Constant(I64, 0), ir.Constant(I64, spec.k),
                  ir.Constant(I64, 0), ir.Constant(I64, spec.n)])
    return store


def _b_layout(spec: "_Spec") -> str:
    """How the packed path reads B: in place ("direct": GEMMs of few rows, B contiguous
    along n) or packed from rows, transposed or strided storage."""
    return _layouts(spec)[1]


def _emit_loops(writer, b: ir.IRBuilder, bases: dict, k: kir.Gemm) -> None:
    is_float = np.dtype(k.dtype).kind == "f"
    if not k.accumulate:
        zero = constant(k.dtype, 0)
        with loop_nest(b, k.batch + (k.m, k.n), "z") as zx:
            writer.store(b, bases, k.out, zx, zero)
    if k.k == 0:
        return
    with loop_nest(b, k.batch, "b") as bx:
        with counted_loop(b, k.m, "i") as i:
            with counted_loop(b, k.k, "p") as p:
                a_ip = writer.load(b, bases, k.a, bx + [i, p])
                if k.alpha != 1:  # (alpha * a) @ b: rounds a little differently, as BLAS
                    a_ip = b.fmul(a_ip, constant(k.dtype, k.alpha)) if is_float else \
                        b.mul(a_ip, constant(k.dtype, int(k.alpha)))
                with counted_loop(b, k.n, "j") as j:
                    acc = writer.load(b, bases, k.out, bx + [i, j])
                    c_pj = writer.load(b, bases, k.b, bx + _b_index(b, k, p, j))
                    if is_float:
                        prod = b.fmul(a_ip, c_pj)
                        prod.flags.append("contract")
                        total = b.fadd(acc, prod)
                        total.flags.append("contract")
                    else:
                        total = b.add(acc, b.mul(a_ip, c_pj))
                    writer.store(b, bases, k.out, bx + [i, j], total)


def _b_index(b: ir.IRBuilder, k: kir.Gemm, p: ir.Value, j: ir.Value) -> list[ir.Value]:
    """B's indices for (p, j): an implicit GEMM's p and j split into their sub-axes."""
    if k.b_split is None:
        return [p, j]
    index: list[ir.Value] = []
    for x, sub_sizes in zip((p, j), k.b_split):
        parts = []
        for size in reversed(sub_sizes):
            parts.append(b.urem(x, ir.Constant(I64, size)))
            x = b.udiv(x, ir.Constant(I64, size))
        index += parts[::-1]
    return index


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
    alpha: float = 1.0  # c = alpha * a @ b ...
    accumulate: bool = False  # ... + c
    # an implicit GEMM's B (kir.Gemm.b_split): (size, stride) of k's and of n's sub-axes
    b_sub: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]] | None = None

    @staticmethod
    def of(g: kir.Gemm) -> "_Spec":
        nb = len(g.batch)

        def operand(acc: kir.Access) -> _Operand:
            s = tuple(acc.strides)
            return _Operand(acc.buffer, s[:nb], s[nb], s[nb + 1], acc.offset)

        a, c = operand(g.a), operand(g.out)
        sub = None
        if g.b_split is None:
            b = operand(g.b)
        else:  # (no single strides: the sub-axes' go to the descriptor)
            b = _Operand(g.b.buffer, tuple(g.b.strides[:nb]), 0, 0, g.b.offset)
            ks, ns = g.b_split
            strides = g.b.strides[nb:]
            sub = (tuple(zip(ks, strides[:len(ks)])), tuple(zip(ns, strides[len(ks):])))
        spec = _Spec(np.dtype(g.dtype).name, tuple(g.batch), g.m, g.n, g.k, a, b, c,
                     float(g.alpha), bool(g.accumulate), sub)
        if c.s1 != 1 and c.s0 == 1:
            if sub is not None:  # (the scheduler makes an implicit GEMM's output row-major)
                raise NotImplementedError("llvm: an implicit GEMM with a column-major output")
            spec = replace(spec, m=g.n, n=g.m, a=replace(b, s0=b.s1, s1=b.s0),
                           b=replace(a, s0=a.s1, s1=a.s0), c=replace(c, s0=c.s1, s1=c.s0))
        return spec

    @property
    def nbatch(self) -> int:
        total = 1
        for d in self.batch:
            total = total * d
        return total

    def bound(self, binding: Mapping[SizeVar, int]) -> "_Spec":
        """The spec with every size and stride given its value in `binding`."""
        return self.rebuilt([sizes.evaluate(d, binding) for d in self.flat()])

    def flat(self) -> list:
        """Every size and stride of the spec, in the order `rebuilt` reads them."""
        out = [*self.batch, self.m, self.n, self.k]
        for o in (self.a, self.b, self.c):
            out += [*o.batch, o.s0, o.s1, o.offset]
        for axes in self.b_sub or ():
            for size, stride in axes:
                out += [size, stride]
        return out

    def rebuilt(self, values: Sequence[int]) -> "_Spec":
        """The spec with the sizes and strides of `flat()` replaced by `values`."""
        v = list(values)
        at = len(self.batch)
        batch, (m, n, k) = tuple(v[:at]), v[at:at + 3]
        at += 3
        operands = []
        for o in (self.a, self.b, self.c):
            end = at + len(o.batch)
            operands.append(_Operand(o.buffer, tuple(v[at:end]), v[end], v[end + 1],
                                     v[end + 2]))
            at = end + 3
        sub = None
        if self.b_sub is not None:
            parts = []
            for axes in self.b_sub:
                parts.append(tuple((v[at + 2 * i], v[at + 2 * i + 1])
                                   for i in range(len(axes))))
                at += 2 * len(axes)
            sub = (parts[0], parts[1])
        a, b, c = operands
        return _Spec(self.dtype, batch, m, n, k, a, b, c, self.alpha, self.accumulate, sub)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _layouts(spec: _Spec, direct_b: bool = True, prepacked: bool = False) -> tuple[str, str]:
    """How A and B are packed: decided on the strides (a symbolic stride is never 1).
    `prepacked`: B's panels were packed ahead by prepack_b."""
    a, bo = spec.a, spec.b
    a_layout = "rows" if a.s1 == 1 else ("trans" if a.s0 == 1 else "strided")
    # Few rows: each element of B serves only `m` multiply-adds, so packing B would cost
    # as much as the product. B contiguous along n is then read where it is. (Not with a
    # symbolic m: one code for every m.)
    if prepacked:
        b_layout = "packed"
    elif spec.b_sub is not None:
        b_layout = "grouped"
    elif direct_b and bo.s1 == 1 and isinstance(spec.m, int) and spec.m <= DIRECT_B_MAX_M:
        b_layout = "direct"
    else:
        b_layout = "rows" if bo.s1 == 1 else ("trans" if bo.s0 == 1 else "strided")
    return a_layout, b_layout


def _recipe(spec: _Spec, p: Params, threads: int, layouts: tuple[str, str]
            ) -> BlockingRecipe:
    return BlockingRecipe(p, threads, layouts, len(spec.batch), spec.alpha, spec.accumulate,
                          None if spec.b_sub is None else (len(spec.b_sub[0]),
                                                           len(spec.b_sub[1])))


def _blocking(spec: _Spec, p: Params, threads: int, layouts: tuple[str, str],
              split_depth: bool = True) -> Blocking:
    """A GEMM's blocking and descriptor for known sizes (`spec` all ints)."""
    return _recipe(spec, p, threads, layouts)(spec.flat(), split_depth)


def _most_per_thread(p: Params) -> int:
    """Scratch elements per thread for any sizes (blocks never exceed PARAMS)."""
    return (_ceil(p.mc * p.kc, 16) * 16 + 16) + (_ceil(p.nc * p.kc, 16) * 16 + 16)


class _PackedGemm:
    """One packed GEMM: its blocking and descriptor, and the call to its variant's shared
    functions (gemm_kernels.py), on a team of threads or alone. `runtime`: its sizes are
    symbolic; the descriptor is data the caller sets (`desc`), the scratch as large as any
    sizes need, and the depth never split."""

    def __init__(self, module: ir.Module, spec: _Spec, params: Params, threads: int,
                 name: str, runtime: bool = False, prepacked: bool = False) -> None:
        self.module, self.s, self.threads, self.name = module, spec, threads, name
        p = params
        layouts = _layouts(spec, direct_b=not runtime, prepacked=prepacked)
        a_layout, b_layout = layouts
        if runtime:  # the team as chosen, whatever the units of one binding
            self.threads, self.ksplit = threads, 1
            scratch_len = _most_per_thread(p) * threads
        else:
            blk = _blocking(spec, p, threads, layouts)
            self.threads, self.ksplit = blk.threads, blk.ksplit
            scratch_len = blk.per_thread * blk.threads + (blk.ksplit - 1) * spec.m * spec.n
        self.variant = Variant(spec.dtype, a_layout, b_layout, spec.c.s1 == 1,
                               len(spec.batch), p.order)
        self.desc: ir.Value
        if not runtime:
            self.desc = constant_table(module, f"{name}_desc",
                                       _blocking(spec, p, threads, layouts).desc)
        scratch_t = ir.ArrayType(F32 if spec.dtype == "float32" else F64, scratch_len)
        # A symbolic GEMM's scratch is as large as any sizes need (1 MiB a thread): the
        # module's symbolic GEMMs share one, since the entry runs kernels one at a time
        # (W1 had 16 MiB of zeroed scratch, which made loading it from the cache 2x slower).
        shared = f"graphc_runtime_scratch_{spec.dtype}_{threads}" if runtime else None
        found = module.globals.get(shared) if shared else None
        if isinstance(found, ir.GlobalVariable):
            self.scratch = found
        else:
            self.scratch = ir.GlobalVariable(module, scratch_t, shared or f"{name}_scratch")
            self.scratch.linkage = "internal"
            self.scratch.initializer = ir.Constant(scratch_t, None)
            self.scratch.align = 4096
        self.kernels = GemmKernels(module, self.variant, p)
        fns = self.kernels.functions()
        fns_t = ir.ArrayType(PTR, len(fns))
        self.fns = module.globals.get(f"{self.variant.name}_fns")
        if self.fns is None:
            self.fns = ir.GlobalVariable(module, fns_t, f"{self.variant.name}_fns")
            self.fns.linkage = "internal"
            self.fns.global_constant = True
            self.fns.initializer = ir.Constant(fns_t, [ir.Constant(PTR, None) if f is None
                                                       else f for f in fns])

    def emit(self, b: ir.IRBuilder, bases: dict) -> None:
        s = self.s
        work = self.kernels.work()
        args = [bases[s.a.buffer], bases[s.b.buffer], bases[s.c.buffer], self.scratch,
                self.desc, self.fns]
        zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
        if self.threads == 1:
            b.call(work, args + [zero, one])
            self._add_partials(b, args)
            return
        entry = b.function.entry_basic_block
        with b.goto_block(entry):
            b.position_at_start(entry)
            slot = b.alloca(PTR, size=len(args))
        for i, value in enumerate(args):
            b.store(value, b.gep(slot, [ir.Constant(I64, i)], source_etype=PTR))
        ok = emit_team_condition(self.module, b)
        with b.if_else(ok) as (team, alone):
            with team:
                gomp = self.kernels._declare("GOMP_parallel", VOID, [PTR, PTR, I32, I32])
                b.call(gomp, [self.kernels.team(), slot, ir.Constant(I32, self.threads),
                              ir.Constant(I32, 0)])
            with alone:
                b.call(work, args + [zero, one])
        self._add_partials(b, args)

    def _add_partials(self, b: ir.IRBuilder, args: list) -> None:
        if self.ksplit > 1:  # (args: a, b, c, scratch, desc, fns)
            b.call(self.kernels.add_partials(), [args[2], args[3], args[4]])
