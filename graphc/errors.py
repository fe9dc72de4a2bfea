"""Exceptions graphc raises; each is also a standard ValueError/TypeError/IndexError; and
the words of index errors, the same on every backend."""
from __future__ import annotations

import numpy as np


class GraphError(Exception):
    """Base of graphc's own errors."""


class ShapeError(GraphError, ValueError):
    """Shapes that do not fit an operation, found while building or running a graph."""


class DTypeError(GraphError, TypeError):
    """A dtype an operation cannot take."""


class GradientError(GraphError, ValueError):
    """A gradient that cannot be formed (non-scalar output, integer input...)."""


def bad_index(array: np.ndarray, size: int, negative: bool) -> object:
    """The first value of `array` outside the valid range, or None."""
    low = -size if negative else 0
    bad = array[(array < low) | (array >= size)]
    return bad.flat[0] if bad.size else None


def index_error_message(what: str, size: int, negative: bool, bad: object = None) -> str:
    """The words of an out-of-range IndexError on every backend: `what` names the op, where
    its indices came from and the line that built it; `bad` the offending value if known."""
    index = "an index" if bad is None else f"index {bad}"
    if negative:  # numpy's take: -size <= i < size
        return f"{what}: {index} is out of bounds for size {size}"
    return f"{what}: {index} is out of range [0, {size})"
