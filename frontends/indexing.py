"""numpy-style indexing of Tensors: ints, slices, None, ..., integer tensors (numpy's advanced
indexing) and boolean masks whose values are known when the graph is built."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.node import Node
from graphc.ops import make
from graphc.frontends.convert import to_node
from graphc.frontends.multi_index import Mask, expand_masks, multi_take
from graphc.frontends.tensor import Tensor

_FULL = (None, None, None)


def _is_int(item: Any) -> bool:
    return isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_))


def _is_advanced(item: Any) -> bool:
    return isinstance(item, (Tensor, Node, np.ndarray, list))


def _slice_bound(v: Any, what: str) -> int | None:
    if v is None or _is_int(v):
        return None if v is None else int(v)
    raise TypeError(f"index: slice {what} must be an int or None, got {v!r}")


def getitem(x: Tensor, key: Any) -> Tensor:
    node = x.node
    items = list(key) if isinstance(key, tuple) else [key]
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise TypeError("index: a boolean scalar index is not supported (numpy adds an "
                            "axis of size 1 or 0); use None or x[:0]")
        if not (item is None or item is Ellipsis or isinstance(item, slice) or _is_int(item)
                or _is_advanced(item)):
            raise TypeError(f"index: {item!r} of type {type(item).__name__} is not a valid "
                            "index (ints, slices, None, ..., integer tensors)")
    # numpy: with an index array present, ints are advanced indices too; when the advanced
    # indices are not side by side (a slice, None or ... between them), the indexed dims go
    # first in the result instead of in place.
    adv_at = [k for k, i in enumerate(items) if _is_int(i) or _is_advanced(i)]
    split_advanced = (any(_is_advanced(i) for i in items)
                      and adv_at[-1] - adv_at[0] + 1 != len(adv_at))
    if sum(item is Ellipsis for item in items) > 1:
        raise IndexError("index: an index can only have a single ellipsis ('...')")
    items = [Mask.of(i) if _is_advanced(i) else i for i in items]
    consuming = sum(i.ndim if isinstance(i, Mask) else 1 for i in items
                    if i is not None and i is not Ellipsis)
    if consuming > node.ndim:
        raise IndexError(f"index: too many indices ({consuming}) for a tensor of "
                         f"{node.ndim} dimensions {node.type}")
    if any(i is Ellipsis for i in items):
        at = next(k for k, i in enumerate(items) if i is Ellipsis)
        items[at:at + 1] = [slice(None)] * (node.ndim - consuming)
    else:
        items += [slice(None)] * (node.ndim - consuming)
    items = expand_masks(items, node)  # a mask is the integer arrays of its nonzero()
    adv_ndim = max((to_node(i, "index").ndim for i in items if _is_advanced(i)), default=0)

    slices: list[tuple] = []
    int_axes: list[int] = []
    late_checks: dict[int, int] = {}  # axis -> int index, for axes of run-time size
    advanced: list[tuple[int, Node]] = []
    new_axes: list[int] = []  # positions in the result
    out_pos = 0
    axis = 0
    for item in items:
        if item is None:
            new_axes.append(out_pos)
            out_pos += 1
            continue
        dim = node.shape[axis]
        if isinstance(item, slice):
            slices.append((_slice_bound(item.start, "start"), _slice_bound(item.stop, "stop"),
                           _slice_bound(item.step, "step")))
            if item.step == 0:
                raise ValueError("index: slice step cannot be zero")
            out_pos += 1
        elif _is_int(item):
            i = int(item)
            if isinstance(dim, int) and not -dim <= i < dim:
                raise IndexError(f"index: {i} is out of bounds for axis {axis} with size {dim}")
            if isinstance(dim, int):
                i %= dim
            slices.append((i, i + 1 if i != -1 else None, 1))
            int_axes.append(axis)
            if not isinstance(dim, int):  # checked when the size is known: squeeze finds no element
                late_checks[axis] = i
        else:
            idx = to_node(item, "index")
            if idx.dtype.kind != "i":
                raise IndexError(f"index: an index tensor must hold integers, got {idx.dtype}")
            if not advanced:  # the indices' broadcast shape goes where the first one is
                adv_pos = out_pos
                out_pos += adv_ndim
            advanced.append((axis, idx))
            slices.append(_FULL)
        axis += 1


    out = node
    if any(s != _FULL for s in slices):
        out = make("slice", out, slices=tuple(slices))
    if len(advanced) == 1:
        adv_axis, idx = advanced[0]
        out = make("take", out, idx, axis=adv_axis)
        shift = idx.ndim - 1
        late_checks = {a + shift if a > adv_axis else a: i for a, i in late_checks.items()}
        int_axes = [a + shift if a > adv_axis else a for a in int_axes]
    elif advanced:
        out, where = multi_take(out, advanced)
        late_checks = {where(a): i for a, i in late_checks.items()}
        int_axes = [where(a) for a in int_axes]
    if int_axes:
        extra = {"indices": tuple(sorted(late_checks.items()))} if late_checks else {}
        out = make("squeeze", out, axes=tuple(sorted(int_axes)), **extra)
    if new_axes:
        out = make("expand_dims", out, axes=tuple(new_axes))
    if split_advanced and adv_pos:
        k = adv_ndim
        moved = list(range(adv_pos, adv_pos + k))
        perm = moved + [a for a in range(out.ndim) if a not in moved]
        out = make("transpose", out, perm=tuple(perm))
    return Tensor(out)
