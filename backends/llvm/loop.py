"""A Loop kernel as native code: one function that counts the steps and, at each, fills
the body kernels' pointer tables (a sequence's slice at step t, a carry's half of its
double buffer) and calls their functions, compiled once in the same module."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from llvmlite import ir

from graphc import sizes as graphc_sizes
from graphc.backends.llvm.loop_vector import LoopTail
from graphc.backends.llvm.loops import I64, counted_loop
from graphc.backends.llvm.scalar import I8, I32
from graphc.backends.llvm.size_values import (as_value, current_sizes,
                                              runtime_descriptor_pointer)
from graphc.schedule import ir as kir
from graphc.schedule.symbolic import has_symbols

if TYPE_CHECKING:
    from graphc.backends.llvm.codegen import ModuleWriter

PTR = ir.PointerType()


def body_functions(writer: ModuleWriter, body: kir.Schedule,
                   packed_b: dict[int, ir.GlobalVariable]) -> tuple[ModuleWriter, list]:
    """The body's kernel functions, written into the loop's module (internal: another unit
    may define the same signature's function), one per distinct kernel; the GEMMs in
    `packed_b` (by body kernel) read their B from those prepacked panels."""
    from graphc.backends.llvm.codegen import ModuleWriter
    sub = ModuleWriter(body)
    # Named under the loop's function: the JIT links every unit into one engine, where a
    # kernel function of the same name may be another unit's (external) definition. A GEMM
    # reading prepacked panels is a function of its own (its code names its panels).
    sub.plan = dataclasses.replace(sub.plan, functions=tuple(
        f"{writer.function_name}.{name}" + (f".packed{j}" if j in packed_b else "")
        for j, name in enumerate(sub.plan.functions)))
    sub.module = writer.module
    sub.packed_b = packed_b
    functions = []
    for j, kernel in enumerate(body.kernels):
        fn = writer.module.globals.get(sub.plan.functions[j])
        if fn is None:
            fn = sub.kernel_function(j, kernel)
            fn.linkage = "internal"
        functions.append(fn)
    return sub, functions


def prepack(writer: ModuleWriter, b: ir.IRBuilder, bases: dict,
            k: kir.Loop) -> dict[int, ir.GlobalVariable]:
    """Packs, before the loop, the B operand of each body GEMM whose B is loop-invariant (an
    RNN's recurrent weights): packed once per loop instead of once per step, where it cost
    as much as a fifth of the step's GEMM. Returns the panels by body kernel."""
    from graphc.backends.llvm.gemm import prepack_b, prepackable
    outer = {v.inner: v.outer for v in k.invariants}
    packed: dict[int, ir.GlobalVariable] = {}
    for j, kernel in enumerate(k.body.kernels):
        if isinstance(kernel, kir.Gemm) and (bid := prepackable(kernel)) in outer:
            packed[j] = prepack_b(writer.module, b, kernel, bases[outer[bid]],
                                  f"{writer.function_name}.b{j}")
    return packed


def body_vectors(b: ir.IRBuilder, k: kir.Loop) -> dict[int, ir.Value]:
    """Each body kernel's vector of sizes, by body kernel: a pointer into the loop's own
    vector (loop_vector.LoopTail), where the body's sizes are symbols; else none."""
    sizes = current_sizes()
    if sizes is None or not has_symbols(k.body):  # (else the sizes are an outer kernel's)
        return {}
    own = len(sizes.symbols)
    # (the body's GEMMs packed or not as their code is written: at the representative)
    representative = graphc_sizes.current_representative()
    if representative is None:
        raise TypeError("generated code: a loop with symbolic sizes and no representative "
                        "binding")
    tail = LoopTail.of(k, own, representative)
    start = runtime_descriptor_pointer(b)  # (the word after the loop's own symbols)
    return {j: b.gep(start, [ir.Constant(I64, at - own)], source_etype=I64)
            for j, at in tail.at.items()}


def emit_loop(writer: ModuleWriter, b: ir.IRBuilder, fn: ir.Function, bases: dict,
              k: kir.Loop, index: int) -> None:
    body = k.body
    sub, functions = body_functions(writer, body, prepack(writer, b, bases, k))

    def byte(base: ir.Value, offset: ir.Value | int) -> ir.Value:
        at = ir.Constant(I64, offset) if isinstance(offset, int) else offset
        return b.gep(base, [at], source_etype=I8)

    # Pointers that hold for every step: temporaries in the loop's arena (their offsets,
    # where the body's sizes are symbols, computed from the loop's vector at its entry),
    # invariants, the body kernels' vectors (in the loop's: loop_vector.py).
    fixed: dict[int, ir.Value] = {}
    offsets = body.plan.offsets if body.plan is not None else {}
    for bid, offset in offsets.items():
        fixed[bid] = byte(bases[k.arena], as_value(b, offset))
    for v in k.invariants:
        fixed[v.inner] = bases[v.outer]
    vectors = body_vectors(b, k)
    widest = max((len(bids) + (j in vectors) for j, bids in enumerate(sub.plan.buffers)),
                 default=1)
    table = b.alloca(PTR, ir.Constant(I64, max(1, widest)), name="body.table")
    failed = fn.append_basic_block("loop.failed")
    last = ir.Constant(I64, k.length - 1)
    with counted_loop(b, k.length, "step") as step:
        t = b.sub(last, step) if k.reverse else step
        # the last step writes `final`: steps an even number of steps before it too
        writes_final = b.icmp_unsigned("==", b.and_(b.sub(last, step), ir.Constant(I64, 1)),
                                       ir.Constant(I64, 0))
        first = b.icmp_unsigned("==", step, ir.Constant(I64, 0))
        at = dict(fixed)
        for c in k.carries:
            final, spare = bases[c.final], bases[c.spare]
            at[c.out] = b.select(writes_final, final, spare)
            at[c.inside] = b.select(first, bases[c.init], b.select(writes_final, spare, final))
        for s in k.xs + k.ys:
            size = as_value(b, body.buffers[s.inner].nbytes)
            at[s.inner] = byte(bases[s.outer], b.mul(t, size))
        for j, kernel in enumerate(body.kernels):
            for pos, bid in enumerate(sub.plan.buffers[j]):
                b.store(at[bid], b.gep(table, [ir.Constant(I64, pos)], source_etype=PTR))
            if j in vectors:  # (after its buffers: size_values.KernelSizes reads it there)
                pos = len(sub.plan.buffers[j])
                b.store(vectors[j], b.gep(table, [ir.Constant(I64, pos)], source_etype=PTR))
            status = b.call(functions[j], [table])
            if kernel.can_fail:
                ok = fn.append_basic_block(f"body{j}.ok")
                b.cbranch(b.icmp_signed("!=", status, ir.Constant(I32, 0)), failed, ok)
                b.position_at_end(ok)
    done = b.block
    b.position_at_end(failed)
    b.ret(ir.Constant(I32, 1))
    b.position_at_end(done)
