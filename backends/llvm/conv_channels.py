"""Direct convolutions with the output's channels as vectors (a kir.Gemm the scheduler marked
`direct`, taken here instead of conv_direct.py where its rows of output pixels leave lanes
empty and m fills them): out[o, pixels] = sum_p w[o, p] * image[p, pixels].

conv_direct.py puts a row's output pixels in the lanes; W6's 32-channel convolutions have
rows of 14, so an eighth of every vector's lanes compute nothing (rows of 28: two vectors,
the same). Here a tile is up to MAX_PIXELS output pixels of one row by a vector of output
channels: the weights are transposed once a call into [depth][channels] scratch (zeros
past m); for each input channel, every tap's weight vector is loaded, then each image
element the tile's taps read is broadcast once from where it lies (a constant displacement
from the row's pointer) into the multiply-adds that use it (up to one a tap: a kernel row's
taps overlap). At the tile's end its vectors (a pixel's channels) are transposed into rows
of pixels (transpose_rounds.py) and stored with masks, alpha and += C applied there.
Threads share out the rows of output pixels."""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from graphc.backends.llvm import conv_direct, parallel
from graphc.backends.llvm.loops import counted_loop
from graphc.backends.llvm.scalar import F32, F64
from graphc.backends.llvm.size_values import as_value
from graphc.backends.llvm.tables import constant_table
from graphc.backends.llvm.threads import num_threads, openmp_available
from graphc.backends.llvm.transpose_rounds import emit_transpose
from graphc.backends.llvm.vector_consts import splat
from graphc import sizes
from graphc.schedule import ir as kir

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

MAX_ACCS = 28  # a tile's accumulators at most
# Vectors of output channels a tile: with two, each broadcast served two multiply-adds, and
# LLVM ordered them by vector, holding 14 broadcasts and spilling them (seen in the code:
# 28 accumulators, two vectors of weights); every tap's weights held (below) leave no room
# for two either.
MAX_MV = 1
# Pixels a tile: one transpose at its end (16 float32 lanes). With 28 (a row of 28 in one
# tile), the accumulators and the broadcasts LLVM shared between taps spilled: W6's 16
# channels 1.33 ms against 0.65.
MAX_PIXELS = 16
# The least depth taken: a tile's transposes cost the same whatever the depth. W6, two
# threads: its 16-channel convolutions (depth 144) 0.75 -> 0.64-0.69 ms, its first (1
# channel, depth 9) 0.11 -> 0.19 ms.
MIN_DEPTH = 128
MIN_LANE_USE = 0.75


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _lanes(dtype) -> int:
    return 16 if np.dtype(dtype) == np.float32 else 8


def suitable(k: kir.Gemm) -> bool:
    """Whether direct convolution k (kir.Gemm.direct) is computed here: one batch item, a
    depth of at least MIN_DEPTH, and more of the vectors' lanes filled by its output
    channels than by its rows of pixels (conv_direct.py's layout)."""
    if not k.direct or any(d != 1 for d in k.batch):
        return False
    g = conv_direct._Geometry(k)
    vl = _lanes(k.dtype)
    use = g.m / (vl * -(-g.m // vl))
    rows_use = g.group * g.row / (g.vectors * vl)
    return g.depth >= MIN_DEPTH and use >= MIN_LANE_USE and use > rows_use


class _Tiles:
    """The tiling: MV vectors of channels by P pixels, over `blocks` blocks of channels and
    the row's tiles (`whole` of P pixels, then one of `rest`)."""

    def __init__(self, g: conv_direct._Geometry, vl: int) -> None:
        mvt = -(-g.m // vl)
        self.mv = min(mvt, MAX_MV)
        self.blocks = -(-mvt // self.mv)
        self.mp = self.blocks * self.mv * vl  # the transposed weights' row (zeros past m)
        self.p = min(g.row, MAX_PIXELS, vl, MAX_ACCS // self.mv)
        self.whole, self.rest = divmod(g.row, self.p)


def emit(module: ir.Module, b: ir.IRBuilder, bases: dict, k: kir.Gemm, name: str) -> None:
    """k's code where the builder stands: the weights transposed, then its rows of output
    pixels on a team of threads (or alone)."""
    g = conv_direct._Geometry(k)
    et = F32 if np.dtype(k.dtype) == np.float32 else F64
    vl = _lanes(k.dtype)
    tiles = _Tiles(g, vl)
    wt_t = ir.ArrayType(et, g.depth * tiles.mp)
    wt = ir.GlobalVariable(module, wt_t, f"{name}_channels_w")
    wt.linkage = "internal"
    wt.initializer = ir.Constant(wt_t, None)
    wt.align = 64
    a0, b0, o0 = (b.gep(bases[acc.buffer], [_c(off)], source_etype=et)
                  for acc, off in zip((k.a, k.b, k.out), g.offsets))
    entry = b.function.entry_basic_block
    with b.goto_block(entry):
        b.position_at_start(entry)
        args = b.alloca(PTR, size=5)
    for i, value in enumerate((wt, b0, o0)):
        b.store(value, b.gep(args, [_c(i)], source_etype=PTR))
    # (call-time values: the rows of output pixels, the output's channel stride)
    for i, d in enumerate((g.rows, g.o_s0)):
        b.store(b.inttoptr(as_value(b, d), PTR), b.gep(args, [_c(3 + i)], source_etype=PTR))
    # the weights, [depth][mp]: row d holds tap d's weight for every output channel
    w_base = b.load(args, typ=PTR)  # (the global as a plain pointer)
    with counted_loop(b, _c(g.depth), "wd", unroll=False) as d:
        row = b.gep(w_base, [b.mul(d, _c(tiles.mp))], source_etype=et)
        src = b.gep(a0, [b.mul(d, _c(g.a_s1))], source_etype=et)
        with counted_loop(b, _c(g.m), "wo", unroll=False) as o:
            b.store(b.load(b.gep(src, [b.mul(o, _c(g.a_s0))], source_etype=et), typ=et),
                    b.gep(row, [o], source_etype=et))
    part = _part(module, g, tiles, et, f"{name}_channels")
    work = sizes.hint(g.rows)
    macs = g.m * g.depth * g.row * work
    threads = min(num_threads(), work)
    if threads > 1 and macs >= conv_direct.PARALLEL_MIN_MACS and openmp_available():
        parallel.emit_team_call(module, b, args, part, threads, f"{name}_channels")
    else:
        b.call(part, [args, _c(0), _c(1)])


def _part(module: ir.Module, g: conv_direct._Geometry, tiles: _Tiles, et: ir.Type,
          name: str) -> ir.Function:
    """part(args, t, nt): thread t's share of the rows of output pixels."""
    vl = _lanes("float32" if et == F32 else "float64")
    vt = ir.VectorType(et, vl)
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I64, I64]), f"{name}_part")
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    args, t, nt = fn.args
    wt, b0, o0 = (b.load(b.gep(args, [_c(i)], source_etype=PTR), typ=PTR) for i in range(3))
    rows, o_s0 = (b.ptrtoint(b.load(b.gep(args, [_c(3 + i)], source_etype=PTR), typ=PTR), I64)
                  for i in range(2))
    accs = b.alloca(vt, size=tiles.p * tiles.mv)  # (promoted to registers)
    block = b.alloca(vt, size=vl)  # (a tile's vectors, transposed in place)
    table = constant_table(module, f"{name}_outer", g.outer) if len(g.outer) > 1 else None
    fma = module.globals.get(f"llvm.fma.v{vl}{'f32' if et == F32 else 'f64'}") or \
        ir.Function(module, ir.FunctionType(vt, [vt] * 3),
                    f"llvm.fma.v{vl}{'f32' if et == F32 else 'f64'}")
    lo = b.sdiv(b.mul(t, rows), nt)
    hi = b.sdiv(b.mul(b.add(t, _c(1)), rows), nt)
    with counted_loop(b, b.sub(hi, lo), "w", unroll=False) as w:
        row = b.add(lo, w)
        at = _split(b, row, [d for d, _ in g.row_axes], [s for _, s in g.row_axes])
        b_row = b.gep(b0, [at], source_etype=et)
        o_row = b.gep(o0, [b.mul(row, _c(g.row))], source_etype=et)
        with counted_loop(b, _c(tiles.blocks), "mb", unroll=False) as mb:
            ch0 = b.mul(mb, _c(tiles.mv * vl))  # the block's first output channel

            def tile(x0: ir.Value, pixels: int) -> None:
                _tile(b, g, tiles, et, vt, fma, accs, block, table, wt, b_row,
                      o_row, o_s0, ch0, x0, pixels)
            if tiles.whole:
                with counted_loop(b, _c(tiles.whole), "x", unroll=False) as x:
                    tile(b.mul(x, _c(tiles.p)), tiles.p)
            if tiles.rest:
                tile(_c(tiles.whole * tiles.p), tiles.rest)
    b.ret_void()
    return fn


def _tile(b: ir.IRBuilder, g: conv_direct._Geometry, tiles: _Tiles, et: ir.Type, vt: ir.VectorType,
          fma: ir.Function, accs: ir.Value, block: ir.Value, table, wt: ir.Value,
          b_row: ir.Value, o_row: ir.Value, o_s0: ir.Value, ch0: ir.Value, x0: ir.Value,
          pixels: int) -> None:
    """Output pixels x0 .. x0 + pixels of the row, channels ch0 .. ch0 + MV vectors."""
    vl, mv, taps = vt.count, tiles.mv, len(g.taps)
    es = 4 if et == F32 else 8
    for q in range(pixels * mv):
        b.store(ir.Constant(vt, None), b.gep(accs, [_c(q)], source_etype=vt))
    start = b.gep(b_row, [b.mul(x0, _c(g.step))], source_etype=et)
    w_block = b.gep(wt, [ch0], source_etype=et)

    # each image element once: the multiply-adds that read it, every tap's weights held
    # (the taps of a kernel row read overlapping elements: element-major order keeps one
    # broadcast live, where LLVM's own sharing of the loads kept ~20 and spilled)
    reads: dict[int, list[tuple[int, int]]] = {}
    for ti, tap in enumerate(g.taps):
        for p in range(pixels):
            reads.setdefault(tap + p * g.step, []).append((ti, p))

    def depth(c: ir.Value, offset: ir.Value) -> None:
        """The taps of outer index c (its offset in B): their multiply-adds."""
        acc = [b.load(b.gep(accs, [_c(q)], source_etype=vt), typ=vt)
               for q in range(pixels * mv)]
        base = b.gep(start, [offset], source_etype=et)
        w_rows = [b.gep(w_block, [b.mul(b.add(b.mul(c, _c(taps)), _c(ti)), _c(tiles.mp))],
                        source_etype=et) for ti in range(taps)]
        wv = [[b.load(b.gep(w_row, [_c(v * vl)], source_etype=et), typ=vt, align=64)
               for v in range(mv)] for w_row in w_rows]
        for at in sorted(reads):
            x = b.load(b.gep(base, [_c(at)], source_etype=et), typ=et)
            xv = splat(b, x, vt)
            for ti, p in reads[at]:
                for v in range(mv):
                    acc[p * mv + v] = b.call(fma, [wv[ti][v], xv, acc[p * mv + v]])
        for q, value in enumerate(acc):
            b.store(value, b.gep(accs, [_c(q)], source_etype=vt))
    if table is None:
        depth(_c(0), _c(g.outer[0]))
    else:
        with counted_loop(b, _c(len(g.outer)), "c", unroll=False) as c:
            depth(c, b.load(b.gep(table, [c], source_etype=I64), typ=I64))
    # each vector of channels, vl pixels at a time: transposed into rows of pixels
    none = ir.Constant(ir.VectorType(I1, vl), None)
    alpha = ir.Constant(et, g.alpha)
    for v in range(mv):
        for p0 in range(0, pixels, vl):
            n = min(vl, pixels - p0)
            for p in range(vl):
                value = b.load(b.gep(accs, [_c((p0 + p) * mv + v)], source_etype=vt),
                               typ=vt) if p < n else ir.Constant(vt, None)
                b.store(value, b.gep(block, [_c(p)], source_etype=vt))
            mask = ir.Constant(ir.VectorType(I1, vl), [int(i < n) for i in range(vl)])
            first = b.add(ch0, _c(v * vl))

            def read(i: ir.Value) -> ir.Value:
                return b.load(b.gep(block, [i], source_etype=vt), typ=vt)

            def write(i: ir.Value, row: ir.Value, first=first, p0=p0, mask=mask) -> None:
                ch = b.add(first, i)  # (channels past m: nothing stored)
                keep = b.select(b.icmp_signed("<", ch, _c(g.m)), mask, none)
                out = b.gep(o_row, [b.add(b.mul(ch, o_s0), b.add(x0, _c(p0)))],
                            source_etype=et)
                if g.alpha != 1.0:
                    row = b.fmul(row, splat(b, alpha, vt))
                if g.accumulate:
                    row = b.fadd(row, _masked_load(b, out, keep, vt, es))
                _masked_store(b, row, out, keep, vt, es)
            emit_transpose(b, vt, block, read, write)


def _split(b: ir.IRBuilder, index: ir.Value, dims: list, strides: list) -> ir.Value:
    """The offset of `index` decomposed over `dims` (row-major; the first never read: it
    may be a call-time image count) with `strides`."""
    total: ir.Value = _c(0)
    x = index
    for axis in reversed(range(len(dims))):
        digit = x if axis == 0 else b.urem(x, _c(int(dims[axis])))
        if axis:
            x = b.udiv(x, _c(int(dims[axis])))
        total = b.add(total, b.mul(digit, _c(int(strides[axis]))))
    return total


def _kind(vt: ir.VectorType) -> str:
    return f"v{vt.count}{'f32' if vt.element == F32 else 'f64'}"


def _masked_load(b: ir.IRBuilder, at: ir.Value, mask: ir.Value, vt: ir.VectorType,
                 es: int) -> ir.Value:
    module = b.module
    name = f"llvm.masked.load.{_kind(vt)}.p0"
    fn = module.globals.get(name) or ir.Function(module, ir.FunctionType(
        vt, [PTR, I32, ir.VectorType(I1, vt.count), vt]), name)
    return b.call(fn, [at, ir.Constant(I32, es), mask, ir.Constant(vt, None)])


def _masked_store(b: ir.IRBuilder, value: ir.Value, at: ir.Value, mask: ir.Value,
                  vt: ir.VectorType, es: int) -> None:
    module = b.module
    name = f"llvm.masked.store.{_kind(vt)}.p0"
    fn = module.globals.get(name) or ir.Function(module, ir.FunctionType(
        VOID, [vt, PTR, I32, ir.VectorType(I1, vt.count)]), name)
    b.call(fn, [value, at, ir.Constant(I32, es), mask])

