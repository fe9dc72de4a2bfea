"""Renders a kernel schedule as one LLVM module: a function per kernel and an entry point
`i32 graphc_main(ptr buffers)` that runs them in order. Status: 0, or 1 + the index of the
kernel that failed (graphc.runtime.errors)."""
from __future__ import annotations

from typing import Callable

import numpy as np
from llvmlite import ir

from graphc.schedule import ir as kir
from graphc.schedule.lower import Schedule
from graphc.schedule.core_ops import reduction_identity
from graphc.schedule.scalar import lower_expr
from graphc.backends.llvm import collective, jit, parallel, scan_sort, vector_abi
from graphc.backends.llvm.loops import I64, counted_loop, linear_index, loop_nest
from graphc.backends.llvm.scalar import (I1, I8, I32, ScalarEmitter, constant, llvm_type,
                                         storage_type)
from graphc.runtime.errors import status_of
from graphc.errors import index_error_message
from graphc.runtime.slots import SlotMap

PTR = ir.PointerType()
ENTRY = jit.ENTRY
# Elements per partial sum in float reductions (see ModuleWriter._blocked_sum).
SUM_BLOCK = 2048


# Every kernel is a function i32 k<index>_<kind>(ptr buffers): 0, or its error number.
KERNEL_TYPE = ir.FunctionType(I32, [PTR])


def kernel_name(index: int, kernel: kir.Kernel) -> str:
    return f"k{index}_{kernel.kind}"


def may_fail(kernel: kir.Kernel) -> bool:
    """Whether a kernel can return an error (a fact of its kind): the others return 0."""
    return kernel.can_fail


def _kernel_cost(k: kir.Kernel) -> int:
    """A rough size of the code a kernel becomes (LLVM's time grows with it), in units of
    a plain loop kernel; what packed GEMMs share is counted once (_GROUP_COST)."""
    if isinstance(k, kir.Elementwise) and parallel.threads_for(k) > 1:
        return 3
    return 2 if isinstance(k, kir.Reduce) else 1


def _group(k: kir.Kernel) -> str | None:
    """Kernels sharing functions (packed GEMMs of one dtype) go to the same part."""
    if isinstance(k, kir.Gemm):
        from graphc.backends.llvm.gemm import packed
        if packed(k):
            return f"gemm {k.dtype}"
    return None


# What a module's packed GEMMs of one dtype share (micro-kernel, packing, blocking): about
# as much code as this many plain kernels.
_GROUP_COST = 30

# Below this much code (in plain kernels) a module is compiled in one piece: splitting
# costs a few ms of set-up per part.
SPLIT_MIN_COST = 24


def plan_parts(schedule: Schedule, parts: int) -> list[int]:
    """Which module (part) each kernel goes to: up to `parts` modules where the schedule is
    large enough; kernels (a group sharing functions counting as one) dealt out largest
    first to the lightest part."""
    items: dict[str | int, list[int]] = {}
    costs: dict[str | int, int] = {}
    for i, k in enumerate(schedule.kernels):
        key = _group(k) or i
        items.setdefault(key, []).append(i)
        costs[key] = costs.get(key, 0 if key == i else _GROUP_COST) + _kernel_cost(k)
    parts = max(1, min(parts, sum(costs.values()) // SPLIT_MIN_COST))
    load = [0] * parts
    assign = [0] * len(schedule.kernels)
    for key in sorted(items, key=lambda key: (-costs[key], items[key][0])):
        target = min(range(parts), key=lambda p: (load[p], p))
        for i in items[key]:
            assign[i] = target
        load[target] += costs[key]
    return assign


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
        k.shape[-1] < 64


class ModuleWriter:
    """Writes a schedule as LLVM modules: one, or (parts > 1, large schedules) several that
    compile separately and link in one engine. Part 0 holds the entry point; kernels in
    other parts are external functions it declares."""

    def __init__(self, schedule: Schedule, parts: int = 1) -> None:
        self.schedule = schedule
        self.slots = SlotMap(schedule)
        self.assign = plan_parts(schedule, parts)
        count = max(self.assign, default=0) + 1
        # names stable: the cache hashes what it renders
        self.modules = [ir.Module(name="graphc" if count == 1 else f"graphc{p}")
                        for p in range(count)]
        self.module = self.modules[0]  # the one being written
        self.errors: dict[int, str] = {}
        self._lowered: dict[int, kir.Expr] = {}  # id(body) -> its core ops
        self._lowering_memo: dict[int, kir.Expr] = {}  # shared: bodies share nodes
        self._scopes: dict[int, tuple] = {}
        self._kernel_index = -1

    # -- buffers --------------------------------------------------------------------------
    def base_pointer(self, b: ir.IRBuilder, bufs: ir.Value, bid: int) -> ir.Value:
        buf = self.schedule.buffers[bid]
        if buf.role == "temp":
            slot = b.gep(bufs, [ir.Constant(I64, self.slots.arena_slot)], source_etype=PTR)
            arena = b.load(slot, typ=PTR)
            return b.gep(arena, [ir.Constant(I64, self.slots.offsets.get(bid, 0))],
                         source_etype=I8)
        slot = b.gep(bufs, [ir.Constant(I64, self.slots.slot[bid])], source_etype=PTR)
        return b.load(slot, typ=PTR)

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
        bids = sorted(kernel.reads() | kernel.writes())
        if len(bids) < 2:
            return {}
        offsets = self.slots.offsets
        group = {bid: bid for bid in bids}
        temps = [bid for bid in bids if self.schedule.buffers[bid].role == "temp"]
        for i, x in enumerate(temps):
            for y in temps[i + 1:]:
                bx, by = self.schedule.buffers[x], self.schedule.buffers[y]
                x0, y0 = offsets.get(x, 0), offsets.get(y, 0)
                x1 = x0 + bx.size * max(1, np.dtype(bx.dtype).itemsize)
                y1 = y0 + by.size * max(1, np.dtype(by.dtype).itemsize)
                if x0 < y1 and y0 < x1:
                    group[y] = group[x] = min(group[x], group[y])
        module = self.module
        domain = module.add_metadata([ir.MetaDataString(module, "graphc buffers")])
        scopes = {}
        for g in sorted(set(group.values())):
            name = ir.MetaDataString(module, f"{module.name} kernel {self._kernel_index} "
                                             f"buffer {g}")
            scopes[g] = module.add_metadata([name, domain])
        if len(scopes) < 2:
            return {}
        marks = {}
        for bid in bids:
            mine = scopes[group[bid]]
            others = [sc for g, sc in scopes.items() if g != group[bid]]
            marks[bid] = (module.add_metadata([mine]), module.add_metadata(others))
        return marks

    def _mark(self, inst, bid: int) -> None:
        mark = self._scopes.get(bid)
        if mark is not None:
            inst.set_metadata("alias.scope", mark[0])
            inst.set_metadata("noalias", mark[1])

    # -- expressions ----------------------------------------------------------------------
    def expr(self, b: ir.IRBuilder, scalar: ScalarEmitter, bases: dict, body: kir.Expr,
             indices: list[ir.Value], memo: dict[int, ir.Value]) -> ir.Value:
        """A kernel body's value at `indices`, from its core ops."""
        e = self._lowered.get(id(body))
        if e is None:
            e = self._lowered[id(body)] = lower_expr(body, self._lowering_memo)
        for x in kir.postorder(e):
            if id(x) in memo:
                continue
            if isinstance(x, kir.Load) and x.guard is not None:
                inside = self._inside(b, x.guard, indices)
                value = b.select(inside, self.load(b, bases, x.access, indices, inside),
                                 memo[id(x.guard.otherwise)])
            elif isinstance(x, kir.Load):
                value = self.load(b, bases, x.access, indices)
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
            ok = b.and_(b.icmp_signed(">=", at, ir.Constant(I64, bound.lo)),
                        b.icmp_signed("<", at, ir.Constant(I64, bound.hi)))
            inside = ok if inside is None else b.and_(inside, ok)
        return inside if inside is not None else ir.Constant(I1, 1)

    # -- kernels --------------------------------------------------------------------------
    def kernel_function(self, index: int, kernel: kir.Kernel) -> ir.Function:
        fn = ir.Function(self.module, KERNEL_TYPE, kernel_name(index, kernel))
        fn.linkage = "internal"
        # One function a kernel, never inlined into the entry point: LLVM's time then grows
        # with the number of kernels instead of exploding on one huge function.
        fn.attributes.add("noinline")
        if _only_calls(kernel):
            fn.attributes.add("optnone")  # nothing for LLVM's optimizer to do
        elif not _unrolling_pays(kernel):
            fn.attributes.add("optsize")  # (no LLVM loop unrolling)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        bufs = fn.args[0]
        bases = {bid: self.base_pointer(b, bufs, bid)
                 for bid in sorted(kernel.reads() | kernel.writes())}
        emit: Callable = getattr(self, f"emit_{kernel.kind}")
        self._kernel_index = index
        self._scopes = self._alias_scopes(kernel)
        emit(b, fn, bases, kernel, index)
        # the entry point checks the status of may_fail kernels only
        assert index not in self.errors or may_fail(kernel), f"{kernel.kind} can fail"
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
            parallel.emit_team_call(self.module, b, fn.args[0], part, threads, f"k{index}")
            return
        self._elementwise_body(b, bases, k, None)

    def _elementwise_part(self, k: kir.Elementwise, index: int) -> ir.Function:
        """part(bufs, t, nt): thread t of nt runs its share of the outermost axis."""
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [PTR, I64, I64]),
                         f"k{index}_part")
        fn.linkage = "internal"
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        bufs, t, nt = fn.args
        bases = {bid: self.base_pointer(b, bufs, bid) for bid in sorted(k.reads() | k.writes())}
        n = ir.Constant(I64, k.shape[0])
        lo = b.sdiv(b.mul(t, n), nt)
        hi = b.sdiv(b.mul(b.add(t, ir.Constant(I64, 1)), n), nt)
        self._elementwise_body(b, bases, k, (lo, b.sub(hi, lo)))
        b.ret_void()
        return fn

    def _elementwise_body(self, b, bases, k: kir.Elementwise, outer) -> None:
        scalar = ScalarEmitter(b, self.module)
        with loop_nest(b, k.shape, outer=outer) as ix:
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
        scalar = ScalarEmitter(b, self.module)
        kept = [a for a in range(len(k.shape)) if a not in k.axes]
        keep_shape = [k.shape[a] for a in kept]
        if 0 in keep_shape:
            return
        last = len(k.shape) - 1
        if k.op != "argmax" and k.shape and last not in k.axes and 0 not in k.shape:
            # Accumulate into the output in natural order: the contiguous last axis stays
            # innermost (and vectorizes) even when reducing over outer axes.
            ident = self._identity(k.op, k.out_dtype)
            out_strides = tuple(k.out.strides[a] for a in kept)
            with loop_nest(b, keep_shape, "o") as ox:
                self.store(b, bases, kir.Access(k.out.buffer, out_strides, k.out.offset), ox,
                           ident)
            with loop_nest(b, k.shape) as ix:
                v = self.expr(b, scalar, bases, k.body, ix, {})
                acc = self.load(b, bases, k.out, ix)
                self.store(b, bases, k.out, ix,
                           self._combine(b, scalar, k.op, acc, v, k.out_dtype))
            return
        red_shape = [k.shape[a] for a in k.axes]
        entry = fn.entry_basic_block
        with b.goto_block(entry):
            b.position_at_start(entry)
            acc_ptr = b.alloca(llvm_type(k.out_dtype if k.op != "argmax" else k.body.dtype))
            idx_ptr = b.alloca(I64)
        with loop_nest(b, keep_shape, "o") as ox:
            full = [None] * len(k.shape)
            for a, v in zip(kept, ox):
                full[a] = v
            if k.op == "argmax":
                b.store(self._identity("max", k.body.dtype), acc_ptr)
                b.store(ir.Constant(I64, 0), idx_ptr)
            else:
                b.store(self._identity(k.op, k.out_dtype), acc_ptr)
            blocked = k.op == "sum" and np.dtype(k.out_dtype).kind == "f" and red_shape
            if 0 not in red_shape and blocked:
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
        blocks = -(-inner // SUM_BLOCK)
        with loop_nest(b, red_shape[:-1], "r") as rx:
            for a, v in zip(k.axes[:-1], rx):
                full[a] = v
            with counted_loop(b, blocks, "blk") as blk:
                start = b.mul(blk, ir.Constant(I64, SUM_BLOCK))
                left = b.sub(ir.Constant(I64, inner), start)
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
        emit_gemm(self, b, fn, bases, k)

    def _check_bounds(self, b, fn, bases, access: kir.Access, shape, size: int,
                      index: int, what: str, allow_negative: bool) -> None:
        self.errors[index] = what
        if 0 in shape:
            return
        fail = fn.append_basic_block("out_of_range")
        with loop_nest(b, shape, "c") as cx:
            v = b.sext(self.load(b, bases, access, cx), I64) if access else None
            low = -size if allow_negative else 0
            bad = b.or_(b.icmp_signed("<", v, ir.Constant(I64, low)),
                        b.icmp_signed(">=", v, ir.Constant(I64, size)))
            ok = fn.append_basic_block("in_range")
            b.cbranch(bad, fail, ok)
            b.position_at_end(ok)
        cont = b.block
        b.position_at_end(fail)
        b.ret(ir.Constant(I32, status_of(index)))
        b.position_at_end(cont)

    def _wrapped(self, b, bases, access, ix, size) -> ir.Value:
        v = b.sext(self.load(b, bases, access, ix), I64)
        neg = b.icmp_signed("<", v, ir.Constant(I64, 0))
        return b.select(neg, b.add(v, ir.Constant(I64, size)), v)

    def emit_gather(self, b, fn, bases, k: kir.Gather, index: int) -> None:
        size = k.x_shape[k.axis]
        self._check_bounds(b, fn, bases, k.indices, k.idx_shape, size, index,
                           index_error_message(k.what, size, True), True)
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
        self._check_bounds(b, fn, bases, k.indices, k.idx_shape, size, index,
                           index_error_message(k.what, size, True), True)
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

    emit_scan = scan_sort.emit_scan
    emit_all_reduce = collective.emit_all_reduce
    emit_sort = scan_sort.emit_sort

    def emit_value_check(self, b, fn, bases, k: kir.ValueCheck, index: int) -> None:
        self._check_bounds(b, fn, bases, k.values, k.shape, 2 ** 63 - 1, index, k.message,
                           False)

    def emit_index_check(self, b, fn, bases, k: kir.IndexCheck, index: int) -> None:
        self._check_bounds(b, fn, bases, k.indices, k.shape, k.size, index,
                           index_error_message(k.what, k.size, False), False)

    # -- the module -----------------------------------------------------------------------
    def build(self, only: int | None = None) -> list[str]:
        """The modules' IR texts, part 0 (with the entry point) first; with `only`, that
        part's text alone (its kernels rendered, no other part's: a process of its own can
        write and compile each part)."""
        kernels = []
        for i, k in enumerate(self.schedule.kernels):
            part = self.assign[i]
            if only is not None and part != only:
                if only == 0:  # the entry point calls it: declared by its name alone
                    kernels.append(ir.Function(self.modules[0], KERNEL_TYPE,
                                               kernel_name(i, k)))
                continue
            self.module = self.modules[part]
            fn = self.kernel_function(i, k)
            if part != 0:  # called across modules: external, declared in part 0
                fn.linkage = ""
                if only is None:
                    fn = ir.Function(self.modules[0], fn.function_type, fn.name)
            kernels.append(fn)
        if only is not None and only != 0:
            return [str(self.modules[only])]
        self.module = self.modules[0]
        main = ir.Function(self.module, ir.FunctionType(I32, [PTR]), ENTRY)
        main.attributes.add("noinline")
        main.attributes.add("optnone")  # calls, in order: nothing to optimize
        b = ir.IRBuilder(main.append_basic_block("entry"))
        for fn, kernel in zip(kernels, self.schedule.kernels):
            status = b.call(fn, [main.args[0]])
            if not may_fail(kernel):  # returns 0: no check (less code for LLVM)
                continue
            failed = main.append_basic_block("failed")
            ok = main.append_basic_block("ok")
            b.cbranch(b.icmp_signed("!=", status, ir.Constant(I32, 0)), failed, ok)
            b.position_at_end(failed)
            b.ret(status)
            b.position_at_end(ok)
        b.ret(ir.Constant(I32, 0))
        return [str(m) for m in (self.modules if only is None else self.modules[:1])]


def _contiguous(shape) -> list[int]:
    return list(kir.contiguous_strides(tuple(shape)))


def render(schedule: Schedule, parts: int = 1) -> tuple[list[str], SlotMap, dict[int, str]]:
    """The modules' IR texts (up to `parts` of them for large schedules), where each
    buffer goes, and the kernels' error messages."""
    writer = ModuleWriter(schedule, parts)
    texts = [vector_abi.annotate(t) for t in writer.build()]
    return texts, writer.slots, writer.errors


def part_count(schedule: Schedule, parts: int) -> int:
    """How many modules render(schedule, parts) writes."""
    return max(plan_parts(schedule, parts), default=0) + 1


def render_part(schedule: Schedule, parts: int, part: int) -> tuple[str, dict[int, str]]:
    """Part `part` alone of what render(schedule, parts) writes, and its kernels' error
    messages: the same text, written without the other parts' kernels."""
    writer = ModuleWriter(schedule, parts)
    return vector_abi.annotate(writer.build(only=part)[0]), writer.errors
