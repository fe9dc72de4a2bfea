"""A step's GEMM work against the machine's GEMM rate: the FLOPs of every matrix product in a
training step's graph (forward and gradients, counted from the nodes, batch sizes bound), the
FLOPs its compiled GEMM kernels execute, and graphc's own packed GEMM rate measured in the
same process (bench_gemm.py's compiled n x n product), so a step's GFLOP/s reads as a share
of what the GEMM reaches on this machine now."""
from __future__ import annotations

import os
import sys
from typing import Iterable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_gemm import best_time, graphc_gemm  # noqa: E402


def graph_matmul_flops(outputs: Iterable) -> int:
    """2*k FLOPs per output element of every `matmul` node reachable from `outputs` (graphc
    tensors or nodes; sizes must be known): convolutions are matmuls over columns in the
    graph, so this counts them too, forward and gradients alike."""
    from graphc.node import toposort
    total = 0
    for node in toposort([getattr(o, "node", o) for o in outputs]):
        if node.op != "matmul":
            continue
        dims = tuple(node.shape) + (node.inputs[0].shape[-1],)
        if not all(isinstance(d, (int, np.integer)) for d in dims):
            raise ValueError(f"graph_matmul_flops: {node.type} has symbolic sizes; build the "
                             "graph with the batch size known")
        total += 2 * int(np.prod(dims, dtype=np.int64))
    return total


def schedule_gemm_flops(schedule) -> int:
    """2*batch*m*n*k summed over a compiled schedule's GEMM kernels: what the step executes
    (a data gradient computed over rows it then drops counts here, not in the graph)."""
    total = 0
    for kernel in schedule.kernels:
        if kernel.kind == "gemm":
            total += 2 * int(np.prod(kernel.batch, dtype=np.int64)) * kernel.m * kernel.n \
                * kernel.k
    return total


def gemm_gflops(n: int = 1024, threads: int = 2, budget: float = 1.0) -> float:
    """graphc's packed GEMM, n x n float32, on `threads` threads: best GFLOP/s. The
    environment bench_gemm's compile sets is restored, so later compiles are unaffected."""
    saved = os.environ.get("GRAPHC_ADAPTIVE_THREADS")
    try:
        f = graphc_gemm(n, threads, "float32", "nn")
    finally:
        if saved is None:
            os.environ.pop("GRAPHC_ADAPTIVE_THREADS", None)
        else:
            os.environ["GRAPHC_ADAPTIVE_THREADS"] = saved
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    return 2 * n ** 3 / best_time(f, (a, b), budget) / 1e9
