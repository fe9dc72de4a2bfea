"""Shape arithmetic shared by the shape rules: broadcasting, axes, sizes."""
from __future__ import annotations

from typing import Sequence

from graphc.errors import ShapeError
from graphc.node import Dim
from graphc.sizes import Size, assume_equal, user_dim


def fmt_shape(shape: Sequence[Dim]) -> str:
    """A shape for messages, as users wrote it: an anonymous size shows as None."""
    inner = ", ".join("None" if isinstance(d, Size) and d.is_var() and user_dim(d) is None
                      else str(d) for d in shape)
    return f"({inner}{',' if len(shape) == 1 else ''})"


def conflict(a: Dim, b: Dim) -> bool:
    """Two sizes that can never be equal (two different ints)."""
    return isinstance(a, int) and isinstance(b, int) and a != b


def same_size(a: Dim, b: Dim) -> Dim:
    """Two sizes that must be equal (matmul's inner sizes, concatenate's other axes): the
    more informative one; a symbol is taken equal to what it meets, checked at call time."""
    if a == b:
        return a
    if isinstance(a, int) and isinstance(b, int):
        raise ValueError
    assume_equal(a, b)
    return a if isinstance(a, int) or isinstance(b, Size) and a.is_var() and \
        not b.is_var() else b if isinstance(b, int) else a


def broadcast_dims(a: Dim, b: Dim) -> Dim:
    """numpy broadcasting of two sizes. A symbol meeting another size (not 1) is taken to
    equal it (checked at call time): a size known only at call time does not broadcast."""
    if a == 1:
        return b
    if b == 1:
        return a
    return same_size(a, b)


def broadcast_shapes(*shapes: Sequence[Dim]) -> tuple[Dim, ...]:
    """numpy broadcasting (symbols as in broadcast_dims)."""
    ndim = max((len(s) for s in shapes), default=0)
    out: list[Dim] = [1] * ndim
    for s in shapes:
        padded = (1,) * (ndim - len(s)) + tuple(s)
        for i, d in enumerate(padded):
            try:
                out[i] = broadcast_dims(out[i], d)
            except ValueError:
                listing = " and ".join(fmt_shape(x) for x in shapes)
                raise ShapeError(f"cannot broadcast shapes {listing}") from None
    return tuple(out)


def normalize_axes(axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """Axis argument (None: all) to a sorted tuple of non-negative axes; errors name the axis."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, int) or isinstance(a, bool):
            raise ShapeError(f"axis {a!r} is not an integer")
        if not -ndim <= a < ndim:
            raise ShapeError(f"axis {a} is out of range for {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated axis in {axis!r}")
    return tuple(sorted(out))


def known_size(shape: Sequence[Dim]) -> int | None:
    """The number of elements, where every size is an int (None otherwise)."""
    size = 1
    for d in shape:
        if not isinstance(d, int):
            return None
        size *= d
    return size


def size_product(shape: Sequence[Dim]) -> Dim:
    """The number of elements, an int or an expression of symbols."""
    out: Dim = 1
    for d in shape:
        out = out * d
    return out
