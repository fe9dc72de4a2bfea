"""The reference backend: interprets the graph op by op with each OpDef's numpy rule."""
from graphc.backends.numpy.interpreter import NumpyExecutable, compile  # noqa: A004

__all__ = ["NumpyExecutable", "compile"]
