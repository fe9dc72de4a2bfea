"""A step of tests that need many distinct kernels: a chain of tanh layers of the given
widths (different widths: kernels that share no code) and its gradient."""
from __future__ import annotations

import numpy as np

import graphc as gc


def tanh_chain(widths: tuple[int, ...], batch: int, scale: float, seed: int):
    """(x, [loss, *gradients], rng): x a (batch, widths[0]) placeholder, a parameter of
    normal(0, scale) values between each two widths, h = tanh(h @ w) through them, loss =
    sum(h * h); rng the generator that made the parameters, to draw the data with."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder((batch, widths[0]), name="x")
    params = [gc.parameter(rng.normal(0, scale, (a, b)).astype(np.float32), name=f"w{i}")
              for i, (a, b) in enumerate(zip(widths, widths[1:]))]
    h = x
    for w in params:
        h = gc.tanh(h @ w)
    loss = gc.sum(h * h)
    return x, [loss, *gc.grad(loss, params)], rng
