"""Random numbers in the graph from an explicit seed (counter-based: reproducible on every
backend)."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.dtypes import as_dtype, int64
from graphc.ops import make
from graphc.ops.leaves import scalar_constant
from graphc.frontends.convert import cast, to_node
from graphc.frontends.tensor import Tensor


def random_uniform(seed: Any, like: Any, dtype: Any = "float32") -> Tensor:
    """Floats in [0, 1), one per element of `like` (a tensor, whose run-time shape is used,
    or a static shape tuple). The same seed gives the same numbers everywhere; feed a new
    seed (a placeholder, or a parameter a step increments) for new numbers."""
    seed_node = cast(to_node(seed, "random_uniform seed"), int64)
    if seed_node.shape != ():
        raise ValueError(f"random_uniform: the seed must be a scalar, got {seed_node.type}")
    if isinstance(like, (tuple, list)):
        shape = tuple(int(d) for d in like)
        like_node = make("broadcast_to", scalar_constant(0, np.dtype("float32")), shape=shape) \
            if shape else scalar_constant(0, np.dtype("float32"))
    else:
        like_node = to_node(like, "random_uniform like")
    return Tensor(make("random_uniform", seed_node, like_node, dtype=as_dtype(dtype)))
