"""The cuda backend on a real GPU, each figure against baselines timed in the same run.
  W1, W2, W5, W6  the training steps of bench_training.py and bench_resnet.py (float32; W6 at
      batch 64): graphc's cuda backend (inputs, parameters and outputs on the device) against
      PyTorch CUDA eager and JAX jit on the GPU. Median step time, each step synchronised,
      so a figure is a step's latency as a training loop sees it. "cold": graph, gradient,
      NVRTC compile and the first step, with an empty cache folder; the first step's loss is
      compared with PyTorch's on the same parameters and data.
  sgemm  4096^3 float32: graphc's a @ b against cuBLAS (CuPy's and PyTorch's matmul), TFLOP/s
      (graphc's also counting its kernels' time alone, CUDA events around each launch).
  elementwise  2.5 * x + y over 2^24 floats: graphc's one fused kernel against CuPy (two
      kernels) and PyTorch (one), GB/s counting bytes read and written (graphc's also over
      its kernel's time alone).
  --breakdown W6  after the step figures, each kernel's share of a step (CUDA events around
      every launch; the kernels' sum against the step's wall time shows the host's share).
Needs a GPU and CuPy; PyTorch and JAX are used when installed.
Run: python benchmarks/bench_cuda.py [--only W1,W2,W5,W6,sgemm,elementwise] [--repeat 50]
     [--breakdown W6] [--json FILE]"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

# compiled programs go to a folder of this run: every first call is a cold one
os.environ["GRAPHC_CACHE_DIR"] = tempfile.mkdtemp(prefix="graphc-bench-cuda-")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave memory to the others
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_resnet as br  # noqa: E402
import bench_training as bt  # noqa: E402


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:  # (a broken install is as good as none here)
        return False


def synced_ms(fn: Callable[[], Any], sync: Callable[[], None], repeat: int,
              warmup: int = 5) -> float:
    """Median wall time of fn() followed by sync()."""
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def cupy_sync() -> None:
    import cupy
    cupy.cuda.get_current_stream().synchronize()


def torch_sync() -> None:
    import torch
    torch.cuda.synchronize()


# ---- training steps ---------------------------------------------------------------------

def workloads() -> dict[str, dict[str, Any]]:
    """name -> how each framework builds its step, and the step's data."""
    w1, x1, y1 = bt.mlp_data([784, 256, 256, 10], 128)
    w2, x2, y2 = bt.mlp_data([64, 32, 10], 32)
    p5, x5, y5 = bt.cnn_data(64)
    p6 = br.resnet_params()
    x6, y6 = br.resnet_data(64)
    return {
        "W1": dict(data=(x1, y1), graphc=lambda: bt.graphc_mlp_step(w1, "relu", backend="cuda"),
                   torch=lambda: bt.torch_mlp_step(w1, "relu", device="cuda"),
                   jax=lambda: bt.jax_mlp_step(w1, "relu")),
        "W2": dict(data=(x2, y2), graphc=lambda: bt.graphc_mlp_step(w2, "tanh", backend="cuda"),
                   torch=lambda: bt.torch_mlp_step(w2, "tanh", device="cuda"),
                   jax=lambda: bt.jax_mlp_step(w2, "tanh")),
        "W5": dict(data=(x5, y5), graphc=lambda: bt.graphc_cnn_step(p5, backend="cuda"),
                   torch=lambda: bt.torch_cnn_step(p5, device="cuda")),
        "W6": dict(data=(x6, y6), graphc=lambda: br.graphc_resnet_step(p6, backend="cuda"),
                   torch=lambda: br.torch_resnet_step(p6, device="cuda"),
                   jax=lambda: br.jax_resnet_step(p6)),
    }


def bench_step(name: str, spec: dict[str, Any], repeat: int,
               breakdown: bool = False) -> dict[str, Any]:
    import cupy
    x, y = spec["data"]
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    f = spec["graphc"]()
    gx, gy = cupy.asarray(x), cupy.asarray(y)
    first = float(f(gx, gy))
    out["graphc cold s"] = time.perf_counter() - t0
    out["graphc ms"] = synced_ms(lambda: f(gx, gy), cupy_sync, repeat)
    if breakdown:
        try:
            out["kernels"] = kernel_breakdown(f, (gx, gy), repeat)
        except Exception as exc:  # (the step's own figures still count)
            out["kernels"] = f"failed: {type(exc).__name__}: {exc}"
    if _has("torch"):
        import torch
        step = spec["torch"]()
        tx, ty = torch.tensor(x, device="cuda"), torch.tensor(y, device="cuda")
        out["loss difference"] = abs(first - float(step(tx, ty))) / max(abs(first), 1e-30)
        out["torch ms"] = synced_ms(lambda: step(tx, ty), torch_sync, repeat)
    if "jax" in spec and _has("jax"):
        import jax
        jstep = spec["jax"]()
        jx, jy = jax.device_put(x), jax.device_put(y)
        out["jax ms"] = synced_ms(lambda: jstep(jx, jy), lambda: None, repeat)
    return out


def kernel_breakdown(f: Any, args: tuple, steps: int, top: int = 15) -> dict[str, Any]:
    """Milliseconds a step of each kernel of f's last compiled program (CUDA events around
    each launch, so launched one by one rather than as the step's CUDA graph), the `top`
    slowest, and the kernels' sum."""
    import cupy
    runner = f._exe.last.runner
    spent: dict[str, float] = {}
    events: list[tuple[str, Any, Any]] = []

    def timed(fn: Any, label: str) -> Callable[..., None]:
        def call(*a: Any) -> None:
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            fn(*a)
            end.record()
            events.append((label, start, end))
        return call

    original, graph, capturable = runner.functions, runner.graph, runner.capturable
    runner.functions = [(fn if fn is None else timed(fn, f"{L.name} grid {L.grid} block {L.block}"),
                         L, body) for fn, L, body in original]
    runner.graph, runner.capturable = None, False  # (kernel by kernel, each timed)
    try:
        for _ in range(steps):
            f(*args)
            cupy_sync()
            for label, start, end in events:
                spent[label] = spent.get(label, 0.0) + cupy.cuda.get_elapsed_time(start, end)
            events.clear()
    finally:
        runner.functions, runner.graph, runner.capturable = original, graph, capturable
    per_step = {k: v / steps for k, v in spent.items()}
    slowest = sorted(per_step.items(), key=lambda kv: -kv[1])[:top]
    return {"kernels": len(per_step), "sum ms": sum(per_step.values()),
            "slowest ms": dict(slowest)}


# ---- kernels at the GPU's own sizes -------------------------------------------------------

def bench_sgemm(repeat: int, n: int = 4096) -> dict[str, float]:
    import cupy
    import graphc as gc
    a, b = gc.placeholder((n, n), name="a"), gc.placeholder((n, n), name="b")
    f = gc.function([a, b], a @ b, backend="cuda")
    rng = np.random.default_rng(0)
    ga, gb = (cupy.asarray(rng.normal(size=(n, n)).astype(np.float32)) for _ in range(2))
    got = f(ga, gb)
    want = cupy.matmul(ga, gb)
    exact = ga[:64].astype(cupy.float64) @ gb.astype(cupy.float64)  # (64 rows are enough)
    out = {"max relative error vs cublas": float(cupy.abs(got - want).max()
                                                 / cupy.abs(want).max()),
           "max relative error vs float64": float(cupy.abs(got[:64] - exact).max()
                                                  / cupy.abs(exact).max())}
    flop = 2 * n ** 3 / 1e12
    out["graphc TFLOP/s"] = flop / synced_ms(lambda: f(ga, gb), cupy_sync, repeat) * 1e3
    out["graphc kernels TFLOP/s"] = flop / kernel_breakdown(f, (ga, gb), repeat)["sum ms"] * 1e3
    out["cupy TFLOP/s"] = flop / synced_ms(lambda: cupy.matmul(ga, gb), cupy_sync, repeat) * 1e3
    if _has("torch"):
        import torch
        ta, tb = torch.as_tensor(ga, device="cuda"), torch.as_tensor(gb, device="cuda")
        out["torch TFLOP/s"] = flop / synced_ms(lambda: ta @ tb, torch_sync, repeat) * 1e3
    return out


def bench_elementwise(repeat: int, n: int = 4096) -> dict[str, float]:
    import cupy
    import graphc as gc
    x, y = gc.placeholder((n, n), name="x"), gc.placeholder((n, n), name="y")
    f = gc.function([x, y], 2.5 * x + y, backend="cuda")
    rng = np.random.default_rng(0)
    gx, gy = (cupy.asarray(rng.normal(size=(n, n)).astype(np.float32)) for _ in range(2))
    out = {"max abs error": float(cupy.abs(f(gx, gy) - (2.5 * gx + gy)).max())}
    gbytes = 3 * 4 * n * n / 1e9
    out["graphc GB/s"] = gbytes / synced_ms(lambda: f(gx, gy), cupy_sync, repeat) * 1e3
    out["graphc kernels GB/s"] = gbytes / kernel_breakdown(f, (gx, gy), repeat)["sum ms"] * 1e3
    out["cupy GB/s"] = gbytes / synced_ms(lambda: 2.5 * gx + gy, cupy_sync, repeat) * 1e3
    if _has("torch"):
        import torch
        tx, ty = torch.as_tensor(gx, device="cuda"), torch.as_tensor(gy, device="cuda")
        out["torch GB/s"] = gbytes / synced_ms(lambda: torch.add(ty, tx, alpha=2.5),
                                               torch_sync, repeat) * 1e3
    return out


def versions() -> dict[str, str]:
    import cupy
    from graphc.backends.cuda.gpu import target_id
    found = {"gpu": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(),
             "target": target_id(), "cupy": cupy.__version__, "numpy": np.__version__}
    for module in ("torch", "jax"):
        if _has(module):
            found[module] = __import__(module).__version__
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="W1,W2,W5,W6,sgemm,elementwise")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--breakdown", default="",
                        help="workloads (comma-separated) to time kernel by kernel too")
    parser.add_argument("--json", help="write the figures to this file as well")
    args = parser.parse_args(argv)
    from graphc.backends.cuda.backend import gpu_problem
    why = gpu_problem()
    if why is not None:
        sys.exit(f"bench_cuda: needs a GPU ({why})")
    results: dict[str, Any] = {"versions": versions(), "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(results["versions"]))
    specs = workloads()
    for name in args.only.split(","):
        try:
            if name in specs:
                results[name] = bench_step(name, specs[name], args.repeat,
                                           name in args.breakdown.split(","))
            elif name == "sgemm":
                results[name] = bench_sgemm(max(args.repeat // 5, 5))
            elif name == "elementwise":
                results[name] = bench_elementwise(args.repeat)
            else:
                parser.error(f"--only: unknown workload {name!r}")
        except Exception as exc:  # one workload failing must not hide the others' figures
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        print(name, json.dumps(results[name]), flush=True)
    for name in specs:
        r = results.get(name, {})
        ratios = [f"graphc/{peer} = {r['graphc ms'] / r[peer + ' ms']:.2f}"
                  for peer in ("torch", "jax") if peer + " ms" in r and "graphc ms" in r]
        if ratios:
            print(f"{name}: graphc {r['graphc ms']:.3f} ms, " + ", ".join(ratios))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
