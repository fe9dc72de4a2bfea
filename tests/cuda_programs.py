"""Programs for the cuda backend's tests: one program computing every primitive of
tests/test_grad_rules.py's cases (and reductions, matmul, convolution, pooling, scans and
sorts) with the gradient of a weighted sum of each, so that one compile covers them all."""
from __future__ import annotations

import numpy as np

import graphc as gc
import test_grad_rules as gr


def _cases() -> list[tuple[str, object, list[np.ndarray]]]:
    """(name, build, arrays): build(*tensors) -> tensor, arrays in float64."""
    rng = np.random.default_rng(5)
    cases: list[tuple[str, object, list[np.ndarray]]] = []
    for name, (fn, sample) in sorted(gr.UNARY_CASES.items()):
        cases.append((name, fn, [np.asarray(sample((2, 3)), np.float64)]))
    for name, (fn, sa, sb) in sorted(gr.BINARY_CASES.items()):
        a, b = sa(3, 1), sb(1, 4)
        if name in ("maximum", "minimum"):
            b = a.reshape(1, 3)[:, :1] + np.array([[-0.5, 0.5, 1.0, -1.0]])
        cases.append((name, fn, [np.asarray(a, np.float64), np.asarray(b, np.float64)]))
    for name, (fn, shape) in sorted(gr.SHAPE_CASES.items()):
        cases.append((name, lambda t, fn=fn: fn(t) * 1.0, [gr.normal(*shape)]))
    for name, (fn, shapes) in sorted(gr.INTERNAL_CASES.items()):
        cases.append((name, lambda a, b, fn=fn: fn(a, b) * 1.0,
                      [gr.normal(*s) for s in shapes]))
    x = rng.permutation(24).reshape(2, 3, 4) * 0.25 + rng.normal(size=(2, 3, 4)) * 0.01
    for red in ("sum", "mean", "max", "min"):
        for axis in (None, 0, (0, 2), -1):
            cases.append((f"{red}_{axis}", lambda t, red=red, axis=axis: getattr(gc, red)(
                gc.sin(t), axis=axis), [x]))
    cases += [
        ("matmul", lambda a, b: a @ b, [rng.normal(size=(2, 3, 70)), rng.normal(size=(70, 5))]),
        ("matmul_big", lambda a, b: a @ b.T, [rng.normal(size=(70, 33)),
                                              rng.normal(size=(66, 33))]),
        ("where", lambda a, b: gc.where(a > 0.1, a * 1.5, gc.sin(b)),
         [rng.normal(size=(3, 4)), rng.normal(size=(3, 4))]),
        ("concatenate", lambda a, b: gc.concatenate([a, b * 2, a], axis=1),
         [rng.normal(size=(2, 3)), rng.normal(size=(2, 2))]),
        ("cast", lambda a: (a.astype("float32") * 2).astype(a.dtype) * a,  # (exact in f32)
         [rng.normal(size=(4,))]),
        ("log_softmax", lambda a: gc.log_softmax(a, axis=-1), [rng.normal(size=(3, 40))]),
        ("softmax_long", lambda a: gc.softmax(a, axis=0), [rng.normal(size=(1500, 2))]),
        ("logsumexp", lambda a: gc.logsumexp(a, axis=1), [rng.normal(size=(3, 5))]),
        ("conv2d", lambda a, w: gc.nn.conv2d(a, w, stride=1, padding=1),
         [rng.normal(size=(2, 3, 6, 5)), rng.normal(size=(4, 3, 3, 3))]),
        ("conv2d_strided", lambda a, w: gc.nn.conv2d(a, w, stride=2),
         [rng.normal(size=(1, 2, 7, 7)), rng.normal(size=(3, 2, 3, 3))]),
        ("max_pool", lambda a: gc.nn.max_pool2d(a, 2), [rng.permutation(64).reshape(
            1, 1, 8, 8) * 0.1]),
        ("avg_pool", lambda a: gc.nn.avg_pool2d(a, 2), [rng.normal(size=(1, 2, 4, 6))]),
        ("cumsum", lambda a: gc.cumsum(a, axis=1), [rng.normal(size=(3, 5))]),
        ("cumprod", lambda a: gc.cumprod(a, axis=0), [rng.normal(size=(3, 5))]),
        ("sort", lambda a: gc.sort(a, axis=1) * 1.0, [rng.permutation(15).reshape(3, 5) * 0.5]),
    ]
    return cases


def every_primitive(dtype: str, backend: dict):
    """A compiled program of every case: its outputs are each case's value and the gradients
    of sum(value * fixed weights) with respect to its inputs; and its arguments."""
    rng = np.random.default_rng(11)
    inputs, outputs, args = [], [], []
    for name, build, arrays in _cases():
        phs = [gc.placeholder(a.shape, dtype, name=f"{name}_{i}")
               for i, a in enumerate(arrays)]
        out = build(*phs)
        weights = gc.constant(rng.normal(size=out.shape).astype(dtype))
        grads = gc.grad(gc.sum(out * weights), phs)
        inputs += phs
        outputs += [out, *grads]
        args += [a.astype(dtype) for a in arrays]
    return gc.function(inputs, outputs, **backend), args
