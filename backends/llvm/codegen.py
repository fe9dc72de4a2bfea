"""Renders a kernel schedule as LLVM modules: a function per distinct kernel (named by its
signature, in units compiled and cached apart) and an entry point `i32 graphc_main(ptr
buffers)` that runs the kernels in order (entry.py). Status: 0, or 1 + the index of the
kernel that failed (graphc.runtime.errors)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from llvmlite import ir

from graphc.schedule import ir as kir
from graphc.schedule.lower import Schedule
from graphc.schedule.core_ops import reduction_identity
from graphc.schedule.scalar import lower_expr
from graphc.schedule.signature import (kernel_buffers, overlap_classes,
                                       signature_and_symbols, signature_digest)
from graphc.backends.llvm import (collective, entry, gemm_library, jit, loop, parallel,
                                  scan_sort, vector_abi, vector_loop)
from graphc.backends.llvm.loops import I64, counted_loop, linear_index, loop_nest
from graphc.backends.llvm.size_values import KernelSizes, as_value, writing
from graphc.sizes import Size, SizeVar, hint
from graphc.backends.llvm.scalar import (I1, I8, I32, MATH_CALLS, ScalarEmitter, constant,
                                         llvm_type, storage_type)
from graphc.errors import index_error_message
from graphc.runtime.slots import SlotMap

PTR = ir.PointerType()
ENTRY = jit.ENTRY
# Elements per partial sum in float reductions (see ModuleWriter._blocked_sum).
SUM_BLOCK = 2048


# Every kernel is a function i32 g<digest>_<kind>(ptr locals): 0, or 1 where it failed.
# `locals` is the kernel's own table of buffer pointers (signature.kernel_buffers' order),
# which the entry point fills, so the code depends on the kernel's structure alone and
# identical kernels share one function.
KERNEL_TYPE = ir.FunctionType(I32, [PTR])


def function_name(signature: str, kernel: kir.Kernel) -> str:
    """The name of the function of every kernel with this signature (in any program)."""
    return f"g{signature_digest(signature)}_{kernel.kind}"


def may_fail(kernel: kir.Kernel) -> bool:
    """Whether a kernel can return an error (a fact of its kind): the others return 0."""
    return kernel.can_fail


def error_message(kernel: kir.Kernel) -> str | None:
    """The words of a failing kernel's error (the runtime raises them), or None."""
    error = kernel.error()
    if error is None:
        return None
    checked = kernel.checked_indices()
    if checked is None:
        return error[1]
    _, _, size, negative = checked
    return index_error_message(error[1], size, negative)


def _kernel_cost(k: kir.Kernel) -> int:
    """A rough size of the code a kernel becomes (LLVM's time grows with it), in units of
    a plain loop kernel; what packed GEMMs share is counted once (_GROUP_COST)."""
    if isinstance(k, kir.Elementwise) and parallel.threads_for(k) > 1:
        return 3
    if isinstance(k, kir.Gemm) and k.direct:
        return _DIRECT_CONV_COST
    return 2 if isinstance(k, kir.Reduce) else 1


def _collective(k: kir.Kernel) -> bool:
    """A kernel whose code calls MPI (or a loop holding one)."""
    if isinstance(k, kir.Loop):
        return any(map(_collective, k.body.kernels))
    return isinstance(k, kir.AllReduce)


def _group(k: kir.Kernel) -> str | None:
    """Kernels sharing functions (packed GEMMs of one dtype) are compiled together; so is a
    loop whose body has such GEMMs (its module would otherwise write the micro-kernel and
    packing code again: a third of an LSTM step's LLVM time went to two such copies)."""
    if isinstance(k, kir.Gemm):
        from graphc.backends.llvm.gemm import packed
        if packed(k) and not k.direct:  # (a direct convolution's code is all its own)
            return f"gemm {k.dtype}"
    if isinstance(k, kir.Loop):
        return next((g for g in map(_group, k.body.kernels) if g is not None), None)
    return None


# A direct convolution (conv_direct.py: its taps unrolled over tiles of channels and
# vectors) is about as much code as this many plain kernels.
_DIRECT_CONV_COST = 10

# What a module's packed GEMMs of one dtype share (micro-kernel, packing, blocking): about
# as much code as this many plain kernels.
_GROUP_COST = 30

# Below this much code (in plain kernels) the kernels are compiled in one process: a
# process costs a few ms of set-up.
SPLIT_MIN_COST = 24


@dataclass(frozen=True)
class Unit:
    """Distinct kernels compiled to one object (cached as one entry): one kernel, or the
    packed GEMMs of one dtype (they share their micro-kernel and packing code, compiled
    and cached apart: Unit.library). `members`:
    the index of the first kernel of each signature; `text`: the signatures, what the
    unit's code depends on; `name` its digest."""

    members: tuple[int, ...]
    text: str
    name: str
    cost: int
    # built in a module of its own (codegen.batches): packed GEMMs (one writing makes their
    # drivers' module and their shared functions': gemm_library.py), or code that links
    # against symbols only some processes define (MPI's: a batch holding it could not be
    # loaded elsewhere)
    alone: bool = False
    # compiled with the light pipeline (jit.LIGHT), in modules of such units only: code
    # written as explicit vector loops (`vectors`), or a small kernel (small_static)
    light: bool = False
    # packed GEMMs: their shared functions are split off (gemm_library.py), each compiled
    # and cached apart from the unit's own functions (the drivers)
    library: bool = False
    # written as explicit vector loops (vector_loop.py)
    vectors: bool = False


@dataclass(frozen=True)
class Plan:
    """The kernels of a schedule as shared functions: each kernel's function name, and the
    units that define them."""

    functions: tuple[str, ...]  # per kernel
    units: tuple[Unit, ...]
    buffers: tuple[tuple[int, ...], ...]  # per kernel: its kernel_buffers
    # per kernel: the symbols its code reads (signature order; none for static kernels)
    symbols: tuple[tuple[SizeVar, ...], ...] = ()

    @property
    def distinct(self) -> int:
        return sum(len(u.members) for u in self.units)


def plan_units(schedule: Schedule) -> Plan:
    """Each kernel's signature and function; the distinct ones grouped into units."""
    names: list[str] = []
    first: dict[str, tuple[int, str]] = {}  # function name -> (first kernel, signature)
    buffers = tuple(kernel_buffers(k) for k in schedule.kernels)
    symbols = []
    for i, k in enumerate(schedule.kernels):
        sig, used = signature_and_symbols(k, schedule, buffers[i])
        symbols.append(used)
        name = function_name(sig, k)
        names.append(name)
        first.setdefault(name, (i, sig))
    groups: dict[str, list[tuple[int, str]]] = {}
    for name, (i, sig) in first.items():
        groups.setdefault(_group(schedule.kernels[i]) or name, []).append((i, sig))
    units = []
    for members in groups.values():
        members.sort(key=lambda m: m[1])  # a group's code: the same for the same members
        text = "\n\n".join(sig for _, sig in members)
        cost = sum(_kernel_cost(schedule.kernels[i]) for i, _ in members)
        kernel = schedule.kernels[members[0][0]]
        shared = len(members) > 1 or _group(kernel) is not None
        if shared:
            cost += _GROUP_COST
        vectors = not shared and explicit_vectors(kernel, schedule)
        light = vectors or not shared and small_static(kernel)
        if light:  # no O3 middle end: about half the time of a unit like it (W6)
            cost = (cost + 1) // 2
        units.append(Unit(tuple(i for i, _ in members), text,
                          "u" + signature_digest(text), cost,
                          shared or _collective(kernel), light, _group(kernel) is not None,
                          vectors))
    return Plan(tuple(names), tuple(units), buffers, tuple(symbols))


def deal_out(costs: list[int], parts: int, least: int = SPLIT_MIN_COST) -> list[int]:
    """Which of up to `parts` processes (or modules) builds each item (largest first, to
    the least loaded): fewer where there is too little work for more to pay (`least`
    cost each)."""
    parts = max(1, min(parts, sum(costs) // least))
    load = [0] * parts
    assign = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        target = min(range(parts), key=lambda p: (load[p], p))
        assign[i] = target
        load[target] += costs[i]
    return assign


# Fewer units than this to build: each is a module of its own (a module costs ~5 ms of LLVM
# whatever it holds; batching a handful saves too little to give up one entry per unit).
BATCH_MIN_UNITS = 8
# Modules per compiling process: with fewer, the processes took whole modules of very
# different cost (a packed GEMM unit and its shared functions is one) and one ended well
# before the other; each module costs LLVM a few ms of its own.
MODULES_PER_PROCESS = 3
# Light units are cut into this many times as many modules: a light module costs LLVM ~1 ms
# of its own (an O3 one ~5), and they are queued last (the least cost each: processes.py),
# so the processes end within a smaller module of each other (W6: three light modules of
# ~0.09 s of CPU each left one process ending ~0.03 s after the other).
LIGHT_SPLIT = 2


def batches(units: list[Unit], todo: list[int], jobs: int) -> list[list[int]]:
    """The units to build (`todo`, numbers into `units`) as modules: each unit that must be
    (Unit.alone: packed GEMMs, MPI calls) alone, the others linked into a few modules of
    similar cost, about MODULES_PER_PROCESS per process (`jobs`), so that the processes
    still end together;
    units for the light pipeline (Unit.light) and the others in modules apart (a module has
    one pipeline). W6's 72 one-kernel units took 1.06-1.42 s of LLVM as 72 modules,
    0.76-0.96 s as one (CPU, one process, 2026-12-03 under load)."""
    alone = [[n] for n in todo if units[n].alone]
    small = [n for n in todo if not units[n].alone]
    if len(small) < BATCH_MIN_UNITS:
        return alone + [[n] for n in small]
    classes = [c for c in ([n for n in small if units[n].light],
                           [n for n in small if not units[n].light]) if c]
    # about MODULES_PER_PROCESS modules per process in all, shared out between the classes
    per_class = max(1, MODULES_PER_PROCESS * jobs // len(classes)) if jobs > 1 else 1
    out = alone
    for members in classes:
        split = LIGHT_SPLIT if units[members[0]].light and jobs > 1 else 1
        assign = deal_out([units[n].cost for n in members], per_class * split,
                          SPLIT_MIN_COST // split)
        bins: list[list[int]] = [[] for _ in range(max(assign) + 1)]
        for n, b in zip(members, assign):
            bins[b].append(n)
        out += [sorted(b) for b in bins if b]
    return out


def explicit_vectors(k: kir.Kernel, schedule: Schedule) -> bool:
    """Whether a kernel's function is written as explicit vector loops (vector_loop.py:
    elementwise kernels, float sums) and compiled with the light pipeline. Rows of 16 to
    63 (W6's relu gradient and im2col copy over 28x28 maps) are a vector and a masked one
    each, which does what LLVM's unrolling of such rows did; a sum over such rows stays
    with O3's (_unrolling_pays)."""
    if isinstance(k, kir.Reduce):
        return not _unrolling_pays(k) and vector_loop.vectorizable_sum(k, schedule)
    return isinstance(k, kir.Elementwise) and vector_loop.vectorizable(k, schedule)


# At most this many elements (a bias's or a BatchNorm scale's update, a 3x3 weight's
# rotation, a loss's mean), every loop's size static and no math library call: a scalar
# loop of at most a few microseconds whatever LLVM makes of it, compiled with the light
# pipeline and the fast code generator (W6: 6 such units in its symbolic program, 13 in the
# specialised one, ~4 ms of LLVM's CPU each at O3, ~1 ms light).
SMALL_KERNEL_ELEMENTS = 4096


def small_static(k: kir.Kernel) -> bool:
    """Whether a kernel not written as vectors still gets the light pipeline: an
    elementwise kernel or a reduction over at most SMALL_KERNEL_ELEMENTS, every size of its
    loops static (a call-time size it reads as a value, a mean's count, changes no loop),
    calling no math function (scalar.MATH_CALLS: O3 would call their vector variants)."""
    if not isinstance(k, (kir.Elementwise, kir.Reduce)):
        return False
    count = 1
    for d in k.shape:
        if not isinstance(d, int):
            return False
        count *= d
    if count > SMALL_KERNEL_ELEMENTS:
        return False
    memo: dict[int, kir.Expr] = {}
    done: set[int] = set()
    return not any(isinstance(e, kir.Apply) and e.op in MATH_CALLS
                   for body in k.bodies() for e in kir.postorder(lower_expr(body, memo), done))


def _only_calls(k: kir.Kernel) -> bool:
    """Kernels whose function only calls shared code (packed GEMMs)."""
    if isinstance(k, kir.Gemm):
        from graphc.backends.llvm.gemm import packed
        return packed(k) and 0 not in k.batch
    return False


def _unrolling_pays(k: kir.Kernel) -> bool:
    """Window-like loop nests (3+ axes, a short innermost one: pooling, im2col, col2im) run
    faster when LLVM unrolls them; elsewhere unrolling costs compile time (a third of an MLP
    step's) and buys nothing: long loops are vectorized all the same (measured on W1-W5)."""
    return isinstance(k, (kir.Elementwise, kir.Reduce)) and len(k.shape) >= 3 and \
        hint(k.shape[-1]) < 64


def _outer_unrolling_pays(k: kir.Elementwise) -> bool:
    """Whether LLVM may unroll a window nest's outer loops too. An innermost loop of a
    vector or more (im2col's rows of 14 or 28) is worth unrolling alone (its vector body
    and remainder become straight code): unrolling its 3x3 taps as well made W6's three
    im2col copies 3x slower to compile (0.38 against 0.13 s of CPU) and no faster to run
    (measured). A shorter one (col2im's taps of 3) runs 7x faster with them unrolled."""
    return not _unrolling_pays(k) or hint(k.shape[-1]) < _VECTOR_FLOATS


# float32 lanes of a 256-bit vector (the width LLVM prefers here): a loop that long has a
# vector body
_VECTOR_FLOATS = 8


class LazyBases(dict):
    """Buffer id -> its data pointer, made by `load` on first use (ModuleWriter.lazy_bases)."""

    def __init__(self, load: Callable[[int], ir.Value]) -> None:
        super().__init__()
        self._load = load

    def __missing__(self, bid: int) -> ir.Value:
        value = self[bid] = self._load(bid)
        return value

    def with_value(self, bid: int, value: ir.Value) -> "LazyBases":
        """A copy where buffer `bid` is `value` (the others still loaded on first use)."""
        out = LazyBases(self._load)
        out.update(self)
        out[bid] = value
        return out


class ModuleWriter:
    """Writes a schedule as LLVM modules: one per unit (plan_units: the functions of
    distinct kernels, compiled and cached apart, linked in one engine) and the entry
    point's, which fills each kernel's table of pointers and calls its function."""

    def __init__(self, schedule: Schedule, plan: Plan | None = None) -> None:
        self.schedule = schedule
        self.slots = SlotMap(schedule)
        self.plan = plan if plan is not None else plan_units(schedule)
        # symbolic sizes: the entry point's descriptor is data of each binding, in the slot
        # after the arena (see symbolic_runtime.py)
        self.dynamic = any(self.plan.symbols)
        self.module = ir.Module(name="graphc")  # the one being written
        self._lowered: dict[int, kir.Expr] = {}  # id(body) -> its core ops
        self._lowering_memo: dict[int, kir.Expr] = {}  # shared: bodies share nodes
        self._scopes: dict[int, tuple] = {}
        self._local: dict[int, int] = {}  # buffer id -> the kernel's pointer-table index
        self._fn_name = "kernel"
        # GEMMs (by kernel index) whose B a loop packed ahead: loop.prepack
        self.packed_b: dict[int, ir.GlobalVariable] = {}
        # function name -> kernel, for the kernels written as explicit vector loops
        self._light_kernels = {self.plan.functions[u.members[0]]: schedule.kernels[
            u.members[0]] for u in self.plan.units if u.vectors}

    @property
    def function_name(self) -> str:
        """The name of the kernel function being written."""
        return self._fn_name

    # -- buffers --------------------------------------------------------------------------
    def base_pointer(self, b: ir.IRBuilder, table: ir.Value, bid: int) -> ir.Value:
        """Buffer `bid`'s data, from the kernel's own table of pointers."""
        slot = b.gep(table, [ir.Constant(I64, self._local[bid])], source_etype=PTR)
        return b.load(slot, typ=PTR)

    def lazy_bases(self, b: ir.IRBuilder, table: ir.Value) -> "LazyBases":
        """The kernel's buffers' pointers, each loaded the first time it is asked for: a
        kernel's function that only starts a team reads none of them, and every
        instruction written costs Python and LLVM time. `b` stands in a function's new,
        empty entry block: that block keeps only the loads (appended as they are asked
        for, before its branch) and `b` goes on in a block of its own."""
        entry_block, local = b.block, dict(self._local)
        body = b.append_basic_block("body")
        b.branch(body)
        b.position_at_end(body)

        def load(bid: int) -> ir.Value:
            at = ir.IRBuilder(entry_block)
            at.position_before(entry_block.terminator)
            slot = at.gep(table, [ir.Constant(I64, local[bid])], source_etype=PTR)
            return at.load(slot, typ=PTR)
        return LazyBases(load)

    def address(self, b: ir.IRBuilder, bases: dict, access: kir.Access,
                indices: list[ir.Value]) -> tuple[ir.Value, ir.Type]:
        dtype = self.schedule.buffers[access.buffer].dtype
        et = storage_type(dtype)
        flat = linear_index(b, indices, access.strides, access.offset)
        return b.gep(bases[access.buffer], [flat], inbounds=True, source_etype=et), et

    def load(self, b: ir.IRBuilder, bases: dict, access: kir.Access, indices,
             inside: ir.Value | None = None) -> ir.Value:
        """The element at `indices`; with `inside` (an i1), the first element where it is
        false, so that a guarded load never reads outside its buffer."""
        dtype = self.schedule.buffers[access.buffer].dtype
        et = storage_type(dtype)
        flat = linear_index(b, indices, access.strides, access.offset)
        if inside is not None:
            flat = b.select(inside, flat, ir.Constant(I64, 0))
        ptr = b.gep(bases[access.buffer], [flat], inbounds=True, source_etype=et)
        v = b.load(ptr, typ=et)
        self._mark(v, access.buffer)
        return b.icmp_unsigned("!=", v, ir.Constant(I8, 0)) if et == I8 else v

    def store(self, b: ir.IRBuilder, bases: dict, access: kir.Access, indices,
              value: ir.Value) -> None:
        ptr, et = self.address(b, bases, access, indices)
        if et == I8 and value.type == I1:
            value = b.zext(value, I8)
        self._mark(b.store(value, ptr), access.buffer)

    # -- aliasing -------------------------------------------------------------------------
    def _alias_scopes(self, kernel: kir.Kernel) -> dict[int, tuple]:
        """For each buffer a kernel touches: (its scope, the scopes of the others), as LLVM
        metadata. Buffers whose memory overlaps (arena temporaries sharing bytes) share a
        scope; the rest are distinct arrays, so LLVM may vectorize without run-time checks."""
        bids = kernel_buffers(kernel)
        if len(bids) < 2:
            return {}
        classes = overlap_classes(kernel, self.schedule, bids)
        module = self.module
        domain = module.add_metadata([ir.MetaDataString(module, "graphc buffers")])
        scopes = {}
        for g in sorted(set(classes)):
            name = ir.MetaDataString(module, f"{self._fn_name} buffer {g}")
            scopes[g] = module.add_metadata([name, domain])
        if len(scopes) < 2:
            return {}
        marks = {}
        for bid, g in zip(bids, classes):
            others = [sc for h, sc in scopes.items() if h != g]
            marks[bid] = (module.add_metadata([scopes[g]]), module.add_metadata(others))
        return marks

    def _mark(self, inst, bid: int) -> None:
        mark = self._scopes.get(bid)
        if mark is not None:
            inst.set_metadata("alias.scope", mark[0])
            inst.set_metadata("noalias", mark[1])

    # -- expressions ----------------------------------------------------------------------
    def lowered(self, body: kir.Expr) -> kir.Expr:
        """A kernel body in core ops (lowered once)."""
        e = self._lowered.get(id(body))
        if e is None:
            e = self._lowered[id(body)] = lower_expr(body, self._lowering_memo)
        return e

    def expr(self, b: ir.IRBuilder, scalar: ScalarEmitter, bases: dict, body: kir.Expr,
             indices: list[ir.Value], memo: dict[int, ir.Value]) -> ir.Value:
        """A kernel body's value at `indices`, from its core ops."""
        e = self.lowered(body)
        for x in kir.postorder(e):
            if id(x) in memo:
                continue
            if isinstance(x, kir.Load) and x.guard is not None:
                inside = self._inside(b, x.guard, indices)
                value = b.select(inside, self.load(b, bases, x.access, indices, inside),
                                 memo[id(x.guard.otherwise)])
            elif isinstance(x, kir.Load):
                value = self.load(b, bases, x.access, indices)
            elif isinstance(x, kir.Const) and isinstance(x.value, Size):
                value = _size_as(b, as_value(b, x.value), x.dtype)
            elif isinstance(x, kir.Const):
                value = constant(x.dtype, x.value)
            elif isinstance(x, kir.Index):
                value = indices[x.axis]
                if llvm_type(x.dtype) != I64:
                    value = b.trunc(value, llvm_type(x.dtype))
            else:
                value = scalar.emit(x, [memo[id(a)] for a in x.args])
            memo[id(x)] = value
        return memo[id(e)]

    @staticmethod
    def _inside(b: ir.IRBuilder, guard: kir.Guard, indices: list[ir.Value]) -> ir.Value:
        """Whether the iteration indices lie inside every bound of a guard."""
        inside = None
        for bound in guard.bounds:
            at = linear_index(b, [indices[k] for k, _ in bound.terms],
                              [scale for _, scale in bound.terms], bound.offset)
            ok = b.and_(b.icmp_signed(">=", at, as_value(b, bound.lo)),
                        b.icmp_signed("<", at, as_value(b, bound.hi)))
            inside = ok if inside is None else b.and_(inside, ok)
        return inside if inside is not None else ir.Constant(I1, 1)

    # -- kernels --------------------------------------------------------------------------
    def kernel_function(self, index: int, kernel: kir.Kernel) -> ir.Function:
        """The function of kernel `index` (and of every kernel with its signature)."""
        name = self.plan.functions[index]
        fn = ir.Function(self.module, KERNEL_TYPE, name)
        # One function a kernel, never inlined: LLVM's time then grows with the number of
        # distinct kernels instead of exploding on one huge function.
        fn.attributes.add("noinline")
        if _only_calls(kernel):
            fn.attributes.add("optnone")  # nothing for LLVM's optimizer to do
        elif not _unrolling_pays(kernel):
            fn.attributes.add("optsize")  # (no LLVM loop unrolling)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        self._local = {bid: i for i, bid in enumerate(self.plan.buffers[index])}
        self._fn_name = name
        bases = self.lazy_bases(b, fn.args[0])
        emit: Callable = getattr(self, f"emit_{kernel.kind}")
        self._scopes = self._alias_scopes(kernel)
        symbols = self.plan.symbols[index]
        # a kernel with symbolic sizes finds their values after its buffers' pointers
        sizes = KernelSizes(symbols, len(self._local)) if symbols else None
        with writing(sizes):
            emit(b, fn, bases, kernel, index)
        self._scopes = {}
        if not b.block.is_terminated:
            b.ret(ir.Constant(I32, 0))
        return fn

    def emit_elementwise(self, b, fn, bases, k: kir.Elementwise, index: int) -> None:
        if 0 in k.shape:
            return
        threads = parallel.threads_for(k)
        if threads > 1:
            part = self._elementwise_part(k, index)
            parallel.emit_team_call(self.module, b, fn.args[0], part, threads, self._fn_name)
            return
        self._elementwise_body(b, bases, k, None)

    def _vectors(self, k: kir.Elementwise | kir.Reduce) -> bool:
        """Whether the kernel being written is one of a unit's written as vectors."""
        return self._light_kernels.get(self._fn_name) is k

    def _elementwise_part(self, k: kir.Elementwise, index: int) -> ir.Function:
        """part(bufs, t, nt): thread t of nt runs its share of the split axis."""
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [PTR, I64, I64]),
                         f"{self._fn_name}_part")
        fn.linkage = "internal"
        # Never inlined into the team function (which has no optsize): LLVM would unroll
        # the copy there in full, a long straight run whose code generation takes seconds.
        fn.attributes.add("noinline")
        if not _unrolling_pays(k):
            fn.attributes.add("optsize")  # as its kernel's function: no loop unrolling
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        bufs, t, nt = fn.args
        bases = self.lazy_bases(b, bufs)
        axis = parallel.split_axis(k)
        n = as_value(b, k.shape[axis])
        lo = b.sdiv(b.mul(t, n), nt)
        hi = b.sdiv(b.mul(b.add(t, ir.Constant(I64, 1)), n), nt)
        self._elementwise_body(b, bases, k, (lo, b.sub(hi, lo)), axis)
        b.ret_void()
        return fn

    def _elementwise_body(self, b, bases, k: kir.Elementwise, outer, axis: int = 0) -> None:
        if self._vectors(k):
            vector_loop.emit_rows(self, b, bases, k, outer, axis)
            return
        scalar = ScalarEmitter(b, self.module)
        with loop_nest(b, k.shape, outer=outer, outer_axis=axis,
                       unroll_outer=_outer_unrolling_pays(k)) as ix:
            self.scalar_stores(b, scalar, bases, k, ix)

    def scalar_stores(self, b, scalar, bases, k: kir.Elementwise, ix: list) -> None:
        """Every store of an elementwise kernel at one point `ix` of its loop nest."""
        memo: dict[int, ir.Value] = {}
        values = [self.expr(b, scalar, bases, s.value, ix, memo) for s in k.stores]
        for s, v in zip(k.stores, values):
            if s.accumulate:
                old = self.load(b, bases, s.access, ix)
                v = b.fadd(old, v) if isinstance(v.type, (ir.FloatType, ir.DoubleType)) \
                    else b.add(old, v)
            self.store(b, bases, s.access, ix, v)

    def _combine(self, b, scalar, op: str, acc: ir.Value, v: ir.Value, dtype) -> ir.Value:
        is_float = np.dtype(dtype).kind == "f"
        if op == "sum":
            if is_float:
                out = b.fadd(acc, v)
                out.flags.append("reassoc")  # lets LLVM keep several partial sums (vectors)
                return out
            return b.add(acc, v)
        if is_float:
            return scalar.call("maximum" if op == "max" else "minimum", [acc, v])
        name = "llvm.smax" if op == "max" else "llvm.smin"
        fnty = ir.FunctionType(acc.type, [acc.type, acc.type])
        return b.call(self.module.declare_intrinsic(name, [acc.type], fnty), [acc, v])

    @staticmethod
    def _identity(op: str, dtype) -> ir.Constant:
        return constant(dtype, reduction_identity(op, dtype))

    def emit_reduce(self, b, fn, bases, k: kir.Reduce, index: int) -> None:
        kept = [a for a in range(len(k.shape)) if a not in k.axes]
        keep_shape = [k.shape[a] for a in kept]
        if 0 in keep_shape:
            return
        last = len(k.shape) - 1
        if k.op != "argmax" and k.shape and last not in k.axes and 0 not in k.shape:
            # Accumulate into the output in natural order: the contiguous last axis stays
            # innermost (and vectorizes) even when reducing over outer axes.
            # (split among threads along axis 0 where it is kept: disjoint outputs each;
            # a max pool's first-max index over [rows, dh, dw, ow] is W5's example)
            threads = parallel.reduce_threads(k, keep_shape) if kept[0] == 0 else 1
            if threads > 1:
                part = self._reduce_part(k, keep_shape, natural=True)
                parallel.emit_team_call(self.module, b, fn.args[0], part, threads,
                                        self._fn_name)
                return
            self._natural_reduce(b, bases, k, keep_shape, None)
            return
        threads = parallel.reduce_threads(k, keep_shape)
        if threads > 1:
            part = self._reduce_part(k, keep_shape)
            parallel.emit_team_call(self.module, b, fn.args[0], part, threads, self._fn_name)
            return
        self._reduce_outputs(b, fn, bases, k, keep_shape, None)

    def _natural_reduce(self, b, bases, k: kir.Reduce, keep_shape: list, outer) -> None:
        """Each output set to the identity, then combined with the body in the kernel's own
        loop order (with `outer`: one part of axis 0, which is kept)."""
        scalar = ScalarEmitter(b, self.module)
        kept = [a for a in range(len(k.shape)) if a not in k.axes]
        out_strides = tuple(k.out.strides[a] for a in kept)
        with loop_nest(b, keep_shape, "o", outer=outer) as ox:
            self.store(b, bases, kir.Access(k.out.buffer, out_strides, k.out.offset), ox,
                       self._identity(k.op, k.out_dtype))
        with loop_nest(b, k.shape, outer=outer) as ix:
            v = self.expr(b, scalar, bases, k.body, ix, {})
            acc = self.load(b, bases, k.out, ix)
            self.store(b, bases, k.out, ix,
                       self._combine(b, scalar, k.op, acc, v, k.out_dtype))

    def _reduce_part(self, k: kir.Reduce, keep_shape: list, natural: bool = False
                     ) -> ir.Function:
        """part(bufs, t, nt): thread t of nt reduces its share of the first kept axis (each
        output is one thread's, combined in the same order as alone): each output in turn
        (_reduce_outputs), or with `natural` in the kernel's own loop order, axis 0 being
        the first kept one (_natural_reduce)."""
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [PTR, I64, I64]),
                         f"{self._fn_name}_part")
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        if not natural and not _unrolling_pays(k):
            fn.attributes.add("optsize")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        bufs, t, nt = fn.args
        bases = self.lazy_bases(b, bufs)
        n = as_value(b, keep_shape[0])
        lo = b.sdiv(b.mul(t, n), nt)
        hi = b.sdiv(b.mul(b.add(t, ir.Constant(I64, 1)), n), nt)
        if natural:
            self._natural_reduce(b, bases, k, keep_shape, (lo, b.sub(hi, lo)))
        else:
            self._reduce_outputs(b, fn, bases, k, keep_shape, (lo, b.sub(hi, lo)))
        b.ret_void()
        return fn

    def _reduce_outputs(self, b, fn, bases, k: kir.Reduce, keep_shape: list, outer) -> None:
        """Each output (or, with `outer`, those of one part of the first kept axis) reduced
        in turn over the reduced axes."""
        scalar = ScalarEmitter(b, self.module)
        kept = [a for a in range(len(k.shape)) if a not in k.axes]
        red_shape = [k.shape[a] for a in k.axes]
        entry = fn.entry_basic_block
        with b.goto_block(entry):
            b.position_at_start(entry)
            acc_ptr = b.alloca(llvm_type(k.out_dtype if k.op != "argmax" else k.body.dtype))
            idx_ptr = b.alloca(I64)
        with loop_nest(b, keep_shape, "o", outer=outer) as ox:
            full = [None] * len(k.shape)
            for a, v in zip(kept, ox):
                full[a] = v
            if k.op == "argmax":
                b.store(self._identity("max", k.body.dtype), acc_ptr)
                b.store(ir.Constant(I64, 0), idx_ptr)
            else:
                b.store(self._identity(k.op, k.out_dtype), acc_ptr)
            blocked = k.op == "sum" and np.dtype(k.out_dtype).kind == "f" and red_shape
            if 0 not in red_shape and blocked and self._vectors(k):
                vector_loop.blocked_sum(self, b, bases, k, full, red_shape, acc_ptr,
                                        SUM_BLOCK)
            elif 0 not in red_shape and blocked:
                self._blocked_sum(b, scalar, bases, k, full, red_shape, acc_ptr)
            elif 0 not in red_shape:
                with loop_nest(b, red_shape, "r") as rx:
                    for a, v in zip(k.axes, rx):
                        full[a] = v
                    v = self.expr(b, scalar, bases, k.body, full, {})
                    acc = b.load(acc_ptr, typ=acc_ptr.allocated_type)
                    if k.op == "argmax":
                        self._argmax_step(b, acc_ptr, idx_ptr, acc, v, rx, red_shape)
                    else:
                        b.store(self._combine(b, scalar, k.op, acc, v, k.out_dtype), acc_ptr)
            result = (b.load(idx_ptr, typ=I64) if k.op == "argmax"
                      else b.load(acc_ptr, typ=acc_ptr.allocated_type))
            zero_full = [ix if ix is not None else ir.Constant(I64, 0) for ix in full]
            self.store(b, bases, k.out, zero_full, result)

    def _blocked_sum(self, b, scalar, bases, k: kir.Reduce, full: list, red_shape: list,
                     acc_ptr) -> None:
        """A float sum in blocks: each run of at most SUM_BLOCK elements along the innermost
        reduced axis is summed into a fresh partial sum (vectorized: several lanes), which
        is then added to the total. Rounding error grows with the block and the number of
        blocks, not with the whole count: float32 sums of 10**7 stay within ~1e-6."""
        inner = red_shape[-1]
        entry = b.function.entry_basic_block
        with b.goto_block(entry):
            b.position_at_start(entry)
            part_ptr = b.alloca(acc_ptr.allocated_type)
        zero = self._identity("sum", k.out_dtype)
        blocks = -(-inner // SUM_BLOCK) if isinstance(inner, int) else b.sdiv(
            b.add(as_value(b, inner), ir.Constant(I64, SUM_BLOCK - 1)),
            ir.Constant(I64, SUM_BLOCK))
        with loop_nest(b, red_shape[:-1], "r") as rx:
            for a, v in zip(k.axes[:-1], rx):
                full[a] = v
            with counted_loop(b, blocks, "blk") as blk:
                start = b.mul(blk, ir.Constant(I64, SUM_BLOCK))
                left = b.sub(as_value(b, inner), start)
                count = b.select(b.icmp_signed("<", left, ir.Constant(I64, SUM_BLOCK)), left,
                                 ir.Constant(I64, SUM_BLOCK))
                b.store(zero, part_ptr)
                with counted_loop(b, count, "r_in") as j:
                    full[k.axes[-1]] = b.add(start, j)
                    v = self.expr(b, scalar, bases, k.body, full, {})
                    part = b.load(part_ptr, typ=part_ptr.allocated_type)
                    b.store(self._combine(b, scalar, "sum", part, v, k.out_dtype), part_ptr)
                total = b.fadd(b.load(acc_ptr, typ=acc_ptr.allocated_type),
                               b.load(part_ptr, typ=part_ptr.allocated_type))
                b.store(total, acc_ptr)

    def _argmax_step(self, b, acc_ptr, idx_ptr, best, v, rx, red_shape) -> None:
        """numpy's argmax: the first maximum, and the first nan if there is one."""
        if isinstance(v.type, (ir.FloatType, ir.DoubleType)):
            better = b.or_(b.fcmp_ordered(">", v, best),
                           b.and_(b.fcmp_unordered("uno", v, v),
                                  b.fcmp_ordered("ord", best, best)))
        elif v.type == I1:  # True > False (as signed i1, True would be -1)
            better = b.icmp_unsigned(">", v, best)
        else:
            better = b.icmp_signed(">", v, best)
        position = linear_index(b, rx, _contiguous(red_shape), 0)
        b.store(b.select(better, v, best), acc_ptr)
        b.store(b.select(better, position, b.load(idx_ptr, typ=I64)), idx_ptr)

    def emit_gemm(self, b, fn, bases, k: kir.Gemm, index: int) -> None:
        if 0 in k.batch or 0 in (k.m, k.n):
            return
        from graphc.backends.llvm.gemm import emit_gemm
        emit_gemm(self, b, fn, bases, k, self.packed_b.get(index))

    def _check_bounds(self, b, fn, bases, access: kir.Access, shape, size: int,
                      allow_negative: bool) -> None:
        """Returns 1 (the caller reports error_message(kernel)) at the first index out of
        range."""
        if 0 in shape:
            return
        fail = fn.append_basic_block("out_of_range")
        with loop_nest(b, shape, "c") as cx:
            v = b.sext(self.load(b, bases, access, cx), I64) if access else None
            high = as_value(b, size)
            low = b.neg(high) if allow_negative else ir.Constant(I64, 0)
            bad = b.or_(b.icmp_signed("<", v, low), b.icmp_signed(">=", v, high))
            ok = fn.append_basic_block("in_range")
            b.cbranch(bad, fail, ok)
            b.position_at_end(ok)
        cont = b.block
        b.position_at_end(fail)
        b.ret(ir.Constant(I32, 1))
        b.position_at_end(cont)

    def _wrapped(self, b, bases, access, ix, size) -> ir.Value:
        v = b.sext(self.load(b, bases, access, ix), I64)
        neg = b.icmp_signed("<", v, ir.Constant(I64, 0))
        return b.select(neg, b.add(v, as_value(b, size)), v)

    def emit_gather(self, b, fn, bases, k: kir.Gather, index: int) -> None:
        size = k.x_shape[k.axis]
        self._check_bounds(b, fn, bases, k.indices, k.idx_shape, size, True)
        out_shape = k.x_shape[:k.axis] + k.idx_shape + k.x_shape[k.axis + 1:]
        if 0 in out_shape:
            return
        q = len(k.idx_shape)
        with loop_nest(b, out_shape) as ix:
            pre, mid, post = ix[:k.axis], ix[k.axis:k.axis + q], ix[k.axis + q:]
            j = self._wrapped(b, bases, k.indices, mid, size)
            v = self.load(b, bases, k.x, pre + [j] + post)
            self.store(b, bases, k.out, ix, v)

    def emit_scatter_add(self, b, fn, bases, k: kir.ScatterAdd, index: int) -> None:
        size = k.out_shape[k.axis]
        self._check_bounds(b, fn, bases, k.indices, k.idx_shape, size, True)
        if 0 in k.out_shape:
            return
        zero = constant(k.dtype, 0)
        with loop_nest(b, k.out_shape, "z") as zx:
            self.store(b, bases, k.out, zx, zero)
        upd_shape = k.out_shape[:k.axis] + k.idx_shape + k.out_shape[k.axis + 1:]
        if 0 in upd_shape:
            return
        q = len(k.idx_shape)
        is_float = np.dtype(k.dtype).kind == "f"
        with loop_nest(b, upd_shape) as ix:
            pre, mid, post = ix[:k.axis], ix[k.axis:k.axis + q], ix[k.axis + q:]
            j = self._wrapped(b, bases, k.indices, mid, size)
            target = pre + [j] + post
            acc = self.load(b, bases, k.out, target)
            v = self.load(b, bases, k.updates, ix)
            self.store(b, bases, k.out, target, b.fadd(acc, v) if is_float else b.add(acc, v))

    emit_loop = loop.emit_loop
    emit_scan = scan_sort.emit_scan
    emit_all_reduce = collective.emit_all_reduce
    emit_sort = scan_sort.emit_sort

    def emit_value_check(self, b, fn, bases, k: kir.ValueCheck, index: int) -> None:
        self._check_bounds(b, fn, bases, k.values, k.shape, 2 ** 63 - 1, False)

    def emit_index_check(self, b, fn, bases, k: kir.IndexCheck, index: int) -> None:
        self._check_bounds(b, fn, bases, k.indices, k.shape, k.size, False)

    # -- the modules ----------------------------------------------------------------------
    def unit_text(self, unit: Unit) -> str:
        """A unit's module: the functions of its kernels (external: the entry point calls
        them), named by signature, so the text is the same in every program."""
        self.module = ir.Module(name=unit.name)
        for i in unit.members:
            self.kernel_function(i, self.schedule.kernels[i])
        text = vector_abi.annotate(str(self.module))
        return jit.LIGHT + text if unit.light else text

    def unit_parts(self, unit: Unit) -> tuple[str, list[gemm_library.Piece]]:
        """A unit's module as compiled: for packed GEMMs (Unit.library) the drivers' text,
        each shared function declared, and the shared functions as pieces compiled apart
        (gemm_library.py); for any other unit its unit_text and no pieces."""
        if not unit.library:
            return self.unit_text(unit), []
        self.module = ir.Module(name=unit.name)
        for i in unit.members:
            self.kernel_function(i, self.schedule.kernels[i])
        return gemm_library.split(self.module, vector_abi.annotate)

    def entry_text(self) -> str:
        """The entry point's module (entry.py): each kernel's pointer table filled from
        the program's slots and the arena, its function called, its status checked.
        Light pipeline (jit.py): one short loop over constant tables, O3 buys it nothing."""
        return jit.LIGHT + entry.entry_text(self.schedule, self.slots, self.plan.functions,
                                self.plan.buffers, ENTRY,
                                self.slots.count if self.dynamic else None)


def _size_as(b: ir.IRBuilder, v: ir.Value, dtype) -> ir.Value:
    """A size's i64 value as a scalar of `dtype` (a mean's count)."""
    t = llvm_type(dtype)
    if isinstance(t, (ir.FloatType, ir.DoubleType)):
        return b.sitofp(v, t)
    if t == I64:
        return v
    return b.icmp_signed("!=", v, ir.Constant(I64, 0)) if t == I1 else b.trunc(v, t)


def _contiguous(shape) -> list[int]:
    return list(kir.contiguous_strides(tuple(shape)))


def kernel_errors(schedule: Schedule) -> dict[int, str]:
    """The error message of each kernel that can fail, by kernel index."""
    out = {}
    for i, k in enumerate(schedule.kernels):
        message = error_message(k)
        if message is not None:
            out[i] = message
    return out


def render(schedule: Schedule) -> tuple[list[str], SlotMap, dict[int, str]]:
    """The modules' IR texts (the entry point's first, then each unit's), where each
    buffer goes, and the kernels' error messages."""
    writer = ModuleWriter(schedule)
    texts = [writer.entry_text()] + [writer.unit_text(u) for u in writer.plan.units]
    return texts, writer.slots, kernel_errors(schedule)
