"""Example 9, conditioning: gradient descent, momentum, Adam and Newton on an ill-conditioned
quadratic f(x) = 1/2 (x - x*)^T A (x - x*), A with eigenvalues from 1 to `--cond` in a random
basis. Each method is a gc.optim optimizer compiled into one step function; the table shows
how many steps each needs to bring f(x) / f(x0) below `--tol`.
Run: python examples/conditioning.py [--dim 20] [--cond 1000] [--tol 1e-10] [--backend llvm]"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import graphc as gc


def make_problem(dim: int, cond: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A symmetric positive definite A with condition number `cond`, and the minimizer x*."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    eigenvalues = np.logspace(0.0, math.log10(cond), dim)
    return (basis * eigenvalues) @ basis.T, rng.normal(size=dim)


def methods(dim: int, cond: float) -> dict[str, tuple[str, gc.optim.Optimizer]]:
    """Each method with its settings; L = cond and mu = 1 are the extreme curvatures."""
    L, mu = cond, 1.0
    # Polyak's heavy ball tuned for quadratics: lr = 4/(sqrt L + sqrt mu)^2 and
    # momentum = ((sqrt k - 1)/(sqrt k + 1))^2, k = L/mu (the SGD momentum form is the same).
    hb_lr = 4.0 / (math.sqrt(L) + math.sqrt(mu)) ** 2
    hb_m = ((math.sqrt(L / mu) - 1) / (math.sqrt(L / mu) + 1)) ** 2
    return {
        "gradient descent": (f"lr = 1/L = {1 / L:.3g}", gc.optim.SGD(lr=1.0 / L)),
        "momentum": (f"lr = {hb_lr:.3g}, momentum = {hb_m:.3f}",
                     gc.optim.SGD(lr=hb_lr, momentum=hb_m)),
        "Adam": ("lr = 0.1", gc.optim.Adam(lr=0.1)),
        "Newton": ("full Hessian, exact solve", gc.optim.Newton()),
        "Newton-CG": (f"{dim} CG iterations", gc.optim.NewtonCG(cg_iters=dim)),
    }


def run(opt: gc.optim.Optimizer, a: np.ndarray, x_star: np.ndarray, tol: float,
        max_iters: int, backend: str) -> dict:
    """Steps until f(x)/f(x0) <= tol (or max_iters); x0 = 0."""
    x = gc.parameter(np.zeros(len(x_star)), name="x")
    r = x - x_star
    loss = 0.5 * gc.sum(r * (gc.constant(a) @ r))
    t0 = time.perf_counter()
    step = gc.function([], loss, updates=opt.updates(loss, [x]), backend=backend)
    compiled = time.perf_counter() - t0
    f0 = float(step())  # f at x0, then one step taken
    iters, ratio = 0, 1.0
    while iters < max_iters:
        ratio = float(step()) / f0  # f after iters + 1 steps
        iters += 1
        if ratio <= tol:
            break
    return {"iterations": iters, "converged": ratio <= tol, "ratio": ratio,
            "compile_s": compiled, "run_s": time.perf_counter() - t0 - compiled}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=20)
    parser.add_argument("--cond", type=float, default=1e3, help="condition number of A")
    parser.add_argument("--tol", type=float, default=1e-10, help="target f(x) / f(x0)")
    parser.add_argument("--max-iters", type=int, default=50_000)
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    a, x_star = make_problem(args.dim, args.cond, args.seed)
    print(f"f(x) = 1/2 (x - x*)^T A (x - x*), {args.dim}-D, condition number "
          f"{np.linalg.cond(a):.3g}; steps until f(x)/f(x0) <= {args.tol:g} "
          f"(backend={args.backend})\n")
    header = f"{'method':<18} {'settings':<34} {'steps':>7} {'f/f0':>10} {'compile':>8} {'run':>7}"
    print(header)
    print("-" * len(header))
    results = {}
    for name, (settings, opt) in methods(args.dim, args.cond).items():
        res = run(opt, a, x_star, args.tol, args.max_iters, args.backend)
        results[name] = res
        steps = f"{res['iterations']:>7d}" if res["converged"] else f">{args.max_iters:>6d}"
        print(f"{name:<18} {settings:<34} {steps} {res['ratio']:>10.2e} "
              f"{res['compile_s']:>7.2f}s {res['run_s']:>6.2f}s")
    missed = [n for n, r in results.items() if not r["converged"]]
    print("\nall methods reached the tolerance" if not missed else
          f"\ndid not reach the tolerance in {args.max_iters} steps: {', '.join(missed)}")
    return results


if __name__ == "__main__":
    main()
