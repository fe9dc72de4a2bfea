"""The cuda backend without a GPU, on the training-step workloads of bench_training.py and
bench_resnet.py:
  ptx       each step's CUDA C compiled to PTX and assembled for sm_90: registers, shared
            memory and spills of its main kernels (GEMMs, reductions, the largest fused
            elementwise kernels) and the number of kernels that spill
  emulate   the emulator on W2 (MLP 64-32-10, batch 32) and W5 (LeNet-like CNN, batch 64), and
            W6 (the small ResNet, batch 8): compile time, step time, and losses and
            parameters after three steps against the numpy backend
Run: python benchmarks/cuda_report.py [--only ptx,emulate] [--steps 3] [--workloads W2,W5]"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_resnet as br  # noqa: E402
import bench_training as bt  # noqa: E402

from graphc.backend import register_backend  # noqa: E402
from graphc.backends.cuda import BACKEND as CUDA, CUDA_POLICY  # noqa: E402


class _Emulated:
    """backend="cuda-emulated": the cuda backend with emulate=True (for builders that take
    a backend name only)."""

    name = "cuda-emulated"
    policy = CUDA_POLICY

    def compile(self, program, options):
        return CUDA.compile(program, {**options, "emulate": True})


register_backend("cuda-emulated", _Emulated)


def workloads(backend: str) -> dict:
    """name -> (build() -> compiled step, arguments)."""
    w1, x1, y1 = bt.mlp_data([784, 256, 256, 10], 128)
    w2, x2, y2 = bt.mlp_data([64, 32, 10], 32)
    p5, x5, y5 = bt.cnn_data(64)
    p6 = br.resnet_params()
    return {
        "W1": (lambda: bt.graphc_mlp_step(w1, "relu", backend=backend), (x1, y1)),
        "W2": (lambda: bt.graphc_mlp_step(w2, "tanh", backend=backend), (x2, y2)),
        "W5": (lambda: bt.graphc_cnn_step(p5, backend=backend), (x5, y5)),
        "W6": (lambda: br.graphc_resnet_step(p6, backend=backend), br.resnet_data(8)),
    }


def main_kernels(stats, source: str) -> list:
    gemms = [s for s in stats if "_gemm" in s.name]
    reductions = sorted((s for s in stats if "_reduce_" in s.name),
                        key=lambda s: -s.registers)[:3]
    fused = sorted((s for s in stats if "_elementwise_" in s.name),
                   key=lambda s: -len(source.split(f"\n{s.name}(")[1].split("\n}\n")[0]))
    return gemms + reductions + fused[:3]


def gpu_sized() -> dict:
    """name -> (build, arguments' shapes): the GPU benchmarks' kernels (SGEMM 4096^3 takes
    the large GEMM tiling, a fused elementwise kernel over 2^24 floats the vector loop)."""
    import graphc as gc

    def sgemm():
        a, b = gc.placeholder((4096, 4096), name="a"), gc.placeholder((4096, 4096), name="b")
        return gc.function([a, b], a @ b, backend="numpy")

    def axpy():
        x, y = gc.placeholder((4096, 4096), name="x"), gc.placeholder((4096, 4096), name="y")
        return gc.function([x, y], 2.5 * x + y, backend="numpy")
    return {"SGEMM 4096^3": (sgemm, [(4096, 4096)] * 2),
            "elementwise 2^24": (axpy, [(4096, 4096)] * 2)}


def report_ptx() -> None:
    from graphc.backends.cuda import ptx
    from graphc.backends.cuda.render import render
    from graphc.schedule import schedule_graph
    print("## PTX for sm_90 (no GPU)")
    programs = {name: (build, [a.shape for a in args])
                for name, (build, args) in workloads("numpy").items()}
    for name, (build, shapes) in {**programs, **gpu_sized()}.items():
        f = build()
        source = render(schedule_graph(f.graph, shapes, policy=CUDA_POLICY)).source
        t0 = time.perf_counter()
        _, stats, how = ptx.check_source(source)
        seconds = time.perf_counter() - t0
        spilled = [s.name for s in stats if s.spill_stores or s.spill_loads]
        print(f"{name}: {len(stats)} kernels, {how} in {seconds:.1f} s, "
              f"spilling: {spilled or 'none'}")
        for s in main_kernels(stats, source):
            print(f"  {s.name:48s} {s.registers:4d} regs {s.shared_bytes:6d} B smem "
                  f"{s.spill_stores + s.spill_loads:4d} B spills")


def report_emulate(steps: int, names: tuple[str, ...] = ("W2", "W5", "W6")) -> None:
    print("## the emulator against the numpy backend")
    emulated, reference = workloads("cuda-emulated"), workloads("numpy")
    for name in names:
        (build, args), (build_ref, _) = emulated[name], reference[name]
        t0 = time.perf_counter()
        f = build()
        loss = f(*args)
        first = time.perf_counter() - t0
        g = build_ref()
        ref = g(*args)
        times, cpu, losses = [], [], [(loss, ref)]
        for _ in range(steps - 1):
            t1, c1 = time.perf_counter(), time.process_time()
            loss = f(*args)
            times.append(time.perf_counter() - t1)
            cpu.append(time.process_time() - c1)  # (the steadier figure on a shared machine)
            losses.append((loss, g(*args)))
        loss_err = max(abs(float(a) - float(b)) / abs(float(b)) for a, b in losses)
        param_err = max(float(np.max(np.abs(a.array - b.array) / (np.abs(b.array) + 1e-3)))
                        for a, b in zip(f._storages, g._storages))
        print(f"{name}: compile + first step {first:.1f} s, step {statistics.median(times):.3f}"
              f" s, {statistics.median(cpu):.3f} s of CPU (medians of {len(times)}), after "
              f"{steps} steps: losses within "
              f"{loss_err:.1e} (relative), parameters within {param_err:.1e}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="ptx,emulate")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--workloads", default="W2,W5,W6", help="of the emulate report")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if "ptx" in only:
        report_ptx()
    if "emulate" in only:
        names = tuple(args.workloads.split(","))
        unknown = set(names) - {"W2", "W5", "W6"}
        if unknown:
            parser.error(f"--workloads: {sorted(unknown)} are not among W2, W5, W6")
        report_emulate(max(args.steps, 2), names)


if __name__ == "__main__":
    main()
