"""A variational autoencoder on the bundled 8x8 digits: an encoder MLP gives the mean and
log-variance of q(z|x), z = mu + exp(logvar / 2) * eps with eps drawn in the graph from a seed
fed per step (gc.random_uniform and Box-Muller), a decoder MLP gives Bernoulli logits for the
64 pixels. The loss is the negative ELBO per image, -E[log p(x|z)] + KL(q(z|x) || N(0, I)), the
KL in closed form; gc.optim.Adam trains it through gc.train.fit. Prints the held-out loss and
reconstruction error before and after training; `--out path.png` draws test digits, their
reconstructions and new digits decoded from the prior (when matplotlib is installed).
Run: python examples/vae_digits.py [--epochs 60] [--latent 8] [--backend llvm] [--out vae.png]"""
from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np

import graphc as gc

PIXELS = 64


def standard_normal(seed: gc.Tensor, like: gc.Tensor | tuple) -> gc.Tensor:
    """N(0, 1) noise shaped like `like` (a tensor or a shape), by Box-Muller from two uniform
    streams of one seed: 2s and 2s + 1, so consecutive step seeds never share a stream."""
    u1 = gc.random_uniform(2 * seed, like)
    u2 = gc.random_uniform(2 * seed + 1, like)
    # u is in [0, 1): 1 - u is in (0, 1], so the log is finite
    return gc.sqrt(-2.0 * gc.log(1.0 - u1)) * gc.cos(2.0 * math.pi * u2)


class VAE:
    """The two MLPs and the graph pieces built from them."""

    def __init__(self, hidden: int, latent: int, seed: int) -> None:
        self.latent = latent
        self.encoder = gc.nn.Sequential(
            gc.nn.Dense(PIXELS, hidden, activation="relu", seed=seed, name="enc_hidden"),
            gc.nn.Dense(hidden, 2 * latent, seed=seed + 1, name="enc_out"))
        self.decoder = gc.nn.Sequential(
            gc.nn.Dense(latent, hidden, activation="relu", seed=seed + 2, name="dec_hidden"),
            gc.nn.Dense(hidden, PIXELS, seed=seed + 3, name="dec_out"))

    def parameters(self) -> list:
        return self.encoder.parameters() + self.decoder.parameters()

    def encode(self, x: gc.Tensor) -> tuple[gc.Tensor, gc.Tensor]:
        h = self.encoder(x)
        return h[:, :self.latent], h[:, self.latent:]

    def losses(self, x: gc.Tensor, seed: gc.Tensor) -> tuple[gc.Tensor, gc.Tensor, gc.Tensor]:
        """(negative ELBO, reconstruction term, KL), each in nats per image, batch means."""
        mu, logvar = self.encode(x)
        z = mu + gc.exp(0.5 * logvar) * standard_normal(seed, mu)
        # the grey levels in [0, 1] serve as Bernoulli targets; bce_with_logits averages over
        # pixels too, so times 64 is the sum over an image's pixels
        recon = PIXELS * gc.nn.binary_cross_entropy_with_logits(self.decoder(z), x)
        kl = gc.mean(gc.sum(0.5 * (gc.exp(logvar) + gc.square(mu) - 1.0 - logvar), axis=1))
        return recon + kl, recon, kl

    def reconstruct(self, x: gc.Tensor) -> gc.Tensor:
        """The decoder's pixel means at z = mu (no noise): what the model 'sees' in x."""
        return gc.sigmoid(self.decoder(self.encode(x)[0]))

    def sample(self, seed: gc.Tensor, n: int) -> gc.Tensor:
        """Pixel means of n new digits decoded from z ~ N(0, I), the prior."""
        return gc.sigmoid(self.decoder(standard_normal(seed, (n, self.latent))))


def save_figure(path: str, rows: list[tuple[str, np.ndarray]]) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure")
        return None
    n = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 0.95 + 0.3))
    for row, (label, images) in enumerate(rows):
        for i in range(n):
            ax = axes[row, i]
            ax.imshow(images[i].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(label)
    fig.suptitle("held-out digits, their reconstructions, new digits from the prior")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"figure saved to {path}")
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--latent", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--train-images", type=int, default=None,
                        help="use only this many training images (quick runs)")
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="save a PNG of reconstructions here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    data = gc.data.load_digits(seed=args.seed)
    x_train, x_test = data.x_train, data.x_test
    if args.train_images:
        x_train = x_train[:args.train_images]
    print(f"digits: {len(x_train)} train / {len(x_test)} held-out images; VAE 64-{args.hidden}-"
          f"{args.latent}-{args.hidden}-64, backend={args.backend}")

    vae = VAE(args.hidden, args.latent, args.seed)
    x = gc.placeholder((None, PIXELS), name="x")
    seed = gc.placeholder((), "int64", name="seed")
    loss, recon, kl = vae.losses(x, seed)
    opt = gc.optim.Adam(lr=args.lr)
    t0 = time.perf_counter()
    step = gc.function([x, seed], loss, updates=opt.updates(loss, vae.parameters()),
                       backend=args.backend)
    evaluate = gc.function([x, seed], [loss, recon, kl, vae.reconstruct(x)],
                           backend=args.backend)
    sample = gc.function([seed], vae.sample(seed, 10), backend=args.backend)

    # noise seeds: one fixed for evaluation, a fresh one for every training step
    eval_seed = 1_000_000 * args.seed
    step_seeds = itertools.count(eval_seed + 1)

    def train_step(xb: np.ndarray) -> np.ndarray:
        return step(xb, next(step_seeds))

    def held_out(xs: np.ndarray) -> dict:
        loss, r, k, means = evaluate(xs, eval_seed)
        return {"test_loss": float(loss), "test_recon": float(r), "test_kl": float(k),
                "test_mse": float(np.mean((means - xs) ** 2))}

    untrained = held_out(x_test)
    print(f"untrained: held-out -ELBO {untrained['test_loss']:.2f} nats/image, "
          f"reconstruction MSE {untrained['test_mse']:.4f}")
    print("training (loss: -ELBO in nats per image; test_mse: per pixel, decoded from the mean)")
    history = gc.train.fit(train_step, x_train, epochs=args.epochs,
                           batch_size=args.batch_size, seed=args.seed, eval_fn=held_out,
                           eval_data=x_test, progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    trained = held_out(x_test)
    mean_image_mse = float(np.mean((x_train.mean(axis=0) - x_test) ** 2))
    print(f"trained {history.epochs} epochs in {seconds:.1f} s (including compilation): "
          f"training -ELBO {history.loss[0]:.2f} -> {history.loss[-1]:.2f} nats/image")
    print(f"held-out -ELBO {trained['test_loss']:.2f} nats/image (reconstruction "
          f"{trained['test_recon']:.2f} + KL {trained['test_kl']:.2f}); untrained "
          f"{untrained['test_loss']:.2f}")
    print(f"held-out reconstruction MSE {trained['test_mse']:.4f} per pixel (untrained "
          f"{untrained['test_mse']:.4f}; the mean training image: {mean_image_mse:.4f})")

    figure = None
    if args.out:
        figure = save_figure(args.out, [("test", x_test[:10]),
                                        ("VAE", evaluate(x_test, eval_seed)[3][:10]),
                                        ("prior", sample(eval_seed))])
    return {"untrained": untrained, "trained": trained, "mean_image_mse": mean_image_mse,
            "loss": history.loss, "batch_loss": history.batch_loss, "seconds": seconds,
            "figure": figure}


if __name__ == "__main__":
    main()
