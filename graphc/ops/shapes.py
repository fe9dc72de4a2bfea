"""Shape arithmetic shared by the shape rules: broadcasting, axes, sizes."""
from __future__ import annotations

from typing import Sequence

from graphc.errors import ShapeError
from graphc.node import Dim


def fmt_shape(shape: Sequence[Dim]) -> str:
    inner = ", ".join("None" if d is None else str(d) for d in shape)
    return f"({inner}{',' if len(shape) == 1 else ''})"


def broadcast_dims(a: Dim, b: Dim) -> Dim:
    if a == 1:
        return b
    if b == 1:
        return a
    if a is None:
        return b
    if b is None or a == b:
        return a
    raise ValueError


def broadcast_shapes(*shapes: Sequence[Dim]) -> tuple[Dim, ...]:
    """numpy broadcasting; a None size is taken to match whatever it meets (checked at run time)."""
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
    size = 1
    for d in shape:
        if d is None:
            return None
        size *= d
    return size

