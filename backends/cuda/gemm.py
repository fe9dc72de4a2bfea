"""The GEMM kernel: out = alpha * a @ b (or out += ...), batched, any strides, any sizes.
Shared-memory tiled, warp-tiled and register-blocked: a block computes a BM x BN tile of
out, stepping through k in slices of BK staged in two shared buffers (the next slice is
loaded from global memory into registers while the current one is multiplied, so one
barrier a slice suffices); its 8 warps each own a WM x WN part of the tile, and each lane a
TM x TN register block inside its warp's part (rows lm + 4i, columns ln + 8j: a warp reads
few distinct shared words per step, broadcast to its lanes). The warp writes its part of out
through shared staging rows of its own (__syncwarp between), 32 lanes along a row.
A GEMM of few tiles and a long k (a convolution's weight gradient: k is the batch and pixel
axis) splits k over blocks instead (split-K): each block sums its slice of k for its tile
and adds it to out atomically, out zeroed first by a launch of its own unless the GEMM
accumulates into it anyway. Such sums may differ in the last bits from run to run (the
order of the adds is the hardware's), as scatter-add's do."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from graphc.schedule import ir as kir
from graphc.backends.cuda.scalar import constant, ctype
from graphc.backends.cuda.source import BLOCK, Launch, cdiv, decompose, size

if TYPE_CHECKING:
    from graphc.backends.cuda.source import Writer

MAX_Y = MAX_Z = 65535  # the grid's y and z limits: beyond them the kernel loops
LANES_M, LANES_N = 4, 8  # a warp's lanes over its part of the tile
PAD = 4  # words after each shared row, so that stores along k meet no bank conflicts
STAGE_PAD = 8  # likewise for the staging rows of out (the 4 rows' lanes in other banks)
FILL = 128  # blocks that fill a GPU (132 multiprocessors on an H100/H200, roughly)
INT_LIMIT = 2 ** 31  # offsets below it use 32-bit index arithmetic
# Each block of a split-K GEMM sums at least this much of k (eight 16-deep slices): shallower
# parts gain less than the zeroing launch and the atomic adds cost.
SPLIT_K_MIN = 128


@dataclass(frozen=True)
class Tiling:
    """A block's tile (bm x bn, k slices of bk) and a lane's register block (tm x tn)."""

    bm: int
    bn: int
    bk: int
    tm: int
    tn: int

    @property
    def warps_m(self) -> int:
        return self.bm // (LANES_M * self.tm)

    @property
    def warps_n(self) -> int:
        return self.bn // (LANES_N * self.tn)


LARGE = Tiling(128, 128, 8, 8, 8)  # 4-byte types on a GEMM of many tiles: 64 FMAs per 16 loads
SMALL = Tiling(64, 64, 16, 4, 4)  # 8-byte types, and GEMMs too small to fill a GPU

for _t in (LARGE, SMALL):
    assert _t.warps_m * _t.warps_n * 32 == BLOCK, _t
    assert _t.bm * _t.bk % BLOCK == 0 and _t.bn * _t.bk % BLOCK == 0, _t


def _matrix_extent(k: kir.Gemm) -> int:
    """The largest distance from a matrix's first element to another of it (one batch
    element of a, b or out), with a tile's margin."""
    nb = len(k.batch)
    dims = ((k.a, k.m, k.k), (k.b, k.k, k.n), (k.out, k.m, k.n))
    return max(rows * abs(acc.strides[nb]) + cols * abs(acc.strides[nb + 1])
               for acc, rows, cols in dims) + 2 * LARGE.bm


def tiling(k: kir.Gemm) -> Tiling:
    """LARGE where its registers fit (4-byte elements, 32-bit offsets within a matrix), its
    tiles are more than half used along m and n, k takes more than one slice and the
    tiles still fill a GPU. (With a single slice, ptxas schedules the first slice's loads
    across the whole register block and spills about 200 B: batched matrix-vector
    products with k <= 8 did.)"""
    blocks = size(k.batch) * cdiv(k.m, LARGE.bm) * cdiv(k.n, LARGE.bn)
    fits = np.dtype(k.dtype).itemsize <= 4 and _matrix_extent(k) < INT_LIMIT
    worth = k.m > SMALL.bm and k.n > SMALL.bn and k.k > LARGE.bk
    return LARGE if fits and worth and blocks >= FILL else SMALL


def k_splits(k: kir.Gemm, g: Tiling, blocks: int) -> tuple[int, int]:
    """(splits, depth): how many blocks share each tile's k, and the depth of k each sums (a
    multiple of two slices, so that every block's first slice goes to shared buffer 0).
    (1, k) where the tiles alone fill half a GPU, where a slice would be shallower than
    SPLIT_K_MIN, and for types without a native atomic add."""
    dtype = np.dtype(k.dtype)
    if dtype.kind != "f" or dtype.itemsize < 4 or 2 * blocks > FILL:
        return 1, k.k
    want = min(cdiv(FILL, blocks), k.k // SPLIT_K_MIN, MAX_Z // max(size(k.batch), 1))
    if want < 2:
        return 1, k.k
    depth = cdiv(cdiv(k.k, want), 2 * g.bk) * 2 * g.bk
    return cdiv(k.k, depth), depth


def emit_gemm(w: "Writer", index: int, k: kir.Gemm, guard: bool) -> tuple[list[str],
                                                                         list[Launch]]:
    from graphc.backends.cuda.kernels import _head
    from graphc.backends.cuda.source import kernel_name
    if k.b_split is not None:  # (CUDA_POLICY never asks for one: see schedule/implicit.py)
        raise NotImplementedError("cuda: an implicit GEMM (a B read through sub-axes); "
                                  "schedule with implicit_gemm=False")
    batch = size(k.batch)
    if batch == 0 or k.m == 0 or k.n == 0:
        return [], []
    name = kernel_name(index, k)
    t = ctype(k.dtype)
    zero = constant(k.dtype, 0)
    g = tiling(k)
    nb = len(k.batch)
    row_tiles = cdiv(k.m, g.bm)
    simple = row_tiles <= MAX_Y and batch <= MAX_Z
    splits, depth = k_splits(k, g, batch * row_tiles * cdiv(k.n, g.bn)) if simple else (1, k.k)
    sa, sb, so = k.a.strides, k.b.strides, k.out.strides
    zs = [f"z{d}" for d in range(nb)]
    per_a, per_b = g.bm * g.bk // BLOCK, g.bn * g.bk // BLOCK
    # 32-bit index arithmetic where offsets fit (fewer registers in the inner loop): within
    # a matrix (ix), and for the matrices' first elements (ox)
    largest = max(w.schedule.buffers[a.buffer].size for a in (k.a, k.b, k.out))
    ix, sx = ("int", "") if _matrix_extent(k) < INT_LIMIT else ("long long", "LL")
    ox, so_ = ("int", "") if largest + 2 * LARGE.bm < INT_LIMIT else ("long long", "LL")
    # this block's part of k: all of it, or (split-K) the blockIdx.z % splits'th
    k_begin, k_end = ("0", f"{k.k}{sx}") if splits == 1 else ("k_begin", "k_end")

    def base(access: kir.Access) -> str:
        terms = [f"{s}{so_} * {z}" for s, z in zip(access.strides[:nb], zs) if s]
        return " + ".join([f"{access.offset}{so_}"] + terms)

    # Consecutive threads load along whichever axis is contiguous in memory (coalesced):
    # k for a row-major a, m for a transposed one; n for a row-major b, k for a transposed.
    a_along_m = sa[nb] == 1 and sa[nb + 1] != 1
    b_along_k = sb[nb] == 1 and sb[nb + 1] != 1
    a_pos = (f"l % {g.bm}", f"l / {g.bm}") if a_along_m else (f"l / {g.bk}", f"l % {g.bk}")
    b_pos = (f"l % {g.bk}", f"l / {g.bk}") if b_along_k else (f"l / {g.bn}", f"l % {g.bn}")

    def load(lines: list[str], k0: str, indent: str) -> None:
        """The slice at k0 from global memory into the registers ra, rb (zeros outside)."""
        lines += [f"{indent}#pragma unroll", f"{indent}for (int p = 0; p < {per_a}; ++p) {{",
                  f"{indent}  const int l = tid + p * {BLOCK}, r = {a_pos[0]}, c = {a_pos[1]};",
                  f"{indent}  const {ix} gr = row0 + r, gk = {k0} + c;",
                  f"{indent}  ra[p] = (gr < {k.m}{sx} && gk < {k_end}) ? "
                  f"{w.ref(k.a.buffer, f'off_a + gr * {sa[nb]}{sx} + gk * {sa[nb + 1]}{sx}')} : "
                  f"{zero};", f"{indent}}}",
                  f"{indent}#pragma unroll", f"{indent}for (int p = 0; p < {per_b}; ++p) {{",
                  f"{indent}  const int l = tid + p * {BLOCK}, r = {b_pos[0]}, c = {b_pos[1]};",
                  f"{indent}  const {ix} gk = {k0} + r, gc = col0 + c;",
                  f"{indent}  rb[p] = (gk < {k_end} && gc < {k.n}{sx}) ? "
                  f"{w.ref(k.b.buffer, f'off_b + gk * {sb[nb]}{sx} + gc * {sb[nb + 1]}{sx}')} : "
                  f"{zero};", f"{indent}}}"]

    def stage(lines: list[str], buf: str, indent: str) -> None:
        """The registers ra, rb into shared buffer `buf` (As is k-major: a column of the
        a tile per k, as Bs holds a row of the b tile per k)."""
        lines += [f"{indent}#pragma unroll", f"{indent}for (int p = 0; p < {per_a}; ++p) {{",
                  f"{indent}  const int l = tid + p * {BLOCK};",
                  f"{indent}  GC_SHARED(As[{buf}][{a_pos[1]}][{a_pos[0]}]) = ra[p];",
                  f"{indent}}}",
                  f"{indent}#pragma unroll", f"{indent}for (int p = 0; p < {per_b}; ++p) {{",
                  f"{indent}  const int l = tid + p * {BLOCK};",
                  f"{indent}  GC_SHARED(Bs[{buf}][{b_pos[0]}][{b_pos[1]}]) = rb[p];",
                  f"{indent}}}"]

    # (256 threads alone let ptxas aim at 3 blocks a multiprocessor, 80 registers, and
    # spill the register block; 2 blocks leave it 128)
    lines = _head(w, k, name, guard, min_blocks=2)
    lines += [f"  __shared__ {t} As[2][{g.bk}][{g.bm + PAD}];",
              f"  __shared__ {t} Bs[2][{g.bk}][{g.bn + PAD}];",
              f"  __shared__ {t} Cs[{BLOCK // 32}][{LANES_M}][{LANES_N * g.tn + STAGE_PAD}];",
              "  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;",
              f"  const int tr = warp / {g.warps_n} * {LANES_M * g.tm} + lane / {LANES_N};",
              f"  const int tc = warp % {g.warps_n} * {LANES_N * g.tn} + lane % {LANES_N};",
              f"  const {ix} col0 = ({ix})blockIdx.x * {g.bn};"]
    if simple and splits > 1:  # blockIdx.z: a batch element and a part of k
        lines += ["  {", f"    const {ox} bz = blockIdx.z / {splits}; const {ix} row0 = "
                  f"({ix})blockIdx.y * {g.bm};",
                  f"    const {ix} k_begin = ({ix})(blockIdx.z % {splits}) * {depth}, "
                  f"k_end = k_begin + {depth} < {k.k}{sx} ? k_begin + {depth} : {k.k}{sx};"]
    elif simple:  # a row tile per blockIdx.y, a batch element per blockIdx.z
        lines += ["  {", f"    const {ox} bz = blockIdx.z; const {ix} row0 = ({ix})blockIdx.y * "
                  f"{g.bm};"]
    else:  # z counts (batch, row tile) pairs, looping past the grid's limits
        lines += [f"  for (long long t = blockIdx.z; t < {batch * row_tiles}LL; "
                  "t += gridDim.z) {",
                  f"    const {ox} bz = t / {row_tiles}LL, row0 = ({ix})(t % {row_tiles}LL) * "
                  f"{g.bm};"]
    decompose("bz", k.batch, zs, lines, "    ")
    lines += [f"    const {ox} off_a = {base(k.a)}, off_b = {base(k.b)}, "
              f"off_o = {base(k.out)};",
              f"    {t} acc[{g.tm}][{g.tn}], ra[{per_a}], rb[{per_b}];",
              "    #pragma unroll",  # (whole: acc stays in registers)
              f"    for (int i = 0; i < {g.tm}; ++i)",
              "      #pragma unroll",
              f"      for (int j = 0; j < {g.tn}; ++j) acc[i][j] = {zero};"]
    load(lines, k_begin, "    ")
    stage(lines, "0", "    ")
    lines += ["    __syncthreads();",
              f"    for ({ix} k0 = {k_begin}; k0 < {k_end}; k0 += {g.bk}) {{",
              f"      const int cur = (int)(k0 / {g.bk} % 2);",
              f"      const bool more = k0 + {g.bk} < {k_end};",
              "      if (more) {  // the next slice's loads are in flight during the FMAs"]
    load(lines, f"k0 + {g.bk}", "        ")
    lines += ["      }",
              "      #pragma unroll",
              f"      for (int kk = 0; kk < {g.bk}; ++kk) {{",
              f"        {t} a[{g.tm}], b[{g.tn}];",
              "        #pragma unroll",
              f"        for (int i = 0; i < {g.tm}; ++i) "
              f"a[i] = GC_SHARED(As[cur][kk][tr + {LANES_M} * i]);",
              "        #pragma unroll",
              f"        for (int j = 0; j < {g.tn}; ++j) "
              f"b[j] = GC_SHARED(Bs[cur][kk][tc + {LANES_N} * j]);",
              "        #pragma unroll",
              f"        for (int i = 0; i < {g.tm}; ++i)",
              "          #pragma unroll",
              f"          for (int j = 0; j < {g.tn}; ++j) acc[i][j] += a[i] * b[j];",
              "      }",
              "      if (more) {  // into the other buffer, last read before the barrier above"]
    stage(lines, "cur ^ 1", "        ")
    wn = LANES_N * g.tn
    lines += ["      }",
              "      __syncthreads();  // (the next slice is staged; this one is free)",
              "    }",
              "    // out through the warp's staging rows: a row group of the register blocks",
              "    // at a time, written out by 32 lanes along each row (coalesced)",
              "    #pragma unroll",
              f"    for (int i = 0; i < {g.tm}; ++i) {{",
              "      #pragma unroll",
              f"      for (int j = 0; j < {g.tn}; ++j) "
              f"GC_SHARED(Cs[warp][lane / {LANES_N}][lane % {LANES_N} + {LANES_N} * j]) = "
              "acc[i][j];",
              "      __syncwarp();",
              "      #pragma unroll",
              f"      for (int e = lane; e < {LANES_M * wn}; e += 32) {{",
              f"        const {ix} r = row0 + tr - lane / {LANES_N} + {LANES_M} * i + e / {wn}, "
              f"c = col0 + tc - lane % {LANES_N} + e % {wn};",
              f"        if (r >= {k.m}{sx} || c >= {k.n}{sx}) continue;"]
    staged = f"GC_SHARED(Cs[warp][e / {wn}][e % {wn}])"
    value = staged if k.alpha == 1 else f"{constant(k.dtype, k.alpha)} * {staged}"
    at = w.ref(k.out.buffer, f"off_o + r * {so[nb]}{sx} + c * {so[nb + 1]}{sx}")
    store = (f"gc_atomic_add(&{at}, {value});" if splits > 1
             else f"{at} {'+=' if k.accumulate else '='} {value};")
    lines += [f"        {store}", "      }",
              "      __syncwarp();  // (the next row group overwrites the staging rows)",
              "    }", "  }", "}"]
    grid = (cdiv(k.n, g.bn), row_tiles, batch * splits) if simple else (
        cdiv(k.n, g.bn), 1, min(batch * row_tiles, MAX_Z))
    launch = Launch(name, index, grid, BLOCK, True, False)
    if splits == 1 or k.accumulate:
        return lines, [launch]
    zero, zero_launch = _zero_out(w, index, k, name + "_zero", guard)
    return zero + [""] + lines, [zero_launch, launch]


def _zero_out(w: "Writer", index: int, k: kir.Gemm, name: str,
              guard: bool) -> tuple[list[str], Launch]:
    """A kernel that zeroes the GEMM's out (its own launch: every block must see zeros before
    any adds)."""
    from graphc.backends.cuda.kernels import _grid_stride, _head, _names
    shape = k.batch + (k.m, k.n)
    loop, grid = _grid_stride(size(shape))
    idx = _names("i", len(shape))
    lines = _head(w, k, name, guard) + [f"  {loop} {{"]
    decompose("n", shape, idx, lines, "    ")
    lines += [f"    {w.at(k.out, idx)} = {constant(k.dtype, 0)};", "  }", "}"]
    return lines, Launch(name, index, grid, BLOCK, False, False)
