"""Implicit GEMM: a convolution's columns (a reshape of sliding windows that no strides can
express) read by the matrix product through sub-axes, instead of copied into an im2col
buffer first. The buffer is the size of the image times the kernel's taps (9x for 3x3):
writing it and reading it back cost a ResNet step more than its GEMMs' arithmetic."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphc import sizes as sz
from graphc.node import Node
from graphc.schedule import ir
from graphc.schedule.direct_conv import direct_rows

SubAxes = tuple[tuple[int, int], ...]  # (size, stride) pairs, row-major
# (with call-time sizes a sub-axis's size may be a graphc.sizes.Size: only_images says where)

# The most sub-axes a GEMM's k or n may be read through (ir.Gemm.b_split): a convolution
# needs three (channels, kernel rows, kernel columns; images, output rows, output columns).
MAX_SUB_AXES = 4

# The shortest run of B's columns contiguous in memory (its n's last sub-axis, stride 1)
# an implicit GEMM takes: its packing copies runs as vectors. Shorter runs (a stride-2
# convolution's columns, a weight gradient's kernel taps) copy element by element, which
# measured slower than an im2col buffer read in whole vectors.
MIN_RUN = 8

# Ops whose lowering of a View is a View (no copy); a chain of them from a materialized
# value up to the reshape lets that reshape be read in place.
VIEW_OPS = frozenset({"transpose", "windows", "slice", "expand_dims", "squeeze", "reshape"})


@dataclass(frozen=True)
class Grouped:
    """A value read from `buffer` where each axis of `shape` is several strided axes
    (row-major): a reshape that merged axes no single stride can merge. Only a matrix
    product's B operand (directly or transposed) reads one; anything else copies it."""

    buffer: int
    shape: tuple[int, ...]
    axes: tuple[SubAxes, ...]
    offset: int
    dtype: np.dtype

    def permuted(self, perm: tuple[int, ...]) -> "Grouped":
        return Grouped(self.buffer, tuple(self.shape[p] for p in perm),
                       tuple(self.axes[p] for p in perm), self.offset, self.dtype)

    def flat(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The sub-axes' sizes and strides, all axes in order."""
        subs = [sub for group in self.axes for sub in group]
        return tuple(d for d, _ in subs), tuple(s for _, s in subs)


def group_axes(shape: tuple[int, ...], strides: tuple[int, ...],
               new_shape: tuple[int, ...]) -> tuple[SubAxes, ...] | None:
    """For a reshape of a strided view: each new axis as the run of old axes it merges
    (size-1 axes dropped), or None where a new axis would split an old one. Sizes may be
    symbols: an axis takes old axes while their product divides it for every binding."""
    old = [(d, s) for d, s in zip(shape, strides) if d != 1]
    groups: list[SubAxes] = []
    i = 0
    for size in new_shape:
        if isinstance(size, int) and size == 0:
            return None
        run: list[tuple[int, int]] = []
        product: object = 1
        while product != size and i < len(old) and _divides(product, size):
            run.append(old[i])
            product = sz.mul(product, old[i][0])  # type: ignore[arg-type]
            i += 1
        if product != size:
            return None
        groups.append(tuple(run))
    return tuple(groups) if i == len(old) else None


def _divides(part: object, whole: object) -> bool:
    """Whether `part` divides `whole` (ints: and is below it) for every binding."""
    if isinstance(part, int) and isinstance(whole, int):
        return part < whole
    return sz.exact_quotient(whole, part) is not None  # type: ignore[arg-type]


def only_images(g: "Grouped") -> bool:
    """Whether the call-time sizes of columns `g` (a reshape of windows over a batch of
    images whose size is known only at call time) are all image counts: the first sub-axis
    of its k or of its n, or a batch axis of one sub-axis (a product's batch), with every
    stride and the offset an int. Such columns are read in place by a product whose
    per-image problem is static (the targets' kernels take the image count at run time);
    any other call-time size keeps the im2col buffer."""
    if not isinstance(g.offset, int):
        return False
    batch = len(g.axes) - 2
    for a, group in enumerate(g.axes):
        for j, (d, s) in enumerate(group):
            if not isinstance(s, int):
                return False
            if not isinstance(d, int) and not (j == 0 and (a >= batch or len(group) == 1)):
                return False
    return True


def reads_as_b(node: Node, users: dict[Node, list[Node]], outputs: set[Node]) -> bool:
    """Whether every reader of `node` is a matrix product taking it as B, directly or
    through a transpose of its last two axes (a convolution's weight gradient)."""
    def as_b(n: Node) -> bool:
        return (n not in outputs and bool(users[n]) and
                all(u.op == "matmul" and u.inputs[1] is n and u.inputs[0] is not n
                    for u in users[n]))

    if node in outputs or not users[node]:
        return False
    swap = tuple(range(node.ndim - 2)) + (node.ndim - 1, node.ndim - 2)
    return all((u.op == "matmul" and u.inputs[1] is node and u.inputs[0] is not node)
               or (u.op == "transpose" and tuple(u.attrs["perm"]) == swap and as_b(u))
               for u in users[node])


def window_chain(node: Node, values: dict) -> list[Node] | None:
    """The view ops between `node`'s input and the nearest value that is not lazy or is
    made by another op (that value first, then the chain in order), when a windows op is
    among them: a convolution's columns. None otherwise."""
    from graphc.schedule.lower import View  # (lower imports this module)
    chain: list[Node] = []
    x = node.inputs[0]
    while x.op in VIEW_OPS and not isinstance(values[x], View):
        chain.append(x)
        x = x.inputs[0]
    if not any(n.op == "windows" for n in chain):
        return None
    return [x] + chain[::-1]


# A product this deep for its output (a convolution's weight gradient dW = dY @ cols^T:
# a few hundred outputs, each summed over every output pixel of the batch) reads B along
# the depth, in runs of the depth's last sub-axis, where a target multiplies such products
# as dot products (the llvm backend's gemm_dot.py; SchedulePolicy.implicit_deep_gemm):
# then the runs of B's columns do not matter, the depth's do.
DEEP_MIN_DEPTH = 512
DEEP_RATIO = 8
DEEP_MAX_OUTPUTS = 1 << 16
# A row of the depth is read as 16-lane vectors, the last one masked: rows that leave more
# than a quarter of the lanes empty do not pay (W5's second convolution, rows of 8: its
# weight gradient took 0.35 ms, against 0.21 ms for the im2col copy and the product of the
# stored columns; W5's first, rows of 24: 0.18 ms against 0.20). Rows half a vector past
# whole ones (8, 24) are read two at a time, every lane used, when they pair up (the llvm
# backend's gemm_dot_pairs.py: W5's rows of 8, 0.22-0.24 ms against 0.30 for the copy and
# the product of the stored columns; rows of 24, 0.12 ms against 0.25 unpaired).
DEEP_LANES = 16
DEEP_MIN_USE = 0.75
# Rows of the depth read at this stride or less: a stride-2 convolution's weight gradient
# reads every other pixel of its padded image's rows (the llvm backend copies a chunk's
# rows into aligned scratch anyway, taking the even lanes of two vectors).
DEEP_MAX_STRIDE = 2


# A deep product whose m fills its vectors (at least DEEP_MIN_USE of them) and whose columns'
# trailing sub-axes (a kernel's taps) number at most OUTER_MAX_TAPS takes its depth in
# rows of any length and stride where a target computes such products as outer products,
# a column of A a vector and each element of B broadcast (SchedulePolicy.implicit_outer_gemm:
# the llvm backend's gemm_bcast.py, whose accumulators for one of A's vectors are
# OUTER_MAX_TAPS at most).
OUTER_MAX_TAPS = 28


def outer_product(m: int, n_axes: SubAxes) -> bool:
    """Whether a deep product of m rows over columns of sub-axes `n_axes` is computed as
    outer products where the target offers them (above)."""
    if not all(isinstance(d, int) for d, _ in n_axes):
        return False
    taps = 1
    for d, _ in n_axes[1:]:
        taps *= d
    return m / (DEEP_LANES * -(-m // DEEP_LANES)) >= DEEP_MIN_USE and taps <= OUTER_MAX_TAPS


def deep(m: int, n: int, k: sz.Dim, k_axes: SubAxes, n_axes: SubAxes | None = None,
         outer: bool = False) -> bool:
    """Whether a product of one batch item reads an implicit B along its depth (above). A
    call-time depth (images' pixels) is judged at the representative binding: speed only.
    `outer`: the target's SchedulePolicy.implicit_outer_gemm (then, for a product it takes
    as outer products, B's columns `n_axes`, any row of the depth will do)."""
    run, stride = k_axes[-1]
    if not (isinstance(run, int) and isinstance(m, int) and isinstance(n, int)):
        return False
    k = sz.hint(k)
    sized = k >= DEEP_MIN_DEPTH and k >= DEEP_RATIO * max(m, n) and m * n <= DEEP_MAX_OUTPUTS
    if outer and n_axes is not None and outer_product(m, n_axes):
        return sized and stride >= 1
    use = run / (DEEP_LANES * -(-run // DEEP_LANES))
    if stride == 1 and run % DEEP_LANES == DEEP_LANES // 2 and (k // max(run, 1)) % 2 == 0:
        use = 1.0  # read in pairs (above)
    return 1 <= stride <= DEEP_MAX_STRIDE and use >= DEEP_MIN_USE and sized


def outer_columns(g: Grouped) -> bool:
    """Whether a product of one batch item whose m fills one vector would read columns `g`
    (its B, [k, n]) along the depth as outer products (deep, with `outer`): the target's
    products of more rows decide for themselves when lowered."""
    if len(g.shape) < 2 or any(d != 1 for d in g.shape[:-2]):
        return False
    k_axes, n_axes = g.axes[-2], g.axes[-1]
    n = g.shape[-1]
    return bool(k_axes) and bool(n_axes) and isinstance(n, int) and \
        deep(DEEP_LANES, n, g.shape[-2], k_axes, n_axes, outer=True) and \
        outer_product(DEEP_LANES, n_axes)


def b_operand(g: Grouped, batch: tuple[int, ...], rows: int | None = None,
              direct_depth: int = 0, direct_stride: int = 1, outer: bool = False
              ) -> tuple[ir.Access, tuple[ir.Shape, ir.Shape]] | None:
    """The Access and sub-axis sizes (ir.Gemm.b_split) of a product's B read from `g`, or
    None where it cannot be or would not pay (batch axes not one stride each, too many
    sub-axes, columns not in runs of MIN_RUN). `rows`: the product's m, where the target
    takes deep products along their depth (then a deep one's depth in runs will do).
    `direct_depth`, `direct_stride`: the target's SchedulePolicy.direct_conv_depth and
    direct_conv_stride (a product that shallow takes columns in runs of any length that
    fills its vectors, strided up to direct_stride: graphc.schedule.direct_conv).
    `outer`: the target's SchedulePolicy.implicit_outer_gemm (deep, above)."""
    if len(g.shape) != len(batch) + 2 or tuple(g.shape[:-2]) != tuple(batch):
        return None
    strides: list[int] = []
    for group in g.axes[:-2]:
        if len(group) > 1:
            return None
        strides.append(group[0][1] if group else 0)
    k_axes, n_axes = g.axes[-2] or ((1, 0),), g.axes[-1] or ((1, 0),)
    if max(len(k_axes), len(n_axes)) > MAX_SUB_AXES:
        return None
    if not isinstance(n_axes[-1][0], int):
        return None
    # (rows a direct convolution takes in place: only for a product it may compute, one
    # batch item; a 1x1 stride-2 convolution's per-image products read so as a plain
    # implicit GEMM took W6's projection 0.22 -> 0.46 ms)
    if (n_axes[-1][1] != 1 or n_axes[-1][0] < MIN_RUN) and not (
            all(d == 1 for d in batch) and direct_rows(g.shape[-2], n_axes, direct_depth,
                                                         direct_stride)):
        k, n = g.shape[-2], g.shape[-1]
        if rows is None or any(d != 1 for d in batch) or not deep(rows, n, k, k_axes,
                                                                   n_axes, outer):
            return None
    strides += [s for _, s in k_axes] + [s for _, s in n_axes]
    split = (tuple(d for d, _ in k_axes), tuple(d for d, _ in n_axes))
    return ir.Access(g.buffer, tuple(strides), g.offset), split
