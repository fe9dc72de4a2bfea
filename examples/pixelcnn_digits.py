"""A PixelCNN on binarized 28x28 MNIST-5k digits: an autoregressive model that writes
p(x) = prod_i p(x_i | x_<i) over the 784 pixels in raster order, each factor a Bernoulli whose
logit comes from masked convolutions. A mask is a constant 0/1 tensor multiplied into a
convolution's weights (conv2d(x, W * mask)), so a pixel's logit never sees itself or any pixel
after it: mask A (first layer) zeroes the centre tap and every later tap, mask B (the layers
after) keeps the centre, since a hidden unit at a position already depends only on earlier
pixels. Then a 1x1 ReLU layer and a 1x1 convolution to one logit per pixel; trained with
binary cross-entropy with logits and Adam through graphc's compiled gradients.

Prints the held-out negative log-likelihood in bits per pixel of the trained model against
(a) independent pixels (a Bernoulli per pixel fitted on the training set, add-one smoothed)
and (b) the untrained model. `--out path.png` draws new digits sampled pixel by pixel: 784
sequential calls of a compiled forward pass, each fixing one more pixel of every sample; a
call sees only the band of rows that the pixel's logit can reach (8 of the 28 rows with 6
layers), which gives the same probabilities as the whole image at a fraction of the cost
(when matplotlib is installed). The last line printed is the headline figure.
Run: python examples/pixelcnn_digits.py [--epochs 3] [--channels 32] [--backend llvm]
     [--out pixelcnn.png]; `--quick` (16 channels, 1 epoch) finishes in under a minute"""
from __future__ import annotations

import argparse
import math
import time
from typing import Callable

import numpy as np

import graphc as gc

SIDE = 28
BITS = 1.0 / math.log(2.0)  # nats -> bits


def causal_mask(out_channels: int, in_channels: int, kernel: int, kind: str) -> np.ndarray:
    """OIHW 0/1 mask of a k x k kernel centred on a pixel: the rows above the centre and the
    taps left of it in its row are 1; the centre itself is 1 for mask "B", 0 for mask "A"."""
    if kind not in ("A", "B"):
        raise ValueError(f"mask kind must be 'A' or 'B', got {kind!r}")
    c = kernel // 2
    mask = np.zeros((out_channels, in_channels, kernel, kernel), np.float32)
    mask[:, :, :c, :] = 1.0
    mask[:, :, c, :c] = 1.0
    if kind == "B":
        mask[:, :, c, c] = 1.0
    return mask


class MaskedConv2D(gc.nn.Conv2D):
    """A same-padded Conv2D whose kernel is W * mask (a graph constant): the masked taps get
    zero gradient, so they stay at zero (they start there). He initialisation counts every tap
    of the kernel; the weights are scaled up to the fan-in that the mask leaves open."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, kind: str,
                 activation: str | None = "relu", seed: int | None = None,
                 name: str | None = None) -> None:
        if kernel % 2 != 1:
            raise ValueError(f"MaskedConv2D: the kernel must have odd size, got {kernel}")
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2,
                         activation=activation, seed=seed, name=name)
        self.kind = kind
        self.mask = causal_mask(out_channels, in_channels, kernel, kind)
        open_taps = self.mask[0, 0].sum()
        self.W.value = self.W.value * self.mask * np.float32(np.sqrt(kernel * kernel / open_taps))

    def extra_repr(self) -> str:
        return f"mask {self.kind}, " + super().extra_repr()

    def forward(self, x: gc.Tensor, training: bool) -> gc.Tensor:
        y = gc.nn.conv2d(x, self.W * gc.constant(self.mask), padding=self.padding)
        y = y + gc.reshape(self.b, (1, self.out_channels, 1, 1))
        return self.activation(y)


def build(channels: int, layers: int, seed: int) -> gc.nn.Sequential:
    """Mask A 5x5 (1 -> channels), layers - 1 mask-B 3x3 convolutions, a 1x1 ReLU layer, a 1x1
    convolution to one logit per pixel. The logit at (i, j) sees pixels of rows above i (up to
    2 + (layers - 1) rows up) and pixels left of j in row i."""
    return gc.nn.Sequential(
        MaskedConv2D(1, channels, 5, "A", seed=seed, name="maskA"),
        *[MaskedConv2D(channels, channels, 3, "B", seed=seed + i, name=f"maskB{i}")
          for i in range(1, layers)],
        gc.nn.Conv2D(channels, channels, 1, activation="relu", seed=seed + layers,
                     name="head"),
        gc.nn.Conv2D(channels, 1, 1, init="glorot_uniform", seed=seed + layers + 1,
                     name="logits"),
    )


def binarize(images: np.ndarray) -> np.ndarray:
    return (images > 0.5).astype(np.float32)


def independent_pixels_bits(x_train: np.ndarray, x_test: np.ndarray) -> float:
    """Held-out NLL in bits per pixel of the best model without dependencies between pixels:
    a Bernoulli per pixel, p = (ones + 1) / (images + 2) on the training set (add-one: a pixel
    never on in training must not give a held-out digit probability 0)."""
    p = (x_train.sum(axis=0) + 1.0) / (len(x_train) + 2.0)
    nll = -(x_test * np.log(p) + (1.0 - x_test) * np.log1p(-p))
    return float(nll.mean() * BITS)


def reach(layers: int) -> int:
    """How many rows above its own a logit sees: 2 through the 5x5 mask A, 1 more per 3x3 mask
    B (the 1x1 layers add none)."""
    return 2 + (layers - 1)


def band_height(rows_up: int) -> int:
    """The rows of the band that `sample` feeds the forward pass: row i and rows_up above."""
    return min(rows_up + 1, SIDE)


def sample(probabilities: Callable[[np.ndarray], np.ndarray], n: int, rows_up: int,
           rng: np.random.Generator) -> np.ndarray:
    """n digits drawn pixel by pixel in raster order: 784 calls of the compiled forward pass,
    each giving p(x_ij = 1 | the pixels before it) for all n samples at once. A logit of row
    i depends on rows i - rows_up .. i only, so each call gets a band of rows_up + 1 rows that
    ends at row i (rows 0 .. rows_up while i < rows_up): row i's probabilities are then exactly
    those of the whole image (the band's zero padding at its top edge reaches down fewer than
    rows_up rows), and a call costs a fraction of a 28-row pass."""
    images = np.zeros((n, 1, SIDE, SIDE), np.float32)
    height = band_height(rows_up)  # `probabilities` takes bands of this height
    for i in range(SIDE):
        top = max(0, i - rows_up)
        for j in range(SIDE):
            p = probabilities(images[:, :, top:top + height])[:, 0, i - top, j]
            images[:, 0, i, j] = rng.random(n) < p
    return images


def save_figure(path: str, rows: list[tuple[str, np.ndarray]]) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure")
        return None
    n = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 0.95 + 0.3),
                             squeeze=False)
    for row, (label, images) in enumerate(rows):
        for i in range(n):
            ax = axes[row, i]
            if i < len(images):
                ax.imshow(images[i].reshape(SIDE, SIDE), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(label)
    fig.suptitle("binarized held-out digits; PixelCNN samples drawn pixel by pixel")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"figure saved to {path}")
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="default 3 (--quick: 1)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=None, help="default 32 (--quick: 16)")
    parser.add_argument("--layers", type=int, default=6,
                        help="masked convolutions: one mask A, then mask B")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--train-images", type=int, default=None,
                        help="use only this many training images (quick runs)")
    parser.add_argument("--test-images", type=int, default=None,
                        help="evaluate on only this many held-out images (quick runs)")
    parser.add_argument("--samples", type=int, default=16, help="digits drawn for --out")
    parser.add_argument("--quick", action="store_true",
                        help="16 channels, 1 epoch: under a minute on two cores")
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="save a PNG of samples here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (1 if args.quick else 3)
    channels = args.channels if args.channels is not None else (16 if args.quick else 32)

    data = gc.data.load_mnist_5k(seed=args.seed, flatten=False)
    x_train, x_test = binarize(data.x_train), binarize(data.x_test)
    if args.train_images:
        x_train = x_train[:args.train_images]
    if args.test_images:
        x_test = x_test[:args.test_images]
    print(f"binarized MNIST-5k: {len(x_train)} train / {len(x_test)} held-out images; "
          f"PixelCNN {args.layers} masked layers of {channels} channels, "
          f"backend={args.backend}")

    model = build(channels, args.layers, args.seed)
    x = gc.placeholder((None, 1, SIDE, SIDE), name="x")
    logits = model(x)
    loss = gc.nn.binary_cross_entropy_with_logits(logits, x)  # nats per pixel, batch mean
    opt = gc.optim.Adam(lr=args.lr)
    t0 = time.perf_counter()
    step = gc.function([x], loss, updates=opt.updates(loss, model.parameters()),
                       backend=args.backend)
    evaluate = gc.function([x], loss, backend=args.backend)

    def held_out(xs: np.ndarray, chunk: int = 200) -> dict:
        nats = sum(float(evaluate(xs[i:i + chunk])) * len(xs[i:i + chunk])
                   for i in range(0, len(xs), chunk)) / len(xs)
        return {"test_bits": nats * BITS}

    baseline = independent_pixels_bits(x_train, x_test)
    untrained = held_out(x_test)["test_bits"]
    print(f"held-out NLL before training: {untrained:.4f} bits/pixel; independent pixels: "
          f"{baseline:.4f} bits/pixel")
    print("training (loss: nats per pixel; test_bits: held-out NLL in bits per pixel)")
    history = gc.train.fit(step, x_train, epochs=epochs, batch_size=args.batch_size,
                           seed=args.seed, eval_fn=held_out, eval_data=x_test,
                           progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    trained = history.metrics["test_bits"][-1] if epochs else untrained
    if epochs:
        print(f"trained {history.epochs} epoch(s) in {seconds:.1f} s (including compilation): "
              f"training loss {history.batch_loss[0] * BITS:.4f} (first batch) -> "
              f"{history.loss[-1] * BITS:.4f} (last epoch) bits/pixel")

    figure, samples, sample_seconds = None, None, 0.0
    if args.out:
        band = gc.placeholder((None, 1, band_height(reach(args.layers)), SIDE), name="band")
        probabilities = gc.function([band], gc.sigmoid(model(band)), backend=args.backend)
        t1 = time.perf_counter()
        samples = sample(probabilities, args.samples, reach(args.layers),
                         np.random.default_rng(args.seed))
        sample_seconds = time.perf_counter() - t1
        print(f"{args.samples} samples drawn in {sample_seconds:.1f} s ({SIDE * SIDE} calls); "
              f"ink {samples.mean():.3f} of pixels (held-out digits {x_test.mean():.3f})")
        figure = save_figure(args.out, [("held out", x_test[:args.samples]),
                                        ("PixelCNN", samples)])

    print(f"held-out NLL {trained:.4f} bits/pixel ({trained * SIDE * SIDE / BITS:.1f} "
          f"nats/image); independent pixels {baseline:.4f}, untrained {untrained:.4f}")
    return {"trained_bits": trained, "untrained_bits": untrained, "baseline_bits": baseline,
            "loss": history.loss, "batch_loss": history.batch_loss,
            "test_bits": history.metrics.get("test_bits", []), "seconds": seconds,
            "samples": samples, "sample_seconds": sample_seconds, "figure": figure}


if __name__ == "__main__":
    main()
