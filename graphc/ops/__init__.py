"""The primitives: importing this package registers every OpDef."""
from graphc.ops import (  # noqa: F401
    collective, elementwise, elementwise_numpy, leaves, linalg, one_hot, random, reduce,
    scan_op, scan_sort, shape_ops, window_ops)
from graphc.ops.registry import OPS, OpDef, get_op, make

__all__ = ["OPS", "OpDef", "get_op", "make"]
