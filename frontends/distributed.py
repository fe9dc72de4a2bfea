"""The DSL's collective: all_reduce of a tensor across the processes of an MPI job."""
from __future__ import annotations

from typing import Any

from graphc.frontends.convert import to_node
from graphc.frontends.tensor import Tensor
from graphc.ops import make
from graphc.ops.collective import REDUCTIONS


def all_reduce(t: Any, op: str = "mean") -> Tensor:
    """The sum (op="sum") or mean (op="mean") of `t` over every process of the job, as a
    graph node: its gradient is the all_reduce of the cotangent (JAX's psum), it prints and
    compiles into the step. In a process not launched by mpirun (one process) it is the
    identity, which the optimizer removes."""
    if not isinstance(op, str) or op not in REDUCTIONS:
        raise ValueError(f"all_reduce: op must be one of {REDUCTIONS}, got {op!r}")
    from graphc.distributed.comm import size
    return Tensor(make("all_reduce", to_node(t, "all_reduce operand"), reduction=op, ranks=size()))
