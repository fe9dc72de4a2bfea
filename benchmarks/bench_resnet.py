"""W6, a small ResNet training step, and compile time against depth, each against PyTorch and
JAX measured in the same run.
  W6  conv3x3 1->16 + BatchNorm + ReLU, residual blocks 16->16, 16->32 (stride 2, 1x1
      projection), 32->32, global average pool, dense 10, cross-entropy, batch 64,
      1x28x28 inputs, SGD; batch statistics (training mode). Step time (the median of
      --rounds medians of --repeat steps, the libraries taking turns) and cold start
      (graph, gradient, compile and the first step, in a fresh process each; the median
      of --rounds, the libraries taking turns).
  depth  cold compile of an MLP training step (width 256, batch 64, ReLU) of 2, 8, 32 and 96
      layers: graphc (fresh process, empty cache folder) against JAX jit.
      Then W6's GFLOP/s (convolution and matmul FLOPs counted from the graph) as a share of
      graphc's own n x n GEMM on two threads, measured in the same run (--gemm-n, 1024).
Run: python benchmarks/bench_resnet.py [--only W6,depth] [--repeat 30] [--no-torch-compile]
     [--gemm-n 1024] [--rounds 3]"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_training import cold_env, import_llvm_backend, median_ms  # noqa: E402 (as W1-W5)
from gemm_rate import gemm_gflops, graph_matmul_flops, schedule_gemm_flops  # noqa: E402

BLOCKS = ((16, 16, 1), (16, 32, 2), (32, 32, 1))
DEPTHS = (2, 8, 32, 96)


# ---- the model's parameters, the same numbers for every framework -------------------------

def resnet_params(seed: int = 0) -> list[np.ndarray]:
    """conv weights (OIHW) with He init, BatchNorm (gamma, beta) per conv, the dense layer."""
    rng = np.random.default_rng(seed)

    def conv(cout: int, cin: int, k: int) -> np.ndarray:
        return (rng.normal(size=(cout, cin, k, k)) * np.sqrt(2 / (cin * k * k))).astype(
            np.float32)

    def bn(c: int) -> list[np.ndarray]:
        return [np.ones(c, np.float32), np.zeros(c, np.float32)]

    params = [conv(16, 1, 3)] + bn(16)
    for cin, cout, stride in BLOCKS:
        params += [conv(cout, cin, 3)] + bn(cout) + [conv(cout, cout, 3)] + bn(cout)
        if cin != cout or stride != 1:
            params += [conv(cout, cin, 1)] + bn(cout)
    params += [(rng.normal(size=(32, 10)) * np.sqrt(1 / 32)).astype(np.float32),
               np.zeros(10, np.float32)]
    return params


def resnet_data(batch: int = 64, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, batch)


def forward(p: list, x, ops: dict):
    """The ResNet over any framework's ops: conv(x, w, stride, pad), bn(x, g, b), relu,
    gap(x) -> (N, C), dense(x, w, b)."""
    it = iter(p)

    def take(n: int) -> list:
        return [next(it) for _ in range(n)]

    w, g, b = take(3)
    h = ops["relu"](ops["bn"](ops["conv"](x, w, 1, 1), g, b))
    for cin, cout, stride in BLOCKS:
        w1, g1, b1, w2, g2, b2 = take(6)
        y = ops["relu"](ops["bn"](ops["conv"](h, w1, stride, 1), g1, b1))
        y = ops["bn"](ops["conv"](y, w2, 1, 1), g2, b2)
        if cin != cout or stride != 1:
            ws, gs, bs = take(3)
            h = ops["bn"](ops["conv"](h, ws, stride, 0), gs, bs)
        h = ops["relu"](y + h)
    wd, bd = take(2)
    return ops["dense"](ops["gap"](h), wd, bd)


# ---- graphc ------------------------------------------------------------------------------

def graphc_resnet_graph(params: list[np.ndarray], names: list[str] | None = None,
                        batch: int | None = None):
    """The step's graph in graphc: (x, labels, parameters, loss, gradients); `names`
    (default p0, p1, ...) name the parameters; batch None leaves the batch size symbolic."""
    import graphc as gc

    def bn(x, g, b):
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
        return (x - mean) / gc.sqrt(var + 1e-5) * g.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)

    ops = {"conv": lambda x, w, s, pad: gc.nn.conv2d(x, w, stride=s, padding=pad), "bn": bn,
           "relu": gc.relu, "gap": lambda x: x.mean(axis=(2, 3)),
           "dense": lambda x, w, b: x @ w + b}
    x = gc.placeholder((batch, 1, 28, 28), name="x")
    labels = gc.placeholder((batch,), "int64", name="labels")
    names = names or [f"p{i}" for i in range(len(params))]
    p = [gc.parameter(v.copy(), name=n) for v, n in zip(params, names, strict=True)]
    loss = gc.nn.cross_entropy(forward(p, x, ops), labels)
    return x, labels, p, loss, gc.grad(loss, p)


def graphc_resnet_step(params: list[np.ndarray], lr: float = 0.01,
                       names: list[str] | None = None, backend: str = "llvm",
                       backend_options: dict | None = None, batch: int | None = None):
    """The step in graphc; `names` (default p0, p1, ...) name the parameters."""
    import graphc as gc
    x, labels, p, loss, grads = graphc_resnet_graph(params, names, batch)
    return gc.function([x, labels], loss, updates={v: v - lr * g for v, g in zip(p, grads)},
                       backend=backend, backend_options=backend_options)


# ---- PyTorch -----------------------------------------------------------------------------

def torch_resnet_step(params: list[np.ndarray], lr: float = 0.01, compiled: bool = False,
                      device: str = "cpu"):
    import torch
    import torch.nn.functional as tf
    p = [torch.tensor(v.copy(), requires_grad=True, device=device) for v in params]

    def bn(x, g, b):
        return tf.batch_norm(x, None, None, g, b, training=True, eps=1e-5)

    ops = {"conv": lambda x, w, s, pad: tf.conv2d(x, w, stride=s, padding=pad), "bn": bn,
           "relu": torch.relu, "gap": lambda x: x.mean(dim=(2, 3)),
           "dense": lambda x, w, b: x @ w + b}

    def step(x, y):
        loss = tf.cross_entropy(forward(p, x, ops), y)
        grads = torch.autograd.grad(loss, p)
        with torch.no_grad():
            for v, g in zip(p, grads):
                v -= lr * g
        return loss
    return torch.compile(step) if compiled else step


# ---- JAX ---------------------------------------------------------------------------------

def _jax_sgd(loss_fn, params: list[np.ndarray], lr: float):
    """A jitted SGD step of loss_fn(params, x, y), holding the parameters between calls."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def step(p, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        return loss, [v - lr * g for v, g in zip(p, grads)]

    state = {"p": [jnp.asarray(v) for v in params]}

    def run(x, y):
        loss, state["p"] = step(state["p"], x, y)
        return loss.block_until_ready()
    return run


def jax_resnet_step(params: list[np.ndarray], lr: float = 0.01):
    import jax
    import jax.numpy as jnp

    def conv(x, w, s, pad):
        return jax.lax.conv_general_dilated(x, w, (s, s), ((pad, pad), (pad, pad)),
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def bn(x, g, b):
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
        return (x - mean) / jnp.sqrt(var + 1e-5) * g.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)

    ops = {"conv": conv, "bn": bn, "relu": jax.nn.relu, "gap": lambda x: x.mean(axis=(2, 3)),
           "dense": lambda x, w, b: x @ w + b}

    def loss_fn(p, x, y):
        logp = jax.nn.log_softmax(forward(p, x, ops))
        return -jnp.take_along_axis(logp, y[:, None], axis=1).mean()

    return _jax_sgd(loss_fn, params, lr)


# ---- the MLPs of the depth curve ---------------------------------------------------------

def mlp_params(depth: int, width: int = 256, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [width] * depth + [10]
    out = []
    for n_in, n_out in zip([width] + sizes[:-1], sizes):
        out += [(rng.normal(size=(n_in, n_out)) * np.sqrt(2 / n_in)).astype(np.float32),
                np.zeros(n_out, np.float32)]
    return out


def graphc_mlp_step(params: list[np.ndarray], lr: float = 0.01):
    import graphc as gc
    x = gc.placeholder((None, params[0].shape[0]), name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    p = [gc.parameter(v.copy(), name=f"p{i}") for i, v in enumerate(params)]
    h = x
    for i in range(0, len(p), 2):
        h = h @ p[i] + p[i + 1]
        if i + 2 < len(p):
            h = gc.relu(h)
    loss = gc.nn.cross_entropy(h, labels)
    grads = gc.grad(loss, p)
    return gc.function([x, labels], loss, updates={v: v - lr * g for v, g in zip(p, grads)})


def jax_mlp_step(params: list[np.ndarray], lr: float = 0.01):
    import jax
    import jax.numpy as jnp

    def loss_fn(p, x, y):
        h = x
        for i in range(0, len(p), 2):
            h = h @ p[i] + p[i + 1]
            if i + 2 < len(p):
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h)
        return -jnp.take_along_axis(logp, y[:, None], axis=1).mean()

    return _jax_sgd(loss_fn, params, lr)


# ---- cold starts, each in a process of its own -------------------------------------------

def _cold(kind: str, arg: int) -> float:
    """Seconds from nothing built to the first step's result (libraries already imported)."""
    if kind.startswith("graphc"):
        import_llvm_backend()
    elif kind.startswith("jax"):
        import jax  # noqa: F401
    else:
        import torch  # noqa: F401
    if kind.endswith("resnet"):
        params, (x, y) = resnet_params(), resnet_data()
    else:
        params = mlp_params(arg)
        rng = np.random.default_rng(2)
        x, y = rng.normal(size=(64, 256)).astype(np.float32), rng.integers(0, 10, 64)
    t0 = time.perf_counter()
    if kind == "graphc-resnet":
        graphc_resnet_step(params)(x, y)
    elif kind == "graphc-mlp":
        graphc_mlp_step(params)(x, y)
    elif kind == "jax-resnet":
        jax_resnet_step(params)(x, y)
    elif kind == "jax-mlp":
        jax_mlp_step(params)(x, y)
    else:
        import torch
        step = torch_resnet_step(params, compiled=kind == "torch-compile-resnet")
        step(torch.tensor(x), torch.tensor(y)).item()
    return time.perf_counter() - t0


def cold_seconds(kind: str, arg: int = 0, timeout: float = 600) -> float | None:
    env = cold_env(tempfile.mkdtemp(prefix="graphc-cold-"))
    proc = subprocess.run([sys.executable, __file__, "--cold", kind, str(arg)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        print(f"({kind} cold start failed: {proc.stderr.strip().splitlines()[-1:]})")
        return None
    return float(proc.stdout.strip().splitlines()[-1])


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def _median_cold(times: list[float | None]) -> float | None:
    done = sorted(t for t in times if t is not None)
    return done[len(done) // 2] if done else None


def bench_w6(repeat: int, torch_compile: bool, gemm_n: int = 1024, rounds: int = 1) -> None:
    params, (x, y) = resnet_params(), resnet_data()
    steps = {"graphc": graphc_resnet_step(params)}
    if _has("torch"):
        import torch
        tx, ty = torch.tensor(x), torch.tensor(y)
        eager = torch_resnet_step(params)
        steps["torch"] = lambda: eager(tx, ty)
        if torch_compile:
            compiled = torch_resnet_step(params, compiled=True)
            steps["torch.compile"] = lambda: compiled(tx, ty)
    if _has("jax"):
        steps["jax"] = jax_resnet_step(params)
    # step times in rounds, the libraries taking turns as their cold starts do: the
    # machine's speed drifts over minutes (a tenth, either way), which a library timed
    # alone at one moment and its peers at another would show as a difference; each
    # library's step is the median of its rounds' medians
    calls = {name: step if name.startswith("torch") else (lambda s=step: s(x, y))
             for name, step in steps.items()}
    rounds_ms: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(1, rounds)):
        for name, call in calls.items():
            rounds_ms[name].append(median_ms(call, repeat))
    step_ms = {name: statistics.median(times) for name, times in rounds_ms.items()}
    kinds = {"graphc": "graphc-resnet", "torch": "torch-resnet",
             "torch.compile": "torch-compile-resnet", "jax": "jax-resnet"}
    # rounds interleaved (graphc, then each peer, again): a busy machine slows them alike
    starts: dict[str, list[float | None]] = {name: [] for name in step_ms}
    for _ in range(max(1, rounds)):
        for name in step_ms:
            starts[name].append(cold_seconds(kinds[name]))
    cold = {name: _median_cold(times) for name, times in starts.items()}
    mine = step_ms["graphc"]
    print(f"W6 ResNet step (batch 64): ms per step (median of {max(1, rounds)} rounds' "
          f"medians); cold start s (build, compile, step; median of {max(1, rounds)})")
    for name in step_ms:
        c = cold[name]
        print(f"  {name:<14} step {step_ms[name]:8.2f} ms (graphc/{name} = "
              f"{mine / step_ms[name]:.2f})   cold {c if c is None else round(c, 2)} s"
              + (f" (graphc/{name} = {cold['graphc'] / c:.2f})"
                 if c and cold["graphc"] else ""))
    if gemm_n:
        w6_gemm_share(steps["graphc"], step_ms, gemm_n)


def w6_gemm_share(f, step_ms: dict, n: int, threads: int = 2) -> None:
    """W6's GFLOP/s as a share of graphc's own n x n GEMM on `threads` threads, this run.
    FLOPs: every matmul (convolutions included) of the gradients' graph, which holds its
    forward pass once; the compiled GEMM kernels' own count shows the work they add."""
    x, _ = resnet_data()
    useful = graph_matmul_flops(graphc_resnet_graph(resnet_params(), batch=len(x))[4])
    served = f._exe.last  # (a module, or the symbolic program and its current binding)
    binding = getattr(getattr(served, "current", None), "values", None)
    executed = schedule_gemm_flops(served.schedule, binding)
    rate = gemm_gflops(n, threads)
    print(f"W6 GEMM work: {useful / 1e9:.3f} GFLOP a step (convolutions and matmuls, forward "
          f"and gradients, from the graph); graphc's GEMM kernels execute "
          f"{executed / 1e9:.3f} ({executed / useful - 1:+.1%})")
    print(f"graphc GEMM {n}x{n} float32 on {threads} threads: {rate:.0f} GFLOP/s (this run)")
    for name, ms in step_ms.items():
        achieved = useful / ms / 1e6
        print(f"  {name:<14} {achieved:6.0f} GFLOP/s = {achieved / rate:6.1%} of that rate")


def bench_depth(rounds: int) -> None:
    print("compile time against depth: MLP step, width 256, batch 64 (cold: fresh process; "
          f"median of {rounds})")
    for depth in DEPTHS:
        row = {}
        for name in ("graphc", "jax"):
            if name == "jax" and not _has("jax"):
                continue
            times = [cold_seconds(f"{name}-mlp", depth) for _ in range(rounds)]
            good = [t for t in times if t is not None]
            row[name] = statistics.median(good) if good else None
        ratio = (f"graphc/jax = {row['graphc'] / row['jax']:.2f}"
                 if row.get("jax") and row.get("graphc") else "")
        print(f"  {depth:>3} layers: " + "  ".join(
            f"{k} {v:.2f} s" for k, v in row.items() if v is not None) + f"   {ratio}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="W6,depth")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3,
                        help="cold starts per depth; per library for W6, cold starts and "
                             "step timings (medians)")
    parser.add_argument("--no-torch-compile", action="store_true")
    parser.add_argument("--gemm-n", type=int, default=1024,
                        help="size of the square GEMM W6's rate is compared with (0: skip)")
    parser.add_argument("--cold", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold:
        print(json.dumps(_cold(args.cold[0], int(args.cold[1]))))
        return
    wanted = set(args.only.split(","))
    if "W6" in wanted:
        bench_w6(args.repeat, not args.no_torch_compile, args.gemm_n, args.rounds)
    if "depth" in wanted:
        bench_depth(args.rounds)


if __name__ == "__main__":
    main()
