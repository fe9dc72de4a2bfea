"""Indexing with several integer tensors at once (numpy's advanced indexing) and with boolean
masks whose values are known when the graph is built, as one take over merged axes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from graphc.dtypes import int64
from graphc.node import Node
from graphc.ops import make
from graphc.ops.leaves import constant_node, scalar_constant
from graphc.frontends.convert import cast


@dataclass(frozen=True)
class Mask:
    """A boolean mask of known values: it indexes `ndim` axes, like mask.nonzero()."""

    array: np.ndarray

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @staticmethod
    def of(item: Any) -> Any:
        """`item` as a Mask if it is a boolean index; other indices unchanged. A boolean
        tensor whose values are known only when the graph runs is refused: the result's
        size would depend on them."""
        node = getattr(item, "node", item)
        if isinstance(node, Node):
            if node.dtype.kind != "b":
                return item
            if node.op != "constant":
                raise TypeError(
                    "index: a boolean mask must be known when the graph is built (a numpy "
                    "array or gc.constant): the result's size would depend on data. Use "
                    "gc.where(mask, x, 0) to keep the shape, or index with the mask's "
                    "nonzero() positions")
            return Mask(node.attrs["value"].array)
        array = np.asarray(item)
        if array.dtype == bool:
            return Mask(array)
        if isinstance(item, list) and array.size == 0:
            return np.zeros(array.shape, np.int64)  # numpy: an empty list indexes nothing
        return item


def expand_masks(items: list[Any], node: Node) -> list[Any]:
    """Each Mask replaced by the integer arrays of its nonzero(), after checking its shape
    against the axes it covers (items: one per axis of `node`, None for new axes)."""
    out: list[Any] = []
    axis = 0
    for item in items:
        if isinstance(item, Mask):
            covered = node.shape[axis:axis + item.ndim]
            for k, (d, m) in enumerate(zip(covered, item.array.shape)):
                if isinstance(d, int) and d != m:
                    raise IndexError(
                        f"index: boolean index did not match indexed array along axis "
                        f"{axis + k}; size of axis is {d} but size of corresponding boolean "
                        f"axis is {m}")
            if item.ndim == 0:
                raise TypeError("index: a 0-d boolean mask is not supported (numpy adds an "
                                "axis of size 1 or 0); use None or x[:0]")
            out.extend(np.nonzero(item.array))
            axis += item.ndim
            continue
        out.append(item)
        if item is not None:
            axis += 1
    return out


def _flat_constant(advanced: list[tuple[int, Node]], dims: list[int]) -> Node:
    """The merged index of constant indices, checked and wrapped now, like numpy."""
    arrays = np.broadcast_arrays(*(i.attrs["value"].array for _, i in advanced))
    flat = np.zeros(arrays[0].shape, np.int64)
    for (axis, _), a, d in zip(advanced, arrays, dims):
        bad = (a < -d) | (a >= d)
        if bad.any():
            raise IndexError(f"index: index {a[bad].flat[0]} is out of bounds for axis "
                             f"{axis} with size {d}")
        flat = flat * d + np.where(a < 0, a + d, a)
    return constant_node(flat)


def _flat_graph(advanced: list[tuple[int, Node]], dims: list[int]) -> Node:
    """The merged index of indices known at run time: each wrapped and checked on its own
    axis (an index out of its axis' range must fail, not land in another row)."""
    flat: Node | None = None
    for (axis, idx), d in zip(advanced, dims):
        i = cast(idx, int64)
        size = scalar_constant(d, int64)
        i = make("where", make("less", i, scalar_constant(0, int64)), make("add", i, size), i)
        i = make("check_index", i, size=d, what=f"index (axis {axis})")
        flat = i if flat is None else make("add", make("mul", flat, size), i)
    assert flat is not None
    return flat


def multi_take(x: Node, advanced: list[tuple[int, Node]]) -> tuple[Node, Callable[[int], int]]:
    """x indexed at several axes by integer tensors (broadcast together): the indexed axes
    are moved next to the first one and merged, then one take reads them. Returns the
    result, whose broadcast index shape stands where the first indexed axis was, and where
    each other axis of x went."""
    axes = [a for a, _ in advanced]
    maybe = [x.shape[a] for a in axes]
    try:
        np.broadcast_shapes(*(tuple(d if isinstance(d, int) else 1 for d in i.shape)
                              for _, i in advanced))
    except ValueError:
        shapes = " ".join(str(tuple(i.shape)) for _, i in advanced)
        raise IndexError(f"index: shape mismatch: indexing arrays could not be broadcast "
                         f"together with shapes {shapes}") from None
    dims = [d for d in maybe if isinstance(d, int)]
    if len(dims) < len(maybe):
        raise ValueError(f"index: indexing several axes with integer tensors needs the sizes "
                         f"of those axes known when the graph is built; {x.type} has unknown "
                         f"sizes among axes {axes}")
    first = axes[0]
    rest = [j for j in range(first, x.ndim) if j not in axes]
    perm = list(range(first)) + axes + rest
    if perm != list(range(x.ndim)):
        x = make("transpose", x, perm=tuple(perm))
    others = [x.shape[j] for j in range(first)] + [x.shape[first + len(axes) + k]
                                                  for k in range(len(rest))]
    if not all(isinstance(d, int) for d in others):
        raise ValueError(f"index: indexing several axes with integer tensors needs every "
                         f"size known when the graph is built, got {x.type}")
    merged = int(np.prod(dims))
    x = make("reshape", x, shape=tuple(others[:first]) + (merged,) + tuple(others[first:]))
    if all(i.op == "constant" for _, i in advanced):
        flat = _flat_constant(advanced, dims)
    else:
        flat = _flat_graph(advanced, dims)
    out = make("take", x, flat, axis=first)
    k = flat.ndim

    def where(axis: int) -> int:
        return axis if axis < first else first + k + rest.index(axis)
    return out, where
