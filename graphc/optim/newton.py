"""Newton's method for small problems: the full Hessian (gc.hessian) and an in-graph solve, or
Hessian-free Newton-CG (conjugate gradient on Hessian-vector products), both as updates."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from graphc.frontends import (Parameter, Tensor, concatenate, constant, greater, less,
                              maximum, stop_gradient, where)
from graphc.frontends import sum as gsum
from graphc.frontends.autodiff import grad, hessian
from graphc.optim.base import (LearningRate, Optimizer, Updates, cast, check_int,
                               check_loss, check_number, check_params)


def _flatten(tensors: Sequence[Tensor]) -> Tensor:
    flat = [t.reshape(-1) for t in tensors]
    return flat[0] if len(flat) == 1 else concatenate(flat)


def _unflatten(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, start = [], 0
    for p in like:
        size = int(np.prod(p.shape, dtype=np.int64))
        out.append(vector[start:start + size].reshape(p.shape))
        start += size
    return out


def full_hessian(loss: Tensor, params: Sequence[Parameter], grads: Sequence[Tensor]) -> Tensor:
    """The (n, n) Hessian over all parameters flattened and concatenated: gc.hessian for one
    parameter; for several, row i is the gradient of the i-th gradient entry (cross blocks)."""
    if len(params) == 1:
        n = int(np.prod(params[0].shape, dtype=np.int64))
        return hessian(loss, params[0]).reshape((n, n))
    flat = _flatten(grads)
    rows = [_flatten(grad(flat[i], list(params))).reshape((1, -1))
            for i in range(flat.shape[0])]
    return concatenate(rows, axis=0)


def solve_spd(a: Tensor, b: Tensor) -> Tensor:
    """x with a @ x = b, by Gauss-Jordan elimination on [a | b] unrolled into the graph (n
    steps of O(n^2) elementwise work). No pivoting: valid for symmetric positive definite a
    (a convex loss's Hessian, or one made so by damping)."""
    n = a.shape[0]
    m = concatenate([a, b.reshape((n, 1))], axis=1)
    rows = np.arange(n).reshape(n, 1)
    for k in range(n):
        pivot_row = m[k:k + 1, :] / m[k:k + 1, k:k + 1]
        eliminated = m - m[:, k:k + 1] * pivot_row
        m = where(constant(rows == k), pivot_row, eliminated)
    return m[:, n]


class Newton(Optimizer):
    """Newton's method with the full Hessian H over all parameters (flattened together):

        p <- p - lr * (H + damping * I)^-1 g

    H is built in the graph (gc.hessian: n gradient graphs for n parameter entries) and the
    system solved in the graph by Gauss-Jordan elimination (solve_spd), so one compiled call
    is one Newton step. Meant for small problems (n up to a few hundred); H + damping * I must
    be positive definite (a convex loss, or damping > 0). lr = 1 is the pure Newton step.
    """

    prefix = "newton"

    def __init__(self, lr: LearningRate = 1.0, damping: float = 0.0) -> None:
        super().__init__(lr)
        self.damping = check_number(damping, "damping")

    def updates(self, loss: Tensor, params: Sequence[Parameter]) -> Updates:
        params = check_params(params)
        loss = check_loss(loss)
        grads = grad(loss, params)
        return self._step(params, grads, self.direction(loss, params, grads))

    def apply_gradients(self, params: Sequence[Parameter], grads: Sequence[Tensor]) -> Updates:
        raise TypeError(f"{type(self).__name__} needs the loss for its Hessian: use "
                        "updates(loss, params)")

    def direction(self, loss: Tensor, params: Sequence[Parameter],
                  grads: Sequence[Tensor]) -> Tensor:
        """The flat Newton direction (H + damping I)^-1 g."""
        h = full_hessian(loss, params, grads)
        if self.damping:
            h = h + self.damping * np.eye(h.shape[0])
        return solve_spd(h, _flatten(grads).astype(h.dtype))

    def _step(self, params: list[Parameter], grads: Sequence[Tensor], d: Tensor) -> Updates:
        t = self._counter()
        lr = self.learning_rate(t)
        new: Updates = {t: t + 1}
        for p, dp in zip(params, _unflatten(d, params)):
            new[p] = p - cast(lr, p.dtype) * cast(dp, p.dtype)
        return new


class NewtonCG(Newton):
    """Hessian-free (truncated) Newton: the direction d ~ (H + damping I)^-1 g from
    `cg_iters` conjugate-gradient iterations unrolled in the graph, each using one
    Hessian-vector product Hv = grad(<g, stop_gradient(v)>, params) (Pearlmutter's trick), so
    H is never formed. CG stops early (its later iterations become no-ops) once the residual
    falls below cg_tol * |g| or the curvature along a search direction is not positive; if
    that happens at the first iteration the direction is g itself (a gradient step).
    cg_iters >= n solves the system exactly in exact arithmetic.

        r_0 = g, s_0 = g, d_0 = 0;   for k < cg_iters:
        a = r.r / s.(H + damping I)s,  d += a s,  r' = r - a (H + damping I) s,
        s = r' + (r'.r' / r.r) s,  r = r'
        p <- p - lr * d
    """

    prefix = "newton_cg"

    def __init__(self, lr: LearningRate = 1.0, damping: float = 0.0, cg_iters: int = 10,
                 cg_tol: float = 1e-10) -> None:
        super().__init__(lr, damping)
        self.cg_iters = check_int(cg_iters, "cg_iters")
        self.cg_tol = check_number(cg_tol, "cg_tol")

    def direction(self, loss: Tensor, params: Sequence[Parameter],
                  grads: Sequence[Tensor]) -> Tensor:
        def hvp(v: Tensor) -> Tensor:
            vs = _unflatten(stop_gradient(v), params)
            inner = gsum(grads[0] * cast(vs[0], grads[0].dtype))
            for g, vi in zip(grads[1:], vs[1:]):
                inner = inner + gsum(g * cast(vi, g.dtype))
            hv = _flatten(grad(inner, list(params))).astype(v.dtype)
            return hv + self.damping * v if self.damping else hv

        g = _flatten(grads)
        r, s, d = g, g, g * 0.0
        rr = gsum(r * r)
        tol2 = self.cg_tol ** 2 * rr
        done = rr * 0.0          # 1.0 once CG has stopped (a float flag: no logical ops)
        for _ in range(self.cg_iters):
            hs = hvp(s)
            curvature = gsum(s * hs)
            proceed = where(greater(curvature, 0.0), where(greater(rr, tol2), 1.0, 0.0), 0.0)
            done = maximum(done, 1.0 - proceed)
            active = less(done, 0.5)
            alpha = where(active, rr / where(active, curvature, 1.0), 0.0)
            d = d + alpha * s
            r = r - alpha * hs
            rr_new = gsum(r * r)
            s = where(active, r + rr_new / where(active, rr, 1.0) * s, s)
            rr = rr_new
        moved = greater(gsum(d * d), 0.0)
        return where(moved, d, g)
