"""What the optimizer and scheduler make of a training step: the gradient of a
784-256-256-10 ReLU MLP with softmax cross-entropy (batch 128) plus its SGD update.
Prints node counts before/after the passes, the pass report, the kernel count and the peak
intermediate memory without and with the buffer plan.
Run: python benchmarks/optimizer_stats.py [--batch 128] [--listing]"""
from __future__ import annotations

import argparse

import numpy as np

import graphc as gc
from graphc.schedule import schedule_graph


def mlp_step(batch: int):
    rng = np.random.default_rng(0)
    sizes = [784, 256, 256, 10]
    x = gc.placeholder((None, 784), name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    params = []
    h = x
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = gc.parameter(rng.normal(0, np.sqrt(2 / n_in), (n_in, n_out)).astype(np.float32),
                         name=f"W{i + 1}")
        b = gc.parameter(np.zeros(n_out, np.float32), name=f"b{i + 1}")
        params += [W, b]
        h = h @ W + b
        if i < len(sizes) - 2:
            h = gc.relu(h)
    loss = gc.name(gc.nn.cross_entropy(h, labels), "loss")
    grads = gc.grad(loss, params)
    updates = {p: p - 0.01 * g for p, g in zip(params, grads)}
    return [x, labels], loss, updates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--listing", action="store_true", help="print the kernel listing")
    args = parser.parse_args(argv)
    inputs, loss, updates = mlp_step(args.batch)
    raw = gc.function(inputs, loss, updates=updates, backend="numpy", optimize=False)
    opt = gc.function(inputs, loss, updates=updates, backend="numpy")
    shapes = [(args.batch, 784), (args.batch,)]
    raw_schedule = schedule_graph(raw.graph, shapes, optimize=False)
    schedule = schedule_graph(opt.graph, shapes)
    print(f"MLP 784-256-256-10, batch {args.batch}: loss + gradients + SGD update")
    print(f"graph nodes with a None batch size: {len(raw.graph.nodes())} raw -> "
          f"{len(opt.graph.nodes())} optimized")
    print(opt.report)
    print(f"specialised to batch {args.batch}: {len(raw_schedule.graph.nodes())} raw -> "
          f"{len(schedule.graph.nodes())} optimized")
    print(schedule.report)
    print(f"kernels: {len(raw_schedule.kernels)} unoptimized -> {len(schedule.kernels)}")
    kinds: dict[str, int] = {}
    for k in schedule.kernels:
        kinds[k.kind] = kinds.get(k.kind, 0) + 1
    print("kernel kinds: " + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())))
    plan = schedule.plan
    print(f"peak intermediate memory: {plan.unshared_bytes / 1024:,.1f} KiB without the buffer "
          f"plan -> {plan.arena_bytes / 1024:,.1f} KiB with it "
          f"({plan.arena_bytes / plan.unshared_bytes:.0%})")
    if args.listing:
        print(schedule.listing())


if __name__ == "__main__":
    main()
