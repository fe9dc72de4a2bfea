"""Training-step benchmarks from the LLVM backend issue, each a ratio against baselines timed
in the same run: hand-written numpy always, PyTorch (CPU, eager) and JAX (jit) when
installed.
  W1  MLP 784-256-256-10, ReLU, softmax cross-entropy, batch 128, full SGD step
  W2  MLP 64-32-10, tanh, batch 32 (overhead-bound)
  W3  sum((tanh(x*w + b) - y)**2) over 1M float32, gradients w.r.t. w and b
  W4  cold compile of the W1 step
Run: python benchmarks/bench_training.py [--repeat 200] [--only W1,W3]"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np

import graphc as gc


def median_ms(fn: Callable[[], object], repeat: int, warmup: int = 5) -> float:
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


def graphc_mlp_step(weights, act: str, lr: float = 0.01):
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
    return gc.function([x, labels], loss, updates={p: p - lr * g for p, g in
                                                   zip(params, grads)}, backend="llvm")


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


def torch_mlp_step(weights, act: str, lr: float = 0.01):
    import torch
    params = [torch.tensor(w.copy(), requires_grad=True) for w in weights]
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


def bench_mlp(name: str, sizes, batch: int, act: str, repeat: int) -> dict:
    weights, x, y = mlp_data(sizes, batch)
    results = {}
    f = graphc_mlp_step(weights, act)
    results["graphc"] = median_ms(lambda: f(x, y), repeat)
    step = numpy_mlp_step(weights, act)
    results["numpy"] = median_ms(lambda: step(x, y), repeat)
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
    results = {"graphc": median_ms(lambda: f(xv, yv), repeat)}

    def numpy_step():
        t = np.tanh(xv * np.float32(0.5) + np.float32(0.1))
        r = t - yv
        g = 2 * r * (1 - t * t)
        return (r * r).sum(), (g * xv).sum(), g.sum()
    results["numpy"] = median_ms(numpy_step, repeat)
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


def bench_w4() -> dict:
    weights, x, y = mlp_data([784, 256, 256, 10], 128)
    t0 = time.perf_counter()
    f = graphc_mlp_step(weights, "relu")
    f(x, y)  # compiles for these shapes
    return {"graphc cold": (time.perf_counter() - t0) * 1e3}


def report(name: str, results: dict) -> None:
    base = results.get("numpy")
    parts = [f"{k} {v:8.3f} ms" for k, v in results.items()]
    ratios = [f"graphc/{k} = {results['graphc'] / v:.2f}" for k, v in results.items()
              if k != "graphc" and "graphc" in results]
    print(f"{name:<3} " + " | ".join(parts) + ("   " + ", ".join(ratios) if base else ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--only", default="W1,W2,W3,W4")
    args = parser.parse_args(argv)
    wanted = set(args.only.split(","))
    print("median time per step, float32 (ratios < 1: graphc is faster)")
    if "W1" in wanted:
        report("W1", bench_mlp("W1", [784, 256, 256, 10], 128, "relu", args.repeat))
    if "W2" in wanted:
        report("W2", bench_mlp("W2", [64, 32, 10], 32, "tanh", args.repeat * 5))
    if "W3" in wanted:
        report("W3", bench_w3(max(args.repeat // 4, 10)))
    if "W4" in wanted:
        report("W4", bench_w4())


if __name__ == "__main__":
    main()
