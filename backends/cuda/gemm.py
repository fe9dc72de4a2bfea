"""The GEMM kernel: out = alpha * a @ b (or out += ...), batched, any strides. Each block
computes a 64x64 tile of out, stepping through k in slices of 16 staged in shared memory;
each of its 256 threads keeps a 4x4 register block (rows ty + 16i, columns tx + 16j, so
that a warp reads shared memory without bank conflicts and writes out coalesced)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from graphc.schedule import ir as kir
from graphc.backends.cuda.scalar import constant, ctype
from graphc.backends.cuda.source import BLOCK, Launch, cdiv, decompose, size

if TYPE_CHECKING:
    from graphc.backends.cuda.source import Writer

TILE = 64  # rows and columns of out per block
SLICE = 16  # k per shared-memory stage
REG = 4  # rows and columns of out per thread (TILE = REG * 16 threads)
MAX_Y = MAX_Z = 65535  # the grid's y and z limits: beyond them the kernel loops


def emit_gemm(w: "Writer", index: int, k: kir.Gemm, guard: bool) -> tuple[list[str],
                                                                         list[Launch]]:
    from graphc.backends.cuda.kernels import _head
    from graphc.backends.cuda.source import kernel_name
    batch = size(k.batch)
    if batch == 0 or k.m == 0 or k.n == 0:
        return [], []
    name = kernel_name(index, k)
    t = ctype(k.dtype)
    nb = len(k.batch)
    row_tiles = cdiv(k.m, TILE)
    simple = row_tiles <= MAX_Y and batch <= MAX_Z
    sa, sb, so = k.a.strides, k.b.strides, k.out.strides
    zs = [f"z{d}" for d in range(nb)]

    def base(access: kir.Access) -> str:
        terms = [f"{s}LL * {z}" for s, z in zip(access.strides[:nb], zs) if s]
        return " + ".join([f"{access.offset}LL"] + terms)

    # (256 threads alone let ptxas aim at 3 blocks a multiprocessor, 80 registers, and
    # spill the register block; 2 blocks leave it 128)
    lines = _head(w, k, name, guard, min_blocks=2)
    lines += [f"  __shared__ {t} As[{SLICE}][{TILE}];",
              f"  __shared__ {t} Bs[{SLICE}][{TILE}];",
              "  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;",
              f"  const long long col0 = (long long)blockIdx.x * {TILE};"]
    if simple:  # a row tile per blockIdx.y, a batch element per blockIdx.z
        lines += ["  {", f"    const long long bz = blockIdx.z, row0 = (long long)blockIdx.y * "
                  f"{TILE};"]
    else:  # z counts (batch, row tile) pairs, looping past the grid's limits
        lines += [f"  for (long long t = blockIdx.z; t < {batch * row_tiles}LL; "
                  "t += gridDim.z) {",
                  f"    const long long bz = t / {row_tiles}LL, row0 = t % {row_tiles}LL * "
                  f"{TILE};"]
    decompose("bz", k.batch, zs, lines, "    ")
    lines += [f"    const long long off_a = {base(k.a)}, off_b = {base(k.b)}, "
              f"off_o = {base(k.out)};",
              f"    {t} acc[{REG}][{REG}];",
              "    #pragma unroll",  # (whole: acc stays in registers)
              f"    for (int i = 0; i < {REG}; ++i)",
              "      #pragma unroll",
              f"      for (int j = 0; j < {REG}; ++j) acc[i][j] = {constant(k.dtype, 0)};",
              f"    for (long long k0 = 0; k0 < {k.k}LL; k0 += {SLICE}) {{",
              f"      for (int l = tid; l < {TILE * SLICE}; l += {BLOCK}) {{",
              f"        const int r = l / {SLICE}, c = l % {SLICE};",
              "        const long long gr = row0 + r, gk = k0 + c;",
              f"        GC_SHARED(As[c][r]) = (gr < {k.m}LL && gk < {k.k}LL) ? "
              f"{w.ref(k.a.buffer, f'off_a + gr * {sa[nb]}LL + gk * {sa[nb + 1]}LL')} : "
              f"{constant(k.dtype, 0)};",
              "      }",
              f"      for (int l = tid; l < {TILE * SLICE}; l += {BLOCK}) {{",
              f"        const int r = l / {TILE}, c = l % {TILE};",
              "        const long long gk = k0 + r, gc = col0 + c;",
              f"        GC_SHARED(Bs[r][c]) = (gk < {k.k}LL && gc < {k.n}LL) ? "
              f"{w.ref(k.b.buffer, f'off_b + gk * {sb[nb]}LL + gc * {sb[nb + 1]}LL')} : "
              f"{constant(k.dtype, 0)};",
              "      }",
              "      __syncthreads();",
              "      #pragma unroll",
              f"      for (int kk = 0; kk < {SLICE}; ++kk) {{",
              f"        {t} a[{REG}], b[{REG}];",
              "        #pragma unroll",
              f"        for (int i = 0; i < {REG}; ++i) a[i] = GC_SHARED(As[kk][ty + 16 * i]);",
              "        #pragma unroll",
              f"        for (int j = 0; j < {REG}; ++j) b[j] = GC_SHARED(Bs[kk][tx + 16 * j]);",
              "        #pragma unroll",
              f"        for (int i = 0; i < {REG}; ++i)",
              "          #pragma unroll",
              f"          for (int j = 0; j < {REG}; ++j) acc[i][j] += a[i] * b[j];",
              "      }",
              "      __syncthreads();  // (the tiles are overwritten next)",
              "    }",
              "    #pragma unroll",
              f"    for (int i = 0; i < {REG}; ++i)",
              "      #pragma unroll",
              f"      for (int j = 0; j < {REG}; ++j) {{",
              "        const long long r = row0 + ty + 16 * i, c = col0 + tx + 16 * j;",
              f"        if (r >= {k.m}LL || c >= {k.n}LL) continue;"]
    value = "acc[i][j]" if k.alpha == 1 else f"{constant(k.dtype, k.alpha)} * acc[i][j]"
    at = w.ref(k.out.buffer, f"off_o + r * {so[nb]}LL + c * {so[nb + 1]}LL")
    lines += [f"        {at} {'+=' if k.accumulate else '='} {value};", "      }", "  }", "}"]
    grid = (cdiv(k.n, TILE), row_tiles, batch) if simple else (
        cdiv(k.n, TILE), 1, min(batch * row_tiles, MAX_Z))
    return lines, [Launch(name, index, grid, BLOCK, True, False)]
