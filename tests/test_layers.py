"""gc.nn layers, initialisers, activations and bce_with_logits against independent numpy
references, with gradients checked by central finite differences (float64)."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

import graphc as gc
from conv_reference import conv_ref, pool_ref
from graphc import nn

BACKENDS = ["numpy", "llvm"]
F64 = "float64"


def _run(inputs, outputs, feeds, backend, updates=None):
    return gc.function(inputs, outputs, updates=updates, backend=backend)(*feeds)


def _check(loss, wrt, feed, backend):
    result = gc.check_grad(loss, wrt=wrt, feed=feed, backend=backend, max_entries=40)
    assert result.ok, str(result)


def _erf(x):
    return np.vectorize(math.erf)(x)


# -- numpy references ----------------------------------------------------------------------
def np_layer_norm(x, gamma, beta, eps, k=1):
    axes = tuple(range(-k, 0))
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def np_batch_norm(x, mean, var, gamma, beta, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * \
        gamma.reshape(shape) + beta.reshape(shape)


def np_bce(z, y):
    # an independent form: -(y log p + (1 - y) log(1 - p)) with log p = -log(1 + e^-z),
    # log(1 - p) = -log(1 + e^z), each through numpy's stable logaddexp
    return np.mean(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))


# -- initialisers ------------------------------------------------------------------------
def test_fans_for_dense_and_conv_weights():
    assert nn.init.compute_fans((300, 200)) == (300, 200)
    assert nn.init.compute_fans((64, 16, 3, 5)) == (16 * 15, 64 * 15)
    assert nn.init.compute_fans((7,)) == (7, 7)


@pytest.mark.parametrize("shape", [(400, 300), (64, 32, 5, 5)])
def test_initialiser_statistics(shape):
    fan_in, fan_out = (shape[0], shape[1]) if len(shape) == 2 else \
        (shape[1] * 25, shape[0] * 25)
    expected = {
        "glorot_uniform": 2 / (fan_in + fan_out), "xavier_uniform": 2 / (fan_in + fan_out),
        "glorot_normal": 2 / (fan_in + fan_out), "xavier_normal": 2 / (fan_in + fan_out),
        "he_uniform": 2 / fan_in, "kaiming_uniform": 2 / fan_in,
        "he_normal": 2 / fan_in, "kaiming_normal": 2 / fan_in,
    }
    for name, var in expected.items():
        w = getattr(nn.init, name)(shape, np.random.default_rng(1))
        assert w.shape == shape and w.dtype == np.float32
        assert abs(w.mean()) < 0.02 * math.sqrt(var), name
        assert w.var() == pytest.approx(var, rel=0.03), name
        if "uniform" in name:
            assert np.abs(w).max() <= math.sqrt(3 * var) * (1 + 1e-6)
            assert np.abs(w).max() > 0.99 * math.sqrt(3 * var)
    assert (nn.init.zeros(shape) == 0).all() and (nn.init.ones(shape, dtype=F64) == 1).all()
    assert nn.init.ones(shape, dtype=F64).dtype == np.float64


def test_initialisers_are_reproducible_and_need_an_rng():
    a = nn.init.he_normal((20, 10), 5)
    b = nn.init.he_normal((20, 10), np.random.default_rng(5))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, nn.init.he_normal((20, 10), 6))
    with pytest.raises(TypeError):
        nn.init.glorot_uniform((3, 4), None)
    d1, d2 = nn.Dense(5, 4, seed=3), nn.Dense(5, 4, seed=3)
    assert np.array_equal(d1.W.value, d2.W.value)


# -- activations -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_activations_forward_and_gradients(backend):
    xv = np.array([-30.0, -2.5, -0.7, -0.1, 0.2, 0.9, 3.0, 40.0])
    x = gc.placeholder(xv.shape, F64, name="x")
    refs = {
        "leaky_relu": (nn.leaky_relu(x, slope=0.2), np.where(xv >= 0, xv, 0.2 * xv)),
        "gelu": (nn.gelu(x), 0.5 * xv * (1 + _erf(xv / np.sqrt(2)))),
        "elu": (nn.elu(x), np.where(xv > 0, xv, np.expm1(np.minimum(xv, 0)))),
        "softsign": (nn.softsign(x), xv / (1 + np.abs(xv))),
        "sigmoid": (nn.sigmoid(x), 1 / (1 + np.exp(-xv))),
        "tanh": (nn.tanh(x), np.tanh(xv)),
        "relu": (nn.relu(x), np.maximum(xv, 0)),
        "softplus": (nn.softplus(x), np.logaddexp(0, xv)),
    }
    outs = _run([x], [t for t, _ in refs.values()], [xv], backend)
    for (name, (_, ref)), got in zip(refs.items(), outs):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12, err_msg=name)
    weights = np.linspace(0.5, 1.5, xv.size)
    for t, _ in refs.values():
        _check(gc.sum(t * weights), [x], {x: xv}, backend)
    # elu's gradient stays finite for huge inputs (exp only sees min(x, 0))
    big = gc.placeholder((2,), F64)
    g = _run([big], gc.grad(gc.sum(nn.elu(big)), big), [np.array([1e4, -1e4])], backend)
    np.testing.assert_allclose(g, [1.0, 0.0], atol=1e-12)


# -- Dense, WeightNorm -------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_forward_and_gradients(backend):
    rng = np.random.default_rng(0)
    layer = nn.Dense(5, 3, activation="tanh", seed=1, dtype=F64)
    layer.b.value = rng.normal(size=3)
    xv = rng.normal(size=(4, 5))
    x = gc.placeholder((None, 5), F64, name="x")
    y = layer(x)
    assert y.shape == (None, 3)
    np.testing.assert_allclose(_run([x], y, [xv], backend),
                               np.tanh(xv @ layer.W.value + layer.b.value), rtol=1e-12)
    loss = gc.sum(gc.sin(y))
    _check(loss, [x] + layer.parameters(), {x: xv}, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_norm(backend):
    rng = np.random.default_rng(1)
    dense = nn.Dense(4, 3, seed=2, dtype=F64)
    wn = nn.WeightNorm(dense)
    xv = rng.normal(size=(6, 4))
    x = gc.placeholder((None, 4), F64, name="x")
    y = wn(x)
    # at creation it computes what the plain layer computes
    np.testing.assert_allclose(_run([x], y, [xv], backend), xv @ dense.W.value, rtol=1e-12)
    v, g = rng.normal(size=(4, 3)), np.array([0.5, 2.0, -1.0])
    wn.v.value, wn.g.value, dense.b.value = v, g, np.array([0.1, 0.2, 0.3])
    w = g * v / np.linalg.norm(v, axis=0)
    np.testing.assert_allclose(_run([x], y, [xv], backend), xv @ w + [0.1, 0.2, 0.3],
                               rtol=1e-12)
    assert [p.storage.name for p in wn.parameters()] == \
        [f"{wn.name}.v", f"{wn.name}.g", f"{dense.name}.b"]
    _check(gc.sum(gc.tanh(y)), wn.parameters(), {x: xv}, backend)


# -- convolution, pooling, flatten -------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stride,padding,groups", [(1, 1, 1), (2, 0, 2)])
def test_conv2d_forward_and_gradients(backend, stride, padding, groups):
    rng = np.random.default_rng(2)
    conv = nn.Conv2D(4, 6, 3, stride=stride, padding=padding, groups=groups, seed=3, dtype=F64)
    assert conv.W.shape == (6, 4 // groups, 3, 3)
    conv.b.value = rng.normal(size=6)
    xv = rng.normal(size=(2, 4, 7, 7))
    x = gc.placeholder((None, 4, 7, 7), F64, name="x")
    y = conv(x)
    ref = conv_ref(xv, conv.W.value, stride, padding, groups, b=conv.b.value)
    np.testing.assert_allclose(_run([x], y, [xv], backend), ref, rtol=1e-10, atol=1e-12)
    _check(gc.sum(gc.square(y)) * 0.1, [x] + conv.parameters(), {x: xv}, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pooling_and_flatten(backend):
    rng = np.random.default_rng(3)
    xv = rng.normal(size=(2, 3, 6, 6))
    x = gc.placeholder((None, 3, 6, 6), F64, name="x")
    mp, ap, ap2, fl = nn.MaxPool2D(2), nn.AvgPool2D(3, stride=1), nn.AvgPool2D(2), nn.Flatten()
    outs = _run([x], [mp(x), ap(x), fl(ap2(x))], [xv], backend)
    np.testing.assert_allclose(outs[0], pool_ref(xv, 2, 2, np.max), rtol=1e-12)
    np.testing.assert_allclose(outs[1], pool_ref(xv, 3, 1, np.mean), rtol=1e-12)
    np.testing.assert_allclose(outs[2], pool_ref(xv, 2, 2, np.mean).reshape(2, -1), rtol=1e-12)
    assert mp.parameters() == [] and fl(ap2(x)).shape == (None, 27)
    weights = rng.normal(size=(2, 3, 4, 4))
    _check(gc.sum(ap(x) * weights), [x], {x: xv}, backend)
    _check(gc.sum(mp(x) * weights[:, :, :3, :3]), [x], {x: xv}, backend)


# -- LayerNorm, BatchNorm ----------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_norm_forward_and_gradients(backend):
    rng = np.random.default_rng(4)
    ln = nn.LayerNorm(5, eps=1e-3, dtype=F64)
    ln.gamma.value, ln.beta.value = rng.normal(size=5), rng.normal(size=5)
    xv = rng.normal(size=(3, 4, 5)) * 3 + 1
    x = gc.placeholder((None, 4, 5), F64, name="x")
    y = ln(x)
    ref = np_layer_norm(xv, ln.gamma.value, ln.beta.value, 1e-3)
    np.testing.assert_allclose(_run([x], y, [xv], backend), ref, rtol=1e-10, atol=1e-12)
    weights = rng.normal(size=(3, 4, 5))
    _check(gc.sum(gc.tanh(y) * weights), [x] + ln.parameters(), {x: xv}, backend)
    ln2 = nn.LayerNorm((4, 5), dtype=F64)
    np.testing.assert_allclose(_run([x], ln2(x), [xv], backend),
                               np_layer_norm(xv, 1.0, 0.0, 1e-5, k=2), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 2, 2)])
def test_batch_norm_training_forward_and_gradients(backend, shape):
    rng = np.random.default_rng(5)
    bn = nn.BatchNorm(3, eps=1e-3, dtype=F64)
    bn.gamma.value, bn.beta.value = rng.normal(size=3), rng.normal(size=3)
    xv = rng.normal(size=shape) * 2 + 0.5
    x = gc.placeholder((None,) + shape[1:], F64, name="x")
    y = bn(x)  # training by default
    axes = (0,) + tuple(range(2, len(shape)))
    ref = np_batch_norm(xv, xv.mean(axis=axes), xv.var(axis=axes), bn.gamma.value,
                        bn.beta.value, 1e-3)
    np.testing.assert_allclose(_run([x], y, [xv], backend), ref, rtol=1e-10, atol=1e-12)
    weights = rng.normal(size=shape)
    _check(gc.sum(gc.sin(y) * weights), [x] + bn.parameters(), {x: xv}, backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_running_statistics_and_inference(backend):
    rng = np.random.default_rng(6)
    bn = nn.BatchNorm(2, momentum=0.3, dtype=F64)
    assert [p.storage.name for p in bn.state()] == \
        [f"{bn.name}.running_mean", f"{bn.name}.running_var"]
    assert bn.running_mean not in bn.parameters()
    x = gc.placeholder((None, 2, 3, 3), F64, name="x")
    y_train = bn(x, training=True)
    loss = gc.mean(gc.square(y_train - 1.0))
    updates = gc.optim.SGD(lr=0.1).updates(loss, bn.parameters())
    updates.update(bn.updates())
    step = gc.function([x], loss, updates=updates, backend=backend)
    rm, rv = np.zeros(2), np.ones(2)
    for k in range(4):
        xv = rng.normal(size=(3 + k, 2, 3, 3)) * [[[[1.0]], [[3.0]]]] + [[[[2.0]], [[-1.0]]]]
        step(xv)
        m, v = xv.mean(axis=(0, 2, 3)), xv.var(axis=(0, 2, 3), ddof=1)
        rm, rv = 0.7 * rm + 0.3 * m, 0.7 * rv + 0.3 * v
    np.testing.assert_allclose(bn.running_mean.value, rm, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.value, rv, rtol=1e-12)
    # inference uses the running statistics (and the trained gamma/beta), not the batch's
    xv = rng.normal(size=(5, 2, 3, 3))
    infer = gc.function([x], bn(x, training=False), backend=backend)
    ref = np_batch_norm(xv, rm, rv, bn.gamma.value, bn.beta.value, 1e-5)
    np.testing.assert_allclose(infer(xv), ref, rtol=1e-10, atol=1e-12)
    bn.eval()
    np.testing.assert_allclose(gc.function([x], bn(x), backend=backend)(xv), ref, rtol=1e-10)
    assert not bn.training and bn.train().training


# -- Embedding ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding(backend):
    emb = nn.Embedding(6, 4, seed=7, dtype=F64)
    ids = gc.placeholder((None, 3), "int64", name="ids")
    f = gc.function([ids], emb(ids), backend=backend)
    idv = np.array([[0, 5, 2], [2, 2, 1]])
    np.testing.assert_allclose(f(idv), emb.table.value[idv], rtol=0)
    with pytest.raises(IndexError):
        f(np.array([[0, 6, 1]]))
    with pytest.raises(IndexError):
        f(np.array([[0, -7, 1]]))
    weights = np.random.default_rng(8).normal(size=(2, 3, 4))
    _check(gc.sum(gc.square(emb(ids)) * weights), emb.parameters(), {ids: idv}, backend)


# -- containers, naming ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sequential_and_residual_composition(backend):
    rng = np.random.default_rng(9)
    d1 = nn.Dense(4, 8, activation="relu", seed=1, dtype=F64)
    d2 = nn.Dense(8, 8, activation="tanh", seed=2, dtype=F64)
    d3 = nn.Dense(8, 2, seed=3, dtype=F64)
    model = nn.Sequential(d1, nn.Residual(d2), nn.LayerNorm(8, dtype=F64), d3)
    assert len(model) == 4 and model[0] is d1
    xv = rng.normal(size=(5, 4))
    x = gc.placeholder((None, 4), F64, name="x")
    y = model(x)
    h = np.maximum(xv @ d1.W.value + d1.b.value, 0)
    h = h + np.tanh(h @ d2.W.value + d2.b.value)
    h = np_layer_norm(h, 1.0, 0.0, 1e-5)
    np.testing.assert_allclose(_run([x], y, [xv], backend), h @ d3.W.value + d3.b.value,
                               rtol=1e-10, atol=1e-12)
    names = [n for n, _ in model.named_parameters()]  # from the tree, PyTorch's names
    assert names == ["0.W", "0.b", "1.module.W", "1.module.b", "2.gamma", "2.beta",
                     "3.W", "3.b"]
    _check(gc.mean(gc.square(y)), [x] + model.parameters(), {x: xv}, backend)


def test_parameter_names_are_unique_and_stable():
    a, b = nn.Dense(3, 3), nn.Dense(3, 3)
    assert re.fullmatch(r"dense\d+", a.name) and a.name != b.name
    assert a.W.storage.name == f"{a.name}.W"
    model = nn.Sequential(a, b, a)  # a shared layer appears once
    params = model.parameters()
    assert len(params) == 4 and params == model.parameters()
    assert len({p.storage.name for p in params}) == 4
    # display names may repeat: state_dict names come from the tree
    named = nn.Sequential(nn.Dense(2, 2, name="fc"), nn.Dense(2, 2, name="fc"))
    assert len(named.parameters()) == 4
    assert list(named.state_dict()) == ["0.W", "0.b", "1.W", "1.b"]
    assert nn.Conv2D(2, 4, 3, name="c").W.storage.name == "c.W"


@pytest.mark.slow
def test_sequential_trains_with_optimizer_and_checkpoints(tmp_path):
    rng = np.random.default_rng(10)
    model = nn.Sequential(nn.Dense(2, 16, activation="tanh", seed=0),
                          nn.BatchNorm(16), nn.Dense(16, 1, seed=1))
    x = gc.placeholder((None, 2), name="x")
    t = gc.placeholder((None, 1), name="t")
    loss = nn.mse(model(x), t)
    opt = gc.optim.Adam(lr=0.02)
    updates = opt.updates(loss, model.parameters())
    updates.update(model.updates())
    step = gc.function([x, t], loss, updates=updates)
    xv = rng.uniform(-1, 1, size=(256, 2)).astype(np.float32)
    tv = (xv[:, :1] * xv[:, 1:] * 2).astype(np.float32)
    hist = gc.train.fit(step, (xv, tv), epochs=15, batch_size=32, verbose=False)
    assert hist.loss[-1] < 0.3 * hist.loss[0]
    gc.train.save(tmp_path / "m.npz", model.variables())
    assert len(model.variables()) == len(model.parameters()) + 2


# -- binary cross-entropy with logits ----------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_bce_with_logits(backend):
    rng = np.random.default_rng(11)
    z = gc.placeholder((None,), F64, name="z")
    y = gc.placeholder((None,), F64, name="y")
    f = gc.function([z, y], nn.binary_cross_entropy_with_logits(z, y), backend=backend)
    zv, yv = rng.normal(size=50) * 4, rng.uniform(size=50)
    np.testing.assert_allclose(f(zv, yv), np_bce(zv, yv), rtol=1e-12)
    extreme = np.array([-1e4, 1e4, -800.0, 800.0, 50.0, -50.0])
    labels = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    got = f(extreme, labels)
    assert np.isfinite(got)
    np.testing.assert_allclose(got, np_bce(extreme, labels), rtol=1e-12)
    zf = gc.placeholder((4,), "float32")
    yf = gc.placeholder((4,), "float32")
    v = gc.function([zf, yf], nn.binary_cross_entropy_with_logits(zf, yf), backend=backend)(
        np.array([-3e38, 3e38, 100, -100], np.float32), np.array([0, 1, 0, 1], np.float32))
    assert np.isfinite(v) and v.dtype == np.float32
    np.testing.assert_allclose(v, 50.0, rtol=1e-6)
    _check(nn.binary_cross_entropy_with_logits(z, y), [z, y],
           {z: zv[:10] + 0.05, y: yv[:10]}, backend)


# -- functional forms and argument errors ------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_forms(backend):
    rng = np.random.default_rng(12)
    xv = rng.normal(size=(4, 3, 2, 2))
    mean, var = rng.normal(size=3), rng.uniform(0.5, 2, size=3)
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    table, idv = rng.normal(size=(5, 2)), np.array([4, 0, 4])
    x = gc.placeholder(xv.shape, F64)
    ids = gc.placeholder((3,), "int64")
    outs = _run([x, ids], [nn.batch_norm(x, mean, var, gamma, beta, eps=1e-4),
                           nn.layer_norm(x, axes=(-2, -1), eps=1e-4),
                           nn.embedding(table, ids)], [xv, idv], backend)
    np.testing.assert_allclose(outs[0], np_batch_norm(xv, mean, var, gamma, beta, 1e-4),
                               rtol=1e-10)
    np.testing.assert_allclose(outs[1], np_layer_norm(xv, 1.0, 0.0, 1e-4, k=2), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(outs[2], table[idv], rtol=0)


def test_argument_errors():
    x = gc.placeholder((None, 4), name="x")
    with pytest.raises(ValueError, match="activation"):
        nn.Dense(4, 2, activation="swishy")
    with pytest.raises(ValueError, match="init"):
        nn.Dense(4, 2, init="nope")
    with pytest.raises(ValueError):
        nn.Dense(0, 2)
    with pytest.raises(ValueError, match="features"):
        nn.Dense(3, 2)(x)
    with pytest.raises(ValueError, match="channels"):
        nn.BatchNorm(3)(x)
    with pytest.raises(ValueError):
        nn.LayerNorm(5)(x)
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2D(3, 4, 3, groups=2)
    with pytest.raises(TypeError):
        nn.WeightNorm(nn.LayerNorm(4))
    with pytest.raises(TypeError):
        nn.Sequential(nn.Dense(4, 2), 3)
    with pytest.raises(ValueError):
        nn.BatchNorm(2, momentum=1.5)
