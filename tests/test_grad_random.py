"""Random expression graphs (hypothesis): trees of elementwise ops, reductions, matmul,
reshapes, transposes, slices, gathers and broadcasting, whose gradients must match central
finite differences, and whose forward and reverse modes must agree."""
from __future__ import annotations

import numpy as np
from hypothesis import assume, given, strategies as st

import graphc as gc

DIMS = st.integers(1, 4)


def _sigmoid(u):
    return gc.sigmoid(u)


# Unary ops that are defined on all reals (log/sqrt/pow get positive arguments by
# construction); kinks (abs, relu, sign) are allowed: the check skips points next to one.
UNARY = {
    "neg": lambda u: -u,
    "sin": gc.sin,
    "cos": gc.cos,
    "tanh": gc.tanh,
    "sigmoid": _sigmoid,
    "softplus": gc.softplus,
    "erf": gc.erf,
    "square": gc.square,
    "abs": gc.abs,
    "relu": gc.relu,
    "sign_times": lambda u: gc.sign(u) * u,
    "exp_bounded": lambda u: gc.exp(gc.tanh(u)),
    "log_positive": lambda u: gc.log(1.0 + gc.square(u)),
    "log_softplus": lambda u: gc.log(gc.softplus(u) + 0.1),
    "sqrt_positive": lambda u: gc.sqrt(gc.square(u) + 0.5),
    "reciprocal": lambda u: 1.0 / (1.0 + gc.square(u)),
    "power_number": lambda u: (1.5 + gc.sin(u)) ** 1.7,
    "cube": lambda u: u ** 3,
    "number_power": lambda u: 2.0 ** gc.tanh(u),
    "log_base": lambda u: gc.log(2.0 + gc.cos(u), base=3.0),
    "tan_bounded": lambda u: gc.tan(gc.tanh(u)),
    "scale": lambda u: 0.5 * u - 0.25,
}

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (1.5 + gc.sin(b)),
    "pow": lambda a, b: (1.0 + gc.sigmoid(a)) ** gc.tanh(b),
    "maximum": gc.maximum,
    "minimum": gc.minimum,
    "where": lambda a, b: gc.where(a > b, a * 2.0, gc.sin(b)),
    "logb": lambda a, b: gc.log(2.0 + gc.sin(a), base=2.5 + gc.tanh(b)),
}


class Builder:
    """Draws a random graph of an exact output shape, with its own random input values."""

    def __init__(self, data, max_depth: int, smooth: bool = False,
                 dynamic: bool = False) -> None:
        self.data = data
        self.max_depth = max_depth
        self.smooth = smooth
        self.dynamic = dynamic  # placeholders declare some sizes None (given at call time)
        self.rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
        self.inputs: list[tuple[gc.Tensor, np.ndarray]] = []
        self.budget = 14  # subtrees left to grow; then everything is a leaf

    def draw(self, strategy, label=None):
        return self.data.draw(strategy, label=label)

    def leaf(self, shape: tuple) -> gc.Tensor:
        same = [p for p, v in self.inputs if v.shape == shape]
        if same and self.draw(st.booleans(), "reuse"):
            return self.draw(st.sampled_from(same))
        value = self.rng.standard_normal(shape)
        # (a size 1 may be broadcast, which a size given at call time never is: kept static)
        declared = tuple(None if self.dynamic and d != 1 and self.draw(st.booleans(), "none")
                         else d for d in shape)
        ph = gc.placeholder(declared, "float64", name=f"in{len(self.inputs)}")
        self.inputs.append((ph, value))
        return ph

    def sub_shape(self, shape: tuple) -> tuple:
        """A shape that broadcasts to `shape` (some sizes 1, maybe fewer leading axes)."""
        drop = self.draw(st.integers(0, len(shape)))
        kept = shape[drop:]
        if self.dynamic:
            # a subtree's 1 may be a size computed from one given at call time (a slice's
            # min(1, N), a reshape's N // 2), which never broadcasts: leading axes only
            return kept
        return tuple(1 if self.draw(st.booleans()) else d for d in kept)

    def expr(self, shape: tuple, depth: int) -> gc.Tensor:
        if depth <= 0 or self.budget <= 0:
            return self.leaf(shape)
        self.budget -= 1
        kinds = ["unary", "unary", "binary", "binary", "reduce", "matmul", "reshape",
                 "broadcast"]
        if depth < self.max_depth:
            kinds.append("leaf")
        if len(shape) >= 1:
            kinds += ["slice", "index", "take", "softmax"]
            if any(d >= 2 for d in shape):
                kinds.append("concat")
        if len(shape) >= 2:
            kinds.append("transpose")
        kind = self.draw(st.sampled_from(kinds), "kind")
        return getattr(self, "_" + kind)(shape, depth - 1)

    def _leaf(self, shape, depth):
        return self.leaf(shape)

    def _unary(self, shape, depth):
        names = sorted(UNARY)
        if self.smooth:
            names = [n for n in names if n not in ("abs", "relu", "sign_times")]
        name = self.draw(st.sampled_from(names), "unary")
        return UNARY[name](self.expr(shape, depth))

    def _binary(self, shape, depth):
        names = sorted(BINARY)
        if self.smooth:
            names = [n for n in names if n not in ("maximum", "minimum", "where")]
        name = self.draw(st.sampled_from(names), "binary")
        sa, sb = self.sub_shape(shape), self.sub_shape(shape)
        if tuple(np.broadcast_shapes(sa, sb)) != tuple(shape):  # one carries every size
            sa, sb = (shape, sb) if self.draw(st.booleans()) else (sa, shape)
        return BINARY[name](self.expr(sa, depth), self.expr(sb, depth))

    def _distinct(self, shape):
        """Distinct offsets, so max/min never tie (ties from broadcasting are kinks)."""
        n = int(np.prod(shape, dtype=np.int64))
        return gc.constant((self.rng.permutation(n).reshape(shape) * 0.37).astype(np.float64))

    def _reduce(self, shape, depth):
        red = self.draw(st.sampled_from(["sum", "mean", "max", "min", "logsumexp"]), "reduce")
        if self.smooth and red in ("max", "min"):
            red = "sum"
        if not shape and self.draw(st.booleans()):
            inner = tuple(self.draw(st.lists(DIMS, min_size=1, max_size=3)))
            axis, keepdims = None, False
        else:
            k = self.draw(st.integers(0, len(shape)))
            keepdims = bool(len(shape) and k < len(shape) and shape[k] == 1
                            and self.draw(st.booleans()))
            n = self.draw(DIMS)
            inner = shape[:k] + (n,) + (shape[k + 1:] if keepdims else shape[k:])
            axis = k if self.draw(st.booleans()) else k - len(inner)
        u = self.expr(inner, depth)
        if red in ("max", "min"):
            u = u + self._distinct(inner)
        fn = gc.logsumexp if red == "logsumexp" else getattr(gc, red)
        return fn(u, axis=axis, keepdims=keepdims)

    def _matmul(self, shape, depth):
        k = self.draw(DIMS)
        if len(shape) == 0:
            a, b = (k,), (k,)
        elif len(shape) == 1:
            if self.draw(st.booleans()):
                a, b = (k,), (k, shape[0])
            else:
                a, b = (shape[0], k), (k,)
        else:
            a = shape[:-1] + (k,)
            b = (k, shape[-1])
            batch = shape[:-2]
            if batch and self.draw(st.booleans()):  # both batched, one maybe broadcast
                b = self.sub_shape(batch) + b
                if self.draw(st.booleans()):
                    a, b = self.sub_shape(batch) + a[-2:], batch + b[-2:]
        return gc.matmul(self.expr(a, depth), self.expr(b, depth))

    def _reshape(self, shape, depth):
        size = int(np.prod(shape, dtype=np.int64))
        options = [(size,), tuple(reversed(shape)), shape + (1,), (1,) + shape]
        inner = self.draw(st.sampled_from(options))
        u = self.expr(inner, depth)
        target = shape if not shape or self.draw(st.booleans()) else (-1,) + shape[1:]
        return gc.reshape(u, target)

    def _broadcast(self, shape, depth):
        return gc.broadcast_to(self.expr(self.sub_shape(shape), depth), shape)

    def _transpose(self, shape, depth):
        perm = tuple(self.draw(st.permutations(range(len(shape)))))
        inner = [0] * len(shape)
        for i, p in enumerate(perm):
            inner[p] = shape[i]
        return gc.transpose(self.expr(tuple(inner), depth), perm)

    def _slice(self, shape, depth):
        k = self.draw(st.integers(0, len(shape) - 1))
        length = shape[k]
        step = self.draw(st.sampled_from([1, 2, -1, -2]))
        extra = self.draw(st.integers(0, 2))
        n = (length - 1) * abs(step) + 1 + extra
        s = self.draw(st.integers(0, extra))
        if step > 0:
            start, stop = s, s + (length - 1) * step + 1
        else:
            start = n - 1 - s
            stop = start + (length - 1) * step - 1
            stop = None if stop < 0 else stop
        sl = slice(start, stop, step)
        assert len(range(*sl.indices(n))) == length
        inner = shape[:k] + (n,) + shape[k + 1:]
        key = (slice(None),) * k + (sl,)
        return self.expr(inner, depth)[key]

    def _index(self, shape, depth):
        k = self.draw(st.integers(0, len(shape)))
        n = self.draw(DIMS)
        i = self.draw(st.integers(-n, n - 1))
        inner = shape[:k] + (n,) + shape[k:]
        return self.expr(inner, depth)[(slice(None),) * k + (i,)]

    def _take(self, shape, depth):
        k = self.draw(st.integers(0, len(shape) - 1))
        n = self.draw(DIMS)
        idx = np.array(self.draw(st.lists(st.integers(-n, n - 1), min_size=shape[k],
                                          max_size=shape[k])), dtype=np.int64)
        inner = shape[:k] + (n,) + shape[k + 1:]
        return gc.take(self.expr(inner, depth), idx, axis=k)

    def _concat(self, shape, depth):
        axes = [i for i, d in enumerate(shape) if d >= 2]
        k = self.draw(st.sampled_from(axes))
        p = self.draw(st.integers(1, shape[k] - 1))
        a = shape[:k] + (p,) + shape[k + 1:]
        b = shape[:k] + (shape[k] - p,) + shape[k + 1:]
        # (concatenate's gradient allows one part of run-time size along the axis)
        if self.draw(st.booleans()) and not self.dynamic:
            return gc.concatenate([self.expr(a, depth), self.expr(b, depth)], axis=k)
        return gc.stack([self.expr(shape[:k] + shape[k + 1:], depth) for _ in range(shape[k])],
                        axis=k)

    def _softmax(self, shape, depth):
        axis = self.draw(st.integers(-len(shape), len(shape) - 1))
        fn = gc.softmax if self.draw(st.booleans()) else gc.log_softmax
        return fn(self.expr(shape, depth), axis=axis)


def build_loss(data, max_depth=4, smooth=False, dynamic=False):
    b = Builder(data, max_depth, smooth, dynamic)
    shape = tuple(data.draw(st.lists(DIMS, max_size=3), label="shape"))
    out = b.expr(shape, max_depth)
    weights = b.rng.standard_normal(shape)
    loss = gc.sum(out * gc.constant(weights))
    return b, out, loss


def _fd(f, values, direction, eps):
    plus = [v + eps * d for v, d in zip(values, direction)]
    minus = [v - eps * d for v, d in zip(values, direction)]
    return (float(f(*plus)) - float(f(*minus))) / (2 * eps)


def _norm(a):
    return float(np.sqrt(np.sum(np.square(a))))


def _check_gradient(data, dynamic):
    b, _, loss = build_loss(data, dynamic=dynamic)
    phs = [p for p, _ in b.inputs]
    values = [v for _, v in b.inputs]
    grads = gc.grad(loss, phs)
    for p, g in zip(phs, grads):
        assert g.shape == p.shape and g.dtype == p.dtype
    f = gc.function(phs, loss, backend="numpy")
    fg = gc.function(phs, grads, backend="numpy")
    f0 = float(f(*values))
    assume(np.isfinite(f0))
    symbolic = fg(*values)
    for g, v in zip(symbolic, values):
        assert g.shape == v.shape
        assert np.all(np.isfinite(g))
    for _ in range(2):
        direction = [b.rng.standard_normal(v.shape) for v in values]
        sym = sum(float(np.sum(g * d)) for g, d in zip(symbolic, direction))
        scale = sum(_norm(g) * _norm(d) for g, d in zip(symbolic, direction))
        tol = 1e-6 * scale + 1e-8 * (abs(f0) + 1)
        fine, coarse = _fd(f, values, direction, 1e-6), _fd(f, values, direction, 1e-5)
        # next to a kink (abs, relu, max, where...) differences depend on the step: skip
        assume(abs(fine - coarse) <= 10 * tol)
        assert abs(fine - sym) <= 10 * tol, (
            f"directional derivative: symbolic {sym!r}, finite differences {fine!r}\n"
            + gc.show(loss))


@given(st.data())
def test_random_graph_gradient_matches_finite_differences(data):
    _check_gradient(data, dynamic=False)


@given(st.data())
def test_random_graph_gradient_with_run_time_sizes(data):
    """The same, with placeholders whose sizes are (partly) None until the call."""
    _check_gradient(data, dynamic=True)


@given(st.data())
def test_random_graph_forward_and_reverse_mode_agree(data):
    b, out, _ = build_loss(data, dynamic=data.draw(st.booleans(), "dynamic"))
    phs = [p for p, _ in b.inputs]
    values = [v for _, v in b.inputs]
    ct = gc.placeholder(out.shape, "float64", name="ct")
    tans = [gc.placeholder(p.shape, "float64", name=f"t{i}") for i, p in enumerate(phs)]
    vj = gc.vjp(out, phs, ct)
    jv = gc.jvp(out, phs, tans)
    assert jv.shape == out.shape
    assert [g.shape for g in vj] == [p.shape for p in phs]
    y0 = gc.function(phs, out, backend="numpy")(*values)
    u = b.rng.standard_normal(np.shape(y0))
    ts = [b.rng.standard_normal(v.shape) for v in values]
    got_v = gc.function(phs + [ct], vj, backend="numpy")(*values, u)
    got_j = gc.function(phs + tans, jv, backend="numpy")(*values, *ts)
    assume(np.all(np.isfinite(got_j)))
    lhs = float(np.sum(u * got_j))
    rhs = sum(float(np.sum(g * t)) for g, t in zip(got_v, ts))
    scale = _norm(u) * _norm(got_j) + sum(_norm(g) * _norm(t) for g, t in zip(got_v, ts))
    assert abs(lhs - rhs) <= 1e-9 * (scale + 1), (lhs, rhs)


@given(st.data())
def test_random_graph_second_derivative(data):
    """Hessian-vector products, grad(<grad L, v>), against differences of grad L."""
    b, _, loss = build_loss(data, max_depth=3, smooth=True,
                            dynamic=data.draw(st.booleans(), "dynamic"))
    phs = [p for p, _ in b.inputs]
    values = [v for _, v in b.inputs]
    grads = gc.grad(loss, phs)
    vs = [gc.placeholder(p.shape, "float64") for p in phs]
    assert [g.shape for g in grads] == [p.shape for p in phs]
    inner = sum((gc.sum(g * v) for g, v in zip(grads, vs)), gc.constant(0.0, "float64"))
    hv = gc.grad(inner, phs)
    fg = gc.function(phs, grads, backend="numpy")
    fh = gc.function(phs + vs, hv, backend="numpy")
    direction = [b.rng.standard_normal(v.shape) for v in values]
    got = fh(*values, *direction)
    eps = 1e-5
    plus = fg(*[v + eps * d for v, d in zip(values, direction)])
    minus = fg(*[v - eps * d for v, d in zip(values, direction)])
    for h, p, m in zip(got, plus, minus):
        fd = (p - m) / (2 * eps)
        assume(np.all(np.isfinite(fd)))
        np.testing.assert_allclose(h, fd, rtol=1e-4, atol=1e-4 * (1 + np.max(np.abs(fd))))
