"""The program record gc.function hands a backend: the raw graph and its optimized form."""
from __future__ import annotations

import threading
from typing import Any, Sequence

from graphc.graph import Graph
from graphc.passes import run_pipeline


class Program:
    """A raw graph and the names of the passes to run on it. The optimized graph (and the
    pass report) is made on first use, once, whichever thread asks: a backend whose disk
    cache already holds the code never needs it."""

    __slots__ = ("raw_graph", "pass_names", "_optimized", "_lock")

    def __init__(self, raw_graph: Graph, pass_names: Sequence[str] = ()) -> None:
        self.raw_graph = raw_graph
        self.pass_names = tuple(pass_names)
        self._optimized: tuple[Graph, Any] | None = None
        self._lock = threading.Lock()

    @property
    def graph(self) -> Graph:
        """The optimized graph (the passes run on first use)."""
        return self._optimize()[0]

    @property
    def report(self) -> Any:
        """What each pass did (a PassReport)."""
        return self._optimize()[1]

    @property
    def is_optimized(self) -> bool:
        """Whether the passes have run yet."""
        return self._optimized is not None

    def _optimize(self) -> tuple[Graph, Any]:
        if self._optimized is None:
            with self._lock:
                if self._optimized is None:
                    self._optimized = run_pipeline(self.raw_graph, list(self.pass_names))
        return self._optimized
