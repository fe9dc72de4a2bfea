"""GEMM throughput: graphc's own generated GEMM (llvm backend) against numpy's OpenBLAS.

    python benchmarks/bench_gemm.py [--sizes 256 512 1024] [--threads 1 2] [--rounds 3]
                                    [--layout nn|tn|nt|tt] [--dtype float32|float64]

For each size n and thread count: C = A @ B with n x n matrices; graphc's GFLOP/s, numpy's
GFLOP/s measured in the same run, and their ratio. Timings are best-of-N; the two are
measured in alternating rounds (2-thread timings are noisy on a shared machine) and each
keeps its best round.

graphc's thread count is GRAPHC_NUM_THREADS, read when a function is compiled, so each
thread count gets its own compiled function. numpy runs in one worker process per thread
count, started with OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS set before
numpy is imported, and held to that count with threadpoolctl where it is installed.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE: some machines set these (older OpenBLAS builds
compute wrong results on some processors without them), and they slow a current numpy, so
the numpy workers run with both unset (this command only) and the table's header says
which OpenBLAS kernel then runs (threadpoolctl's "architecture"). --keep-openblas-env keeps
them as they are. graphc does not use BLAS at all on this path.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

_WORKER = r"""
import json, os, sys, time
import numpy as np
threads = int(sys.argv[1])
dtype = sys.argv[2]
layout = sys.argv[3]
try:
    import threadpoolctl
except ImportError:
    threadpoolctl = None
info = {}
limiter = None
if threadpoolctl is not None:
    limiter = threadpoolctl.threadpool_limits(threads, user_api="blas")
    blas = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    if blas:
        info = {key: blas[0].get(key) for key in
                ("internal_api", "version", "architecture", "num_threads")}
info["threadpoolctl"] = threadpoolctl is not None
print(json.dumps(info), flush=True)
rng = np.random.default_rng(0)
for line in sys.stdin:
    n, budget = line.split()
    n, budget = int(n), float(budget)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    x = a.T if layout[0] == "t" else a
    y = b.T if layout[1] == "t" else b
    x @ y
    best, spent, reps = float("inf"), 0.0, 0
    while reps < 5 or spent < budget:
        t0 = time.perf_counter()
        x @ y
        dt = time.perf_counter() - t0
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    print(json.dumps({"best": best}), flush=True)
"""


class NumpyWorker:
    """numpy in a process of its own, with its BLAS thread count fixed before import."""

    def __init__(self, threads: int, dtype: str, layout: str, keep_env: bool) -> None:
        env = dict(os.environ)
        if not keep_env:
            env.pop("OPENBLAS_CORETYPE", None)
            env.pop("OPENBLAS_L2_SIZE", None)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(threads), dtype,
                                      layout], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self.info = json.loads(self.proc.stdout.readline())

    def best(self, n: int, budget: float) -> float:
        self.proc.stdin.write(f"{n} {budget}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["best"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def graphc_gemm(n: int, threads: int, dtype: str, layout: str):
    """A compiled n x n GEMM with `threads` threads (GRAPHC_NUM_THREADS at compile time),
    always all of them (GRAPHC_ADAPTIVE_THREADS=0: this measures the GEMM, not the choice)."""
    import graphc as gc
    old = os.environ.get("GRAPHC_NUM_THREADS")
    os.environ["GRAPHC_NUM_THREADS"] = str(threads)
    os.environ["GRAPHC_ADAPTIVE_THREADS"] = "0"
    try:
        a = gc.placeholder((n, n), dtype)
        b = gc.placeholder((n, n), dtype)
        x = a.T if layout[0] == "t" else a
        y = b.T if layout[1] == "t" else b
        return gc.function([a, b], x @ y, backend="llvm")
    finally:
        if old is None:
            os.environ.pop("GRAPHC_NUM_THREADS", None)
        else:
            os.environ["GRAPHC_NUM_THREADS"] = old


def best_time(f, args, budget: float) -> float:
    f(*args)
    best, spent, reps = float("inf"), 0.0, 0
    while reps < 5 or spent < budget:
        t0 = time.perf_counter()
        f(*args)
        dt = time.perf_counter() - t0
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (best kept)")
    ap.add_argument("--budget", type=float, default=0.25,
                    help="seconds of timed calls per measurement")
    ap.add_argument("--layout", default="nn", choices=["nn", "tn", "nt", "tt"],
                    help="t: that operand is used transposed (a.T @ b for tn, ...)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--keep-openblas-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for numpy")
    args = ap.parse_args(argv)

    from graphc.backends.llvm import gemm
    print(f"GEMM C = A @ B, {args.dtype}, layout {args.layout}; best of >= 5 calls and "
          f"{args.budget} s per measurement, best of {args.rounds} alternating rounds")
    print(f"graphc: llvm backend, libgomp {'loaded' if gemm.openmp_available() else 'MISSING'}"
          f"; cores here: {os.cpu_count()}")
    removed = {v: os.environ[v] for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
               if v in os.environ}
    if args.keep_openblas_env:
        print(f"numpy: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE kept: {removed or 'none set'}")
    else:
        print(f"numpy: run with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset "
              f"(were: {removed or 'not set'})")

    workers = {t: NumpyWorker(t, args.dtype, args.layout, args.keep_openblas_env)
               for t in args.threads}
    for t, w in workers.items():
        print(f"numpy worker, {t} thread(s): {w.info}")

    rng = np.random.default_rng(1)
    results = []
    try:
        for n in args.sizes:
            x = rng.standard_normal((n, n)).astype(args.dtype)
            y = rng.standard_normal((n, n)).astype(args.dtype)
            xe = x.T if args.layout[0] == "t" else x
            ye = y.T if args.layout[1] == "t" else y
            ref = xe.astype(np.float64) @ ye.astype(np.float64)
            for t in args.threads:
                f = graphc_gemm(n, t, args.dtype, args.layout)
                err = float(np.abs(f(x, y) - ref).max() / np.abs(ref).max())
                g_best = np_best = float("inf")
                for _ in range(args.rounds):
                    time.sleep(0.05)  # lets the other side's idle threads stop spinning
                    g_best = min(g_best, best_time(f, (x, y), args.budget))
                    time.sleep(0.05)
                    np_best = min(np_best, workers[t].best(n, args.budget))
                flops = 2.0 * n ** 3
                results.append((n, t, flops / g_best / 1e9, flops / np_best / 1e9, err))
    finally:
        for w in workers.values():
            w.close()

    print()
    print(f"{'n':>6} {'threads':>7} {'graphc GFLOP/s':>15} {'numpy GFLOP/s':>14} "
          f"{'ratio':>6} {'rel.err':>9}")
    for n, t, g, npf, err in results:
        print(f"{n:>6} {t:>7} {g:>15.1f} {npf:>14.1f} {g / npf:>6.2f} {err:>9.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
