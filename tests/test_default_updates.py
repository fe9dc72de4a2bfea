"""Default updates: a compiled step that uses a training-mode BatchNorm (or Dropout) updates its
state without the user merging `model.updates()`, exactly once, unless `updates` names it."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import nn

BACKENDS = ["numpy", pytest.param("llvm", marks=pytest.mark.slow)]


def _model(dtype, momentum=0.1):
    return nn.Sequential(nn.Dense(3, 4, activation="tanh", seed=0, dtype=dtype),
                         nn.BatchNorm(4, momentum=momentum, dtype=dtype),
                         nn.Dense(4, 2, seed=1, dtype=dtype))


def _np_stats(xs, model, momentum):
    """The running statistics after training steps on batches xs, in numpy (PyTorch's rule:
    the unbiased batch variance), with the first layer's weights as they were at each step."""
    rm, rv = np.zeros(4), np.ones(4)
    for x, (w, b) in xs:
        h = np.tanh(x @ w + b)
        rm = (1 - momentum) * rm + momentum * h.mean(axis=0)
        rv = (1 - momentum) * rv + momentum * h.var(axis=0, ddof=1)
    return rm, rv


def _train(model, dtype, backend, merge, steps=4):
    rng = np.random.default_rng(3)
    x = gc.placeholder((None, 3), dtype, name="x")
    t = gc.placeholder((None, 2), dtype, name="t")
    loss = nn.mse(model(x), t)
    updates = gc.optim.SGD(lr=0.1).updates(loss, model.parameters())
    if merge:
        updates.update(model.updates())
    step = gc.function([x, t], loss, updates=updates, backend=backend)
    seen = []
    for k in range(steps):
        xv = rng.normal(size=(5 + k, 3)) * 2 + 1
        seen.append((xv, (model[0].W.value.astype(np.float64), model[0].b.value)))
        step(xv, rng.normal(size=(5 + k, 2)))
    return step, seen


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_statistics_update_without_merging_updates(backend, dtype):
    plain, merged = _model(dtype, 0.3), _model(dtype, 0.3)
    step, seen = _train(plain, dtype, backend, merge=False)
    _train(merged, dtype, backend, merge=True)
    bn = plain[1]
    assert sorted(step.default_updates) == sorted([bn.running_mean.storage.name,
                                                   bn.running_var.storage.name])
    rm, rv = _np_stats(seen, plain, 0.3)
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(bn.running_mean.value, rm, rtol=tol, atol=tol)
    np.testing.assert_allclose(bn.running_var.value, rv, rtol=tol, atol=tol)
    # the same model state as with model.updates() merged (the old way): no double update
    for (k, a), (_, b) in zip(plain.state_dict().items(), merged.state_dict().items()):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=k)
    # and so the same inference results
    x = gc.placeholder((None, 3), dtype, name="x")
    xv = np.random.default_rng(4).normal(size=(7, 3))
    a = gc.function([x], plain(x, training=False), backend=backend)(xv)
    b = gc.function([x], merged(x, training=False), backend=backend)(xv)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_explicit_updates_win_and_inference_adds_none():
    model = _model("float64")
    bn = model[1]
    x = gc.placeholder((None, 3), "float64", name="x")
    y = model(x)
    frozen = gc.function([x], y, updates={bn.running_mean: bn.running_mean * 0 + 5.0},
                         backend="numpy")
    assert frozen.default_updates == (bn.running_var.storage.name,)
    frozen(np.ones((4, 3)))
    np.testing.assert_array_equal(bn.running_mean.value, np.full(4, 5.0))
    assert not np.allclose(bn.running_var.value, 1.0)  # the other statistic still updates
    # inference mode: no updates
    before = model.state_dict()
    infer = gc.function([x], model(x, training=False), backend="numpy")
    assert infer.default_updates == () and len(infer.raw_graph.updates) == 0
    infer(np.ones((4, 3)))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    # opting out evaluates a training-mode loss without touching the statistics
    peek = gc.function([x], y, backend="numpy", default_updates=False)
    peek(np.ones((4, 3)))
    np.testing.assert_array_equal(bn.running_var.value, before["1.running_var"])
    with pytest.raises(TypeError, match="default_updates"):
        gc.function([x], y, backend="numpy", default_updates="yes")


def test_gradients_carry_the_updates_once():
    model = _model("float64", momentum=0.5)
    bn = model[1]
    x = gc.placeholder((None, 3), "float64", name="x")
    loss = gc.mean(gc.square(model(x)))
    grads = gc.grad(loss, model.parameters())
    # a function of the gradients only (the loss is not an output) still updates, once,
    # although the loss's node is reached through every gradient and the hessian-vector part
    f = gc.function([x], grads + [gc.grad(gc.sum(grads[0] * grads[0]), model[0].b)],
                    backend="numpy")
    assert sorted(f.default_updates) == sorted(p.storage.name for p in bn.state())
    xv = np.random.default_rng(5).normal(size=(6, 3))
    f(xv)
    h = np.tanh(xv @ model[0].W.value + model[0].b.value)
    np.testing.assert_allclose(bn.running_mean.value, 0.5 * h.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.value, 0.5 + 0.5 * h.var(axis=0, ddof=1),
                               rtol=1e-12)


def test_two_calls_in_one_step_compose_like_two_calls_in_a_row():
    bn = nn.BatchNorm(2, momentum=0.5, dtype="float64")
    a = gc.placeholder((None, 2), "float64", name="a")
    b = gc.placeholder((None, 2), "float64", name="b")
    f = gc.function([a, b], gc.sum(bn(a)) + gc.sum(bn(b)), backend="numpy")
    rng = np.random.default_rng(6)
    av, bv = rng.normal(size=(4, 2)), rng.normal(size=(5, 2)) + 3
    f(av, bv)
    rm = 0.5 * (0.5 * av.mean(axis=0)) + 0.5 * bv.mean(axis=0)
    np.testing.assert_allclose(bn.running_mean.value, rm, rtol=1e-12)
    # the same layer on the same input is one node: one update
    g = gc.function([a], gc.sum(bn(a)) + gc.sum(bn(a) * 2), backend="numpy")
    bn.running_mean.value = np.zeros(2)
    g(av)
    np.testing.assert_allclose(bn.running_mean.value, 0.5 * av.mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_draws_a_new_mask_each_step(backend):
    drop = nn.Dropout(0.5, seed=7)
    x = gc.placeholder((64,), "float64", name="x")
    f = gc.function([x], drop(x), backend=backend)
    assert f.default_updates == (drop.seed.storage.name,)
    first, second = f(np.ones(64)), f(np.ones(64))
    assert not np.array_equal(first, second)
    assert int(drop.seed.value) == 9


def test_fit_applies_the_statistics_once_per_batch():
    plain, merged = _model("float64"), _model("float64")
    data = np.random.default_rng(8).normal(size=(24, 3)), np.zeros((24, 2))
    for model, merge in ((plain, False), (merged, True)):
        x = gc.placeholder((None, 3), "float64", name="x")
        t = gc.placeholder((None, 2), "float64", name="t")
        loss = nn.mse(model(x), t)
        updates = gc.optim.SGD(lr=0.1).updates(loss, model.parameters())
        if merge:
            updates.update(model.updates())
        step = gc.function([x, t], loss, updates=updates, backend="numpy")
        gc.train.fit(step, data, epochs=2, batch_size=8, verbose=False, seed=0)
    for (k, a), (_, b) in zip(plain.state_dict().items(), merged.state_dict().items()):
        np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=k)
    assert not np.allclose(plain[1].running_mean.value, 0)


def test_updates_survive_the_stabilized_form_gc_grad_differentiates():
    bn = nn.BatchNorm(2, momentum=0.5, dtype="float64")
    x = gc.placeholder((None, 2), "float64", name="x")
    y = bn(gc.log(1 + gc.exp(x)))  # rewritten to softplus before differentiating
    gx = gc.grad(gc.sum(gc.sin(y)), x)
    f = gc.function([x], gx, backend="numpy")
    assert sorted(f.default_updates) == sorted(p.storage.name for p in bn.state())
    xv = np.random.default_rng(9).normal(size=(5, 2))
    f(xv)
    np.testing.assert_allclose(bn.running_mean.value, 0.5 * np.logaddexp(0, xv).mean(axis=0),
                               rtol=1e-12)
