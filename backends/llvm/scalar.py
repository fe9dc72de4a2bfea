"""The core ops (graphc.schedule.core_ops) in LLVM IR: one table entry per op. What an op
means was decided in the core; this file only spells it. Transcendentals are libm calls by
name (vector_abi tags them with libmvec's vector variants); the rest are instructions or
LLVM intrinsics."""
from __future__ import annotations

from typing import Callable

import numpy as np
from llvmlite import ir

from graphc.schedule import ir as kir

F32, F64 = ir.FloatType(), ir.DoubleType()
I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)


def llvm_type(dtype: np.dtype) -> ir.Type:
    """The in-register type of a dtype (bool computes as i1, is stored as i8)."""
    return {"float32": F32, "float64": F64, "int32": I32, "int64": I64, "bool": I1}[
        np.dtype(dtype).name]


def storage_type(dtype: np.dtype) -> ir.Type:
    return I8 if np.dtype(dtype) == np.bool_ else llvm_type(dtype)


def constant(dtype: np.dtype, value: object) -> ir.Constant:
    t = llvm_type(dtype)
    if isinstance(t, ir.IntType):
        return ir.Constant(t, int(value))  # type: ignore[call-overload]
    return ir.Constant(t, float(value))  # type: ignore[arg-type]


_INTRINSIC = {"sqrt", "fabs", "pow", "maximum", "minimum", "floor", "ceil", "rint"}
_COMPARE = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


class ScalarEmitter:
    """Emits one core op at a time into a builder."""

    def __init__(self, builder: ir.IRBuilder, module: ir.Module) -> None:
        self.b = builder
        self.module = module

    def call(self, name: str, args: list[ir.Value]) -> ir.Value:
        """A libm function by name (float variant: name + "f") or an LLVM intrinsic."""
        t = args[0].type
        if name in _INTRINSIC:
            fn = self.module.declare_intrinsic(f"llvm.{name}", [t],
                                               ir.FunctionType(t, [t] * len(args)))
            return self.b.call(fn, args)
        symbol = name + ("f" if t == F32 else "")
        fn = self.module.globals.get(symbol)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(t, [t] * len(args)), symbol)
        return self.b.call(fn, args)

    def emit(self, e: kir.Apply, args: list[ir.Value]) -> ir.Value:
        """The value of core op e.op applied to `args` (the values of e.args)."""
        try:
            spell = TABLE[e.op]
        except KeyError:
            raise NotImplementedError(f"llvm: no spelling of the core op {e.op!r}") from None
        return spell(self, e, args)

    # -- ops that take more than one instruction ---------------------------------------
    def extreme(self, e: kir.Apply, a: ir.Value, c: ir.Value) -> ir.Value:
        """numpy.maximum/minimum: a where a >= c (a <= c) or a is nan, else c."""
        cmp = ">=" if e.op == "max" else "<="
        if _is_float(a):
            keep = self.b.or_(self.b.fcmp_ordered(cmp, a, c), self.b.fcmp_unordered("uno", a, a))
        elif a.type == I1:
            keep = self.b.icmp_unsigned(cmp, a, c)
        else:
            keep = self.b.icmp_signed(cmp, a, c)
        return self.b.select(keep, a, c)

    def compare(self, e: kir.Apply, a: ir.Value, c: ir.Value) -> ir.Value:
        op = _COMPARE[e.op]
        if _is_float(a):
            if op == "!=":  # numpy: nan != anything is True
                return self.b.fcmp_unordered("!=", a, c)
            return self.b.fcmp_ordered(op, a, c)
        if a.type == I1:
            return self.b.icmp_unsigned(op, a, c)
        return self.b.icmp_signed(op, a, c)

    def abs(self, a: ir.Value) -> ir.Value:
        if _is_float(a):
            return self.call("fabs", [a])
        return self.b.select(self.b.icmp_signed("<", a, a.type(0)), self.b.neg(a), a)

    def ipow(self, base: ir.Value, exp: ir.Value) -> ir.Value:
        t = base.type
        name = f"graphc.ipow.{t.width}"
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(t, [t, t]), name)
            fn.linkage = "internal"
            _build_ipow(fn, t)
        return self.b.call(fn, [base, exp])

    def cast(self, v: ir.Value, src: np.dtype, dst: np.dtype) -> ir.Value:
        """numpy astype semantics; float -> int saturates (nan: 0) instead of being
        undefined."""
        b = self.b
        src, dst = np.dtype(src), np.dtype(dst)
        t = llvm_type(dst)
        if src == dst:
            return v
        if dst.kind == "b":
            if src.kind == "f":
                return b.fcmp_unordered("!=", v, ir.Constant(v.type, 0.0))
            return b.icmp_unsigned("!=", v, ir.Constant(v.type, 0))
        if src.kind == "b":
            return b.uitofp(v, t) if dst.kind == "f" else b.zext(v, t)
        if src.kind == "f" and dst.kind == "f":
            return b.fpext(v, t) if dst.itemsize > src.itemsize else b.fptrunc(v, t)
        if src.kind == "i" and dst.kind == "f":
            return b.sitofp(v, t)
        if src.kind == "f" and dst.kind == "i":
            fn = self.module.declare_intrinsic("llvm.fptosi.sat", [t, v.type],
                                               ir.FunctionType(t, [v.type]))
            return b.call(fn, [v])
        return b.sext(v, t) if dst.itemsize > src.itemsize else b.trunc(v, t)


def _is_float(v: ir.Value) -> bool:
    """A float, or a vector of floats (vector_loop.py writes ops on vectors)."""
    t = v.type.element if isinstance(v.type, ir.VectorType) else v.type
    return isinstance(t, (ir.FloatType, ir.DoubleType))


def _arith(float_op: str, int_op: str) -> Callable:
    def spell(em: ScalarEmitter, e: kir.Apply, args: list[ir.Value]) -> ir.Value:
        return getattr(em.b, float_op if _is_float(args[0]) else int_op)(*args)
    return spell


def _libm(name: str) -> Callable:
    return lambda em, e, args: em.call(name, args)


Spelling = Callable[[ScalarEmitter, kir.Apply, list[ir.Value]], ir.Value]

_LIBM = ("exp", "log", "log1p", "sin", "cos", "tan", "tanh", "erf", "sinh", "cosh", "asinh",
         "acosh", "atanh", "asin", "acos", "atan", "atan2", "sqrt", "floor", "ceil", "pow",
         "expm1", "log2", "log10", "rint")
# Core ops that stay calls of a math library function in the object code (tens of cycles
# an element; O3's loop vectorizer calls libmvec's vector variants instead): the others of
# _LIBM are single instructions.
MATH_CALLS = frozenset(_LIBM) - {"sqrt", "floor", "ceil", "rint"}

TABLE: dict[str, Spelling] = {
    "add": _arith("fadd", "add"), "sub": _arith("fsub", "sub"), "mul": _arith("fmul", "mul"),
    "fdiv": lambda em, e, a: em.b.fdiv(*a),
    "neg": lambda em, e, a: em.b.fneg(a[0]) if _is_float(a[0]) else em.b.neg(a[0]),
    "abs": lambda em, e, a: em.abs(a[0]),
    "max": lambda em, e, a: em.extreme(e, *a), "min": lambda em, e, a: em.extreme(e, *a),
    **{name: _libm(name) for name in _LIBM},
    "rem": _arith("frem", "srem"), "idiv": lambda em, e, a: em.b.sdiv(*a),
    "ipow": lambda em, e, a: em.ipow(*a),
    **{name: (lambda em, e, a: em.compare(e, *a)) for name in _COMPARE},
    "isnan": lambda em, e, a: em.b.fcmp_unordered("uno", a[0], a[0]),
    "select": lambda em, e, a: em.b.select(*a),
    "and": lambda em, e, a: em.b.and_(*a), "or": lambda em, e, a: em.b.or_(*a),
    "xor": lambda em, e, a: em.b.xor(*a), "lshr": lambda em, e, a: em.b.lshr(*a),
    "cast": lambda em, e, a: em.cast(a[0], e.args[0].dtype, e.dtype),
}


def _build_ipow(fn: ir.Function, t: ir.IntType) -> None:
    """Integer power by squaring; a negative exponent gives 0 (or +-1 for base +-1)."""
    base, exp = fn.args
    entry = fn.append_basic_block("entry")
    negative = fn.append_basic_block("negative")
    loop = fn.append_basic_block("loop")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_signed("<", exp, t(0)), negative, loop)
    b.position_at_end(negative)  # 1 -> 1, -1 -> +-1, everything else -> 0
    odd = b.trunc(b.and_(exp, t(1)), I1)
    minus_one = b.select(odd, t(-1), t(1))
    b.ret(b.select(b.icmp_signed("==", base, t(1)), t(1),
                   b.select(b.icmp_signed("==", base, t(-1)), minus_one, t(0))))
    b.position_at_end(loop)
    acc = b.phi(t)
    bb = b.phi(t)
    e = b.phi(t)
    acc.add_incoming(t(1), entry)
    bb.add_incoming(base, entry)
    e.add_incoming(exp, entry)
    odd = b.trunc(b.and_(e, t(1)), I1)
    acc2 = b.select(odd, b.mul(acc, bb), acc)
    e2 = b.ashr(e, t(1))
    bb2 = b.mul(bb, bb)
    acc.add_incoming(acc2, loop)
    bb.add_incoming(bb2, loop)
    e.add_incoming(e2, loop)
    b.cbranch(b.icmp_signed("==", e2, t(0)), done, loop)
    b.position_at_end(done)
    b.ret(acc2)
