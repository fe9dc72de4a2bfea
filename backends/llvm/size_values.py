"""Symbolic sizes in generated code: a kernel's symbols are read once, at the entry of each
function that uses them, from an i64 vector the entry point hands it after its buffers;
every size expression is computed from them once, there, and used as a loop bound, stride,
offset or value."""
from __future__ import annotations

from typing import Sequence

from llvmlite import ir

from graphc.sizes import Size, SizeFunc, SizeVar

I64 = ir.IntType(64)
PTR = ir.PointerType()


class KernelSizes:
    """The symbols of the kernel being written (signature order) and the table slot that
    holds the pointer to their values; each function's computed sizes, by expression."""

    def __init__(self, symbols: Sequence[SizeVar], slot: int) -> None:
        self.symbols = {v: i for i, v in enumerate(symbols)}
        self.slot = slot
        self.memo: dict[tuple[int, Size | SizeVar], ir.Value] = {}

    def value(self, b: ir.IRBuilder, d: Size) -> ir.Value:
        """`d`'s value, computed in the entry block of the builder's function (whose first
        argument is the kernel's pointer table: kernels and their thread parts alike)."""
        fn = b.function
        key = (id(fn), d)
        if key not in self.memo:
            entry = fn.entry_basic_block
            with b.goto_block(entry):
                self.memo[key] = self._poly(b, fn, d)
        return self.memo[key]

    def _symbol(self, b: ir.IRBuilder, fn: ir.Function, var: SizeVar) -> ir.Value:
        key = (id(fn), var)
        if key not in self.memo:
            at = b.gep(fn.args[0], [ir.Constant(I64, self.slot)], source_etype=PTR)
            vector = b.load(at, typ=PTR)
            where = b.gep(vector, [ir.Constant(I64, self.symbols[var])], source_etype=I64)
            self.memo[key] = b.load(where, typ=I64, name=f"size{self.symbols[var]}")
        return self.memo[key]

    def _poly(self, b: ir.IRBuilder, fn: ir.Function, d: Size) -> ir.Value:
        total: ir.Value | None = None
        for mono, coeff in d.terms:
            term: ir.Value = ir.Constant(I64, coeff)
            factors = [self._atom(b, fn, a) for a in mono]
            if factors:
                term = factors[0]
                for f in factors[1:]:
                    term = b.mul(term, f)
                if coeff != 1:
                    term = b.mul(term, ir.Constant(I64, coeff))
            total = term if total is None else b.add(total, term)
        return total if total is not None else ir.Constant(I64, 0)

    def _arg(self, b: ir.IRBuilder, fn: ir.Function, a: object) -> ir.Value:
        if isinstance(a, int):
            return ir.Constant(I64, a)
        assert isinstance(a, Size)
        return self._poly(b, fn, a)

    def _atom(self, b: ir.IRBuilder, fn: ir.Function, atom: SizeVar | SizeFunc) -> ir.Value:
        if isinstance(atom, SizeVar):
            return self._symbol(b, fn, atom)
        x, y = (self._arg(b, fn, a) for a in atom.args)
        if atom.kind == "floordiv":  # Python's floor, also for a negative numerator
            q, r = b.sdiv(x, y), b.srem(x, y)
            fix = b.and_(b.icmp_signed("!=", r, ir.Constant(I64, 0)),
                         b.icmp_signed("!=", b.icmp_signed("<", r, ir.Constant(I64, 0)),
                                       b.icmp_signed("<", y, ir.Constant(I64, 0))))
            return b.sub(q, b.zext(fix, I64))
        if atom.kind in ("min", "max"):
            less = b.icmp_signed("<", x, y)
            return b.select(less, x, y) if atom.kind == "min" else b.select(less, y, x)
        raise TypeError(f"generated code: no spelling for the size function {atom.kind}")


_CURRENT: list[KernelSizes] = []


class writing:
    """`with writing(sizes):` while a kernel with symbolic sizes is written."""

    def __init__(self, sizes: KernelSizes | None) -> None:
        self.sizes = sizes

    def __enter__(self) -> None:
        if self.sizes is not None:
            _CURRENT.append(self.sizes)

    def __exit__(self, *exc: object) -> None:
        if self.sizes is not None:
            _CURRENT.pop()


def current_sizes() -> KernelSizes | None:
    """The sizes of the kernel being written, or None where it has none."""
    return _CURRENT[-1] if _CURRENT else None


def runtime_descriptor_pointer(b: ir.IRBuilder) -> ir.Value:
    """Where the kernel being written finds the data the runtime computes for each binding
    after its symbols' values (a packed GEMM's blocking)."""
    if not _CURRENT:
        raise TypeError("generated code: a runtime descriptor outside a symbolic kernel")
    sizes = _CURRENT[-1]
    fn = b.function
    entry = fn.entry_basic_block
    with b.goto_block(entry):
        at = b.gep(fn.args[0], [ir.Constant(I64, sizes.slot)], source_etype=PTR)
        vector = b.load(at, typ=PTR)
        return b.gep(vector, [ir.Constant(I64, len(sizes.symbols))], source_etype=I64)


def as_value(b: ir.IRBuilder, d: int | Size) -> ir.Value:
    """An i64 for a size, stride or offset: a constant, or a symbolic size's value."""
    if isinstance(d, Size):
        if not _CURRENT:
            raise TypeError(f"size {d}: generated code has no sizes to read it from")
        return _CURRENT[-1].value(b, d)
    return ir.Constant(I64, int(d))
