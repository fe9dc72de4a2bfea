"""Splats are written in a few characters (backends/llvm/vector_consts.py): writing IR is
part of a cold compile, and llvmlite spells a vector constant lane by lane."""
from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import ir

from graphc.backends.llvm import jit
from graphc.backends.llvm.vector_consts import splat


def test_a_splat_is_short_and_fills_every_lane():
    f32 = ir.FloatType()
    vt = ir.VectorType(f32, 16)
    module = ir.Module("splat")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [f32, ir.PointerType()]),
                     "splat_test")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.store(splat(b, fn.args[0], vt), fn.args[1], align=4)
    b.ret_void()
    body = str(fn)
    assert "undef" not in body and body.count("i32 0") == 1  # (16 lanes of each before)
    assert len(body) < 400, body
    address, engine, _ = jit.compile_parts([str(module)], "splat_test")
    out = np.zeros(16, np.float32)
    ctypes.CFUNCTYPE(None, ctypes.c_float, ctypes.c_void_p)(address)(2.5, out.ctypes.data)
    np.testing.assert_array_equal(out, np.full(16, 2.5, np.float32))
    del engine  # (kept alive until the call is done)
