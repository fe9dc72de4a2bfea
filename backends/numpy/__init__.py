"""The reference backend: interprets the graph op by op with each OpDef's numpy rule."""
from graphc.backends.numpy.backend import NumpyBackend
from graphc.backends.numpy.interpreter import NumpyExecutable

BACKEND = NumpyBackend()

__all__ = ["BACKEND", "NumpyBackend", "NumpyExecutable"]
