"""Winograd F(2x2, 3x3) against graphc's own 3x3 convolution at W6's stride-1 sizes.

The issue asked for Winograd "if measured faster at these sizes". This measures a
Winograd convolution written in graphc's DSL (strided slices for the 4x4 input tiles, the
input, filter and output transforms as sums of them, one batched product per transformed
position), compiled by the same llvm backend, against gc.nn.conv2d (a direct convolution or
an implicit GEMM: no im2col), forward only, float32, same run. Values are checked equal
first. The DSL version pays for its transforms in separate passes over memory; a
hand-fused kernel would save some of them, so the arithmetic is printed too: Winograd does
2.25x fewer multiply-adds in its products, against 4x the input's size written and read as
transformed tiles.
Run: python benchmarks/bench_winograd.py [--repeat 50]"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import graphc as gc

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)

# W6's 3x3 stride-1 convolutions: (batch, channels in, channels out, height = width)
SHAPES = [(64, 16, 16, 28), (64, 32, 32, 14)]


def _combination(coefficients, terms):
    """sum of c * t over the nonzero coefficients."""
    out = None
    for c, t in zip(coefficients, terms):
        if c == 0:
            continue
        term = t if c == 1 else (-t if c == -1 else float(c) * t)
        out = term if out is None else out + term
    return out


def winograd_conv(x, w, n: int, c: int, k: int, h: int):
    """3x3 convolution, stride 1, padding 1, as F(2x2, 3x3) (h even)."""
    t = h // 2
    xp = gc.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    d = [[xp[:, :, i:i + 2 * t:2, j:j + 2 * t:2] for j in range(4)] for i in range(4)]
    # B^T d B, by rows then columns
    rows = [[_combination(B_T[a], [d[i][j] for i in range(4)]) for j in range(4)]
            for a in range(4)]
    v = [[_combination(B_T[b], rows[a]) for b in range(4)] for a in range(4)]
    taps = [[w[:, :, i, j] for j in range(3)] for i in range(3)]
    grow = [[_combination(G[a], [taps[i][j] for i in range(3)]) for j in range(3)]
            for a in range(4)]
    u = [[_combination(G[b], grow[a]) for b in range(4)] for a in range(4)]
    m = [[u[a][b] @ gc.reshape(v[a][b], (n, c, t * t)) for b in range(4)] for a in range(4)]
    mrow = [[_combination(A_T[p], [m[a][b] for a in range(4)]) for b in range(4)]
            for p in range(2)]
    y = [[_combination(A_T[q], mrow[p]) for q in range(2)] for p in range(2)]
    phases = gc.stack([gc.stack([gc.reshape(y[p][q], (n, k, t, t)) for q in range(2)])
                       for p in range(2)])  # (2, 2, n, k, t, t)
    return gc.reshape(gc.transpose(phases, (2, 3, 4, 0, 5, 1)), (n, k, h, h))


def median_ms(f, args, repeat: int) -> float:
    for _ in range(5):
        f(*args)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f(*args)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print("3x3 stride-1 convolution, forward, float32: gc.nn.conv2d against Winograd "
          "F(2x2,3x3) in the DSL (median ms; rounds alternate)")
    for n, c, k, h in SHAPES:
        x = gc.placeholder((n, c, h, h), name="x")
        w = gc.placeholder((k, c, 3, 3), name="w")
        own = gc.function([x, w], gc.nn.conv2d(x, w, padding=1))
        wino = gc.function([x, w], winograd_conv(x, w, n, c, k, h))
        xv = rng.normal(size=(n, c, h, h)).astype(np.float32)
        wv = (rng.normal(size=(k, c, 3, 3)) * 0.2).astype(np.float32)
        np.testing.assert_allclose(wino(xv, wv), own(xv, wv), rtol=1e-3, atol=1e-3)
        times: dict[str, list[float]] = {"conv2d": [], "winograd": []}
        for _ in range(3):
            times["conv2d"].append(median_ms(own, (xv, wv), args.repeat))
            times["winograd"].append(median_ms(wino, (xv, wv), args.repeat))
        mine, theirs = (statistics.median(times[key]) for key in ("conv2d", "winograd"))
        macs = n * k * c * 9 * h * h
        print(f"  N={n} C={c} K={k} {h}x{h}: conv2d {mine:.3f} ms, winograd {theirs:.3f} ms "
              f"(winograd/conv2d = {theirs / mine:.2f}); multiply-adds {macs / 1e6:.0f}M "
              f"against {macs / 2.25 / 1e6:.0f}M in Winograd's products, whose transformed "
              f"input is {16 * n * c * (h // 2) ** 2 * 4 / 2**20:.1f} MiB "
              f"(the input: {n * c * h * h * 4 / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
