"""A step's GEMM work against the machine's GEMM rate: the FLOPs of every matrix product in a
training step's graph (forward and gradients, counted from the nodes, batch sizes bound), the
FLOPs its compiled GEMM kernels execute, and graphc's own packed GEMM rate measured in the
same process (bench_gemm.py's compiled n x n product), so a step's GFLOP/s reads as a share
of what the GEMM reaches on this machine now. bench_resnet.py prints W6's share by wall time
on two threads beside its peers; run alone, this prints it by one thread's CPU time, which
load on the machine slows about as much as it slows the GEMM.
Run: python benchmarks/gemm_rate.py [--threads 1 --clock cpu | --threads 2 --clock wall]
     [--gemm-n 1024] [--rounds 20]"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_gemm import graphc_gemm  # noqa: E402


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


def schedule_gemm_flops(schedule, values=None) -> int:
    """2*batch*m*n*k summed over a compiled schedule's GEMM kernels: what the step executes
    (a data gradient computed over rows it then drops counts here, not in the graph).
    `values`: the call-time sizes' binding of a symbolic program's schedule."""
    from graphc import sizes
    total = 0
    for kernel in schedule.kernels:
        if kernel.kind == "gemm":
            dims = [sizes.evaluate(d, values) if values is not None else d
                    for d in (*kernel.batch, kernel.m, kernel.n, kernel.k)]
            total += 2 * int(np.prod(dims, dtype=np.int64))
    return total


def gemm_gflops(n: int = 1024, threads: int = 2, rounds: int = 10, clock=time.perf_counter
                ) -> float:
    """graphc's packed GEMM, n x n float32, on `threads` threads: best GFLOP/s by `clock`.
    The environment bench_gemm's compile sets is restored, so later compiles are
    unaffected."""
    saved = os.environ.get("GRAPHC_ADAPTIVE_THREADS")
    try:
        f = graphc_gemm(n, threads, "float32", "nn")
    finally:
        if saved is None:
            os.environ.pop("GRAPHC_ADAPTIVE_THREADS", None)
        else:
            os.environ["GRAPHC_ADAPTIVE_THREADS"] = saved
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in "ab")
    return 2 * n ** 3 / _best(lambda: f(a, b), rounds, clock) / 1e9


def _best(call, rounds: int, clock) -> float:
    call()
    best = float("inf")
    for _ in range(rounds):
        t0 = clock()
        call()
        best = min(best, clock() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    """W6's share of the GEMM rate on one thread by CPU time (steadier than wall time on a
    machine other processes keep busy: both are slowed alike), or on the team by wall
    time; GRAPHC_NUM_THREADS is set here, before anything compiles."""
    import argparse
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", default="cpu", choices=("cpu", "wall"))
    parser.add_argument("--gemm-n", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu times one thread only (a team's other threads are not counted)")
    os.environ["GRAPHC_NUM_THREADS"] = str(args.threads)
    from bench_resnet import graphc_resnet_graph, graphc_resnet_step, resnet_data, resnet_params
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    x, y = resnet_data()
    f = graphc_resnet_step(resnet_params())
    useful = graph_matmul_flops(graphc_resnet_graph(resnet_params(), batch=len(x))[4])
    step = _best(lambda: f(x, y), args.rounds, clock)
    gemm = gemm_gflops(args.gemm_n, args.threads, max(5, args.rounds // 4), clock) * 1e9
    achieved = useful / step
    print(f"W6: {useful / 1e9:.3f} GFLOP a step; best step {step * 1e3:.2f} ms "
          f"({args.clock} time, {args.threads} thread(s)): {achieved / 1e9:.0f} GFLOP/s = "
          f"{achieved / gemm:.1%} of graphc's {args.gemm_n}^2 GEMM ({gemm / 1e9:.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
