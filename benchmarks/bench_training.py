"""Training-step benchmarks from the LLVM backend issue, each a ratio against baselines timed
in the same run: hand-written numpy always, PyTorch (CPU, eager) and JAX (jit) when
installed.
  W1  MLP 784-256-256-10, ReLU, softmax cross-entropy, batch 128, full SGD step
  W2  MLP 64-32-10, tanh, batch 32 (overhead-bound)
  W3  sum((tanh(x*w + b) - y)**2) over 1M float32, gradients w.r.t. w and b
  W4  cold compile of the W1 step (and warm: the same step loaded from the disk cache), each
      in a fresh process after the libraries are imported (graphc and its llvm backend; jax);
      medians of 5 interleaved rounds
  W5  LeNet-like CNN (conv 5x5 1->8, max-pool 2, conv 5x5 8->16, max-pool 2, dense ->10),
      batch 64, full SGD step
Run: python benchmarks/bench_training.py [--repeat 200] [--only W1,W3]"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np

import graphc as gc


# A process whose threads used at most this share of one core over a SETTLE_WINDOW counts as
# idle: the thread pools of the library timed before (OpenBLAS under numpy, PyTorch's, XLA's)
# spin for a while after their last call, and on two cores a spinning thread takes a core
# from the next library's threads (W5 right after numpy's W1 step: 50 calls at 1.3 ms, with
# 5-70 ms stalls, where 0.8 ms after a pause).
SETTLE_SHARE = 0.1
SETTLE_WINDOW = 0.05
SETTLE_LIMIT = 3.0  # seconds waited at most (a machine kept busy: timed as it is)


def settle() -> None:
    """Waits until the threads of libraries timed before have gone idle."""
    deadline = time.perf_counter() + SETTLE_LIMIT
    while time.perf_counter() < deadline:
        cpu = time.process_time()
        time.sleep(SETTLE_WINDOW)
        if time.process_time() - cpu <= SETTLE_SHARE * SETTLE_WINDOW:
            return


def median_ms(fn: Callable[[], object], repeat: int, warmup: int = 5) -> float:
    """The median of `repeat` calls' wall times, after the process's other threads have
    gone idle (settle) and `warmup` untimed calls."""
    settle()
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


# ---- W1 / W2: MLP steps --------------------------------------------------------------------

def mlp_data(sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    weights = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        weights.append(rng.normal(0, np.sqrt(2 / n_in), (n_in, n_out)).astype(np.float32))
        weights.append(np.zeros(n_out, np.float32))
    x = rng.normal(size=(batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    return weights, x, y


def graphc_mlp_step(weights, act: str, lr: float = 0.01, timings: dict | None = None,
                    backend: str = "llvm", backend_options: dict | None = None):
    x = gc.placeholder((None, weights[0].shape[0]), name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    params = [gc.parameter(w.copy(), name=f"p{i}") for i, w in enumerate(weights)]
    h = x
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i + 2 < len(params):
            h = gc.relu(h) if act == "relu" else gc.tanh(h)
    loss = gc.nn.cross_entropy(h, labels)
    grads = gc.grad(loss, params)
    updates = {p: p - lr * g for p, g in zip(params, grads)}
    if timings is not None:
        timings["graph"] = time.perf_counter()
    return gc.function([x, labels], loss, updates=updates, backend=backend,
                       backend_options=backend_options)


def numpy_mlp_step(weights, act: str, lr: float = 0.01):
    ws = [w.copy() for w in weights]

    def step(x, y):
        hs, pre = [x], []
        h = x
        for i in range(0, len(ws), 2):
            z = h @ ws[i] + ws[i + 1]
            pre.append(z)
            if i + 2 < len(ws):
                h = np.maximum(z, 0) if act == "relu" else np.tanh(z)
                hs.append(h)
        z = pre[-1]
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        n = len(y)
        loss = -np.log(p[np.arange(n), y]).mean()
        g = p
        g[np.arange(n), y] -= 1
        g /= n
        for i in range(len(ws) - 2, -1, -2):
            a = hs[i // 2]
            gw, gb = a.T @ g, g.sum(axis=0)
            if i:
                g = g @ ws[i].T
                g = g * (pre[i // 2 - 1] > 0) if act == "relu" else g * (1 - hs[i // 2] ** 2)
            ws[i] -= lr * gw
            ws[i + 1] -= lr * gb
        return loss
    return step


def torch_mlp_step(weights, act: str, lr: float = 0.01, device: str = "cpu"):
    import torch
    params = [torch.tensor(w.copy(), requires_grad=True, device=device) for w in weights]
    f = torch.relu if act == "relu" else torch.tanh

    def step(x, y):
        h = x
        for i in range(0, len(params), 2):
            h = h @ params[i] + params[i + 1]
            if i + 2 < len(params):
                h = f(h)
        loss = torch.nn.functional.cross_entropy(h, y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= lr * g
        return loss
    return step


def jax_mlp_step(weights, act: str, lr: float = 0.01):
    import jax
    import jax.numpy as jnp
    f = jax.nn.relu if act == "relu" else jnp.tanh

    def loss_fn(ps, x, y):
        h = x
        for i in range(0, len(ps), 2):
            h = h @ ps[i] + ps[i + 1]
            if i + 2 < len(ps):
                h = f(h)
        logp = jax.nn.log_softmax(h)
        return -jnp.mean(logp[jnp.arange(len(y)), y])

    @jax.jit
    def update(ps, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(ps, x, y)
        return loss, [p - lr * g for p, g in zip(ps, grads)]

    state = [[jnp.asarray(w) for w in weights]]

    def step(x, y):
        loss, state[0] = update(state[0], x, y)
        loss.block_until_ready()
        return loss
    return step


# Which timings this process takes: graphc and numpy here; PyTorch and JAX in a process of
# their own (their thread pools would otherwise compete with graphc's for the two cores).
OWN = {"graphc", "numpy"}


def bench_mlp(name: str, sizes, batch: int, act: str, repeat: int) -> dict:
    weights, x, y = mlp_data(sizes, batch)
    results = {}
    if "graphc" in OWN:
        f = graphc_mlp_step(weights, act)
        results["graphc"] = median_ms(lambda: f(x, y), repeat)
        step = numpy_mlp_step(weights, act)
        results["numpy"] = median_ms(lambda: step(x, y), repeat)
    if "torch" not in OWN:
        return results
    try:
        import torch
        tstep = torch_mlp_step(weights, act)
        tx, ty = torch.tensor(x), torch.tensor(y)
        results["torch"] = median_ms(lambda: tstep(tx, ty), repeat)
    except ImportError:
        pass
    try:
        jstep = jax_mlp_step(weights, act)
        results["jax"] = median_ms(lambda: jstep(x, y), repeat)
    except ImportError:
        pass
    return results


# ---- W3: bandwidth-bound fused loss ---------------------------------------------------------

def bench_w3(repeat: int) -> dict:
    n = 1 << 20
    rng = np.random.default_rng(0)
    xv = rng.normal(size=n).astype(np.float32)
    yv = rng.normal(size=n).astype(np.float32)
    x = gc.placeholder((n,), name="x")
    y = gc.placeholder((n,), name="y")
    w = gc.parameter(np.float32(0.5), name="w")
    b = gc.parameter(np.float32(0.1), name="b")
    loss = gc.sum((gc.tanh(x * w + b) - y) ** 2)
    f = gc.function([x, y], [loss] + gc.grad(loss, [w, b]), backend="llvm")
    results = {}
    if "graphc" in OWN:
        results["graphc"] = median_ms(lambda: f(xv, yv), repeat)

    def numpy_step():
        t = np.tanh(xv * np.float32(0.5) + np.float32(0.1))
        r = t - yv
        g = 2 * r * (1 - t * t)
        return (r * r).sum(), (g * xv).sum(), g.sum()
    if "graphc" in OWN:
        results["numpy"] = median_ms(numpy_step, repeat)
    if "jax" not in OWN:
        return results
    try:
        import jax
        import jax.numpy as jnp
        fn = jax.jit(jax.value_and_grad(
            lambda p, x, y: jnp.sum((jnp.tanh(x * p[0] + p[1]) - y) ** 2)))
        p = jnp.asarray([0.5, 0.1], jnp.float32)
        results["jax"] = median_ms(lambda: fn(p, xv, yv)[0].block_until_ready(), repeat)
    except ImportError:
        pass
    return results


W4_PROGRAM = """
import sys, time
sys.path.insert(0, {folder!r})
from bench_training import mlp_data, graphc_mlp_step, import_llvm_backend
import_llvm_backend()  # the libraries first
weights, x, y = mlp_data([784, 256, 256, 10], 128)
t0 = time.perf_counter()
marks = {{}}
f = graphc_mlp_step(weights, "relu", timings=marks)
f(x, y)  # compiles for these shapes (or loads them from the cache)
t1 = time.perf_counter()
print((t1 - t0) * 1e3, (t1 - marks["graph"]) * 1e3)
"""


JAX_W4_PROGRAM = """
import sys, time
sys.path.insert(0, {folder!r})
import jax, jax.numpy
from bench_training import mlp_data, jax_mlp_step
weights, x, y = mlp_data([784, 256, 256, 10], 128)
t0 = time.perf_counter()
jax_mlp_step(weights, "relu")(x, y)
print((time.perf_counter() - t0) * 1e3)
"""


def import_llvm_backend() -> None:
    """What a cold start imports before its clock starts (as JAX's imports jax): graphc and
    its LLVM backend's modules, those a compile loads lazily included."""
    import graphc.backends.llvm.codegen  # noqa: F401
    import graphc.backends.llvm.processes  # noqa: F401
    import graphc.backends.llvm.runtime  # noqa: F401


def cold_env(cache: str) -> dict[str, str]:
    """The environment of a fresh process timing a cold start: an empty cache folder, and
    Python's bytecode cache on, with graphc's modules compiled once first. An installed
    package has its bytecode compiled at install, as JAX's and PyTorch's have; with
    PYTHONDONTWRITEBYTECODE set around the benchmark every timed process would compile the
    modules graphc imports lazily from source."""
    import compileall
    import os
    import graphc.backends
    import graphc.frontends
    if not _compiled:
        for folder in (*gc.__path__, *graphc.backends.__path__, *graphc.frontends.__path__):
            compileall.compile_dir(folder, quiet=1)
        _compiled.append(True)
    env = dict(os.environ, GRAPHC_CACHE_DIR=cache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


_compiled: list[bool] = []


def _run_ms(code: str, env: dict) -> list[float]:
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    return [float(v) for v in out.split()]


def bench_w4(rounds: int = 5) -> dict:
    """Medians over `rounds` rounds, each: a cold graphc compile in a fresh process with a
    fresh cache folder, a warm one (another process, the same folder), and a cold JAX
    compile in a fresh process (interleaved, so that a slow spell of the machine hits both).
    Like graphc's, JAX's program imports its libraries first, then builds, traces,
    compiles (the XLA client's start-up included) and runs the step once."""
    import tempfile
    from pathlib import Path
    folder = str(Path(__file__).parent)
    code = W4_PROGRAM.format(folder=folder)
    try:
        import jax  # noqa: F401
        jcode = JAX_W4_PROGRAM.format(folder=folder)
    except ImportError:
        jcode = None
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache:
            env = cold_env(cache)
            cold, warm = _run_ms(code, env), _run_ms(code, env)
        # total: building the graph and its gradient, gc.function and the first call;
        # compile: gc.function and the first call alone (the graph already built)
        for key, value in (("graphc cold", cold[0]), ("graphc warm", warm[0]),
                           ("graphc cold compile", cold[1]),
                           ("graphc warm compile", warm[1])):
            samples.setdefault(key, []).append(value)
        if jcode is not None:
            samples.setdefault("jax cold", []).append(_run_ms(jcode, cold_env(cache))[0])
    return {key: statistics.median(values) for key, values in samples.items()}


# ---- W5: a small CNN ---------------------------------------------------------------------

def cnn_data(batch: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    shapes = [(8, 1, 5, 5), (8,), (16, 8, 5, 5), (16,), (256, 10), (10,)]
    params = [(rng.normal(size=s) * (0.1 if len(s) > 1 else 0)).astype(np.float32)
              for s in shapes]
    x = rng.normal(size=(batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    return params, x, y


def graphc_cnn_step(params, lr: float = 0.01, backend: str = "llvm",
                    backend_options: dict | None = None):
    x = gc.placeholder((None, 1, 28, 28), name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    p = [gc.parameter(v.copy(), name=f"p{i}") for i, v in enumerate(params)]
    h = gc.relu(gc.nn.conv2d(x, p[0]) + p[1].reshape(1, 8, 1, 1))
    h = gc.nn.max_pool2d(h, 2)
    h = gc.relu(gc.nn.conv2d(h, p[2]) + p[3].reshape(1, 16, 1, 1))
    h = gc.nn.max_pool2d(h, 2).reshape(-1, 256)
    loss = gc.nn.cross_entropy(h @ p[4] + p[5], labels)
    grads = gc.grad(loss, p)
    return gc.function([x, labels], loss, updates={v: v - lr * g for v, g in zip(p, grads)},
                       backend=backend, backend_options=backend_options)


def _im2col(x, k):
    n, c, h, w = x.shape
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
    oh, ow = h - k + 1, w - k + 1
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * k * k), oh, ow


def _col2im(cols, shape, k):
    n, c, h, w = shape
    oh, ow = h - k + 1, w - k + 1
    g = cols.reshape(n, oh, ow, c, k, k)
    out = np.zeros(shape, cols.dtype)
    for i in range(k):
        for j in range(k):
            out[:, :, i:i + oh, j:j + ow] += g[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return out


def _pool(h):
    n, c, hh, ww = h.shape
    r = h.reshape(n, c, hh // 2, 2, ww // 2, 2)
    m = r.max(axis=(3, 5))
    mask = r == m[:, :, :, None, :, None]
    return m, mask


def numpy_cnn_step(params, lr: float = 0.01):
    w1, b1, w2, b2, w3, b3 = [p.copy() for p in params]

    def conv(x, w, b):
        cols, oh, ow = _im2col(x, 5)
        out = cols @ w.reshape(len(w), -1).T + b
        return out.reshape(len(x), oh, ow, -1).transpose(0, 3, 1, 2), cols

    def conv_back(g, cols, x_shape, w):
        gm = g.transpose(0, 2, 3, 1).reshape(-1, len(w))
        gw = (gm.T @ cols).reshape(w.shape)
        gx = _col2im(gm @ w.reshape(len(w), -1), x_shape, 5)
        return gx, gw, gm.sum(axis=0)

    def step(x, y):
        nonlocal w1, b1, w2, b2, w3, b3
        z1, c1 = conv(x, w1, b1)
        a1 = np.maximum(z1, 0)
        p1, m1 = _pool(a1)
        z2, c2 = conv(p1, w2, b2)
        a2 = np.maximum(z2, 0)
        p2, m2 = _pool(a2)
        f = p2.reshape(len(x), -1)
        z = f @ w3 + b3
        z = z - z.max(axis=1, keepdims=True)
        pr = np.exp(z)
        pr /= pr.sum(axis=1, keepdims=True)
        n = len(y)
        loss = -np.log(pr[np.arange(n), y]).mean()
        g = pr
        g[np.arange(n), y] -= 1
        g /= n
        gw3, gb3 = f.T @ g, g.sum(axis=0)
        gp2 = (g @ w3.T).reshape(p2.shape)
        ga2 = (m2 * gp2[:, :, :, None, :, None]).reshape(a2.shape) * (z2 > 0)
        gp1, gw2, gb2 = conv_back(ga2, c2, p1.shape, w2)
        ga1 = (m1 * gp1[:, :, :, None, :, None]).reshape(a1.shape) * (z1 > 0)
        _, gw1, gb1 = conv_back(ga1, c1, x.shape, w1)
        w1 -= lr * gw1
        b1 -= lr * gb1
        w2 -= lr * gw2
        b2 -= lr * gb2
        w3 -= lr * gw3
        b3 -= lr * gb3
        return loss
    return step


def torch_cnn_step(params, lr: float = 0.01, device: str = "cpu"):
    import torch
    p = [torch.tensor(v.copy(), requires_grad=True, device=device) for v in params]

    def step(x, y):
        h = torch.relu(torch.nn.functional.conv2d(x, p[0], p[1]))
        h = torch.nn.functional.max_pool2d(h, 2)
        h = torch.relu(torch.nn.functional.conv2d(h, p[2], p[3]))
        h = torch.nn.functional.max_pool2d(h, 2).reshape(-1, 256)
        loss = torch.nn.functional.cross_entropy(h @ p[4] + p[5], y)
        grads = torch.autograd.grad(loss, p)
        with torch.no_grad():
            for v, g in zip(p, grads):
                v -= lr * g
        return loss
    return step


def bench_w5(repeat: int) -> dict:
    params, x, y = cnn_data()
    results = {}
    if "graphc" in OWN:
        f = graphc_cnn_step(params)
        results["graphc"] = median_ms(lambda: f(x, y), repeat)
        step = numpy_cnn_step(params)
        results["numpy"] = median_ms(lambda: step(x, y), repeat)
    if "torch" not in OWN:
        return results
    try:
        import torch
        tstep = torch_cnn_step(params)
        tx, ty = torch.tensor(x), torch.tensor(y)
        results["torch"] = median_ms(lambda: tstep(tx, ty), repeat)
    except ImportError:
        pass
    return results


def report(name: str, results: dict) -> None:
    parts = [f"{k} {v:8.3f} ms" for k, v in results.items()]
    mine = results.get("graphc", results.get("graphc cold"))
    ratios = [f"graphc/{k} = {mine / v:.2f}" for k, v in results.items()
              if not k.startswith("graphc") and mine is not None]
    print(f"{name:<3} " + " | ".join(parts) + ("   " + ", ".join(ratios) if ratios else ""))


def peer_results(only: str, repeat: int) -> dict:
    """PyTorch and JAX timings of the workloads, taken in a fresh process."""
    import json
    import subprocess
    import sys
    result = subprocess.run([sys.executable, __file__, "--only", only, "--repeat",
                             str(repeat), "--peers-json"], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"(peer timings failed: {result.stderr.strip().splitlines()[-1:]})")
        return {}
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_workloads(wanted: set, repeat: int) -> dict:
    results = {}
    if "W1" in wanted:
        results["W1"] = bench_mlp("W1", [784, 256, 256, 10], 128, "relu", repeat)
    if "W2" in wanted:
        results["W2"] = bench_mlp("W2", [64, 32, 10], 32, "tanh", repeat * 5)
    if "W3" in wanted:
        results["W3"] = bench_w3(max(repeat // 4, 10))
    if "W4" in wanted and "graphc" in OWN:
        results["W4"] = bench_w4()
    if "W5" in wanted:
        results["W5"] = bench_w5(max(repeat // 4, 10))
    return results


def main(argv: list[str] | None = None) -> None:
    global OWN
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--only", default="W1,W2,W3,W4,W5")
    parser.add_argument("--no-peers", action="store_true", help="skip PyTorch and JAX")
    parser.add_argument("--peers-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    wanted = set(args.only.split(","))
    if args.peers_json:
        import json
        OWN = {"torch", "jax"}
        print(json.dumps(run_workloads(wanted, args.repeat)))
        return
    mine = run_workloads(wanted, args.repeat)
    peers = {} if args.no_peers else peer_results(args.only, args.repeat)
    print("median time per step, float32 (ratios < 1: graphc is faster)")
    for name in sorted(mine):
        report(name, {**mine[name], **peers.get(name, {})})


if __name__ == "__main__":
    main()
