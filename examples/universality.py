"""Universal approximation: one hidden layer of sigmoid units fits a continuous 1-D function,
f(x) = sin(3x) + 0.3 x^2 on [-2, 2], built with gc.nn.Dense and trained with gc.optim.Adam
through gc.train.fit. Prints the training and held-out MSE; `--plot path.png` draws the fit
(when matplotlib is installed).
Run: python examples/universality.py [--hidden 32] [--epochs 1500] [--backend llvm]
     [--plot fit.png]"""
from __future__ import annotations

import argparse
import time

import numpy as np

import graphc as gc


def target(x: np.ndarray) -> np.ndarray:
    return np.sin(3 * x) + 0.3 * x ** 2


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=32, help="sigmoid units")
    parser.add_argument("--epochs", type=int, default=1500)
    parser.add_argument("--points", type=int, default=256, help="training points")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="save a PNG of the fit here")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    x_train = rng.uniform(-2, 2, size=(args.points, 1)).astype(np.float32)
    y_train = target(x_train).astype(np.float32)
    x_test = np.linspace(-2, 2, 401, dtype=np.float32)[:, None]
    y_test = target(x_test).astype(np.float32)

    # the universal-approximation form: y = sum_j a_j sigmoid(w_j x + b_j) + c
    # steep slopes and offsets spread so the sigmoids' steps start out all over [-2, 2]
    def spread(shape, rng, dtype):
        return rng.normal(0.0, 3.0, size=shape).astype(dtype)
    hidden = gc.nn.Dense(1, args.hidden, activation="sigmoid", init=spread, seed=args.seed,
                         name="hidden")
    hidden.b.value = rng.uniform(-6, 6, size=args.hidden)
    model = gc.nn.Sequential(hidden, gc.nn.Dense(args.hidden, 1, seed=args.seed + 1,
                                                 name="out"))
    x = gc.placeholder((None, 1), name="x")
    y = gc.placeholder((None, 1), name="y")
    pred = model(x)
    loss = gc.nn.mse(pred, y)
    opt = gc.optim.Adam(lr=gc.optim.cosine_annealing(args.lr, args.epochs *
                                                      -(-args.points // args.batch_size)))
    t0 = time.perf_counter()
    step = gc.function([x, y], loss, updates=opt.updates(loss, model.parameters()),
                       backend=args.backend)
    predict = gc.function([x], pred, backend=args.backend)
    history = gc.train.fit(step, (x_train, y_train), epochs=args.epochs,
                           batch_size=args.batch_size, seed=args.seed, verbose=False)
    seconds = time.perf_counter() - t0
    train_mse = float(np.mean((predict(x_train) - y_train) ** 2))
    fitted = predict(x_test)
    test_mse = float(np.mean((fitted - y_test) ** 2))
    print(f"f(x) = sin(3x) + 0.3x^2 on [-2, 2]; {args.hidden} sigmoid units, "
          f"{len(model.parameters())} parameter tensors, backend={args.backend}")
    print(f"epochs {args.epochs}: loss {history.loss[0]:.4f} -> {history.loss[-1]:.6f} "
          f"({seconds:.1f} s)")
    print(f"final MSE: train {train_mse:.6f}, held-out grid {test_mse:.6f} "
          f"(variance of f: {float(np.var(y_test)):.4f})")
    plotted = None
    if args.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot")
        else:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(x_test[:, 0], y_test[:, 0], label="f(x)", lw=2)
            ax.plot(x_test[:, 0], fitted[:, 0], "--", label=f"{args.hidden} sigmoids")
            ax.scatter(x_train[:, 0], y_train[:, 0], s=4, c="gray", alpha=0.5, label="train")
            ax.set_title(f"one hidden layer, MSE {test_mse:.2e}")
            ax.legend()
            fig.tight_layout()
            fig.savefig(args.plot, dpi=100)
            plt.close(fig)
            plotted = args.plot
            print(f"plot saved to {args.plot}")
    return {"train_mse": train_mse, "test_mse": test_mse, "loss": history.loss,
            "plot": plotted}


if __name__ == "__main__":
    main()
