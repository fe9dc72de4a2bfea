"""A stride-1 convolution's data gradient as a convolution: col2im of (W^T dY) becomes the
correlation of dY, padded by the kernel's size less one, with the flipped, transposed
kernel. The columns gradient (the image times the kernel's taps: 29 MB for W6's first
block) is then never written, added back window by window, or read again; the new
convolution's columns read as an implicit GEMM (graphc/schedule/implicit.py)."""
from __future__ import annotations

from graphc.node import Node, building_for
from graphc.ops.registry import make
from graphc.passes.patterns import Op, Var
from graphc.passes.rewrite import Rule, rule

# The new convolution computes every output of the padded input, (OH+KH-1)(OW+KW-1) per
# channel, where col2im adds OH*OW windows: past this ratio the extra products cost more
# than the columns buffer saves (LeNet's 8x8 maps under a 5x5 kernel: 2.25, measured
# 1.6x slower; W6's 28x28 under 3x3: 1.15, faster).
MAX_GROWTH = 1.35

# conv2d's columns gradient, (G, Cg, KH, KW, N, OH, OW) -> (N, G, Cg, OH, OW, KH, KW)
_COLS_PERM = (4, 0, 1, 5, 6, 2, 3)


def _columns_product(g: Node) -> tuple[Node, Node] | None:
    """(A, D) where g is conv2d's columns gradient reshaped back to windows,
    reshape(transpose(reshape(A @ D))), A (G, Cg*KH*KW, Og), D (G, Og, N*OH*OW)."""
    t = g.inputs[0] if g.op == "reshape" else None
    if t is None or t.op != "transpose" or tuple(t.attrs["perm"]) != _COLS_PERM:
        return None
    r = t.inputs[0]
    if r.op != "reshape" or r.inputs[0].op != "matmul" or r.inputs[0].ndim != 3:
        return None
    a, d = r.inputs[0].inputs
    if a.ndim != 3 or d.ndim != 3:
        return None
    return a, d


@rule("conv_data_grad", Op("windows_grad", Var("g"), Var("ref")),
      "col2im(W^T dY) of a stride-1 conv -> conv(pad(dY), flipped W^T)")
def _conv_data_grad(b, node):
    return _as_conv(node, b["g"], b["ref"], ((0, 0), (0, 0)), node)


# In the canonical rules: rules apply bottom-up, so in the specialize pass conv_data_grad
# would rewrite the col2im before this rule could see the slice over it.
@rule("conv_data_grad_cropped", Op("slice", Op("windows_grad", Var("g"), Var("ref"))),
      "slice(col2im(W^T dY)) of a stride-1 conv -> conv(pad(dY), flipped W^T) over the "
      "rows and columns kept only")
def _conv_data_grad_cropped(b, node):
    """The gradient of a padded convolution's input is col2im's result less the padding
    (pad's gradient slices it off): a convolution of dY padded by less computes only the
    rows and columns kept, not the border it would then drop (W6's 3x3 convolutions with
    padding 1: 28x28 of 30x30 per map, 14x14 of 16x16)."""
    wg = node.inputs[0]
    crop = _border_crop(node.attrs["slices"], wg.shape)
    return None if crop is None else _as_conv(wg, b["g"], b["ref"], crop, node)


def _border_crop(slices: tuple, shape: tuple) -> tuple[tuple[int, int], ...] | None:
    """((top, bottom), (left, right)): what a slice of an NCHW map drops from the border of
    its last two axes, when it keeps the first two whole and steps by 1; else None."""
    if len(slices) != 4 or any(tuple(s) not in ((0, None, 1), (None, None, None),
                                                (0, None, None), (None, None, 1))
                               for s in slices[:2]):
        return None
    crop = []
    for (start, stop, step), size in zip(slices[2:], shape[2:]):
        if not isinstance(size, int):
            return None
        lo, hi, by = slice(start, stop, step).indices(size)
        if by != 1 or hi <= lo:
            return None
        crop.append((lo, size - hi))
    return (crop[0], crop[1])


def _as_conv(wg: Node, g: Node, ref: Node, crop: tuple[tuple[int, int], ...],
             node: Node) -> Node | None:
    """`node` (col2im `wg` itself, or a slice of it dropping `crop` from the padded input's
    border) as a convolution of the padded dY, or None where that does not apply or pay."""
    attrs = wg.attrs
    if (tuple(attrs["axes"]) != (2, 3) or tuple(attrs["strides"]) != (1, 1)
            or ref.ndim != 4 or g.ndim != 6):
        return None
    found = _columns_product(g)
    if found is None:
        return None
    a, d = found
    sizes = [v for v in g.shape[1:] + (a.shape[0], a.shape[2]) if isinstance(v, int)]
    if len(sizes) != 7:
        return None
    c, oh, ow, kh, kw, groups, og = sizes
    if c % groups or a.shape[1] != (c // groups) * kh * kw:
        return None
    if (oh + kh - 1, ow + kw - 1) != tuple(ref.shape[2:]):
        return None
    (top, bottom), (left, right) = crop
    # dY padded so that every window touching a kept row or column is whole
    pads = (kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right)
    hp, wp = oh + kh - 1 - top - bottom, ow + kw - 1 - left - right
    if min(pads) < 0 or hp * wp > MAX_GROWTH * oh * ow:
        return None
    # (gradient nodes still: they keep the provenance of the col2im they replace)
    with building_for(wg.origin or "vjp of windows"):
        out = _transposed_conv(a, d, (groups, c // groups, og, oh, ow, kh, kw, hp, wp), pads)
    return out if out.type == node.type else None


def _transposed_conv(a: Node, d: Node, sizes: tuple[int, ...],
                     pads: tuple[int, int, int, int]) -> Node:
    groups, cg, og, oh, ow, kh, kw, hp, wp = sizes
    c = groups * cg
    # dY as images, padded by `pads` (top, bottom, left, right)
    dy = make("reshape", d, shape=(groups, og, -1, oh, ow))
    dy = make("reshape", make("transpose", dy, perm=(2, 0, 1, 3, 4)),
              shape=(-1, groups * og, oh, ow))
    dy = make("pad", dy, pads=((0, 0), (0, 0), pads[:2], pads[2:]))
    win = make("windows", dy, axes=(2, 3), sizes=(kh, kw), strides=(1, 1))
    cols = make("reshape", win, shape=(-1, groups, og, hp, wp, kh, kw))
    cols = make("reshape", make("transpose", cols, perm=(1, 2, 5, 6, 0, 3, 4)),
                shape=(groups, og * kh * kw, -1))
    # the kernel flipped in both directions, channels in and out exchanged
    w = make("reshape", a, shape=(groups, cg, kh, kw, og))
    w = make("slice", w, slices=((0, None, 1), (0, None, 1), (None, None, -1),
                                 (None, None, -1), (0, None, 1)))
    w = make("reshape", make("transpose", w, perm=(0, 1, 4, 2, 3)),
             shape=(groups, cg, og * kh * kw))
    out = make("reshape", make("matmul", w, cols), shape=(groups, cg, -1, hp, wp))
    out = make("transpose", out, perm=(2, 0, 1, 3, 4))
    return make("reshape", out, shape=(-1, c, hp, wp))


RULES: list[Rule] = [_conv_data_grad]
CANONICAL_RULES: list[Rule] = [_conv_data_grad_cropped]
