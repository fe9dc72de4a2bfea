"""Natural-gradient descent with the exact Fisher, against gradient descent, Adam and Newton, on
one ill-conditioned classifier: softmax regression on synthetic 3-class data whose features have
scales from 1 to `--scale` (so the loss surface is a long narrow valley). Every method is one
compiled step of graphc (gradients, Hessian, Fisher and the linear solve all in the graph); the
table shows how many steps and how much wall time each needs to bring the training loss to
within `--gap` of its minimum L*.

The natural gradient: per-example gradients as a graph, gc.vmap of gc.jacobian of each example's
log-probabilities log p(k | x_i) over the weights (one row per class k), give the exact Fisher

    F = 1/N sum_i sum_k p(k | x_i) g_ik g_ik^T,   g_ik = d log p(k | x_i) / dW

(the expectation over the model's own labels; the probabilities are stop_gradient'ed); the step
solves (F + damping I) d = g in the graph (gc.optim.solve_spd, Gauss-Jordan unrolled) and moves
W <- W - lr d. The "empirical Fisher" row uses the observed labels only, F = 1/N sum_i g_i g_i^T
with g_i the per-example loss gradient (gc.vmap of gc.grad): the cheap stand-in often used, and
not the same matrix. (For softmax regression the exact Fisher equals the Hessian of the mean
cross-entropy, so natural gradient and Newton take the same steps here, from first-derivative
quantities only; for a network they differ. The classes here are Gaussians with one shared
covariance, so the model is right about the data and near L* the empirical Fisher is close to the
exact one; with a misspecified model it need not be.)

Fair learning rates: each method's rate is the best of a grid (the fewest steps to the target;
if none gets there, the lowest loss after `--max-iters` steps), searched in this run: powers of 2
from 8 down to 2^-16 for gradient descent and Adam, 1, 1/2, 1/4 for the second-order steps. The
rate is a parameter of the compiled step, so the search compiles nothing more; a rate is dropped
once it has taken as many steps as the best one so far. Wall times: the chosen rate run again.
L* comes from Newton's method in float64 numpy, independent of graphc.
Run: python examples/natural_gradient.py [--quick] [--rotate] [--backend llvm] [--out ng.png]"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import graphc as gc

CLASSES = 3
SHORT = {"gradient descent": "gd", "Adam": "adam", "natural gradient": "natural",
         "empirical Fisher": "empirical-fisher", "Newton": "newton"}


def make_problem(n: int, dim: int, scale: float, seed: int,
                 rotate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """n examples: overlapping Gaussian classes in `dim` features, feature j multiplied by
    scale ** (j / (dim - 1)), then mixed by a random rotation if `rotate`, and a constant 1
    appended (the bias) -> (n, dim + 1) float32."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    means = rng.normal(size=(CLASSES, dim))
    x = means[labels] + 1.5 * rng.normal(size=(n, dim))
    x *= scale ** (np.arange(dim) / max(dim - 1, 1))
    if rotate:
        x = x @ np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    x = np.concatenate([x, np.ones((n, 1))], axis=1)
    return x.astype(np.float32), labels.astype(np.int64)


def numpy_minimum(x: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """L*, the minimizer W* and the Hessian there, by Newton's method in float64 numpy (the
    reference, independent of graphc)."""
    x = x.astype(np.float64)
    n, p = x.shape
    y = np.eye(CLASSES)[labels]
    w = np.zeros((p, CLASSES - 1))

    def parts(w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        logits = np.concatenate([x @ w, np.zeros((n, 1))], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        prob = np.exp(logp)[:, :-1]
        loss = -np.mean(np.sum(y * logp, axis=1))
        g = x.T @ (prob - y[:, :-1]) / n
        # d^2 L / dW[a,k] dW[b,l] = 1/N sum_i x_ia x_ib (p_ik delta_kl - p_ik p_il)
        cov = prob[:, :, None] * (np.eye(CLASSES - 1) - prob[:, None, :])
        h = np.einsum("ia,ib,ikl->akbl", x, x, cov) / n
        return loss, g, h.reshape(p * (CLASSES - 1), -1)

    for _ in range(100):
        loss, g, h = parts(w)
        step = np.linalg.solve(h, g.reshape(-1)).reshape(w.shape)
        w -= step
        if np.abs(step).max() < 1e-13 * max(1.0, np.abs(w).max()):
            break
    loss, _, h = parts(w)
    return loss, w, h


class Problem:
    """The model's graph on the whole (fixed-size) training set: W of shape (dim + 1, 2), the
    third class's logit fixed at 0 (so the loss has one minimizer, and F, H are invertible)."""

    def __init__(self, x: np.ndarray) -> None:
        self.n, self.p = x.shape
        self.x = gc.placeholder((self.n, self.p), name="x")
        self.labels = gc.placeholder((self.n,), "int64", name="labels")
        self.W = gc.parameter(np.zeros((self.p, CLASSES - 1), np.float32), name="W")
        self.loss = gc.name(gc.nn.cross_entropy(self.logits(self.x), self.labels), "loss")

    def logits(self, x: gc.Tensor) -> gc.Tensor:
        """Logits of a batch (n, p) -> (n, 3) or of one example (p,) -> (3,)."""
        z = x @ self.W
        return gc.concatenate([z, gc.zeros_like(z[..., :1])], axis=-1)

    def exact_fisher(self) -> gc.Tensor:
        """1/N sum_i sum_k p_ik g_ik g_ik^T, the per-example, per-class gradients g_ik by
        gc.vmap (over examples) of gc.jacobian (over classes) of log p(k | x_i)."""
        def jac(xi: gc.Tensor) -> gc.Tensor:  # one example: (3,) + W.shape
            return gc.jacobian(gc.log_softmax(self.logits(xi), axis=-1), self.W)

        size = self.p * (CLASSES - 1)
        g = gc.vmap(jac)(self.x).reshape((self.n * CLASSES, size))
        prob = gc.stop_gradient(gc.softmax(self.logits(self.x), axis=-1))
        a = g * gc.sqrt(prob).reshape((self.n * CLASSES, 1))
        return a.T @ a / self.n

    def empirical_fisher(self) -> gc.Tensor:
        """1/N sum_i g_i g_i^T, g_i the gradient of example i's loss (gc.vmap of gc.grad)."""
        def per_example(xi: gc.Tensor, yi: gc.Tensor) -> gc.Tensor:
            # the label picked by a one-hot product, not by indexing [yi]: vmap has no
            # batching rule for a gather at a per-example index and would unroll it
            logp = gc.log_softmax(self.logits(xi), axis=-1)
            return gc.grad(-gc.sum(gc.one_hot(yi, CLASSES) * logp), self.W)

        g = gc.vmap(per_example)(self.x, self.labels).reshape((self.n, -1))
        return g.T @ g / self.n


class NaturalGradient(gc.optim.Newton):
    """W <- W - lr (F + damping I)^-1 g: gc.optim.Newton's step with a Fisher for H."""

    prefix = "natural"

    def __init__(self, fisher, lr, damping: float) -> None:
        super().__init__(lr, damping)
        self.fisher = fisher

    def direction(self, loss, params, grads):
        f = self.fisher()
        f = f + self.damping * np.eye(f.shape[0], dtype=np.float32)
        return gc.optim.solve_spd(f, grads[0].reshape(-1))


def methods(problem: Problem, damping: float) -> dict:
    """name -> (optimizer factory taking the lr schedule, learning-rate grid)."""
    powers = [2.0 ** k for k in range(3, -17, -1)]  # 8, 4, ..., 2^-16: a factor of 2 apart
    unit = [1.0, 0.5, 0.25]  # second-order methods: the full step and two shorter ones
    return {
        "gradient descent": (lambda lr: gc.optim.SGD(lr=lr), powers),
        "Adam": (lambda lr: gc.optim.Adam(lr=lr), powers),
        "natural gradient": (lambda lr: NaturalGradient(problem.exact_fisher, lr, damping),
                             unit),
        "empirical Fisher": (lambda lr: NaturalGradient(problem.empirical_fisher, lr, damping),
                             unit),
        "Newton": (lambda lr: gc.optim.Newton(lr=lr, damping=damping), unit),
    }


def run(step, params: list, target: float, max_iters: int) -> dict:
    """Set params (W and the optimizer's state) to zero, then step until loss <= target."""
    for p in params:
        p.value = np.zeros(p.shape, p.dtype)
    losses: list[float] = []
    t0 = time.perf_counter()
    loss0 = None
    while len(losses) < max_iters:
        loss = float(step())  # the loss before this step
        if loss0 is None:
            loss0 = loss
        losses.append(loss)
        if loss <= target or not math.isfinite(loss) or loss > 10 * loss0:
            break
    seconds = time.perf_counter() - t0
    reached = losses[-1] <= target
    return {"losses": losses, "reached": reached, "iterations": len(losses) - 1 if reached
            else None, "seconds": seconds,
            "final": losses[-1] if math.isfinite(losses[-1]) else math.inf}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=6, help="features (a bias is added)")
    parser.add_argument("--scale", type=float, default=30.0, help="largest feature scale")
    parser.add_argument("--gap", type=float, default=1e-4, help="target: loss <= L* + gap")
    parser.add_argument("--damping", type=float, default=1e-4, help="lambda in F + lambda I")
    parser.add_argument("--max-iters", type=int, default=30_000)
    parser.add_argument("--timing-steps", type=int, default=200,
                        help="steps timed after each run for the per-step time")
    parser.add_argument("--rotate", action="store_true",
                        help="mix the scaled features by a random rotation (not axis-aligned)")
    parser.add_argument("--lr", action="append", default=[], metavar="METHOD=RATE",
                        help="a fixed rate instead of the search, e.g. --lr gd=0.004 (methods: "
                        "gd, adam, natural, empirical-fisher, newton; repeatable)")
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="save a PNG of the loss curves here")
    args = parser.parse_args(argv)
    if args.quick:
        args.examples, args.max_iters = 500, 3000
    fixed = {}
    for item in args.lr:
        method, _, rate = item.partition("=")
        if method not in SHORT.values():
            parser.error(f"--lr {item}: the methods are {', '.join(SHORT.values())}")
        fixed[method] = float(rate)

    x, labels = make_problem(args.examples, args.dim, args.scale, args.seed, args.rotate)
    l_star, w_star, hess = numpy_minimum(x, labels)
    target = l_star + args.gap
    eig = np.linalg.eigvalsh(hess)
    print(f"softmax regression, {args.examples} examples, {args.dim} features scaled 1 to "
          f"{args.scale:g} (+ bias), {CLASSES} classes: {hess.shape[0]} weights; Hessian at the "
          f"minimum: condition number {eig[-1] / eig[0]:.3g}")
    print(f"L* = {l_star:.6f} (float64 Newton in numpy); target loss <= L* + {args.gap:g} = "
          f"{target:.6f}; damping {args.damping:g}; backend={args.backend}\n")

    problem = Problem(x)
    lr = gc.parameter(np.float32(0.0), name="lr")  # fed to each optimizer as its rate

    def step_of(opt: gc.optim.Optimizer):
        return gc.function([problem.x, problem.labels], problem.loss, backend=args.backend,
                           updates=opt.updates(problem.loss, [problem.W]))

    header = (f"{'method':<18} {'lr':>8} {'steps':>7} {'loss - L*':>10} {'compile':>8} "
              f"{'to target':>10} {'per step':>9}")
    print(header)
    print("-" * len(header))
    results: dict = {}
    for name, (make, grid) in methods(problem, args.damping).items():
        opt = make(lambda t: lr)
        t0 = time.perf_counter()
        compiled = step_of(opt)
        compile_s = time.perf_counter() - t0

        def step(compiled=compiled):
            return compiled(x, labels)

        params = [problem.W] + opt.state
        best, search = None, []
        for rate in ([fixed[SHORT[name]]] if SHORT[name] in fixed else grid):
            lr.value = np.float32(rate)
            # a rate that has not reached the target in the best rate's steps cannot win
            budget = args.max_iters if best is None or not best[1]["reached"] else \
                best[1]["iterations"] + 1
            res = run(step, params, target, budget)
            res["lr"] = rate
            search.append((rate, res["iterations"], res["final"]))
            key = (0, res["iterations"]) if res["reached"] else (1, res["final"])
            if best is None or key < best[0]:
                best = (key, res)
        res = best[1]
        if len(search) > 1:  # time the chosen rate again, on its own
            lr.value = np.float32(res["lr"])
            res = dict(run(step, params, target, args.max_iters), lr=res["lr"])
        t0 = time.perf_counter()
        for _ in range(args.timing_steps):  # the time of one step, over more steps
            step()
        per_step = (time.perf_counter() - t0) / args.timing_steps
        res.update(compile_s=compile_s, step_s=per_step, search=search)
        results[name] = res
        steps = f"{res['iterations']:>7d}" if res["reached"] else f">{args.max_iters:>6d}"
        print(f"{name:<18} {res['lr']:>8.3g} {steps} {res['final'] - l_star:>10.2e} "
              f"{compile_s:>7.2f}s {res['seconds']:>9.3f}s {per_step * 1e3:>7.3f}ms")

    results["figure"] = save_figure(args.out, results, l_star, args.gap) if args.out else None
    results.update(l_star=l_star, w_star=w_star, target=target,
                   condition=float(eig[-1] / eig[0]),
                   initial=results["gradient descent"]["losses"][0])
    order = sorted(SHORT, key=lambda n: (not results[n]["reached"],
                                         results[n]["iterations"] or 0))
    counts = [f"{SHORT[n]} {results[n]['iterations']}" if results[n]["reached"] else
              f"{SHORT[n]} >{args.max_iters}" for n in order]
    print(f"\niterations to loss <= L* + {args.gap:g}: " + ", ".join(counts))
    return results


def save_figure(path: str, results: dict, l_star: float, target_gap: float) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure")
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, res in results.items():  # the loss after k = 1, 2, ... steps
        gap = np.maximum(np.asarray(res["losses"][1:]) - l_star, 1e-9)
        style = "--" if name == "Newton" else "-"  # Newton's curve lies on the natural one
        ax.loglog(np.arange(1, len(gap) + 1), gap, style, label=f"{name} (lr {res['lr']:.3g})")
    ax.axhline(target_gap, color="grey", linewidth=0.8, label="target")
    ax.set_xlabel("steps")
    ax.set_ylabel("training loss - L*")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"figure saved to {path}")
    return path


if __name__ == "__main__":
    main()
