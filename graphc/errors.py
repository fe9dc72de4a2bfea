"""Exceptions graphc raises; each is also a standard ValueError/TypeError/IndexError."""
from __future__ import annotations


class GraphError(Exception):
    """Base of graphc's own errors."""


class ShapeError(GraphError, ValueError):
    """Shapes that do not fit an operation, found while building or running a graph."""


class DTypeError(GraphError, TypeError):
    """A dtype an operation cannot take."""


class GradientError(GraphError, ValueError):
    """A gradient that cannot be formed (non-scalar output, integer input...)."""
