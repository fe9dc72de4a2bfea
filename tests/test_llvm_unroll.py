"""Which loops LLVM may unroll: a loop marked unroll=False stays a loop after O3, and a
window nest keeps its outer loops rolled only where its innermost loop is a vector or
longer (compile time), while short-innermost nests (col2im) still unroll (run time)."""
from __future__ import annotations

import re

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite import ir

import graphc as gc
from graphc.backends.llvm import jit
from graphc.backends.llvm.loops import counted_loop


def _sum_of_four(unroll: bool) -> str:
    """The optimized IR of a function that sums a[0..4) in a counted loop."""
    module = ir.Module(name="m")
    fn = ir.Function(module, ir.FunctionType(ir.FloatType(), [ir.PointerType()]), "f")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    acc = b.alloca(ir.FloatType())
    b.store(ir.Constant(ir.FloatType(), 0.0), acc)
    with counted_loop(b, 4, "i", unroll=unroll) as i:
        v = b.load(b.gep(fn.args[0], [i], source_etype=ir.FloatType()), typ=ir.FloatType())
        b.store(b.fadd(b.load(acc, typ=ir.FloatType()), v), acc)
    b.ret(b.load(acc, typ=ir.FloatType()))
    jit._init()
    parsed = llvm.parse_assembly(str(module))
    parsed.verify()
    jit.optimize_module(parsed)
    return str(parsed)


def test_a_loop_marked_not_to_unroll_stays_a_loop():
    assert "phi" not in _sum_of_four(unroll=True)  # 4 steps: unrolled in full at O3
    assert "phi" in _sum_of_four(unroll=False)


def _window_source(shape: tuple[int, ...]) -> tuple[str, np.ndarray, np.ndarray]:
    x = gc.placeholder(shape, name="x")
    f = gc.function([x], gc.transpose(x, (1, 0, 2)) * 2.0, backend="llvm")
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    return f.source, f(data), np.transpose(data, (1, 0, 2)) * 2


# (rows of 16 or more are explicit vector loops instead: vector_loop.py)
@pytest.mark.parametrize("inner, rolled", [(12, True), (4, False)])
def test_window_nest_outer_loops_rolled_only_behind_a_long_innermost_loop(inner, rolled):
    source, got, want = _window_source((5, 6, inner))
    np.testing.assert_array_equal(got, want)
    marked = re.findall(r'br label %"i(\d)\.head", !llvm\.loop', source)
    assert ("llvm.loop.unroll.disable" in source) == rolled
    if rolled:  # the outer two loops, never the innermost one
        assert sorted(set(marked)) == ["0", "1"]
