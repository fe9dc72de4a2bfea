"""A GAN on the classic 2-D mixture of 8 Gaussians on a ring: a generator MLP maps noise drawn
in the graph from a seed (gc.random_uniform and Box-Muller) to points, a discriminator MLP
tells them from real samples. Two compiled steps share the parameters and alternate: the
discriminator's (its own Adam, only its parameters) and the generator's with the
non-saturating loss -log D(G(z)) (binary_cross_entropy_with_logits, its own Adam). The
discriminator's loss carries an R1 penalty, |grad_x D(x)|^2 on real points, so its update
differentiates a gradient (without it, `--r1 0`, this GAN collapses onto a few modes).
Prints the losses, then the quality of 2,000 generated points against the untrained
generator's: the modes covered and the fraction of points within 3 std of a mode.
`--out path.png` plots the samples (when matplotlib is installed).
Run: python examples/gan_mixture.py [--steps 3000] [--backend llvm] [--out gan.png]"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import graphc as gc

MODES = 8


def ring_centres(radius: float) -> np.ndarray:
    angles = 2 * np.pi * np.arange(MODES) / MODES
    return (radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(np.float32)


def real_batch(rng: np.random.Generator, centres: np.ndarray, std: float,
               n: int) -> np.ndarray:
    """n points of the mixture: a mode picked uniformly, plus isotropic Gaussian noise."""
    picked = centres[rng.integers(0, MODES, size=n)]
    return (picked + rng.normal(0, std, size=(n, 2))).astype(np.float32)


def standard_normal(seed: gc.Tensor, shape: tuple[int, int]) -> gc.Tensor:
    """N(0, 1) noise by Box-Muller from two uniform streams of one seed (2s and 2s + 1, so
    consecutive step seeds never share a stream)."""
    u1 = gc.random_uniform(2 * seed, shape)
    u2 = gc.random_uniform(2 * seed + 1, shape)
    # u is in [0, 1): 1 - u is in (0, 1], so the log is finite
    return gc.sqrt(-2.0 * gc.log(1.0 - u1)) * gc.cos(2.0 * math.pi * u2)


def mlp(sizes: list[int], seed: int, name: str) -> gc.nn.Sequential:
    """Dense layers with ReLU between them and a linear output."""
    layers = [gc.nn.Dense(a, b, activation="relu" if i < len(sizes) - 2 else None,
                          init="he_uniform" if i < len(sizes) - 2 else "glorot_uniform",
                          seed=seed + i, name=f"{name}{i + 1}")
              for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    return gc.nn.Sequential(*layers)


def quality(points: np.ndarray, centres: np.ndarray, std: float,
            min_share: float) -> dict:
    """A point is high quality if it lies within 3 std of its nearest mode; a mode is covered
    if at least min_share of all points are high-quality points of that mode."""
    dist = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=2)
    nearest = dist.argmin(axis=1)
    good = dist.min(axis=1) <= 3 * std
    counts = np.bincount(nearest[good], minlength=MODES)
    return {"modes": int(np.sum(counts >= min_share * len(points))),
            "high_quality": float(good.mean()), "per_mode": counts.tolist()}


def save_plot(path: str, real: np.ndarray, before: np.ndarray, after: np.ndarray,
              figures: tuple[dict, dict]) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return None
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), sharex=True, sharey=True)
    titles = ("real data", f"untrained G: {figures[0]['modes']}/8 modes, "
              f"{figures[0]['high_quality']:.0%} HQ",
              f"trained G: {figures[1]['modes']}/8 modes, {figures[1]['high_quality']:.0%} HQ")
    for ax, pts, title, colour in zip(axes, (real, before, after), titles,
                                      ("tab:blue", "tab:gray", "tab:orange")):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, c=colour)
        ax.set_title(title, fontsize=10)
        ax.set_aspect("equal")
    lim = 1.3 * np.abs(real).max()
    axes[0].set_xlim(-lim, lim)
    axes[0].set_ylim(-lim, lim)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot saved to {path}")
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000, help="D steps and G steps each")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--noise", type=int, default=8, help="the generator's noise size")
    parser.add_argument("--radius", type=float, default=2.0)
    parser.add_argument("--std", type=float, default=0.05, help="each mode's std")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--r1", type=float, default=0.3,
                        help="R1 gradient penalty weight (0: none)")
    parser.add_argument("--samples", type=int, default=2000, help="points to judge")
    parser.add_argument("--min-share", type=float, default=0.02,
                        help="a mode is covered with this share of the points near it")
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="save a PNG of the samples here")
    args = parser.parse_args(argv)

    centres = ring_centres(args.radius)
    print(f"{MODES} Gaussians (std {args.std:g}) on a ring of radius {args.radius:g}; "
          f"G {args.noise}-{args.hidden}-{args.hidden}-2, D 2-{args.hidden}-{args.hidden}-1, "
          f"batch {args.batch_size}, backend={args.backend}")
    G = mlp([args.noise, args.hidden, args.hidden, 2], args.seed, "gen")
    D = mlp([2, args.hidden, args.hidden, 1], args.seed + 10, "disc")
    real = gc.placeholder((args.batch_size, 2), name="real")
    seed = gc.placeholder((), "int64", name="seed")
    fake = G(standard_normal(seed, (args.batch_size, args.noise)))
    bce = gc.nn.binary_cross_entropy_with_logits
    # D: real -> 1, fake -> 0. G: the non-saturating loss, fake -> 1 in D's eyes
    d_real = D(real)
    d_loss = bce(d_real, 1.0) + bce(D(fake), 0.0)
    if args.r1:
        # R1: a penalty on the gradient of D's logit w.r.t. real points (a second derivative
        # when the optimizer differentiates it again); it keeps D smooth around the data
        slope = gc.grad(gc.sum(d_real), real)
        d_loss = d_loss + 0.5 * args.r1 * gc.mean(gc.sum(gc.square(slope), axis=1))
    g_loss = bce(D(fake), 1.0)
    # the learning rates anneal to 0, which lets the generator settle on the modes' centres
    d_opt = gc.optim.Adam(lr=gc.optim.cosine_annealing(args.lr, args.steps), betas=(0.5, 0.999))
    g_opt = gc.optim.Adam(lr=gc.optim.cosine_annealing(args.lr, args.steps), betas=(0.5, 0.999))
    d_step = gc.function([real, seed], d_loss, updates=d_opt.updates(d_loss, D.parameters()),
                         backend=args.backend)
    g_step = gc.function([seed], g_loss, updates=g_opt.updates(g_loss, G.parameters()),
                         backend=args.backend)
    generate = gc.function([seed], G(standard_normal(seed, (args.samples, args.noise))),
                           backend=args.backend)

    # noise seeds: one fixed for judging, then one per step (odd for D, even for G)
    eval_seed = 1_000_000 * args.seed
    rng = np.random.default_rng(args.seed)
    judge = dict(centres=centres, std=args.std, min_share=args.min_share)
    reference = quality(real_batch(rng, centres, args.std, args.samples), **judge)
    print(f"real data: {reference['modes']}/{MODES} modes covered, "
          f"{reference['high_quality']:.1%} high-quality points")
    before_points = generate(eval_seed)
    before = quality(before_points, **judge)
    print(f"untrained G: {before['modes']}/{MODES} modes covered, "
          f"{before['high_quality']:.1%} high-quality points")

    d_losses, g_losses = [], []
    report_every = max(1, args.steps // 10)
    t0 = time.perf_counter()
    for i in range(1, args.steps + 1):
        d_losses.append(float(d_step(real_batch(rng, centres, args.std, args.batch_size),
                                     eval_seed + 2 * i - 1)))
        g_losses.append(float(g_step(eval_seed + 2 * i)))
        if i % report_every == 0 or i == args.steps:
            now = quality(generate(eval_seed), **judge)
            print(f"step {i:5d}  D loss {np.mean(d_losses[-report_every:]):.3f}  "
                  f"G loss {np.mean(g_losses[-report_every:]):.3f}  modes {now['modes']}/"
                  f"{MODES}  high quality {now['high_quality']:.1%}  "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
    seconds = time.perf_counter() - t0
    after_points = generate(eval_seed)
    after = quality(after_points, **judge)
    print(f"trained {args.steps} D and G steps in {seconds:.1f} s (including compilation)")
    print(f"modes covered: {after['modes']}/{MODES} (untrained {before['modes']}/{MODES}); "
          f"high-quality points (within 3 std of a mode): {after['high_quality']:.1%} "
          f"(untrained {before['high_quality']:.1%})")
    print(f"points per mode: {after['per_mode']}")
    plotted = None
    if args.out:
        real_points = real_batch(np.random.default_rng(args.seed + 1), centres, args.std,
                                 args.samples)
        plotted = save_plot(args.out, real_points, before_points, after_points, (before, after))
    return {"real": reference, "untrained": before, "trained": after, "d_loss": d_losses,
            "g_loss": g_losses, "seconds": seconds, "plot": plotted}


if __name__ == "__main__":
    main()
