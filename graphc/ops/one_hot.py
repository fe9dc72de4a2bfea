"""one_hot as one primitive: a derivative graph then carries one node for the labels' rows,
not the expand_dims, class numbers, equal and cast it used to be made of."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from graphc.dtypes import as_dtype
from graphc.errors import DTypeError
from graphc.node import Node, TensorType
from graphc.ops.registry import OpDef, register


def _one_hot_infer(ins: Sequence[Node], attrs: Mapping[str, Any]) -> TensorType:
    labels = ins[0]
    if labels.dtype.kind != "i":
        raise DTypeError(f"labels must be integers, got {labels.dtype}")
    depth = attrs["depth"]
    if not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be an int >= 0, got {depth!r}")
    return TensorType(labels.shape + (depth,), as_dtype(attrs["dtype"]))


def _one_hot_impl(arrs: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> np.ndarray:
    labels = arrs[0]
    classes = np.arange(attrs["depth"], dtype=labels.dtype)
    return (labels[..., None] == classes).astype(attrs["dtype"])


# No derivative: the labels are integers, and the rows are 0/1 whatever they hold (an index
# outside [0, depth) gives a row of zeros, as in JAX).
register(OpDef(
    name="one_hot", arity=1, differentiable=False, finite=True, nonnegative=True,
    infer=_one_hot_infer, impl=_one_hot_impl,
    doc="out[..., k] = (labels[...] == k) for k < depth, in dtype",
))
