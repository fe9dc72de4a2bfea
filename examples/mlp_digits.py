"""The main job: an MLP learns the bundled 8x8 digits through gradients graphc derives and
compiles to native code through LLVM.
Run: python examples/mlp_digits.py [--backend llvm|numpy] [--epochs 40]"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import graphc as gc


def progress(iterable, total: int, desc: str, enabled: bool):
    """A tqdm bar when tqdm is installed and wanted and stderr is a terminal (a bar in a log
    file is noise), the plain iterable otherwise; the per-epoch line prints either way."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, unit="batch")


def build(hidden: int, lr: float, momentum: float, backend: str, seed: int):
    rng = np.random.default_rng(seed)
    x = gc.placeholder((None, 64), name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    params = {
        "W1": rng.normal(0, np.sqrt(1 / 64), (64, hidden)).astype(np.float32),
        "b1": np.zeros(hidden, np.float32),
        "W2": rng.normal(0, np.sqrt(1 / hidden), (hidden, 10)).astype(np.float32),
        "b2": np.zeros(10, np.float32),
    }
    W1, b1, W2, b2 = (gc.parameter(v, name=k) for k, v in params.items())
    logits = gc.tanh(x @ W1 + b1) @ W2 + b2
    loss = gc.name(gc.nn.cross_entropy(logits, labels), "loss")
    weights = [W1, b1, W2, b2]
    grads = gc.grad(loss, weights)
    # SGD with momentum: the velocities are parameters too, updated in the same step.
    velocities = [gc.parameter(np.zeros(w.shape, np.float32), name=f"v_{w.name}")
                  for w in weights]
    updates = {}
    for w, g, v in zip(weights, grads, velocities):
        new_v = momentum * v - lr * g
        updates[v] = new_v
        updates[w] = w + new_v
    step = gc.function([x, labels], loss, updates=updates, backend=backend)
    predict = gc.function([x], gc.argmax(logits, axis=1), backend=backend)
    return step, predict


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="llvm", help="llvm (default), numpy or cuda")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    data = gc.data.load_digits(seed=args.seed)
    print(f"digits: {len(data.x_train)} train / {len(data.x_test)} test images, "
          f"backend={args.backend}")
    t0 = time.perf_counter()
    step, predict = build(args.hidden, args.lr, args.momentum, args.backend, args.seed)
    print(f"compiled the training step in {time.perf_counter() - t0:.2f} s")
    n_batches = -(-len(data.x_train) // args.batch_size)
    accuracy, epoch_losses = 0.0, []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        losses = []
        batches = gc.data.minibatches(data.x_train, data.y_train, batch_size=args.batch_size,
                                      seed=args.seed + epoch)
        for xb, yb in progress(batches, n_batches, f"epoch {epoch}", not args.no_progress):
            losses.append(float(step(xb, yb)))
        accuracy = float(np.mean(predict(data.x_test) == data.y_test))
        epoch_losses.append(float(np.mean(losses)))
        rate = len(data.x_train) / (time.perf_counter() - t0)
        print(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  test accuracy {accuracy:.2%}  "
              f"({rate:,.0f} images/s)")
    print(f"final test accuracy: {accuracy:.2%}")
    return {"accuracy": accuracy, "loss": epoch_losses}


if __name__ == "__main__":
    main()
