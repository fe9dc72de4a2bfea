"""What makes a non-blocking MPI reduction progress while the process computes: a 7.6 MB
Iallreduce started before chunks of numpy GEMMs and waited for after them, with nothing
between (MPI entered at the wait only), MPI_Test between the chunks (what graphc's overlap
pass compiles in), or a thread calling MPI_Test every 50 us; against the blocking Allreduce
after the compute and the compute alone. Prints the slowest rank's median step and time
left in the wait (ms).
Run: mpirun -n 2 python benchmarks/bench_mpi_progress.py [--mb 7.6] [--chunks 20]
(as root: OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; add e.g.
--mca btl tcp,self --mca btl_tcp_progress_thread 1 to mpirun to try Open MPI's TCP thread)."""
from __future__ import annotations

import argparse
import os
import threading
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core per process, as graphc's steps
import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=7.6, help="megabytes reduced")
    parser.add_argument("--chunks", type=int, default=20, help="chunks of compute")
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    buf = np.ones(int(args.mb * 1e6 / 4), np.float32)
    a = np.random.default_rng(0).random((256, 256), np.float32)
    waits: dict[str, list[float]] = {"nothing": [], "MPI_Test": [], "thread": []}
    current: list = [None]
    stop = threading.Event()

    def compute(test=None) -> None:
        for _ in range(args.chunks):
            for _ in range(4):
                a @ a
            if test is not None:
                test()

    def wait(name: str, request) -> None:
        t0 = time.perf_counter()
        request.Wait()
        waits[name].append(time.perf_counter() - t0)

    def progress() -> None:
        while not stop.is_set():
            request = current[0]
            if request is not None:
                request.Test()
            time.sleep(50e-6)

    def threaded() -> None:
        request = comm.Iallreduce(MPI.IN_PLACE, buf)
        current[0] = request
        compute()
        current[0] = None
        wait("thread", request)

    def tested() -> None:
        request = comm.Iallreduce(MPI.IN_PLACE, buf)
        compute(request.Test)
        wait("MPI_Test", request)

    def nothing() -> None:
        request = comm.Iallreduce(MPI.IN_PLACE, buf)
        compute()
        wait("nothing", request)

    def blocking() -> None:
        compute()
        comm.Allreduce(MPI.IN_PLACE, buf)

    threading.Thread(target=progress, daemon=True).start()
    variants = {"compute alone": compute, "blocking": blocking, "nothing": nothing,
                "MPI_Test": tested, "thread": threaded}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()
    for w in waits.values():
        w.clear()
    for _ in range(args.repeat):  # one of each in turn: every variant meets the same load
        for name, fn in variants.items():
            comm.Barrier()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    stop.set()

    def slowest(values: list[float]) -> float:
        return max(comm.allgather(float(np.median(values)) * 1e3))
    steps = {name: slowest(t) for name, t in times.items()}
    left = {name: slowest(w) for name, w in waits.items()}
    if comm.Get_rank() == 0:
        print(f"{comm.Get_size()} processes, {buf.nbytes / 1e6:.1f} MB, {args.chunks} chunks")
        for name, ms in steps.items():
            extra = f"  left in the wait {left[name]:7.2f}" if name in left else ""
            print(f"  {name:14s} step {ms:8.2f}{extra}")


if __name__ == "__main__":
    main()
