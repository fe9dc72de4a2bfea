"""Elementwise kernels and float sums written as explicit vector loops: along the innermost
axis, one loop of `<16 x float>` loads, ops and stores (or sums), then one masked vector for
the rest of the row (llvm.masked.load/store: nothing past the row is touched). LLVM's loop
vectorizer made such loops from scalar code, but only inside the whole O3 pipeline; code
that is vectorized already needs only a light one (jit.optimize_module, light=True), which
cut W6's LLVM time for these kernels (see docs/llvm-backend.md, "Compile time").

Only kernels whose every value is float32 (or a bool between compare and select), read
contiguously or broadcast along the innermost axis and stored contiguously there (a sum:
reducing along it), with a static innermost size of a vector or more, are written so; the
others keep the scalar loop nest and O3. A guarded load (pad, concatenate, a slice's
gradient) reads only the lanes inside its guard (a masked load) and takes its fallback
value in the others."""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from graphc.schedule import ir as kir
from graphc.schedule.lower import Schedule
from graphc.schedule.scalar import lower_expr
from graphc.schedule.signature import kernel_buffers, overlap_classes
from graphc.sizes import Size
from graphc.backends.llvm import parallel
from graphc.backends.llvm.loops import I64, counted_loop, linear_index, loop_nest
from graphc.backends.llvm.scalar import F32, I1, I32, ScalarEmitter, constant
from graphc.backends.llvm.size_values import as_value
from graphc.backends.llvm.vector_consts import splat

PTR = ir.PointerType()
LANES = 16  # float32 lanes of a 512-bit vector (AVX-512; LLVM splits it where narrower)
PAIR_ROW = 8  # pair rows (_pair_rows) at least this long: a vector of output at least
SHORT_ROW = 8  # rows shorter than a vector written as one (_short_strided_rows)
VECTOR = ir.VectorType(F32, LANES)
MASK = ir.VectorType(I1, LANES)

_FLOAT32 = np.dtype(np.float32)
_BOOL = np.dtype(np.bool_)
# core ops whose LLVM spelling (scalar.TABLE) is instructions that take vectors as they are
_FLOAT_OPS = frozenset(("add", "sub", "mul", "fdiv", "neg", "max", "min"))
_COMPARES = frozenset(("lt", "le", "gt", "ge", "eq", "ne", "isnan"))
_LOGIC = frozenset(("and", "or", "xor"))


def _inner_stride(access: kir.Access) -> int | None:
    """The stride along the innermost axis where it is a static 0, 1 or 2, else None (2:
    every other element, read as two vectors whose even lanes are taken)."""
    s = access.strides[-1]
    return s if not isinstance(s, Size) and s in (0, 1, 2) else None


def _apply_ok(e: kir.Apply) -> bool:
    kinds = [np.dtype(a.dtype) for a in e.args]
    if e.op in _FLOAT_OPS:
        return np.dtype(e.dtype) == _FLOAT32 and all(t == _FLOAT32 for t in kinds)
    if e.op in _COMPARES:
        return all(t == _FLOAT32 for t in kinds)
    if e.op in _LOGIC:
        return all(t == _BOOL for t in kinds)
    if e.op == "select":
        return kinds == [_BOOL, _FLOAT32, _FLOAT32]
    return False


def _guard_ok(guard: kir.Guard | None) -> bool:
    """A guard whose bounds' scales are static (pad's, a slice gradient's)."""
    return guard is None or all(not isinstance(scale, Size) for bound in guard.bounds
                                for _, scale in bound.terms)


def _node_ok(x: kir.Expr, schedule: Schedule) -> bool:
    if isinstance(x, kir.Load):
        stride = _inner_stride(x.access)
        # a guarded load is read lane by lane where its guard holds (a masked load)
        return (stride in (1, 2) or (stride == 0 and x.guard is None)) and \
            _guard_ok(x.guard) \
            and np.dtype(schedule.buffers[x.access.buffer].dtype) == _FLOAT32
    if isinstance(x, kir.Const):  # (a size's value, a mean's count: one splat a row)
        return np.dtype(x.dtype) == _FLOAT32 if isinstance(x.value, Size) else \
            np.dtype(x.dtype) in (_FLOAT32, _BOOL)
    if isinstance(x, kir.Apply):
        return _apply_ok(x)
    return False  # an index along an axis, or anything new: the scalar loop


def _same_element_only(k: kir.Elementwise, schedule: Schedule,
                       loads: list[kir.Load]) -> bool:
    """Whether reading and writing lanes a vector at a time keeps the scalar loop's
    meaning: every access to memory a store may overlap (arena temporaries sharing bytes)
    is that store's own element (read, then written, in one iteration)."""
    bids = kernel_buffers(k)
    group = dict(zip(bids, overlap_classes(k, schedule, bids)))
    stored = [s.access for s in k.stores]
    for n, access in enumerate(stored):
        others = stored[:n] + stored[n + 1:] + [ld.access for ld in loads]
        if any(group[o.buffer] == group[access.buffer] and o != access for o in others):
            return False
    return True


def _body_ok(root: kir.Expr, schedule: Schedule, memo: dict, done: set,
             loads: list[kir.Load]) -> bool:
    """Whether every node of a body (in core ops) has a vector spelling; its loads added
    to `loads`."""
    for x in kir.postorder(lower_expr(root, memo), done):
        if not _node_ok(x, schedule):
            return False
        if isinstance(x, kir.Load):
            loads.append(x)
    return True


def _long_rows(k: kir.Elementwise | kir.Reduce) -> bool:
    return bool(k.shape) and isinstance(k.shape[-1], int) and k.shape[-1] >= LANES


def _short_strided_rows(k: kir.Elementwise, loads: list[kir.Load]) -> bool:
    """Rows of SHORT_ROW to LANES - 1 elements, one masked vector each, taken only where a
    load reads every other element and none is guarded (the input of a 1x1 stride-2
    projection: rows of 14, 0.118 -> 0.079 ms in W6), which the scalar loop reads one at
    a time. (A stride-2 im2col's guarded rows of 14 ran a sixth slower so: each row's
    guard and addresses cost more than its one vector saves.)"""
    return bool(k.shape) and isinstance(k.shape[-1], int) and \
        SHORT_ROW <= k.shape[-1] < LANES and \
        any(_inner_stride(ld.access) == 2 for ld in loads) and \
        all(ld.guard is None for ld in loads)


def vectorizable_sum(k: kir.Reduce, schedule: Schedule) -> bool:
    """Whether a reduction is a float32 sum along the innermost axis (among others) that
    can be summed in vectors (codegen's blocked sum, each block in lanes)."""
    if k.op != "sum" or np.dtype(k.out_dtype) != _FLOAT32 or not _long_rows(k) or \
            k.axes[-1] != len(k.shape) - 1:
        return False
    loads: list[kir.Load] = []
    if not _body_ok(k.body, schedule, {}, set(), loads):
        return False
    bids = kernel_buffers(k)
    group = dict(zip(bids, overlap_classes(k, schedule, bids)))
    return all(group[ld.access.buffer] != group[k.out.buffer] for ld in loads)


def _pair_rows(k: kir.Elementwise) -> bool:
    """Whether a kernel's rows are pairs: an innermost axis of 2 that every store writes
    interleaved with the next axis (strides 2 and 1: the two rows of values, one for each
    index of the pair, are interleaved into one contiguous row of twice the length), over
    rows of at least PAIR_ROW elements."""
    if len(k.shape) < 2 or k.shape[-1] != 2 or not isinstance(k.shape[-2], int) \
            or k.shape[-2] < PAIR_ROW:
        return False
    return all(not s.accumulate and s.access.strides[-2:] == (2, 1) for s in k.stores)


def pair_halves(k: kir.Elementwise) -> list[kir.Elementwise]:
    """The kernel with its innermost axis (of 2) fixed at 0 and at 1: rows along the next
    axis, every load's and guard's part along the fixed axis moved to its offset."""
    last = len(k.shape) - 1
    halves = []
    for q in (0, 1):
        def visit(e: kir.Expr, q: int = q) -> kir.Expr | None:
            if not isinstance(e, kir.Load):
                return None
            a = e.access
            access = kir.Access(a.buffer, a.strides[:-1], a.offset + q * a.strides[-1])
            guard = e.guard
            if guard is not None:
                bounds = tuple(kir.Bound(tuple((ax, sc) for ax, sc in bd.terms if ax != last),
                                         bd.offset + q * sum(sc for ax, sc in bd.terms
                                                             if ax == last), bd.lo, bd.hi)
                               for bd in guard.bounds)
                guard = kir.Guard(bounds, guard.otherwise)
            return kir.Load(access, e.dtype, guard)
        memo: dict[int, kir.Expr] = {}
        stores = tuple(kir.Store(kir.Access(s.access.buffer, s.access.strides[:-1],
                                            s.access.offset + q),
                                 kir.rewrite(s.value, visit, memo)) for s in k.stores)
        halves.append(kir.Elementwise(k.shape[:-1], stores, k.fused))
    return halves


def _pairs_vectorizable(k: kir.Elementwise, schedule: Schedule) -> bool:
    """vectorizable for pair rows: each half's values have a vector spelling."""
    if parallel.threads_for(k) > 1 and parallel.split_axis(k) >= len(k.shape) - 2:
        return False  # (a team splits the rows or the pairs)
    loads: list[kir.Load] = []
    memo: dict[int, kir.Expr] = {}
    done: set[int] = set()
    return all(np.dtype(schedule.buffers[s.access.buffer].dtype) == _FLOAT32 and
               _body_ok(s.value, schedule, memo, done, loads)
               for half in pair_halves(k) for s in half.stores) \
        and _same_element_only(k, schedule, loads)


def vectorizable(k: kir.Elementwise, schedule: Schedule) -> bool:
    """Whether an elementwise kernel can be written as an explicit vector loop."""
    if _pair_rows(k):
        return _pairs_vectorizable(k, schedule)
    if not k.shape or not isinstance(k.shape[-1], int) or k.shape[-1] < SHORT_ROW:
        return False
    if parallel.threads_for(k) > 1 and parallel.split_axis(k) == len(k.shape) - 1:
        return False  # (a team splits the innermost axis itself)
    loads: list[kir.Load] = []
    memo: dict[int, kir.Expr] = {}
    done: set[int] = set()
    for s in k.stores:
        if _inner_stride(s.access) != 1 or \
                np.dtype(schedule.buffers[s.access.buffer].dtype) != _FLOAT32 or \
                not _body_ok(s.value, schedule, memo, done, loads):
            return False
    return (_long_rows(k) or _short_strided_rows(k, loads)) and \
        _same_element_only(k, schedule, loads)


def _splat(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    return splat(b, v, ir.VectorType(v.type, LANES))


class _Row:
    """One innermost row of a kernel: each access's row start, and the values of the
    broadcast loads (read once, before the row's loops)."""

    def __init__(self, writer, b: ir.IRBuilder, bases: dict, outer: list[ir.Value]) -> None:
        self.writer, self.b, self.bases, self.outer = writer, b, bases, outer
        self.starts: dict[tuple, ir.Value] = {}
        self.bound_starts: dict[int, tuple[ir.Value, ir.Value, ir.Value]] = {}

    def start(self, access: kir.Access, guarded: bool = False) -> ir.Value:
        """Where the row of an access starts (a guarded one's may lie outside its buffer:
        no `inbounds`, only the lanes inside are ever read)."""
        key = (access.buffer, access.strides[:-1], access.offset, guarded)
        if key not in self.starts:
            b = self.b
            flat = linear_index(b, self.outer, access.strides[:-1], access.offset)
            self.starts[key] = b.gep(self.bases[access.buffer], [flat], inbounds=not guarded,
                                     source_etype=F32)
        return self.starts[key]

    def at(self, access: kir.Access, j: ir.Value, guarded: bool = False) -> ir.Value:
        return self.b.gep(self.start(access, guarded), [j], inbounds=not guarded,
                          source_etype=F32)

    def load(self, access: kir.Access, j: ir.Value, mask: ir.Value | None = None,
             guarded: bool = False) -> ir.Value:
        """Lanes j.. of the access's row; with `mask`, only its lanes (the others 0)."""
        if _inner_stride(access) == 2:
            return self._every_other(access, j, mask, guarded)
        if mask is None:
            v = self.b.load(self.at(access, j), typ=VECTOR, align=4)
        else:
            v = self.b.call(_masked(self.writer.module, "load"),
                            [self.at(access, j, guarded), ir.Constant(I32, 4), mask, _ZERO])
        self.writer._mark(v, access.buffer)
        return v

    def _every_other(self, access: kir.Access, j: ir.Value, mask: ir.Value | None,
                     guarded: bool) -> ir.Value:
        """Lanes j.. of a row read at stride 2: the elements 2j .. 2j + 2 * LANES - 1 as two
        vectors, only the even ones (of the mask's lanes) read, the even lanes taken."""
        b = self.b
        # (no `inbounds`: the second vector's first lane may lie past the buffer where
        # none of its lanes is read)
        at = b.gep(self.start(access, guarded), [b.shl(j, ir.Constant(I64, 1))],
                   source_etype=F32)
        parts = []
        for h in (0, 1):
            if mask is None:
                even = _EVEN_MASK
            else:
                even = b.shuffle_vector(mask, _written(MASK, "zeroinitializer"), _SPREAD[h])
            ptr = at if h == 0 else b.gep(at, [ir.Constant(I64, LANES)], source_etype=F32)
            v = b.call(_masked(self.writer.module, "load"), [ptr, ir.Constant(I32, 4), even,
                                                             _ZERO])
            self.writer._mark(v, access.buffer)
            parts.append(v)
        return b.shuffle_vector(parts[0], parts[1], _EVENS)

    def bound_parts(self, bound: kir.Bound) -> tuple[ir.Value, ir.Value, ir.Value]:
        """A guard bound's part fixed along the row (its offset and outer terms) and its
        limits, made before the row's loops."""
        if id(bound) not in self.bound_starts:
            b, last = self.b, len(self.outer)
            outer = [(a, scale) for a, scale in bound.terms if a != last]
            fixed = linear_index(b, [self.outer[a] for a, _ in outer],
                                 [scale for _, scale in outer], bound.offset)
            self.bound_starts[id(bound)] = (fixed, as_value(b, bound.lo),
                                            as_value(b, bound.hi))
        return self.bound_starts[id(bound)]

    def inside(self, guard: kir.Guard, j: ir.Value) -> ir.Value:
        """Which lanes j.. lie inside every bound of a guard (<16 x i1>)."""
        b, last = self.b, len(self.outer)
        lanes = b.add(_splat(b, j), _IOTA)
        inside: ir.Value | None = None
        for bound in guard.bounds:
            fixed, lo, hi = self.bound_parts(bound)
            at = _splat(b, fixed)
            for a, scale in bound.terms:
                if a == last:
                    at = b.add(at, b.mul(lanes, _splat_constant(ir.Constant(I64, scale))))
            ok = b.and_(b.icmp_signed(">=", at, _splat(b, lo)),
                        b.icmp_signed("<", at, _splat(b, hi)))
            inside = ok if inside is None else b.and_(inside, ok)
        return inside if inside is not None else _written(MASK, "splat (i1 true)")

    def store(self, access: kir.Access, j: ir.Value, value: ir.Value,
              mask: ir.Constant | None = None) -> None:
        if mask is None:
            inst = self.b.store(value, self.at(access, j), align=4)
        else:
            inst = self.b.call(_masked(self.writer.module, "store"),
                               [value, self.at(access, j), ir.Constant(I32, 4), mask])
        self.writer._mark(inst, access.buffer)


def _written(typ: ir.Type, text: str) -> ir.Constant:
    """A constant spelled as `text` (llvmlite spells a vector constant lane by lane: 16
    times the text of `splat (float c)`, and writing IR is part of the compile time)."""
    c = ir.FormattedConstant(typ, text)
    c.constant = text  # (llvmlite would have made it a tuple of lanes)
    return c


def _splat_constant(c: ir.Constant) -> ir.Constant:
    return _written(ir.VectorType(c.type, LANES), f"splat ({c.type} {c.get_reference()})")


_ZERO = _written(VECTOR, "zeroinitializer")
_IOTA = _written(ir.VectorType(I64, LANES),
                 "<" + ", ".join(f"i64 {i}" for i in range(LANES)) + ">")
# two vectors as one of twice the lanes (two registers: two independent chains of adds)
_ZERO32 = _written(ir.VectorType(F32, 2 * LANES), "zeroinitializer")
# (shuffle masks: llvmlite checks their lanes, so spelled lane by lane)
_IOTA32 = ir.Constant(ir.VectorType(I32, 2 * LANES),
                      [ir.Constant(I32, i) for i in range(2 * LANES)])
_HALF = [ir.Constant(ir.VectorType(I32, LANES),
                     [ir.Constant(I32, i + h * LANES) for i in range(LANES)]) for h in (0, 1)]


# lanes 0, 16, 1, 17, ... of two vectors (their first halves interleaved), then 8, 24, ...
_INTERLEAVE = [ir.Constant(ir.VectorType(I32, LANES),
                           [ir.Constant(I32, i // 2 + (LANES if i % 2 else 0) + h * LANES // 2)
                            for i in range(LANES)]) for h in (0, 1)]


# the even lanes of two vectors (a row read at stride 2); a mask of the even lanes; lane i
# of a mask at lane 2i of one of two masks (the first half's lanes, then the second's)
_EVENS = ir.Constant(ir.VectorType(I32, LANES),
                     [ir.Constant(I32, 2 * i) for i in range(LANES)])
_EVEN_MASK = _written(MASK, "<" + ", ".join(f"i1 {'true' if i % 2 == 0 else 'false'}"
                                            for i in range(LANES)) + ">")
_SPREAD = [ir.Constant(ir.VectorType(I32, LANES),
                       [ir.Constant(I32, i // 2 + h * LANES // 2 if i % 2 == 0 else LANES)
                        for i in range(LANES)]) for h in (0, 1)]


def _first_lanes(count: int) -> ir.Constant:
    """A mask of the first `count` lanes (a row's rest after its whole vectors)."""
    return _written(MASK, "<" + ", ".join(f"i1 {'true' if i < count else 'false'}"
                                          for i in range(LANES)) + ">")


def _masked(module: ir.Module, kind: str) -> ir.Function:
    """llvm.masked.load / llvm.masked.store of float vectors (only the mask's lanes are
    touched in memory: a row's rest reads and writes nothing past the row)."""
    name = f"llvm.masked.{kind}.v{LANES}f32.p0"
    if name in module.globals:
        return module.globals[name]
    if kind == "load":
        ftype = ir.FunctionType(VECTOR, [PTR, I32, MASK, VECTOR])
    else:
        ftype = ir.FunctionType(ir.VoidType(), [VECTOR, PTR, I32, MASK])
    return ir.Function(module, ftype, name)


def _vector_values(writer, row: _Row, scalar: ScalarEmitter, roots: list[kir.Expr],
                   j: ir.Value, memo: dict[int, ir.Value],
                   mask: ir.Constant | None = None) -> list[ir.Value]:
    """The stores' values for lanes j .. j+LANES-1 (memo: the broadcast loads already;
    `mask`: only its lanes are read, the others' values are of no use)."""
    for root in roots:
        for x in kir.postorder(root):
            if id(x) in memo:
                continue
            if isinstance(x, kir.Load) and x.guard is not None:
                inside = row.inside(x.guard, j)
                if mask is not None:
                    inside = row.b.and_(inside, mask)
                value = row.b.select(inside, row.load(x.access, j, inside, guarded=True),
                                     memo[id(x.guard.otherwise)])
            elif isinstance(x, kir.Load):
                value = row.load(x.access, j, mask)
            elif isinstance(x, kir.Const):
                value = _vector_constant(x)
            elif isinstance(x, kir.Apply):
                value = scalar.emit(x, [memo[id(a)] for a in x.args])
            else:  # (vectorizable() lets nothing else through)
                raise NotImplementedError(f"vector loop: {type(x).__name__}")
            memo[id(x)] = value
    return [memo[id(r)] for r in roots]


def emit_rows(writer, b: ir.IRBuilder, bases: dict, k: kir.Elementwise, outer,
              axis: int = 0) -> None:
    """The kernel's loop nest over every axis but the innermost, and along each row a
    vector loop and one masked vector for the last shape[-1] % LANES elements (`outer`,
    `axis`: one thread's share, as codegen's loop nests take them)."""
    if _pair_rows(k):
        _emit_pair_rows(writer, b, bases, k, outer, axis)
        return
    n = k.shape[-1]
    roots = [writer.lowered(s.value) for s in k.stores]
    scalar = ScalarEmitter(b, writer.module)
    with loop_nest(b, k.shape[:-1], outer=outer, outer_axis=axis) as ox:
        # every row start and broadcast value before the row's loops (no LICM runs later)
        row = _Row(writer, b, bases, list(ox))
        for s in k.stores:
            row.start(s.access)
        broadcast = _broadcasts(writer, b, row, roots)
        def lanes(v: ir.Value, _: None, mask: ir.Constant | None = None) -> None:
            j = v if mask is not None else b.shl(v, ir.Constant(I64, LANES.bit_length() - 1))
            values = _vector_values(writer, row, scalar, roots, j, dict(broadcast), mask)
            for s, value in zip(k.stores, values):
                if s.accumulate:
                    value = b.fadd(row.load(s.access, j, mask), value)
                row.store(s.access, j, value, mask)
        if n >= LANES:
            _summing_loop(b, n // LANES, None, lanes, "v")
        if n % LANES:
            lanes(ir.Constant(I64, n - n % LANES), None, _first_lanes(n % LANES))


def _emit_pair_rows(writer, b: ir.IRBuilder, bases: dict, k: kir.Elementwise, outer,
                    axis: int) -> None:
    """emit_rows for pair rows (_pair_rows): along each row, LANES values of each half
    (pair_halves: the pair's first and second index), their lanes interleaved into two
    vectors of output, stored contiguously (a strided convolution's data gradient read
    from its windows: even and odd columns from different window offsets)."""
    halves = pair_halves(k)
    n = k.shape[-2]
    roots = [[writer.lowered(s.value) for s in h.stores] for h in halves]
    scalar = ScalarEmitter(b, writer.module)
    with loop_nest(b, k.shape[:-2], outer=outer, outer_axis=axis) as ox:
        row = _Row(writer, b, bases, list(ox))
        broadcast = _broadcasts(writer, b, row, roots[0] + roots[1])
        for s in halves[0].stores:
            row.start(s.access)

        def lanes(v: ir.Value, _: None, count: int = LANES) -> None:
            mask = None if count == LANES else _first_lanes(count)
            j = v if mask is not None else b.shl(v, ir.Constant(I64, LANES.bit_length() - 1))
            memo = dict(broadcast)
            first = _vector_values(writer, row, scalar, roots[0], j, memo, mask)
            second = _vector_values(writer, row, scalar, roots[1], j, dict(broadcast), mask)
            at = b.shl(j, ir.Constant(I64, 1))
            for s, x, y in zip(halves[0].stores, first, second):
                for h in (0, 1):
                    value = b.shuffle_vector(x, y, _INTERLEAVE[h])
                    written = min(LANES, max(0, 2 * count - h * LANES))
                    if written:
                        row.store(s.access, b.add(at, ir.Constant(I64, h * LANES)), value,
                                  None if written == LANES else _first_lanes(written))
        if n >= LANES:
            _summing_loop(b, n // LANES, None, lanes, "v")
        if n % LANES:
            lanes(ir.Constant(I64, n - n % LANES), None, n % LANES)


def _broadcasts(writer, b: ir.IRBuilder, row: _Row, roots: list[kir.Expr]) -> dict:
    """The values the same for every lane of a row (broadcast loads, and ops on them and on
    constants) as vectors, made once before the row's loops; every other load's row start
    made there too (no LICM runs later)."""
    scalar = ScalarEmitter(b, writer.module)
    fixed: dict[int, ir.Value] = {}
    consts: set[int] = set()
    done: set[int] = set()
    for root in roots:
        for x in kir.postorder(root, done):
            if isinstance(x, kir.Load) and _inner_stride(x.access) == 0:
                v = b.load(row.start(x.access), typ=F32)
                writer._mark(v, x.access.buffer)
                fixed[id(x)] = _splat(b, v)
            elif isinstance(x, kir.Load) and x.guard is not None:
                row.start(x.access, guarded=True)
                for bound in x.guard.bounds:
                    row.bound_parts(bound)
            elif isinstance(x, kir.Load):
                row.start(x.access)
            elif isinstance(x, kir.Const) and isinstance(x.value, Size):
                # a call-time size's value (a mean's count), the same in every lane
                fixed[id(x)] = _splat(b, b.sitofp(as_value(b, x.value), F32))
            elif isinstance(x, kir.Const):
                consts.add(id(x))
            elif isinstance(x, kir.Apply) and any(id(a) in fixed for a in x.args) and \
                    all(id(a) in fixed or id(a) in consts for a in x.args):
                fixed[id(x)] = scalar.emit(x, [fixed[id(a)] if id(a) in fixed
                                               else _vector_constant(a) for a in x.args])
    return fixed


def _vector_constant(x: kir.Expr) -> ir.Constant:
    assert isinstance(x, kir.Const)
    return _splat_constant(constant(x.dtype, x.value))


def _lane_sum(b: ir.IRBuilder, module: ir.Module, v: ir.Value) -> ir.Value:
    """The sum of a vector's lanes (in a tree: reassociation allowed)."""
    name = f"llvm.vector.reduce.fadd.v{LANES}f32"
    fn = module.globals.get(name) or ir.Function(module, ir.FunctionType(F32, [F32, VECTOR]),
                                                 name)
    return b.call(fn, [ir.Constant(F32, -0.0), v], fastmath=("reassoc",))


def _summing_loop(b: ir.IRBuilder, count: int, init: ir.Value | None, step,
                  name: str) -> ir.Value | None:
    """for (i = 0; i < count; ++i) acc = step(i, acc), acc starting at `init` (None: no
    acc, step(i, None)); `count` >= 1, static. Written rotated (body, then the test at its
    end: one branch an iteration; no pass that would rotate it runs), acc in a phi (no pass
    that would lift a stack slot into a register runs either); returns acc after."""
    pre = b.block
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.branch(body)
    b.position_at_end(body)
    i = b.phi(I64, name=name)
    i.add_incoming(ir.Constant(I64, 0), pre)
    acc = None
    if init is not None:
        acc = b.phi(init.type, name=f"{name}.acc")
        acc.add_incoming(init, pre)
    out = step(i, acc)
    nxt = b.add(i, ir.Constant(I64, 1))
    i.add_incoming(nxt, b.block)
    if acc is not None:
        acc.add_incoming(out, b.block)
    b.cbranch(b.icmp_signed("<", nxt, ir.Constant(I64, count)), body, done)
    b.position_at_end(done)
    return out


def blocked_sum(writer, b: ir.IRBuilder, bases: dict, k: kir.Reduce, full: list,
                red_shape: list, acc_ptr: ir.Value, block: int) -> None:
    """codegen's blocked sum with each block summed in vectors: `block` elements along the
    innermost axis (the last reduced one) into one vector of partial sums, its lanes then
    summed, the scalar rest added, and the block's sum added to the total (`acc_ptr`)."""
    n = k.shape[-1]
    root = writer.lowered(k.body)
    scalar = ScalarEmitter(b, writer.module)
    shift = ir.Constant(I64, LANES.bit_length() - 1)

    def vector_at(row: _Row, broadcast: dict, j: ir.Value,
                  mask: ir.Constant | None = None) -> ir.Value:
        (value,) = _vector_values(writer, row, scalar, [root], j, dict(broadcast), mask)
        return value

    def block_sum(row: _Row, broadcast: dict, start: ir.Value, length: int) -> ir.Value:
        """The sum of `length` elements from `start` along the row: whole vectors (two at
        a time into two partial sums where there are four or more: one chain of adds waits
        on each add's latency), then one masked vector (its other lanes count 0)."""
        acc: ir.Value = _ZERO
        whole, done = length // LANES, 0
        if whole >= 4:
            def pairs(v: ir.Value, acc: ir.Value) -> ir.Value:
                j = b.add(b.shl(v, ir.Constant(I64, LANES.bit_length())), start)
                lo = vector_at(row, broadcast, j)
                hi = vector_at(row, broadcast, b.add(j, ir.Constant(I64, LANES)))
                return b.fadd(acc, b.shuffle_vector(lo, hi, _IOTA32))
            summed = _summing_loop(b, whole // 2, _ZERO32, pairs, "v")
            assert summed is not None
            acc = b.fadd(b.shuffle_vector(summed, summed, _HALF[0]),
                         b.shuffle_vector(summed, summed, _HALF[1]))
            done = whole - whole % 2
        if whole - done >= 2:
            def lanes(v: ir.Value, acc: ir.Value) -> ir.Value:
                return b.fadd(acc, vector_at(row, broadcast, b.add(b.shl(v, shift), start)))
            summed = _summing_loop(b, whole, _ZERO, lanes, "v")
            assert summed is not None
            acc, done = summed, whole
        if whole - done == 1:
            j = b.add(start, ir.Constant(I64, done * LANES))
            acc = b.fadd(acc, vector_at(row, broadcast, j))
        if length % LANES:
            mask = _first_lanes(length % LANES)
            j = b.add(start, ir.Constant(I64, length - length % LANES))
            acc = b.fadd(acc, b.select(mask, vector_at(row, broadcast, j, mask), _ZERO))
        return _lane_sum(b, writer.module, acc)

    def add_to_total(part: ir.Value) -> None:
        b.store(b.fadd(b.load(acc_ptr, typ=F32), part), acc_ptr)

    with loop_nest(b, red_shape[:-1], "r") as rx:
        for a, v in zip(k.axes[:-1], rx):
            full[a] = v
        row = _Row(writer, b, bases, full[:-1])
        broadcast = _broadcasts(writer, b, row, [root])
        if n // block:  # whole blocks
            with counted_loop(b, n // block, "blk", unroll=False) as blk:
                start = b.mul(blk, ir.Constant(I64, block))
                add_to_total(block_sum(row, broadcast, start, block))
        if n % block:
            add_to_total(block_sum(row, broadcast, ir.Constant(I64, n - n % block), n % block))
