"""LLVM IR for the scan kernel (running sums and products) and the sort kernel (a stable merge
sort of indices per row): ModuleWriter methods, kept apart from the other kinds."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
from llvmlite import ir

from graphc.schedule import ir as kir
from graphc.backends.llvm.loops import I64, counted_loop, loop_nest
from graphc.backends.llvm.scalar import ScalarEmitter, constant, llvm_type

_FLOATS = (ir.FloatType, ir.DoubleType)


def _alloca(b: ir.IRBuilder, typ: ir.Type, name: str) -> ir.AllocaInstr:
    """A variable in the function's entry block (mem2reg turns it into registers)."""
    entry = b.function.entry_basic_block
    with b.goto_block(entry):
        b.position_at_start(entry)
        return b.alloca(typ, name=name)


@contextlib.contextmanager
def _while(b: ir.IRBuilder, cond: Callable[[], ir.Value], name: str) -> Iterator[None]:
    """while (cond()) { body }: cond is emitted in the loop's head."""
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    b.cbranch(cond(), body, done)
    b.position_at_end(body)
    yield
    b.branch(head)
    b.position_at_end(done)


def _rows(shape: tuple[int, ...], axis: int) -> list[int]:
    return [shape[a] for a in range(len(shape)) if a != axis]


def _full(ox: list[ir.Value], axis: int, at: ir.Value) -> list[ir.Value]:
    """Row indices `ox` with `at` inserted along the scanned or sorted axis."""
    return list(ox[:axis]) + [at] + list(ox[axis:])


def emit_scan(self, b: ir.IRBuilder, fn, bases, k: kir.Scan, index: int) -> None:
    """Each row in order: acc = identity; acc = acc op body[j]; out[j] = acc. The sum is
    not reassociated, so float results match numpy's sequential cumsum."""
    if 0 in k.shape:
        return
    scalar = ScalarEmitter(b, self.module)
    n = k.shape[k.axis]
    acc_ptr = _alloca(b, llvm_type(k.dtype), "acc")
    is_float = np.dtype(k.dtype).kind == "f"
    with loop_nest(b, _rows(k.shape, k.axis), "o") as ox:
        b.store(constant(k.dtype, 0 if k.op == "sum" else 1), acc_ptr)
        with counted_loop(b, n, "s") as j:
            at = b.sub(ir.Constant(I64, n - 1), j) if k.reverse else j
            full = _full(ox, k.axis, at)
            v = self.expr(b, scalar, bases, k.body, full, {})
            acc = b.load(acc_ptr, typ=acc_ptr.allocated_type)
            if k.op == "sum":
                acc = b.fadd(acc, v) if is_float else b.add(acc, v)
            else:
                acc = b.fmul(acc, v) if is_float else b.mul(acc, v)
            b.store(acc, acc_ptr)
            self.store(b, bases, k.out, full, acc)


def _less(b: ir.IRBuilder, a: ir.Value, c: ir.Value) -> ir.Value:
    """a sorts strictly before c: a < c, with NaN after every number (numpy's order)."""
    if isinstance(a.type, _FLOATS):
        return b.or_(b.fcmp_ordered("<", a, c),
                     b.and_(b.fcmp_unordered("uno", c, c), b.fcmp_ordered("ord", a, a)))
    return b.icmp_signed("<", a, c)


def emit_sort(self, b: ir.IRBuilder, fn, bases, k: kir.Sort, index: int) -> None:
    """A bottom-up merge sort of each row's indices in `scratch` (two halves of n: each
    pass merges runs of `width` from one half into the other), then the sorted half copied
    to out. Merging takes the left run's entry unless the right one sorts strictly
    before it, so equal entries keep their order (stable)."""
    if 0 in k.shape:
        return
    n = k.shape[k.axis]
    nn = ir.Constant(I64, n)
    one, zero = ir.Constant(I64, 1), ir.Constant(I64, 0)
    scratch = kir.Access(k.scratch, (1,), 0)
    var = {name: _alloca(b, I64, name) for name in ("src", "dst", "width", "lo", "i", "j", "t")}

    def get(name: str) -> ir.Value:
        return b.load(var[name], typ=I64)

    def put(name: str, value: ir.Value) -> None:
        b.store(value, var[name])

    def smin(x: ir.Value, y: ir.Value) -> ir.Value:
        return b.select(b.icmp_signed("<", x, y), x, y)

    with loop_nest(b, _rows(k.shape, k.axis), "o") as ox:
        def key(pos: ir.Value) -> ir.Value:  # x at row position `pos`
            return self.load(b, bases, k.x, _full(ox, k.axis, pos))

        with counted_loop(b, n, "init") as t:
            self.store(b, bases, scratch, [t], t)
        put("src", zero)
        put("dst", nn)
        put("width", one)
        with _while(b, lambda: b.icmp_signed("<", get("width"), nn), "pass"):
            width = get("width")
            put("lo", zero)
            with _while(b, lambda: b.icmp_signed("<", get("lo"), nn), "run"):
                lo, src, dst = get("lo"), get("src"), get("dst")
                mid = smin(b.add(lo, width), nn)
                hi = smin(b.add(lo, b.add(width, width)), nn)
                put("i", lo)
                put("j", mid)
                put("t", lo)
                with _while(b, lambda: b.icmp_signed("<", get("t"), hi), "merge"):
                    i, j = get("i"), get("j")
                    left_ok = b.icmp_signed("<", i, mid)
                    right_ok = b.icmp_signed("<", j, hi)
                    # read both candidates at in-range positions (clamped), then choose
                    ic = b.select(left_ok, i, lo)
                    jc = b.select(right_ok, j, lo)
                    pi = self.load(b, bases, scratch, [b.add(src, ic)])
                    pj = self.load(b, bases, scratch, [b.add(src, jc)])
                    right_first = b.and_(right_ok, b.or_(b.not_(left_ok),
                                                         _less(b, key(pj), key(pi))))
                    self.store(b, bases, scratch, [b.add(dst, get("t"))],
                               b.select(right_first, pj, pi))
                    put("i", b.select(right_first, i, b.add(i, one)))
                    put("j", b.select(right_first, b.add(j, one), j))
                    put("t", b.add(get("t"), one))
                put("lo", hi)
            src = get("src")
            put("src", get("dst"))
            put("dst", src)
            put("width", b.add(width, width))
        with counted_loop(b, n, "copy") as t:
            v = self.load(b, bases, scratch, [b.add(get("src"), t)])
            self.store(b, bases, k.out, _full(ox, k.axis, t), v)
