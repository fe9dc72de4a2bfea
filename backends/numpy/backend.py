"""The numpy backend as a Backend: graph mode interprets nodes, kernel mode runs the schedule."""
from __future__ import annotations

from typing import Any, Mapping

from graphc.program import Program
from graphc.schedule.policy import DEFAULT_POLICY, SchedulePolicy


class NumpyBackend:
    """The reference: no target, so the scheduler's neutral policy."""

    name = "numpy"
    policy: SchedulePolicy = DEFAULT_POLICY

    def compile(self, program: Program, options: Mapping[str, Any] | None = None):
        """mode="graph" (default) interprets node by node; mode="kernels" runs the scheduled
        kernel plan, the reference for native backends."""
        options = dict(options or {})
        mode = options.pop("mode", "graph")
        optimize = options.pop("optimize", True)
        if options:
            raise ValueError(f"backend_options: unknown options for numpy: {sorted(options)}")
        if mode == "graph":
            from graphc.backends.numpy.interpreter import NumpyExecutable
            return NumpyExecutable(program.graph)
        if mode == "kernels":
            from graphc.backends.numpy.kernels import KernelExecutable
            return KernelExecutable(program.graph, optimize, self.policy)
        raise ValueError(f"backend_options: mode must be 'graph' or 'kernels', got {mode!r}")
