"""Data-parallel training steps over MPI on this machine (loopback): step time and the share
of it spent communicating, for 1, 2 and 4 processes, on two MLPs (float32, llvm):
  digits  64-64-10, 4.8k parameters (19 KB of gradients): latency-bound
  wide    784-1024-1024-10, 1.9M parameters (7.5 MB of gradients): bandwidth-bound
Per model and job size: the step with its reductions compiled in (the default buckets:
DDP's, a first one of 1 MiB, then 25 MiB), the same with one bucket for everything (25 MiB),
with one reduction per gradient and with 1 MiB buckets (each overlapped with the kernels
after it, graphc.schedule.overlap: progressed by MPI_Test between the kernels, or only by
the wait; and blocking), the program split into two native parts with an mpi4py reduction
between them, the step without reductions (compute only; the communication share is
1 - compute / step), and the reduction alone (mpi4py, the same bytes).
Run: python benchmarks/bench_distributed.py [--ranks 1,2,4] [--batch 64] [--repeat 30]
     [--alternate] [--models digits,wide]
(it starts mpirun itself; more processes than cores share them: see docs/distributed.md)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_training import median_ms  # noqa: E402 (the same timer as W1-W5)

import graphc as gc  # noqa: E402
from graphc.schedule import DEFAULT_POLICY  # noqa: E402

MODELS = {"digits": (64, 64, 10), "wide": (784, 1024, 1024, 10)}


def _mlp(sizes, rng):
    params = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        params.append(gc.parameter(rng.normal(0, a ** -0.5, (a, b)).astype(np.float32),
                                   name=f"W{i}"))
        params.append(gc.parameter(np.zeros(b, np.float32), name=f"b{i}"))
    x = gc.placeholder((None, sizes[0]), "float32", name="x")
    y = gc.placeholder((None,), "int64", name="y")
    h = x
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i + 2 < len(params):
            h = gc.relu(h)
    return x, y, params, gc.nn.cross_entropy(h, y)


def _with_buckets(bucket_bytes: int, overlap: bool = True, progress: bool = True) -> None:
    """The llvm backend's policy with buckets of another size (the first too), the
    reductions overlapped with the kernels after them (progressed by tests between them, or
    not) or blocking (measurement knobs)."""
    from graphc.backend import get_backend
    backend = get_backend("llvm")
    backend.policy = dataclasses.replace(type(backend).policy, bucket_bytes=bucket_bytes,
                                         first_bucket_bytes=None, overlap_reductions=overlap,
                                         progress_reductions=progress)


def _default_policy() -> None:
    from graphc.backend import get_backend
    backend = get_backend("llvm")
    backend.policy = type(backend).policy


def measure(model: str, batch: int, repeat: int, alternate: bool) -> dict:
    from mpi4py import MPI
    comm, k = MPI.COMM_WORLD, gc.distributed.size()
    rng = np.random.default_rng(0)
    sizes = MODELS[model]
    data_x = rng.normal(size=(batch, sizes[0])).astype(np.float32)
    data_y = rng.integers(0, sizes[-1], batch)
    lr = 0.01
    variants: dict = {}

    default = DEFAULT_POLICY.bucket_bytes
    for name, bucket_bytes, overlap, progress in (
            ("step", 0, True, True), ("step, one bucket", default, True, True),
            ("step, no buckets", 1, True, True),
            ("step, 1 MiB buckets", 1 << 20, True, True),
            ("step, no buckets, no progress", 1, True, False),
            ("step, 1 MiB buckets, no progress", 1 << 20, True, False),
            ("step, no buckets, blocking", 1, False, True),
            ("step, 1 MiB buckets, blocking", 1 << 20, False, True)):
        if bucket_bytes:
            _with_buckets(bucket_bytes, overlap, progress)
        else:
            _default_policy()
        x, y, params, loss = _mlp(sizes, rng)
        grads = [gc.distributed.all_reduce(g) for g in gc.grad(loss, params)]
        step = gc.function([x, y], gc.distributed.all_reduce(loss), backend="llvm",
                           updates={p: p - lr * g for p, g in zip(params, grads)})
        variants[name] = lambda step=step: step(data_x, data_y)
    _default_policy()

    x, y, params, loss = _mlp(sizes, rng)
    grads = gc.grad(loss, params)
    local = gc.function([x, y], loss, backend="llvm",
                        updates={p: p - lr * g for p, g in zip(params, grads)})
    variants["compute only"] = lambda: local(data_x, data_y)

    # split: native part 1 (loss, gradients), mpi4py all-reduce of one flat buffer, part 2
    part1 = gc.function([x, y], [loss] + list(grads), backend="llvm")
    holders = [gc.placeholder(p.shape, "float32", name=f"g{i}") for i, p in enumerate(params)]
    part2 = gc.function(holders, [], backend="llvm",
                        updates={p: p - lr * g for p, g in zip(params, holders)})
    n = sum(int(np.prod(p.shape)) for p in params)
    flat = np.empty(1 + n, np.float32)
    cuts = np.cumsum([1] + [int(np.prod(p.shape)) for p in params])[:-1]

    def split() -> None:
        outs = part1(data_x, data_y)
        np.concatenate([o.ravel() for o in outs], out=flat)
        comm.Allreduce(MPI.IN_PLACE, flat)
        flat[...] /= k
        part2(*[piece.reshape(p.shape) for piece, p in zip(np.split(flat[1:], cuts[1:] - 1),
                                                           params)])
    variants["split in two native parts"] = split
    variants["all_reduce alone"] = lambda: comm.Allreduce(MPI.IN_PLACE, flat)

    best: dict = {}
    if alternate:  # one step of each variant in turn: every variant meets the same load
        times: dict = {name: [] for name in variants}
        for fn in variants.values():
            median_ms(fn, 1)  # (its warm-up steps)
        for _ in range(repeat):
            for name, fn in variants.items():
                comm.Barrier()
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        for name, t in times.items():
            best[name] = float(np.max(comm.allgather(statistics.median(t) * 1e3)))
    else:
        # Rounds of every variant in turn, each the slowest rank's median; the best round
        # per variant: other processes on a shared machine stall a spinning rank, and one
        # stalled rank stalls them all, so what runs in one round meets the same load.
        for _ in range(3):
            for name, fn in variants.items():
                comm.Barrier()
                ms = float(np.max(comm.allgather(median_ms(fn, repeat))))
                best[name] = min(best.get(name, ms), ms)
    best["gradient bytes"] = 4 * n
    return best


def worker(args) -> None:
    results = {m: measure(m, args.batch, args.repeat, args.alternate)
               for m in args.models.split(",")}
    if gc.distributed.rank() == 0:
        print(json.dumps(results), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--batch", type=int, default=64, help="rows per process and step")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--alternate", action="store_true",
                        help="one step of each variant in turn (medians), not rounds")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    mpirun = Path(sys.executable).parent / "mpirun"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    how = "alternating steps" if args.alternate else "best of 3 interleaved rounds"
    print(f"{os.cpu_count()} cores; per-process batch {args.batch}; medians of "
          f"{args.repeat} steps (ms, slowest rank, {how})")
    for k in (int(r) for r in args.ranks.split(",")):
        cmd = [str(mpirun if mpirun.exists() else "mpirun"), "-n", str(k), "--oversubscribe",
               sys.executable, __file__, "--worker", "--batch", str(args.batch),
               "--repeat", str(args.repeat), "--models", args.models]
        cmd += ["--alternate"] if args.alternate else []
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        results = json.loads(done.stdout.strip().splitlines()[-1])
        for model, r in results.items():
            share = 1 - r["compute only"] / r["step"]
            print(f"K={k} {model:6s} ({r['gradient bytes'] / 1e6:.2f} MB)  step "
                  f"{r['step']:8.3f}  compute {r['compute only']:8.3f}  comm share "
                  f"{share:6.1%}  one bucket {r['step, one bucket']:8.3f}  all_reduce alone "
                  f"{r['all_reduce alone']:8.3f}  split {r['split in two native parts']:8.3f}",
                  flush=True)
            for buckets in ("no buckets", "1 MiB buckets"):
                times = [r[f"step, {buckets}{how}"] for how in ("", ", no progress",
                                                                ", blocking")]
                shares = "/".join(f"{1 - r['compute only'] / t:.0%}" for t in times)
                print(f"    {buckets:13s} overlapped {times[0]:8.3f}  without progress "
                      f"{times[1]:8.3f}  blocking {times[2]:8.3f}  (comm share {shares})",
                      flush=True)


if __name__ == "__main__":
    main()
