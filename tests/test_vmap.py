"""gc.vmap: batched graphs against a loop over examples, per-example gradients, errors."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.node import toposort

RNG = np.random.default_rng(1)


def _loop(fn, xs, **kw):
    """The reference: fn compiled for one example, run on each and stacked."""
    per = gc.jit(fn, backend="numpy")
    return np.stack([per(*x) for x in zip(*xs)], **kw)


W = RNG.standard_normal((4, 3))
IDX = np.array([2, 0, 3])
CONV_W = RNG.standard_normal((2, 1, 3, 3))

# (name, per-example function, per-example shape); each maps over axis 0 of a (5, *shape) input
CASES = [
    ("elementwise", lambda x: gc.tanh(x) * 2 + gc.exp(-x) / (1 + x * x), (4,)),
    ("broadcast_scalar", lambda x: x + gc.constant(np.ones((2, 4))), (4,)),
    ("matmul_left", lambda x: x @ gc.constant(W), (2, 4)),
    ("matmul_right", lambda x: gc.constant(W.T) @ x, (4, 2)),
    ("matvec_batched_both", lambda x: x @ x.T, (3, 4)),
    ("sum_mean_max", lambda x: x.sum(axis=1) + x.mean(axis=0).sum() - x.max(), (3, 4)),
    ("argmax", lambda x: gc.argmax(x, axis=-1), (3, 4)),
    ("softmax", lambda x: gc.softmax(x, axis=0) + gc.log_softmax(x, axis=-1), (3, 4)),
    ("reshape", lambda x: x.reshape((-1,)) * 1.0 + x.reshape((2, 6)).sum(), (3, 4)),
    ("transpose", lambda x: gc.transpose(x) @ x, (3, 4)),
    ("expand_squeeze", lambda x: gc.squeeze(gc.expand_dims(x, 1) * 2, 1), (3, 4)),
    ("broadcast_to", lambda x: gc.broadcast_to(x, (2, 3, 4)), (3, 4)),
    ("slicing", lambda x: x[1:, ::2] + x[0, None, :2], (3, 4)),
    ("concatenate", lambda x: gc.concatenate([x, gc.constant(np.ones((1, 4))), x[:1]]), (3, 4)),
    ("stack", lambda x: gc.stack([x, -x], axis=1), (3, 4)),
    ("take_fixed_indices", lambda x: gc.take(x, gc.constant(IDX), axis=1), (3, 4)),
    ("where", lambda x: gc.where(x > 0, x, 0.1 * x), (3, 4)),
    ("cast", lambda x: (x > 0).astype("float64") + x, (3, 4)),
    ("conv", lambda x: gc.nn.conv2d(x, gc.constant(CONV_W), padding=1), (1, 1, 5, 5)),
    ("max_pool", lambda x: gc.nn.max_pool2d(x, 2), (1, 2, 4, 4)),
]


@pytest.mark.parametrize("name,fn,shape", CASES, ids=[c[0] for c in CASES])
def test_rule_matches_loop(name, fn, shape):
    xs = RNG.standard_normal((5,) + shape)
    out = gc.vmap(fn, backend="numpy")(xs)
    ref = _loop(fn, [xs])
    assert out.shape == ref.shape and out.dtype == ref.dtype
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_llvm_matches_numpy(dtype):
    def fn(x, w):
        return gc.relu(x @ w).sum(axis=-1) + gc.take(x, gc.constant(IDX[:2]), axis=0).mean()

    xs = RNG.standard_normal((6, 3, 4)).astype(dtype)
    w = RNG.standard_normal((4, 2)).astype(dtype)
    out = gc.vmap(fn, in_axes=(0, None))(xs, w)
    ref = np.stack([np.maximum(x @ w, 0).sum(-1) + x[IDX[:2]].mean() for x in xs])
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_in_axes_and_out_axes():
    a = RNG.standard_normal((3, 7))  # mapped over axis 1
    b = RNG.standard_normal((3,))   # not mapped
    out = gc.vmap(lambda x, y: x * y + x.sum(), in_axes=(1, None), out_axes=1,
                  backend="numpy")(a, b)
    ref = np.stack([a[:, i] * b + a[:, i].sum() for i in range(7)], axis=1)
    np.testing.assert_allclose(out, ref, rtol=1e-12)


def test_tuple_outputs_and_unbatched_output():
    def fn(x, c):
        return x * 2, c.sum()

    xs, c = RNG.standard_normal((4, 3)), RNG.standard_normal(2)
    doubled, total = gc.vmap(fn, in_axes=(0, None), out_axes=(0, None), backend="numpy")(xs, c)
    np.testing.assert_allclose(doubled, xs * 2)
    np.testing.assert_allclose(total, c.sum())  # out_axes None: not repeated
    _, repeated = gc.vmap(fn, in_axes=(0, None), backend="numpy")(xs, c)
    np.testing.assert_allclose(repeated, np.full(4, c.sum()))


W0 = RNG.standard_normal((4, 3))
XS, YS = RNG.standard_normal((6, 4)), RNG.standard_normal((6, 3))


def _per_example_grads():
    w = gc.parameter(W0)

    def loss(x, y):
        return ((gc.tanh(x @ w) - y) ** 2).sum()

    return lambda x, y: gc.grad(loss(x, y), w)


def test_per_example_gradients_match_a_loop():
    out = gc.vmap(_per_example_grads())(XS, YS)
    assert out.shape == (6, 4, 3)
    np.testing.assert_allclose(out, _loop(_per_example_grads(), [XS, YS]),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.slow  # (importing torch)
def test_per_example_gradients_match_torch():
    torch = pytest.importorskip("torch")

    def torch_loss(wt, x, y):
        return ((torch.tanh(x @ wt) - y) ** 2).sum()

    ref = torch.func.vmap(torch.func.grad(torch_loss), in_dims=(None, 0, 0))(
        torch.tensor(W0), torch.tensor(XS), torch.tensor(YS))
    out = gc.vmap(_per_example_grads())(XS, YS)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-10, atol=1e-12)


def test_symbolic_batch_of_unknown_size():
    x = gc.placeholder((None, 3), "float64")
    w = gc.constant(RNG.standard_normal((3, 2)))
    y = gc.vmap(lambda e: gc.sigmoid(e @ w).sum() * e[0])(x)
    assert isinstance(y, gc.Tensor) and y.shape == (None,)
    f = gc.function([x], y, backend="numpy")
    for n in (1, 4):
        xs = RNG.standard_normal((n, 3))
        ref = (1 / (1 + np.exp(-(xs @ w.node.attrs["value"].array)))).sum(-1) * xs[:, 0]
        np.testing.assert_allclose(f(xs), ref, rtol=1e-12)


def test_rule_graphs_do_not_grow_with_the_batch():
    def size(n):
        x = gc.placeholder((n, 3, 4), "float64")
        y = gc.vmap(lambda e: gc.grad((gc.softmax(e @ gc.transpose(e)) ** 2).sum(), e))(x)
        return len(toposort([y.node]))

    assert size(2) == size(50)


def test_unrolled_primitive_is_still_correct():
    # per-example indices have no batching rule: take is unrolled over the batch
    xs = RNG.standard_normal((3, 5))
    idx = np.array([[0, 4], [1, 1], [3, 2]])
    out = gc.vmap(lambda x, i: gc.take(x, i, axis=0), backend="numpy")(xs, idx)
    np.testing.assert_allclose(out, np.take_along_axis(xs, idx, axis=1))


def test_nested_vmap_is_an_outer_product():
    a, b = RNG.standard_normal(3), RNG.standard_normal(4)
    outer = gc.vmap(lambda x: gc.vmap(lambda y: x * y, in_axes=0)(gc.constant(b)),
                    backend="numpy")(a)
    np.testing.assert_allclose(outer, np.outer(a, b), rtol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="different sizes"):
        gc.vmap(lambda x, y: x + y, backend="numpy")(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="in_axes has 1 entries for 2 arguments"):
        gc.vmap(lambda x, y: x, in_axes=(0,), backend="numpy")(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="maps no argument"):
        gc.vmap(lambda x: x, in_axes=None, backend="numpy")(np.zeros(3))
    with pytest.raises(ValueError, match="out of range"):
        gc.vmap(lambda x: x, in_axes=2, backend="numpy")(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="argument 0 is 0-d"):
        gc.vmap(lambda x: x, backend="numpy")(np.float64(3))
    with pytest.raises(TypeError, match="must return a Tensor.*float"):
        gc.vmap(lambda x: 1.0, backend="numpy")(np.zeros(3))
    with pytest.raises(ValueError, match="out_axes cannot be None"):
        gc.vmap(lambda x: x * 2, out_axes=None, backend="numpy")(np.zeros(3))
    with pytest.raises(TypeError, match="in_axes must be"):
        gc.vmap(lambda x: x, in_axes="0", backend="numpy")(np.zeros(3))
    x = gc.placeholder((None, 3))
    with pytest.raises(ValueError, match="batch size known when tracing"):
        gc.vmap(lambda e, i: gc.take(e, i, axis=0))(x, gc.placeholder((None, 2), "int64"))
