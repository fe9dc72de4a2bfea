"""The optimizer never changes values: random graphs (hypothesis) built from ops that trigger
the rewrite rules give the same results, and the same gradients, optimized and unoptimized;
naive formulas that overflow are stabilized (values and gradients stay finite)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import graphc as gc

TARGET = (3, 4)


def _broadcastable(shape) -> bool:
    return len(shape) <= 2 and all(d in (None, 1, t) for d, t in zip(shape[::-1], TARGET[::-1]))


def _bounded(v):
    return 5 * gc.tanh(v)


# Each op: (name, arity, builder). Builders take pool tensors and return a tensor whose
# shape broadcasts to TARGET; results stay moderate so that rounding differences between
# rewritten and original forms stay at the ulp level.
UNARY = {
    "neg": lambda v: -v,
    "neg_neg": lambda v: -(-v),  # noqa: B002 (neg of neg)
    "mul_one": lambda v: v * 1,
    "one_mul": lambda v: 1.0 * v,
    "add_zero": lambda v: v + 0,
    "zero_add": lambda v: 0.0 + v,
    "sub_zero": lambda v: v - 0,
    "zero_sub": lambda v: 0 - v,
    "div_one": lambda v: v / 1,
    "mul_minus_one": lambda v: v * -1,
    "mul_zero": lambda v: v * 0,
    "zero_mul_flag": lambda v: 0 * (v > 0).astype(v.dtype),
    "flag_mul_zero": lambda v: (v < 1).astype(v.dtype) * 0.0,
    "add_neg": lambda v: v + (-gc.sin(v)),
    "neg_mul_neg": lambda v: (-v) * (-gc.cos(v)),
    "tanh": gc.tanh,
    "sigmoid": gc.sigmoid,
    "relu": gc.relu,
    "abs": gc.abs,
    "square": lambda v: v ** 2,
    "pow_one": lambda v: v ** 1,
    "pow_minus_one": lambda v: (gc.abs(v) + 0.5) ** -1,
    "pow_half_abs": lambda v: gc.abs(v) ** 0.5,
    "div_const": lambda v: v / 3.0,
    "exp_bounded": lambda v: gc.exp(_bounded(v) * 0.6),
    "log_exp": lambda v: gc.log(gc.exp(_bounded(v))),
    "exp_log_pos": lambda v: gc.exp(gc.log(gc.abs(v) + 0.5)),
    "exp_log_exp": lambda v: gc.exp(gc.log(gc.exp(_bounded(v)))),
    "log_sigmoid": lambda v: gc.log(gc.sigmoid(_bounded(v))),
    "log1p_exp": lambda v: gc.log(1 + gc.exp(_bounded(v))),
    "log_exp1p": lambda v: gc.log(gc.exp(_bounded(v)) + 1),
    "log_one_minus_sigmoid": lambda v: gc.log(1 - gc.sigmoid(_bounded(v))),
    "cast_f32_roundtrip": lambda v: v.astype("float32").astype("float64"),
    "stop_gradient": gc.stop_gradient,
    "where": lambda v: gc.where(v > 0, v, 0.5 * v),
    "expand_squeeze": lambda v: gc.squeeze(gc.expand_dims(v, 0), 0),
    "reshape_roundtrip": lambda v: v.reshape((-1,)).reshape(
        tuple(-1 if d is None else d for d in v.shape)),
    "transpose_twice": lambda v: gc.transpose(gc.transpose(v)) if v.ndim else v,
    "broadcast": lambda v: gc.broadcast_to(v, TARGET),
    "sum_broadcast_scalar": lambda v: gc.sum(gc.broadcast_to(gc.sum(v), TARGET)),
    "sum_all": lambda v: gc.sum(v),
    "sum_0_keep": lambda v: gc.sum(v, axis=0, keepdims=True) if v.ndim else v,
    "sum_last": lambda v: gc.sum(v, axis=-1, keepdims=v.ndim == 2) if v.ndim else v,
    "max_last": lambda v: gc.max(v, axis=-1, keepdims=True) if v.ndim else v,
    "min_0": lambda v: gc.min(v, axis=0, keepdims=v.ndim == 2) if v.ndim else v,
    "mean_keep": lambda v: gc.mean(v, axis=-1, keepdims=True) if v.ndim else v,
    "naive_log_softmax": lambda v: _naive_log_softmax(gc.broadcast_to(_bounded(v), TARGET)),
    "softmax": lambda v: gc.softmax(gc.broadcast_to(v, TARGET), axis=0),
    "logsumexp": lambda v: gc.logsumexp(gc.broadcast_to(_bounded(v), TARGET), axis=1,
                                        keepdims=True),
}

BINARY = {
    "add": lambda u, v: u + v,
    "sub": lambda u, v: u - v,
    "mul": lambda u, v: u * v,
    "div_safe": lambda u, v: u / (gc.abs(v) + 0.5),
    "maximum": gc.maximum,
    "minimum": gc.minimum,
    "matmul_w": lambda u, v: gc.broadcast_to(u, TARGET) @ (gc.tanh(gc.broadcast_to(v, TARGET)).T
                                                           @ gc.broadcast_to(v, TARGET)) * 0.2,
    "matmul_t": lambda u, v: (gc.transpose(gc.broadcast_to(v, TARGET))
                              @ gc.broadcast_to(u, TARGET)).T.T[:3] * 0.2,
}

# Ops that produce nan/inf for some inputs: applied to the inputs only (leaves), where the
# value is the same in both graphs, so nan positions are a sharp check.
LEAF_ONLY = {
    "log": gc.log,
    "pow_half": lambda v: v ** 0.5,
    "exp_log": lambda v: gc.exp(gc.log(v)),
    "sqrt_log_mix": lambda v: gc.sqrt(v) * 1 + gc.log(v) * 0,
}


def _naive_log_softmax(v, axis=-1):
    e = gc.exp(v)
    return gc.log(e / gc.sum(e, axis=axis, keepdims=True))


@st.composite
def programs(draw):
    n_steps = draw(st.integers(1, 7))
    steps = []
    pool_size = 4  # the inputs a, b, c, s
    for _ in range(n_steps):
        kind = draw(st.sampled_from(["unary", "unary", "binary", "leaf"]))
        if kind == "unary":
            steps.append(("unary", draw(st.sampled_from(sorted(UNARY))),
                          draw(st.integers(0, pool_size - 1))))
        elif kind == "binary":
            steps.append(("binary", draw(st.sampled_from(sorted(BINARY))),
                          draw(st.integers(0, pool_size - 1)),
                          draw(st.integers(0, pool_size - 1))))
        else:
            steps.append(("leaf", draw(st.sampled_from(sorted(LEAF_ONLY))),
                          draw(st.integers(0, 3))))
            continue  # a side output: nan must not flow into ops that may drop it (0*sigmoid)
        pool_size += 1
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return steps, seed, draw(st.booleans())


def build(steps, dynamic=False):
    """dynamic: the batch axis of a and c is None (sized at call time), so the optimizer
    sees broadcast_like / sum_to_like / size_of instead of static shapes."""
    batch = None if dynamic else 3
    a = gc.placeholder((batch, 4), "float64", name="a")
    b = gc.placeholder((4,), "float64", name="b")
    c = gc.placeholder((batch, 1), "float64", name="c")
    s = gc.placeholder((), "float64", name="s")
    inputs = [a, b, c, s]
    pool = list(inputs)
    outs = []
    for step in steps:
        if step[0] == "unary":
            out = UNARY[step[1]](pool[step[2]])
            pool.append(out)
        elif step[0] == "binary":
            out = BINARY[step[1]](pool[step[2]], pool[step[3]])
            pool.append(out)
        else:
            out = LEAF_ONLY[step[1]](inputs[step[2]])
        assert _broadcastable(out.shape), (step, out.shape)
        outs.append(out)
    return inputs, outs


def compare(want: np.ndarray, got: np.ndarray, scale: float, what: str) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"nan positions: {what}")
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * scale, equal_nan=True,
                               err_msg=what)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(programs())
def test_random_graphs_same_values_optimized_or_not(program):
    steps, seed, dynamic = program
    inputs, derived = build(steps, dynamic)
    # Every intermediate is an output, plus the gradient of a weighted sum of them all.
    loss = sum(gc.sum(gc.broadcast_to(v, TARGET) * (0.5 + 0.1 * k))
               for k, v in enumerate(derived))
    grads = gc.grad(loss, inputs)
    outs = derived + list(grads)
    raw = gc.function(inputs, outs, backend="numpy", optimize=False)
    opt = gc.function(inputs, outs, backend="numpy", optimize=True)
    assert len(opt.graph.nodes()) <= len(raw.graph.nodes()) + 3 * len(steps)
    rng = np.random.default_rng(seed)
    args = [rng.normal(0, 1.5, tuple(3 if d is None else d for d in p.shape)) for p in inputs]
    with np.errstate(all="ignore"):
        want = raw(*args)
        got = opt(*args)
    finite = [np.abs(w[np.isfinite(w)]) for w in want]
    scale = max([1.0] + [float(f.max()) for f in finite if f.size])
    assume(scale < 1e6)
    names = [str(s) for s in steps] + [f"grad wrt {p.node.attrs['name']}" for p in inputs]
    for w, g, name in zip(want, got, names):
        compare(w, g, scale, name)


def test_rule_triggering_ops_fire_rules():
    """The generator's ops do reach the rules (so the property test exercises them)."""
    fired = set()
    for name in UNARY:
        inputs, outs = build([("unary", name, 0)])
        fired |= set(gc.function(inputs, outs, backend="numpy").report.fired())
    for name in BINARY:
        inputs, outs = build([("binary", name, 0, 1)])
        fired |= set(gc.function(inputs, outs, backend="numpy").report.fired())
    want = {"neg_neg", "mul_one", "one_mul", "add_zero", "zero_add", "sub_zero", "zero_sub",
            "div_one", "mul_minus_one", "mul_zero", "zero_mul", "add_neg", "neg_mul_neg",
            "pow_two", "pow_one", "pow_half", "pow_minus_one", "div_const", "log_exp",
            "exp_log", "log_sigmoid", "log1p_exp", "log_exp1p", "log_one_minus_sigmoid",
            "drop_stop_gradient", "squeeze_expand", "reshape_chain", "transpose_transpose",
            "sum_of_broadcast_scalar", "log_softmax"}
    assert want <= fired, want - fired


# ---- stabilization of naive formulas, values and gradients --------------------------------

def _log_softmax_ref(v: np.ndarray) -> np.ndarray:
    m = v.max(axis=-1, keepdims=True)
    return v - m - np.log(np.exp(v - m).sum(axis=-1, keepdims=True))


LOGITS = np.array([[1e4, -1e4, 0.0, 3.0], [-1e4, -1e4, -1e4, -1e4],
                   [1e4, 1e4, -2.0, 1e4 - 1], [0.5, -0.25, 1.0, 2.0]])


@pytest.mark.parametrize("optimize", [True, ["stabilize"]])
def test_naive_log_softmax_is_finite_at_large_logits(optimize):
    x = gc.placeholder((None, 4), "float64", name="x")
    w = gc.placeholder((None, 4), "float64", name="w")
    e = gc.exp(x)
    p = e / gc.sum(e, axis=-1, keepdims=True)
    logp = gc.log(p)
    g = gc.grad(gc.sum(logp * w), x)
    f = gc.function([x, w], [logp, g], backend="numpy", optimize=optimize)
    wv = np.arange(16.0).reshape(4, 4) / 7 - 1
    got_logp, got_g = f(LOGITS, wv)
    ref = _log_softmax_ref(LOGITS)
    assert np.isfinite(got_logp).all() and np.isfinite(got_g).all()
    np.testing.assert_allclose(got_logp, ref, rtol=1e-12, atol=1e-9)
    # d/dx sum(w * log_softmax(x)) = w - softmax(x) * sum(w)
    np.testing.assert_allclose(got_g, wv - np.exp(ref) * wv.sum(-1, keepdims=True),
                               rtol=1e-10, atol=1e-12)


def test_naive_log_softmax_unstabilized_would_overflow():
    """Sanity check of the check above: without the rewrite the formula is not finite."""
    x = gc.placeholder((None, 4), "float64", name="x")
    e = gc.exp(x)
    f = gc.function([x], gc.log(e / gc.sum(e, axis=-1, keepdims=True)), backend="numpy",
                    optimize=False)
    with np.errstate(all="ignore"):
        assert not np.isfinite(f(LOGITS)).all()


def _softplus_ref(v):
    return np.maximum(v, 0) + np.log1p(np.exp(-np.abs(v)))


def _sigmoid_ref(v):
    return np.exp(-np.logaddexp(0, -v))


@pytest.mark.parametrize("name, build, value_ref, grad_ref", [
    ("log_sigmoid", lambda x: gc.log(gc.sigmoid(x)),
     lambda v: -_softplus_ref(-v), lambda v: 1 - _sigmoid_ref(v)),
    ("log1p_exp", lambda x: gc.log(1 + gc.exp(x)), _softplus_ref, _sigmoid_ref),
    ("log_exp1p", lambda x: gc.log(gc.exp(x) + 1), _softplus_ref, _sigmoid_ref),
    ("log_one_minus_sigmoid", lambda x: gc.log(1 - gc.sigmoid(x)),
     lambda v: -_softplus_ref(v), lambda v: -_sigmoid_ref(v)),
])
def test_naive_log_sigmoid_and_softplus_at_extremes(name, build, value_ref, grad_ref):
    x = gc.placeholder((None,), "float64", name="x")
    y = build(x)
    f = gc.function([x], [y, gc.grad(gc.sum(y), x)], backend="numpy")
    assert name in f.report.fired()
    v = np.array([-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4])
    val, grad = f(v)
    assert np.isfinite(val).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(val, value_ref(v), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grad, grad_ref(v), rtol=1e-12, atol=1e-15)


def test_softplus_gradient_keeps_relative_precision_in_the_tail():
    """d/dx log(1 + exp(x)) = sigmoid(x) = 1.93e-22 at x = -50, a normal float64: the
    stabilized gradient should not flush it to 0."""
    x = gc.placeholder((None,), "float64", name="x")
    f = gc.function([x], gc.grad(gc.sum(gc.log(1 + gc.exp(x))), x), backend="numpy")
    v = np.array([-50.0, -100.0, -700.0])
    np.testing.assert_allclose(f(v), _sigmoid_ref(v), rtol=1e-12, atol=0)


def test_log_sigmoid_at_minus_1e4_is_minus_1e4():
    x = gc.placeholder((1,), "float64", name="x")
    f = gc.function([x], gc.log(gc.sigmoid(x)), backend="numpy")
    assert f(np.array([-1e4]))[0] == -1e4


def test_log_one_plus_exp_at_1e4_is_1e4():
    x = gc.placeholder((1,), "float64", name="x")
    f = gc.function([x], gc.log(1 + gc.exp(x)), backend="numpy")
    assert f(np.array([1e4]))[0] == 1e4


def test_stabilized_forms_in_float32():
    x = gc.placeholder((None,), "float32", name="x")
    e = gc.exp(gc.reshape(x, (1, -1)))
    outs = [gc.log(e / gc.sum(e, axis=-1, keepdims=True)), gc.log(gc.sigmoid(x)),
            gc.log(1 + gc.exp(x))]
    f = gc.function([x], outs, backend="numpy")
    v = np.array([-1e4, 0.0, 1e4], np.float32)
    lsm, lsig, sp = f(v)
    np.testing.assert_allclose(lsm[0], _log_softmax_ref(v[None].astype(np.float64))[0],
                               rtol=1e-6)
    np.testing.assert_allclose(lsig, -_softplus_ref(-v.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(sp, _softplus_ref(v.astype(np.float64)), rtol=1e-6)
