"""A packed GEMM's blocking and descriptor (gemm_kernels.FIELDS) from its sizes and strides.

A symbolic program computes the descriptors of all its GEMMs for every new batch size, so
this is on the path of a call at a new size: the arithmetic reads the flat list of sizes
(gemm._Spec.flat's order) and writes the descriptor in FIELDS order directly, with what does
not depend on the sizes (layouts, team, alpha, sub-axis counts) worked out once per GEMM.
The recipe runs on ints, or on int_code.Code values to write it down as straight-line code
for the sizes a binding gives (binding_table.py): decisions on sizes are spelled with
int_code's `pick`, `ge`, `imin`... so that both give the same numbers.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from graphc.backends.llvm.gemm_kernels import FIELDS
from graphc.backends.llvm.int_code import as_int, both, eq, ge, igcd, imax, imin, le, pick

if TYPE_CHECKING:
    from graphc.backends.llvm.gemm import Params

# Few rows of a row-major A (an RNN step's 32): its rows are read where they are; packing
# them cost more than it saved (gemm.DIRECT_A_MAX_M).
DIRECT_A_MAX_M = 64

# The order `BlockingRecipe.__call__` writes the fields in (checked against FIELDS below).
_ORDER = ("m", "n", "k", "a_s0", "a_s1", "b_s0", "b_s1", "c_s0", "c_s1", "a_offset",
          "b_offset", "c_offset", "kc", "mc", "nc", "part_rows", "part_cols", "parts",
          "col_parts", "units", "a_size", "per_thread", "threads", "a_rs", "a_ps", "a_panel",
          "b_panel", "ldb", "b_direct", "alpha_bits", "accumulate", "ksplit", "k_len",
          "partials", "a_direct") + tuple(f"b{axis}_{what}{i}" for axis in "kn"
                                          for what in ("size", "st") for i in range(4))
if _ORDER != FIELDS:
    raise ImportError("gemm_blocking writes the descriptor in another order than FIELDS")


def _ceil(a: Any, b: Any) -> Any:
    return -(-a // b)


def even_block(size: Any, most: int, unit: int) -> Any:
    """The block for cutting `size` into as few blocks of at most `most` as can be, of
    near-equal sizes rounded up to a multiple of `unit`."""
    return _ceil(_ceil(size, _ceil(size, most)), unit) * unit


@dataclass(frozen=True)
class Blocking:
    threads: Any  # (ints; int_code.Code where the recipe writes code)
    ksplit: Any
    per_thread: Any
    desc: list


class BlockingRecipe:
    """One GEMM's blocking as a function of its flat sizes: `recipe(values)`."""

    def __init__(self, p: "Params", threads: int, layouts: tuple[str, str], batch_dims: int,
                 alpha: float, accumulate: bool, sub_lens: tuple[int, int] | None) -> None:
        self.p, self.team, self.nb = p, threads, batch_dims
        self.a_layout, self.b_layout = layouts
        self.alpha_bits = struct.unpack("<q", struct.pack("<d", alpha))[0]
        self.accumulate = int(accumulate)
        self.sub_lens = sub_lens

    def __call__(self, v: Sequence[Any], split_depth: bool = False) -> Blocking:
        p, nb, threads = self.p, self.nb, self.team
        mr, vl = p.mr, p.vl
        nr = p.nv * vl
        batch = v[:nb]
        m, n, k = v[nb], v[nb + 1], v[nb + 2]
        at = nb + 3  # then A's, B's and C's batch strides, s0, s1, offset
        a_batch, a_s0, a_s1, a_off = v[at:at + nb], v[at + nb], v[at + nb + 1], v[at + nb + 2]
        at += nb + 3
        b_batch, b_s0, b_s1, b_off = v[at:at + nb], v[at + nb], v[at + nb + 1], v[at + nb + 2]
        at += nb + 3
        c_batch, c_s0, c_s1, c_off = v[at:at + nb], v[at + nb], v[at + nb + 1], v[at + nb + 2]
        at += nb + 3
        nbatch = 1
        for d in batch:
            nbatch *= d
        # Blocks no larger than the problem (they size the scratch) and split evenly.
        kc = imin(k, even_block(k, p.kc, vl))
        # Work units: (batch item, part of its rows or of its columns), so that the units
        # share out evenly over the threads; parts are whole micro-panels, so only the
        # matrix's last row (column) panel is ever partial.
        want = threads // igcd(nbatch, threads) if threads > 1 else 1
        row_panels, col_panels = -(-m // mr), -(-n // nr)
        by_rows = ge(row_panels, col_panels)  # (the parts cut the longer side)
        row_parts = pick(by_rows, imax(1, imin(want, row_panels)), 1)
        col_parts = pick(by_rows, 1, imax(1, imin(want, col_panels)))
        part_rows = -(-row_panels // row_parts) * mr
        part_cols = -(-col_panels // col_parts) * nr
        parts = row_parts * col_parts
        # Too few rows and columns to give every thread some (a convolution's weight
        # gradient: 8 x 25 outputs, a depth of 36,864): the depth is split too, each slice
        # after the first summed into a partial product of its own, added to C at the end.
        ksplit, k_len = 1, k
        if split_depth and threads > 1 and nbatch == 1 and parts < threads and k >= 2 * kc:
            k_len = _ceil(_ceil(k, min(threads // parts, k // kc)), kc) * kc
            ksplit = _ceil(k, k_len)
        threads = imin(threads, nbatch * parts * ksplit)
        mc = even_block(part_rows, p.mc, mr)
        nc = even_block(part_cols, p.nc, nr)
        a_layout, b_layout = self.a_layout, self.b_layout
        a_rows = a_layout == "rows"
        prepacked = b_layout == "packed"
        # (data, not code: decided on each binding's sizes; whole micro-panels only, rows
        # past A's end must not be read)
        a_direct = both(eq(m % mr, 0), le(m, DIRECT_A_MAX_M)) if a_rows else False
        # Where the work loop finds B's block at depth pk, column jc: pk * b_s0 + jc * b_s1
        # (B itself when direct; prepack_b's panels of NR columns by the whole depth).
        b_rows, b_cols = (nr, k) if prepacked else (b_s0, b_s1)
        a_size = -(-(mc * (p.kc if a_rows else kc)) // 16) * 16 + 16
        b_size = -(-(nc * kc) // 16) * 16 + 16
        per_thread = a_size + b_size
        a_rs = pick(a_direct, a_s0, p.kc if a_rows else 1)
        desc = [m, n, k, a_s0, a_s1, b_rows, b_cols, c_s0, c_s1, a_off,
                0 if prepacked else b_off, c_off, kc, mc, nc, part_rows, part_cols, parts,
                col_parts, nbatch * parts * ksplit, a_size, per_thread, threads,
                # packed A: element (i, p) of a micro-panel at i * a_rs + p * a_ps
                a_rs, 1 if a_rows else mr,
                mr * pick(a_direct, a_s0, p.kc if a_rows else kc),
                # B's micro-panels: packed (NR columns by kc), or B itself
                nr if b_layout == "direct" else (nr * k if prepacked else nr * kc),
                b_s0 if b_layout == "direct" else nr,
                int(b_layout == "direct" or prepacked),
                self.alpha_bits, self.accumulate, ksplit, k_len, per_thread * threads,
                as_int(a_direct)]
        desc += self._sub_fields(v, at, k, n)
        for axis in range(nb):
            desc += [batch[axis], a_batch[axis], b_batch[axis], c_batch[axis]]
        return Blocking(threads, ksplit, per_thread, desc)

    def _sub_fields(self, v: Sequence[Any], at: int, k: Any, n: Any) -> list[Any]:
        """The sub-axes of B's k and n (an implicit GEMM's, padded with size-1 axes in
        front; any other GEMM's k and n as one axis each): sizes then strides, k then n."""
        if self.sub_lens is None:
            return [1, 1, 1, imax(k, 1), 0, 0, 0, 0, 1, 1, 1, imax(n, 1), 0, 0, 0, 0]
        out: list[Any] = []
        for count in self.sub_lens:
            pairs = v[at:at + 2 * count]
            at += 2 * count
            pad = 4 - count
            out += [1] * pad + [imax(s, 1) for s in pairs[0::2]]
            out += [0] * pad + list(pairs[1::2])
        return out
