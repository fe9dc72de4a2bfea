"""Robust regression: a straight line fitted to data with outliers, once with the mean squared
error and once with the Huber loss (gc.nn.mse / gc.nn.huber, one gc.nn.Dense(1, 1) each,
trained full-batch with gc.optim.Adam). The squared error lets the outliers drag the line;
Huber's linear tails bound their pull, so its slope and intercept land near the truth.
Run: python examples/robust_regression.py [--outliers 0.15] [--delta 1.0] [--backend llvm]"""
from __future__ import annotations

import argparse

import numpy as np

import graphc as gc


def make_data(n: int, slope: float, intercept: float, noise: float, outliers: float,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """y = slope * x + intercept + noise; then a fraction of all points, chosen at random among
    those with x > 0, is pushed up by 15 to 25: gross one-sided errors that tilt a
    least-squares line."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, size=n)
    y = slope * x + intercept + rng.normal(0, noise, size=n)
    right = np.flatnonzero(x > 0)
    bad = rng.choice(right, size=min(int(round(outliers * n)), right.size), replace=False)
    y[bad] += rng.uniform(15, 25, size=bad.size)
    return x[:, None].astype(np.float32), y[:, None].astype(np.float32)


def fit_line(loss_name: str, x_data: np.ndarray, y_data: np.ndarray, delta: float,
             steps: int, lr: float, backend: str) -> tuple[float, float]:
    line = gc.nn.Dense(1, 1, init="zeros", name=f"line_{loss_name}")
    x = gc.placeholder((None, 1), name="x")
    y = gc.placeholder((None, 1), name="y")
    pred = line(x)
    loss = gc.nn.mse(pred, y) if loss_name == "mse" else gc.nn.huber(pred, y, delta=delta)
    opt = gc.optim.Adam(lr=gc.optim.cosine_annealing(lr, steps))
    step = gc.function([x, y], loss, updates=opt.updates(loss, line.parameters()),
                       backend=backend)
    for _ in range(steps):
        step(x_data, y_data)
    return float(line.W.value[0, 0]), float(line.b.value[0])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="data points")
    parser.add_argument("--slope", type=float, default=2.0)
    parser.add_argument("--intercept", type=float, default=1.0)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--outliers", type=float, default=0.15, help="fraction of outliers")
    parser.add_argument("--delta", type=float, default=1.0, help="Huber's threshold")
    parser.add_argument("--steps", type=int, default=1500, help="full-batch Adam steps")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x, y = make_data(args.n, args.slope, args.intercept, args.noise, args.outliers, args.seed)
    truth = (args.slope, args.intercept)
    results = {"truth": truth}
    print(f"{args.n} points on y = {args.slope:g} x + {args.intercept:g} (noise sd "
          f"{args.noise:g}), {args.outliers:.0%} gross outliers; backend={args.backend}\n")
    print(f"{'loss':<14} {'slope':>8} {'intercept':>10} {'error':>8}")
    print(f"{'truth':<14} {truth[0]:>8.4f} {truth[1]:>10.4f} {'':>8}")
    for name in ("mse", "huber"):
        slope, intercept = fit_line(name, x, y, args.delta, args.steps, args.lr, args.backend)
        error = float(np.hypot(slope - truth[0], intercept - truth[1]))
        results[name] = {"slope": slope, "intercept": intercept, "error": error}
        label = name if name == "mse" else f"huber (d={args.delta:g})"
        print(f"{label:<14} {slope:>8.4f} {intercept:>10.4f} {error:>8.4f}")
    # the least-squares line in closed form, as a check on the trained MSE fit
    design = np.hstack([x.astype(np.float64), np.ones_like(x, dtype=np.float64)])
    ls = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0][:, 0]
    results["least_squares"] = (float(ls[0]), float(ls[1]))
    print(f"{'lstsq (numpy)':<14} {ls[0]:>8.4f} {ls[1]:>10.4f}")
    better = results["huber"]["error"] < results["mse"]["error"]
    print(f"\nHuber is {'closer to' if better else 'NOT closer to'} the truth "
          f"({results['huber']['error']:.3f} vs {results['mse']['error']:.3f})")
    return results


if __name__ == "__main__":
    main()
