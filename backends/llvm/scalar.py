"""Scalar code for elementwise primitives, printed from their SymPy definitions (the same
expressions the derivative table comes from), so a new elementwise op needs no change here.
The core set: + * / powers, exp log sqrt sin cos tan tanh erf, |x| sign, Piecewise and
comparisons, and graphc's Sigmoid/Softplus in their stable forms."""
from __future__ import annotations

from typing import Callable

import numpy as np
import sympy as sp
from llvmlite import ir

from graphc.derivatives import arg_symbols, definition
from graphc.symbolic import Sigmoid, Softplus

F32, F64 = ir.FloatType(), ir.DoubleType()
I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)


def llvm_type(dtype: np.dtype) -> ir.Type:
    """The in-register type of a dtype (bool computes as i1, is stored as i8)."""
    return {"float32": F32, "float64": F64, "int32": I32, "int64": I64, "bool": I1}[
        np.dtype(dtype).name]


def storage_type(dtype: np.dtype) -> ir.Type:
    return I8 if np.dtype(dtype) == np.bool_ else llvm_type(dtype)


def constant(dtype: np.dtype, value) -> ir.Constant:
    t = llvm_type(dtype)
    if isinstance(t, ir.IntType):
        return ir.Constant(t, int(value))
    return ir.Constant(t, float(value))


# Transcendentals are libm calls by name (vector_abi tags them with libmvec's vector
# variants); the rest are LLVM intrinsics, which become single instructions.
_INTRINSIC = {"sqrt", "fabs", "pow", "maximum", "minimum", "floor", "ceil"}
# SymPy functions that are one call of their arguments (libm by name, or an intrinsic)
_CALLS = ((sp.sin, "sin"), (sp.cos, "cos"), (sp.tan, "tan"), (sp.tanh, "tanh"),
          (sp.erf, "erf"), (sp.sinh, "sinh"), (sp.cosh, "cosh"), (sp.asinh, "asinh"),
          (sp.acosh, "acosh"), (sp.atanh, "atanh"), (sp.asin, "asin"), (sp.acos, "acos"),
          (sp.atan, "atan"), (sp.atan2, "atan2"), (sp.floor, "floor"), (sp.ceiling, "ceil"))


class ScalarEmitter:
    """Emits scalar IR for expressions over values of one compute dtype."""

    def __init__(self, builder: ir.IRBuilder, module: ir.Module) -> None:
        self.b = builder
        self.module = module

    # -- function calls -------------------------------------------------------------------
    def call(self, name: str, args: list[ir.Value]) -> ir.Value:
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

    def ipow(self, base: ir.Value, exp: ir.Value) -> ir.Value:
        """Integer power by squaring; a negative exponent gives 0 (or +-1 for base +-1)."""
        t = base.type
        name = f"graphc.ipow.{t.width}"
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(t, [t, t]), name)
            fn.linkage = "internal"
            _build_ipow(fn, t)
        return self.b.call(fn, [base, exp])

    # -- expressions ----------------------------------------------------------------------
    def apply(self, op: str, args: list[ir.Value], in_dtype: np.dtype) -> ir.Value:
        """The value of elementwise primitive `op` at `args` (each of dtype `in_dtype`,
        except where's condition, an i1)."""
        if np.dtype(in_dtype).kind == "f" and op == "relu":
            # x where x > 0 or x is nan (numpy's maximum propagates nan; the SymPy Piecewise
            # would drop it), else +0.0: relu(-0.0) is +0.0, as the definition says
            x = args[0]
            keep = self.b.or_(self.b.fcmp_ordered(">", x, constant(in_dtype, 0)),
                              self.b.fcmp_unordered("uno", x, x))
            return self.b.select(keep, x, constant(in_dtype, 0))
        if np.dtype(in_dtype).kind == "f" and op in ("maximum", "minimum"):
            # numpy's maximum/minimum propagate nan; the SymPy Piecewise definitions would
            # drop it
            return self.extreme(op, args[0], args[1])
        env = dict(zip(arg_symbols(op), args))
        return self.expr(definition(op), env, in_dtype)

    def extreme(self, op: str, a: ir.Value, b: ir.Value) -> ir.Value:
        """numpy.maximum/minimum: `a` where a >= b (a <= b) or a is nan, else `b`."""
        cmp = ">=" if op == "maximum" else "<="
        if isinstance(a.type, (ir.FloatType, ir.DoubleType)):
            keep = self.b.or_(self.b.fcmp_ordered(cmp, a, b), self.b.fcmp_unordered("uno", a, a))
        else:
            keep = self.b.icmp_signed(cmp, a, b)
        return self.b.select(keep, a, b)

    def expr(self, e: sp.Basic, env: dict, dtype: np.dtype) -> ir.Value:
        memo: dict[sp.Basic, ir.Value] = {}

        def go(x: sp.Basic) -> ir.Value:
            if x not in memo:
                memo[x] = self._node(x, env, dtype, go)
            return memo[x]
        return go(e)

    def _num(self, x: sp.Basic, dtype: np.dtype) -> ir.Constant:
        if np.dtype(dtype).kind in "iub":
            if not x.is_integer:
                raise NotImplementedError(f"a non-integer constant {x} in integer code")
            return constant(dtype, int(x))
        return constant(dtype, float(x))

    def _node(self, x: sp.Basic, env: dict, dtype: np.dtype, go: Callable) -> ir.Value:
        b = self.b
        is_float = np.dtype(dtype).kind == "f"
        if x in env:
            return env[x]
        if x is sp.true or x is sp.false:
            return ir.Constant(I1, int(bool(x)))
        if x.is_Number or x in (sp.pi, sp.E) or (not x.free_symbols and x.is_number):
            return self._num(x, dtype)
        if isinstance(x, sp.Add):
            terms = [go(a) for a in x.args]
            out = terms[0]
            for t in terms[1:]:
                out = b.fadd(out, t) if is_float else b.add(out, t)
            return out
        if isinstance(x, sp.Mul):
            return self._mul(x, dtype, go)
        if isinstance(x, sp.Pow):
            return self._pow(x.base, x.exp, dtype, go)
        if isinstance(x, sp.exp):
            return self.call("exp", [go(x.args[0])])
        if isinstance(x, sp.log):
            return self.call("log", [go(x.args[0])])
        for cls, name in _CALLS:
            if isinstance(x, cls):
                return self.call(name, [go(a) for a in x.args])
        if isinstance(x, (sp.Max, sp.Min)):
            op = "maximum" if isinstance(x, sp.Max) else "minimum"
            values = [go(a) for a in x.args]
            out = values[0]
            for v in values[1:]:
                out = self.extreme(op, out, v)
            return out
        for cls, name in ((sp.cot, "tan"), (sp.sec, "cos"), (sp.csc, "sin")):
            if isinstance(x, cls):
                return b.fdiv(self._num(sp.Integer(1), dtype), self.call(name, [go(x.args[0])]))
        if isinstance(x, Sigmoid):  # e = exp(-|x|): no overflow, full precision in the tail
            v = go(x.args[0])
            one, zero = self._num(sp.Integer(1), dtype), self._num(sp.Integer(0), dtype)
            e = self.call("exp", [b.fsub(zero, self.call("fabs", [v]))])
            inv = b.fdiv(one, b.fadd(one, e))
            return b.select(b.fcmp_ordered(">=", v, zero), inv, b.fmul(e, inv))
        if isinstance(x, Softplus):  # max(x, 0) + log1p(exp(-|x|)), like numpy's logaddexp
            v = go(x.args[0])
            zero = self._num(sp.Integer(0), dtype)
            neg_abs = b.fsub(zero, self.call("fabs", [v]))
            return b.fadd(self.call("maximum", [v, zero]),
                          self.call("log1p", [self.call("exp", [neg_abs])]))
        if isinstance(x, sp.Abs):
            v = go(x.args[0])
            if is_float:
                return self.call("fabs", [v])
            return b.select(b.icmp_signed("<", v, v.type(0)), b.neg(v), v)
        if isinstance(x, sp.sign):
            v = go(x.args[0])
            one, zero = self._num(sp.Integer(1), dtype), self._num(sp.Integer(0), dtype)
            minus = self._num(sp.Integer(-1), dtype)
            if is_float:  # nan and signed zeros pass through, like numpy
                return b.select(b.fcmp_ordered(">", v, zero), one,
                                b.select(b.fcmp_ordered("<", v, zero), minus, v))
            return b.select(b.icmp_signed(">", v, zero), one,
                            b.select(b.icmp_signed("<", v, zero), minus, zero))
        if isinstance(x, sp.Piecewise):
            return self._piecewise(x.args, go)
        if isinstance(x, sp.Rel):
            return self._compare(x, go)
        raise NotImplementedError(f"llvm: no scalar code for the SymPy expression {x}")

    def _mul(self, x: sp.Mul, dtype: np.dtype, go: Callable) -> ir.Value:
        b = self.b
        is_float = np.dtype(dtype).kind == "f"
        num, den = [], []
        for f in x.args:
            base, exp = f.as_base_exp()
            if is_float and exp.is_number and exp.is_negative and f.free_symbols:
                den.append(base if exp == -1 else sp.Pow(base, -exp))
            else:
                num.append(f)
        out = None
        for f in num:
            v = go(f)
            out = v if out is None else (b.fmul(out, v) if is_float else b.mul(out, v))
        if den:
            d = None
            for f in den:
                v = go(f)
                d = v if d is None else b.fmul(d, v)
            out = b.fdiv(out if out is not None else self._num(sp.Integer(1), dtype), d)
        return out

    def _pow(self, base: sp.Basic, exp: sp.Basic, dtype: np.dtype, go: Callable) -> ir.Value:
        b = self.b
        is_float = np.dtype(dtype).kind == "f"
        if base is sp.E:
            return self.call("exp", [go(exp)])
        if exp.is_Integer and 1 <= int(exp) <= 4:
            v = go(base)
            out = v
            for _ in range(int(exp) - 1):
                out = b.fmul(out, v) if is_float else b.mul(out, v)
            return out
        if is_float:
            if exp == sp.Rational(1, 2):
                return self.call("sqrt", [go(base)])
            if exp.is_number and exp.is_negative:
                return b.fdiv(self._num(sp.Integer(1), dtype), self._pow(base, -exp, dtype, go))
            return self.call("pow", [go(base), go(exp)])
        return self.ipow(go(base), go(exp))

    def _piecewise(self, pieces: tuple, go: Callable) -> ir.Value:
        value, cond = pieces[0]
        if cond is sp.true or len(pieces) == 1:
            return go(value)
        return self.b.select(go(cond), go(value), self._piecewise(pieces[1:], go))

    def _compare(self, x: sp.Rel, go: Callable) -> ir.Value:
        lhs, rhs = go(x.lhs), go(x.rhs)
        if lhs.type != rhs.type and isinstance(rhs, ir.Constant):
            rhs = ir.Constant(lhs.type, int(rhs.constant) if isinstance(lhs.type, ir.IntType)
                              else float(rhs.constant))
        op = {sp.StrictLessThan: "<", sp.LessThan: "<=", sp.StrictGreaterThan: ">",
              sp.GreaterThan: ">=", sp.Equality: "==", sp.Unequality: "!="}[type(x)]
        if isinstance(lhs.type, (ir.FloatType, ir.DoubleType)):
            if op == "!=":  # numpy: nan != anything is True
                return self.b.fcmp_unordered("!=", lhs, rhs)
            return self.b.fcmp_ordered(op, lhs, rhs)
        if lhs.type == I1:
            return self.b.icmp_unsigned(op, lhs, rhs)
        return self.b.icmp_signed(op, lhs, rhs)

    def uniform_hash(self, seed: ir.Value, counter: ir.Value, dtype: np.dtype) -> ir.Value:
        """graphc.ops.random.uniform_from_counter in IR: SplitMix64, then the top bits."""
        from graphc.ops.random import GOLDEN, MIX1, MIX2
        b = self.b

        def c(v: int) -> ir.Constant:
            return ir.Constant(I64, v - (1 << 64) if v >= 1 << 63 else v)
        z = b.add(seed, b.mul(b.add(counter, c(1)), c(GOLDEN)))
        z = b.mul(b.xor(z, b.lshr(z, c(30))), c(MIX1))
        z = b.mul(b.xor(z, b.lshr(z, c(27))), c(MIX2))
        z = b.xor(z, b.lshr(z, c(31)))
        if np.dtype(dtype) == np.float32:
            return b.fmul(b.uitofp(b.lshr(z, c(40)), F32), ir.Constant(F32, 2.0 ** -24))
        return b.fmul(b.uitofp(b.lshr(z, c(11)), F64), ir.Constant(F64, 2.0 ** -53))

    # -- conversions ------------------------------------------------------------------------
    def cast(self, v: ir.Value, src: np.dtype, dst: np.dtype) -> ir.Value:
        """numpy astype semantics (float -> int saturates instead of being undefined)."""
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


def _build_ipow(fn: ir.Function, t: ir.IntType) -> None:
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
