"""Direct convolutions against the implicit GEMM, by depth: each convolution (float32, forward
only) compiled twice by the llvm backend, once with every shallow-enough implicit GEMM
computed directly (SchedulePolicy.direct_conv_depth raised past its depth, strided rows
taken too) and once with none (0), timed alternately in the same process: the measurement
behind the llvm policy's DIRECT_CONV_DEPTH (backends/llvm/backend.py). --clock cpu (the
default) times by the process's CPU time, steadier on a busy machine; run it with
GRAPHC_NUM_THREADS=1 then.
Run: GRAPHC_NUM_THREADS=1 python benchmarks/bench_conv_direct.py [--repeat 300]
     [--clock cpu|wall]"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

import graphc as gc
from graphc.backends.llvm import LLVM_POLICY
from graphc.backends.llvm.backend import LLVMBackend

CASES = [  # (name, x shape, w shape, stride, padding)
    ("W6 conv1 1->16 3x3", (64, 1, 28, 28), (16, 1, 3, 3), 1, 1),
    ("W5 conv1 1->8 5x5", (64, 1, 28, 28), (8, 1, 5, 5), 1, 0),
    ("2->8 5x5", (64, 2, 28, 28), (8, 2, 5, 5), 1, 0),
    ("4->16 3x3", (64, 4, 28, 28), (16, 4, 3, 3), 1, 1),
    ("8->16 3x3 (14x14)", (64, 8, 14, 14), (16, 8, 3, 3), 1, 1),
    ("16->16 3x3 (W6 block)", (64, 16, 28, 28), (16, 16, 3, 3), 1, 1),
    ("32->32 3x3 (14x14)", (64, 32, 14, 14), (32, 32, 3, 3), 1, 1),
    ("W5 conv2 8->16 5x5", (64, 8, 12, 12), (16, 8, 5, 5), 1, 0),
    ("1->16 3x3 stride 2", (64, 1, 28, 28), (16, 1, 3, 3), 2, 1),
    ("4->16 3x3 stride 2", (64, 4, 28, 28), (16, 4, 3, 3), 2, 1),
    ("1->16 3x3 stride 2 (56)", (16, 1, 56, 56), (16, 1, 3, 3), 2, 1),
    ("16->32 3x3 stride 2 (W6)", (64, 16, 28, 28), (32, 16, 3, 3), 2, 1),
]


def compiled(xs, ws, stride, padding, depth: int):
    x = gc.placeholder(xs, "float32", name="x")
    w = gc.placeholder(ws, "float32", name="w")
    y = gc.nn.conv2d(x, w, stride=stride, padding=padding)
    LLVMBackend.policy = dataclasses.replace(LLVM_POLICY, direct_conv_depth=depth,
                                             direct_conv_stride=2)
    try:
        f = gc.function([x, w], y, backend="llvm", backend_options={"cache_dir": None})
        xv = np.random.default_rng(0).normal(size=xs).astype(np.float32)
        wv = np.random.default_rng(1).normal(size=ws).astype(np.float32)
        f(xv, wv)  # (compiled at the first call, with the policy above)
    finally:
        LLVMBackend.policy = LLVM_POLICY
    return f, (xv, wv)


def timed(f, args, repeat: int, clock: str) -> float:
    """10th percentile of `repeat` calls, ms."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    times = []
    for _ in range(repeat):
        t0 = now()
        f(*args)
        times.append(now() - t0)
    return float(np.percentile(times, 10)) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args(argv)
    print(f"{'convolution':<26}{'depth':>6}{'direct ms':>11}{'gemm ms':>10}{'ratio':>8}")
    for name, xs, ws, stride, padding in CASES:
        depth = ws[1] * ws[2] * ws[3]
        direct = compiled(xs, ws, stride, padding, 1 << 20)
        gemm = compiled(xs, ws, stride, padding, 0)
        best = {"direct": [], "gemm": []}
        for _ in range(3):  # alternated: drift under load hits both alike
            for label, (f, data) in (("direct", direct), ("gemm", gemm)):
                best[label].append(timed(f, data, args.repeat // 3, args.clock))
        d, g = min(best["direct"]), min(best["gemm"])
        print(f"{name:<26}{depth:>6}{d:>11.3f}{g:>10.3f}{d / g:>8.2f}")


if __name__ == "__main__":
    main()
