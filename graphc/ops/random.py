"""Random numbers inside the graph: counter-based, so the same seed gives the same numbers
on every backend and every run. Element i of random_uniform(seed, like) is a SplitMix64 hash
of (seed, i) mapped to [0, 1)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from graphc.dtypes import as_dtype
from graphc.errors import DTypeError
from graphc.node import Node, TensorType
from graphc.ops.registry import OpDef, register

GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB


def uniform_from_counter(seed: np.ndarray, counter: np.ndarray, dtype: Any) -> np.ndarray:
    """SplitMix64 of seed + (counter + 1) * golden ratio, to floats in [0, 1): the top 24
    bits for float32, 53 for float64 (the reference the native code reproduces)."""
    with np.errstate(over="ignore"):
        z = np.asarray(seed).astype(np.uint64) + (np.asarray(counter).astype(np.uint64)
                                                   + np.uint64(1)) * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        z = z ^ (z >> np.uint64(31))
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return ((z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _infer(ins: Sequence[Node], attrs: Mapping[str, Any]) -> TensorType:
    seed, like = ins
    if seed.dtype.kind != "i" or seed.shape != ():
        raise DTypeError(f"the seed must be a 0-d integer tensor, got {seed.type}")
    dtype = as_dtype(attrs["dtype"])
    if dtype.kind != "f":
        raise DTypeError(f"random_uniform gives floats, not {dtype}")
    return TensorType(like.shape, dtype)


def _impl(arrs: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> np.ndarray:
    seed, like = arrs
    counter = np.arange(like.size, dtype=np.uint64).reshape(like.shape)
    return uniform_from_counter(seed, counter, attrs["dtype"])


register(OpDef(
    name="random_uniform", arity=2, differentiable=False, shape_only_inputs=(1,), infer=_infer,
    impl=_impl,
    doc="floats in [0, 1) shaped like the second input, from an integer seed",
))
