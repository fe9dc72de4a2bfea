"""Depth, normalization and skip connections: a 20-layer ReLU MLP (width 64) on the bundled
8x8 digits, trained six ways for the same number of steps with the same optimizer, learning
rate, minibatches and initialisation (each gc.nn.Dense's default, Glorot uniform):

  plain       Dense -> relu, 19 times, then Dense -> 10 logits
  batchnorm   Dense -> gc.nn.BatchNorm -> relu (its running statistics are updated by the
              compiled step itself; evaluation uses training=False, the running statistics)
  layernorm   Dense -> gc.nn.LayerNorm -> relu
  weightnorm  gc.nn.WeightNorm(Dense -> relu): W = g v / |v|, the same function at the start
  residual    a first Dense -> relu, then 18 blocks x + Dense(relu(x)) (gc.nn.Residual, the
              branch's Dense initialised to zero as in SkipInit/Fixup, `--residual-init`)
  wide        one hidden layer of 1,062, as many parameters as the plain deep net

Every step is a compiled graphc gradient step: gc.optim.SGD, Nesterov momentum 0.9 (or
`--optimizer adam`). The learning rate was tuned once, for all six together: of
{0.003, 0.01, 0.03, 0.1}, 0.01 gave the lowest median training loss over the six variants
after 300 steps (seed 0). The plain net's own best rate, 0.03, leaves it at loss 0.99
(and kills the LayerNorm net); at 0.1 every deep net but the BatchNorm one stays at chance.
Prints, for each variant, the training loss on the whole training set after the last step
(evaluation mode), the mean minibatch loss of the last tenth of the steps, the held-out
accuracy and the parameter count; the last line is the headline. The lecture's claim under
test: a plain deep net trains badly (its signal shrinks layer by layer), normalization and
skip connections fix that conditioning. `--out curves.png` draws the per-step loss curves
(needs matplotlib).
The training of the deep nets is chaotic: a change of one ulp in the inputs changes the
BatchNorm net's loss by 1 % within 3 steps, so the numpy and llvm backends (whose float32
sums round differently) agree step by step only at first, and their figures differ later.
Run: python examples/normalization_depth.py [--steps 1000] [--depth 20] [--width 64]
         [--optimizer sgd|adam] [--lr 0.01] [--backend llvm] [--out curves.png] [--quick]
(--quick: 300 steps.)"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import graphc as gc

FEATURES, CLASSES = 64, 10
VARIANTS = ("plain", "batchnorm", "layernorm", "weightnorm", "residual", "wide")
DEEP = VARIANTS[:-1]


def hidden_block(variant: str, fan_in: int, width: int, seed: int, name: str,
                 residual_init: str = "zeros") -> list:
    """One hidden layer of the deep net, as the variant builds it."""
    if variant == "plain":
        return [gc.nn.Dense(fan_in, width, activation="relu", seed=seed, name=name)]
    if variant == "batchnorm":
        return [gc.nn.Dense(fan_in, width, seed=seed, name=name),
                gc.nn.BatchNorm(width, name=f"{name}_bn"), gc.relu]
    if variant == "layernorm":
        return [gc.nn.Dense(fan_in, width, seed=seed, name=name),
                gc.nn.LayerNorm(width, name=f"{name}_ln"), gc.relu]
    if variant == "weightnorm":
        return [gc.nn.WeightNorm(gc.nn.Dense(fan_in, width, activation="relu", seed=seed,
                                             name=name), name=f"{name}_wn")]
    if variant == "residual":
        # pre-activation: x + W relu(x) + b, the branch's W from `residual_init`
        return [gc.nn.Residual(gc.nn.Sequential(
            gc.relu, gc.nn.Dense(width, width, init=residual_init, seed=seed, name=name)),
            name=f"{name}_res")]
    raise ValueError(f"unknown variant {variant!r}")


def deep_parameters(depth: int, width: int) -> int:
    """Weights and biases of the plain deep net: depth Dense layers."""
    return (FEATURES + 1) * width + (depth - 2) * (width + 1) * width + (width + 1) * CLASSES


def wide_width(depth: int, width: int) -> int:
    """The hidden width of a 2-layer net with (about) the plain deep net's parameter count."""
    return round((deep_parameters(depth, width) - CLASSES) / (FEATURES + 1 + CLASSES))


def build(variant: str, depth: int, width: int, seed: int,
          residual_init: str = "zeros") -> gc.nn.Sequential:
    """`depth` Dense layers (depth - 1 hidden, then the logits), or the wide 2-layer net."""
    if variant == "wide":
        hidden = wide_width(depth, width)
        return gc.nn.Sequential(
            gc.nn.Dense(FEATURES, hidden, activation="relu", seed=seed, name="hidden"),
            gc.nn.Dense(hidden, CLASSES, seed=seed + 1, name="logits"))
    layers: list = []
    for i in range(depth - 1):
        # the residual net's first layer is a plain one: it maps the pixels to features
        kind = "plain" if variant == "residual" and i == 0 else variant
        layers += hidden_block(kind, FEATURES if i == 0 else width, width, seed + i,
                               f"hidden{i + 1}", residual_init)
    if variant == "residual":
        layers.append(gc.relu)
    layers.append(gc.nn.Dense(width, CLASSES, seed=seed + depth, name="logits"))
    return gc.nn.Sequential(*layers)


def make_optimizer(name: str, lr: float) -> gc.optim.Optimizer:
    if name == "sgd":
        return gc.optim.SGD(lr=lr, momentum=0.9, nesterov=True)
    if name == "adam":
        return gc.optim.Adam(lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


def batches(n: int, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """The minibatch indices of `steps` steps: shuffled epochs, full batches only; every
    variant sees the same sequence."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < steps:
        order = rng.permutation(n)
        out += [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
    return out[:steps]


def train(variant: str, args: argparse.Namespace, data: gc.data.Split,
          order: list[np.ndarray]) -> dict:
    model = build(variant, args.depth, args.width, args.seed, args.residual_init)
    x = gc.placeholder((None, FEATURES), name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    loss = gc.nn.cross_entropy(model(x, training=True), labels)
    opt = make_optimizer(args.optimizer, args.lr)
    t0 = time.perf_counter()
    step = gc.function([x, labels], loss, updates=opt.updates(loss, model.parameters()),
                       backend=args.backend)
    # evaluation mode (BatchNorm's running statistics), one call on train and test images
    # alike: one native module, and cross-entropy in float64 numpy per example
    predict = gc.function([x], model(x, training=False), backend=args.backend)
    losses = np.array([float(step(data.x_train[i], data.y_train[i])) for i in order])
    n = len(data.x_train)
    logits = predict(np.concatenate([data.x_train, data.x_test])).astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    nll = -log_p[np.arange(len(logits)), np.concatenate([data.y_train, data.y_test])]
    tail = max(1, len(losses) // 10)
    return {"losses": losses, "last_losses": float(np.mean(losses[-tail:])),
            "train_loss": float(np.mean(nll[:n])), "test_loss": float(np.mean(nll[n:])),
            "accuracy": float(np.mean(logits[n:].argmax(axis=1) == data.y_test)),
            "parameters": sum(p.value.size for p in model.parameters()),
            "seconds": time.perf_counter() - t0}


def save_figure(path: str, results: dict, steps: int, depth: int) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure")
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    window = max(1, steps // 30)
    for name, res in results.items():
        losses = res["losses"]
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        line, = ax.plot(np.arange(window, len(losses) + 1), smooth,
                        label=f"{name} ({res['train_loss']:.3g})")
        ax.plot(np.arange(1, len(losses) + 1), losses, color=line.get_color(), alpha=0.15,
                linewidth=0.8)
    ax.axhline(math.log(CLASSES), color="gray", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training minibatch loss (cross-entropy)")
    ax.set_title(f"{depth}-layer MLPs on the 8x8 digits: loss after {steps} steps in parentheses")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"figure saved to {path}")
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="default 1000 (--quick 300)")
    parser.add_argument("--depth", type=int, default=20, help="Dense layers of the deep nets")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--lr", type=float, default=None,
                        help="default 0.01 for SGD (Nesterov momentum 0.9), 1e-3 for Adam")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument("--residual-init", default="zeros",
                        help="initialiser of the residual branches' Dense layers")
    parser.add_argument("--quick", action="store_true", help="300 steps, not 1000")
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="save a PNG of the loss curves here")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 300 if args.quick else 1000
    if args.lr is None:
        args.lr = 0.01 if args.optimizer == "sgd" else 1e-3
    if args.depth < 3:
        parser.error("--depth must be at least 3")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")

    data = gc.data.load_digits(seed=args.seed)
    order = batches(len(data.x_train), args.batch_size, args.steps, args.seed)
    print(f"digits: {len(data.x_train)} train / {len(data.x_test)} held-out images; "
          f"{args.depth}-layer MLPs of width {args.width} (wide: 1 hidden layer of "
          f"{wide_width(args.depth, args.width)}), {args.steps} steps of {args.batch_size}, "
          f"{args.optimizer} lr={args.lr:g}, backend={args.backend}")
    print(f"(chance: loss ln 10 = {math.log(CLASSES):.3f}, accuracy 10 %)\n")
    header = (f"{'variant':<11} {'params':>7} {'first loss':>10} {'last steps':>10} "
              f"{'train loss':>10} {'held-out loss':>13} {'accuracy':>9} {'seconds':>8}")
    print(header)
    print("-" * len(header))
    results = {}
    for variant in variants:
        res = results[variant] = train(variant, args, data, order)
        print(f"{variant:<11} {res['parameters']:>7,} {res['losses'][0]:>10.3f} "
              f"{res['last_losses']:>10.4f} {res['train_loss']:>10.4f} {res['test_loss']:>13.4f} "
              f"{res['accuracy']:>9.1%} {res['seconds']:>8.1f}")
    figure = save_figure(args.out, results, args.steps, args.depth) if args.out else None
    print(f"\nloss after {args.steps} steps: " + ", ".join(
        f"{v} {results[v]['train_loss']:.3g}" for v in variants))
    return {"results": results, "steps": args.steps, "chance_loss": math.log(CLASSES),
            "figure": figure}


if __name__ == "__main__":
    main()
