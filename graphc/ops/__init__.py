"""The primitives: importing this package registers every OpDef."""
from graphc.ops import elementwise, leaves, linalg, reduce, shape_ops  # noqa: F401
from graphc.ops.registry import OPS, OpDef, get_op, make

__all__ = ["OPS", "OpDef", "get_op", "make"]
