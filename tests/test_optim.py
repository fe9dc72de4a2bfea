"""gc.optim: each optimizer's compiled update against a numpy implementation of its published
formula, schedules against their formulas, clipping, Newton, argument checks, example 9."""
from __future__ import annotations

import math

import numpy as np
import pytest

import graphc as gc

BACKENDS = ["numpy", "llvm"]
RNG = np.random.default_rng(7)
X = RNG.normal(size=(10, 3))
Y = 3.0 * RNG.normal(size=(10, 2))
W0 = RNG.normal(size=(3, 2))
B0 = RNG.normal(size=2)


# -- the problem: least squares, with its gradient written out in numpy -----------------------
def np_grads(params: list[np.ndarray]) -> list[np.ndarray]:
    """L = mean((X W + b - Y)**2): dL/dW = 2 X^T r / r.size, dL/db = 2 sum_rows(r) / r.size."""
    w, b = params
    r = X @ w + b - Y
    return [2 * X.T @ r / r.size, 2 * r.sum(axis=0) / r.size]


def compiled_steps(opt, backend: str, steps: int = 5, dtype=np.float64) -> list[list]:
    """Runs `steps` compiled updates; the parameters after each."""
    w = gc.parameter(W0.astype(dtype), name="W")
    b = gc.parameter(B0.astype(dtype), name="b")
    x = gc.placeholder((None, 3), dtype, name="x")
    y = gc.placeholder((None, 2), dtype, name="y")
    loss = gc.mean(gc.square(x @ w + b - y))
    step = gc.function([x, y], loss, updates=opt.updates(loss, [w, b]), backend=backend)
    history = []
    for _ in range(steps):
        step(X, Y)
        history.append([w.value, b.value])
    return history


def reference_steps(update, steps: int = 5) -> list[list]:
    """Runs the numpy formula `update(params, grads, state, t)` (t = 1, 2, ...)."""
    params, state, history = [W0.copy(), B0.copy()], [{}, {}], []
    for t in range(1, steps + 1):
        grads = np_grads(params)
        params = [update(p, g, s, t) for p, g, s in zip(params, grads, state)]
        history.append([p.copy() for p in params])
    return history


# -- the published formulas, in numpy ----------------------------------------------------------
def np_sgd(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, clip_norm=None):
    def update(p, g, s, t):
        g = g + weight_decay * p
        if momentum:
            s["b"] = g.copy() if t == 1 else momentum * s["b"] + (1 - dampening) * g
            g = g + momentum * s["b"] if nesterov else s["b"]
        return p - (lr(t - 1) if callable(lr) else lr) * g
    return update


def np_adagrad(lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    def update(p, g, s, t):
        g = g + weight_decay * p
        s["sum"] = s.get("sum", np.full_like(p, initial_accumulator_value)) + g * g
        return p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s["sum"]) + eps)
    return update


def np_rmsprop(lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    def update(p, g, s, t):
        g = g + weight_decay * p
        s["v"] = alpha * s.get("v", 0.0) + (1 - alpha) * g * g
        v = s["v"]
        if centered:
            s["c"] = alpha * s.get("c", 0.0) + (1 - alpha) * g
            v = v - s["c"] ** 2
        d = g / (np.sqrt(v) + eps)
        if momentum:
            s["b"] = momentum * s.get("b", 0.0) + d
            d = s["b"]
        return p - lr * d
    return update


def np_adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
            decoupled=False):
    """Kingma & Ba's Algorithm 1 with bias-corrected m^ and v^ (AdamW: Loshchilov & Hutter)."""
    b1, b2 = betas

    def update(p, g, s, t):
        rate = lr(t - 1) if callable(lr) else lr
        if decoupled:
            p = p * (1 - rate * weight_decay)
        else:
            g = g + weight_decay * p
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        v = s["v"]
        if amsgrad:
            s["vmax"] = v = np.maximum(s.get("vmax", 0.0), v)
        m_hat, v_hat = s["m"] / (1 - b1 ** t), v / (1 - b2 ** t)
        return p - rate * m_hat / (np.sqrt(v_hat) + eps)
    return update


CASES = {
    "sgd": (lambda: gc.optim.SGD(lr=0.05), np_sgd(0.05)),
    "sgd-weight-decay": (lambda: gc.optim.SGD(lr=0.05, weight_decay=0.1),
                         np_sgd(0.05, weight_decay=0.1)),
    "sgd-momentum": (lambda: gc.optim.SGD(lr=0.05, momentum=0.9), np_sgd(0.05, 0.9)),
    "sgd-momentum-dampening": (lambda: gc.optim.SGD(lr=0.05, momentum=0.8, dampening=0.3),
                               np_sgd(0.05, 0.8, dampening=0.3)),
    "sgd-nesterov-weight-decay": (
        lambda: gc.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        np_sgd(0.05, 0.9, weight_decay=0.01, nesterov=True)),
    "adagrad": (lambda: gc.optim.Adagrad(lr=0.1), np_adagrad(0.1)),
    "adagrad-decay-wd-init": (
        lambda: gc.optim.Adagrad(lr=0.1, lr_decay=0.05, weight_decay=0.1,
                                 initial_accumulator_value=0.5),
        np_adagrad(0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.5)),
    "rmsprop": (lambda: gc.optim.RMSprop(lr=0.01), np_rmsprop(0.01)),
    "rmsprop-centered-momentum-wd": (
        lambda: gc.optim.RMSProp(lr=0.01, alpha=0.9, momentum=0.5, centered=True,
                                 weight_decay=0.1),
        np_rmsprop(0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.1)),
    "adam": (lambda: gc.optim.Adam(lr=0.1), np_adam(0.1)),
    "adam-betas-eps-wd": (
        lambda: gc.optim.Adam(lr=0.1, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1),
        np_adam(0.1, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1)),
    "adam-amsgrad": (lambda: gc.optim.Adam(lr=0.1, amsgrad=True), np_adam(0.1, amsgrad=True)),
    "adamw": (lambda: gc.optim.AdamW(lr=0.1), np_adam(0.1, weight_decay=1e-2, decoupled=True)),
    "adamw-amsgrad-wd": (lambda: gc.optim.AdamW(lr=0.1, weight_decay=0.3, amsgrad=True),
                         np_adam(0.1, weight_decay=0.3, amsgrad=True, decoupled=True)),
    "adam-cosine-schedule": (
        lambda: gc.optim.Adam(lr=gc.optim.cosine_annealing(0.1, t_max=4, eta_min=0.01)),
        np_adam(lambda t: 0.01 + 0.09 * (1 + math.cos(math.pi * min(t, 4) / 4)) / 2)),
    "sgd-step-decay-schedule": (
        lambda: gc.optim.SGD(lr=gc.optim.step_decay(0.1, step_size=2, gamma=0.5), momentum=0.5),
        np_sgd(lambda t: 0.1 * 0.5 ** (t // 2), 0.5)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_update_matches_published_formula(case, backend):
    make, formula = CASES[case]
    got, want = compiled_steps(make(), backend), reference_steps(formula)
    for step, (g, w) in enumerate(zip(got, want), 1):
        for name, a, b in zip(("W", "b"), g, w):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12,
                                       err_msg=f"{case}: {name} after step {step}")
    assert not np.allclose(got[-1][0], W0)  # it moved


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_parameters_stay_float32_and_follow_the_formula(backend):
    got = compiled_steps(gc.optim.Adam(lr=0.1, amsgrad=True), backend, dtype=np.float32)
    want = reference_steps(np_adam(0.1, amsgrad=True))
    assert got[-1][0].dtype == np.float32
    for g, w in zip(got, want):
        np.testing.assert_allclose(g[0], w[0], rtol=2e-5, atol=2e-5)


def test_state_lives_in_named_parameters_and_checkpoints():
    opt = gc.optim.Adam(lr=0.1, amsgrad=True)
    w = gc.parameter(W0.copy(), name="W")
    b = gc.parameter(B0.copy(), name="b")
    x, y = gc.placeholder((None, 3), "float64"), gc.placeholder((None, 2), "float64")
    loss = gc.mean(gc.square(x @ w + b - y))
    step = gc.function([x, y], loss, updates=opt.updates(loss, [w, b]), backend="numpy")
    assert [s.storage.name for s in opt.state] == [
        "adam.step", "adam.m.W", "adam.v.W", "adam.v_max.W", "adam.m.b", "adam.v.b",
        "adam.v_max.b"]
    for _ in range(3):
        step(X, Y)
    assert int(opt.step.value) == 3
    saved = [p.value for p in [w, b, *opt.state]]
    after = [float(step(X, Y)) for _ in range(2)] + [w.value]
    for p, v in zip([w, b, *opt.state], saved):
        p.value = v
    again = [float(step(X, Y)) for _ in range(2)] + [w.value]
    assert after[:2] == again[:2] and np.array_equal(after[2], again[2])


def test_clip_norm_option_clips_before_the_update():
    """SGD(clip_norm=c): the global norm of the two gradients is scaled to c when larger."""
    got = compiled_steps(gc.optim.SGD(lr=0.1, clip_norm=0.5), "numpy", steps=3)
    params = [W0.copy(), B0.copy()]
    for step in range(3):
        grads = np_grads(params)
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
        assert norm > 0.5  # the clip is active
        params = [p - 0.1 * g * min(1.0, 0.5 / (norm + 1e-6)) for p, g in zip(params, grads)]
        np.testing.assert_allclose(got[step][0], params[0], rtol=1e-12)
        np.testing.assert_allclose(got[step][1], params[1], rtol=1e-12)


# -- schedules ---------------------------------------------------------------------------------
SCHEDULES = {
    "constant": (lambda: gc.optim.constant_lr(0.3), lambda t: 0.3),
    "step": (lambda: gc.optim.step_decay(1.0, step_size=3, gamma=0.5),
             lambda t: 0.5 ** (t // 3)),
    "exponential": (lambda: gc.optim.exponential_decay(0.2, gamma=0.9), lambda t: 0.2 * 0.9 ** t),
    "cosine": (lambda: gc.optim.cosine_annealing(0.1, t_max=6, eta_min=0.001),
               lambda t: 0.001 + 0.099 * (1 + math.cos(math.pi * min(t, 6) / 6)) / 2),
    "warmup": (lambda: gc.optim.linear_warmup(0.4, warmup_steps=4),
               lambda t: 0.4 * min(1.0, (t + 1) / 4)),
    "warmup-then-exponential": (
        lambda: gc.optim.linear_warmup(gc.optim.exponential_decay(0.4, 0.5), warmup_steps=3),
        lambda t: min(1.0, (t + 1) / 3) * 0.4 * 0.5 ** t),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_matches_formula(name, backend):
    make, formula = SCHEDULES[name]
    t = gc.placeholder((), "int64", name="t")
    f = gc.function([t], make()(t), backend=backend)
    got = [float(f(i)) for i in range(10)]
    np.testing.assert_allclose(got, [formula(i) for i in range(10)], rtol=1e-13, atol=1e-15)


def test_schedule_values_and_known_points():
    assert list(gc.optim.step_decay(1.0, 2, 0.1).values(5)) == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01])
    cos = gc.optim.cosine_annealing(1.0, t_max=4).values(7)
    assert cos[0] == pytest.approx(1.0) and cos[2] == pytest.approx(0.5)
    assert cos[4:] == pytest.approx([0, 0, 0], abs=1e-15)  # held at eta_min after t_max
    assert "cos" in repr(gc.optim.cosine_annealing(1.0, t_max=4))


# -- clipping ----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_by_global_norm_and_by_value(backend):
    a = gc.placeholder((3,), "float64", name="a")
    b = gc.placeholder((2, 2), "float64", name="b")
    clipped = gc.optim.clip_by_global_norm([a, b], 1.5)
    valued = gc.optim.clip_by_value([a, b], 0.25)
    f = gc.function([a, b], [*clipped, *valued, gc.optim.global_norm([a, b])], backend=backend)
    av, bv = np.array([1.0, -2.0, 0.5]), np.array([[0.1, -0.3], [2.0, 0.0]])
    ca, cb, va, vb, norm = f(av, bv)
    total = math.sqrt(np.sum(av ** 2) + np.sum(bv ** 2))
    assert float(norm) == pytest.approx(total, rel=1e-14)
    np.testing.assert_allclose(ca, av * 1.5 / (total + 1e-6), rtol=1e-14)
    np.testing.assert_allclose(cb, bv * 1.5 / (total + 1e-6), rtol=1e-14)
    np.testing.assert_array_equal(va, np.clip(av, -0.25, 0.25))
    np.testing.assert_array_equal(vb, np.clip(bv, -0.25, 0.25))
    small_a, small_b = av * 0.1, bv * 0.1  # norm below max_norm: unchanged
    out = f(small_a, small_b)
    np.testing.assert_allclose(out[0], small_a, rtol=1e-15)
    np.testing.assert_allclose(out[1], small_b, rtol=1e-15)


# -- Newton --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [gc.optim.Newton, lambda: gc.optim.NewtonCG(cg_iters=8)],
                         ids=["newton", "newton-cg"])
def test_newton_solves_a_quadratic_in_one_step(make, backend):
    """Least squares in (W, b), 8 unknowns: one step lands on np.linalg.lstsq's solution."""
    (w, b), = compiled_steps(make(), backend, steps=1)
    design = np.hstack([X, np.ones((len(X), 1))])
    solution, *_ = np.linalg.lstsq(design, Y, rcond=None)
    np.testing.assert_allclose(w, solution[:3], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(b, solution[3], rtol=1e-9, atol=1e-10)


def _logistic_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 4))
    logits = x @ np.array([1.5, -2.0, 0.5, 0.0]) + 0.3
    labels = (rng.random(60) < 1 / (1 + np.exp(-logits))).astype(np.float64)  # not separable
    return x, labels


def _np_logistic_newton(x, labels, steps, damping=0.0):
    """Newton on mean(softplus(z) - y z), z = x w + c: H = A^T diag(s(1-s)) A / n."""
    a = np.hstack([x, np.ones((len(x), 1))])
    theta, out = np.zeros(5), []
    for _ in range(steps):
        s = 1 / (1 + np.exp(-(a @ theta)))
        g = a.T @ (s - labels) / len(x)
        h = (a * (s * (1 - s))[:, None]).T @ a / len(x) + damping * np.eye(5)
        theta = theta - np.linalg.solve(h, g)
        out.append(theta.copy())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [gc.optim.Newton, lambda: gc.optim.Newton(damping=0.1),
                                  lambda: gc.optim.NewtonCG(cg_iters=5)],
                         ids=["newton", "newton-damped", "newton-cg"])
def test_newton_on_logistic_regression(make, backend):
    opt = make()
    xv, yv = _logistic_data()
    w = gc.parameter(np.zeros(4), name="w")
    c = gc.parameter(np.zeros(()), name="c")
    x, y = gc.placeholder((None, 4), "float64", name="x"), gc.placeholder((None,), "float64")
    z = x @ w + c
    loss = gc.mean(gc.softplus(z) - y * z)
    grad_norm = gc.sqrt(sum(gc.sum(g * g) for g in gc.grad(loss, [w, c])))
    step = gc.function([x, y], grad_norm, updates=opt.updates(loss, [w, c]), backend=backend)
    want = _np_logistic_newton(xv, yv, 7, damping=opt.damping)
    norms = []
    for k in range(7):
        norms.append(float(step(xv, yv)))  # the gradient norm before step k + 1
        np.testing.assert_allclose(np.append(w.value, c.value), want[k], rtol=1e-8, atol=1e-10)
    norms.append(float(step(xv, yv)))
    if not opt.damping:  # quadratic convergence: ~0.4 -> ~2e-6 after 5 steps -> ~0 after 7
        assert norms[0] > 0.1 and norms[5] < 1e-5 and norms[7] < 1e-13, norms
    else:  # damped: linear convergence, still steady progress
        assert all(b < a for a, b in zip(norms, norms[1:]))


def test_full_hessian_over_several_parameters_matches_numpy():
    w = gc.parameter(np.array([0.3, -0.2]), name="w")
    c = gc.parameter(np.array(0.5), name="c")
    loss = gc.sum(gc.exp(w * c)) + gc.sum(w * w * w)
    (gw, gcc) = gc.grad(loss, [w, c])
    h = gc.function([], gc.optim.full_hessian(loss, [w, c], [gw, gcc]), backend="numpy")()
    wv, cv = np.array([0.3, -0.2]), 0.5
    e = np.exp(wv * cv)
    want = np.zeros((3, 3))
    want[[0, 1], [0, 1]] = cv * cv * e + 6 * wv
    want[:2, 2] = want[2, :2] = e + wv * cv * e
    want[2, 2] = np.sum(wv * wv * e)
    np.testing.assert_allclose(h, want, rtol=1e-13)


def test_solve_spd_matches_numpy():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(6, 6))
    a, b = m @ m.T + 0.5 * np.eye(6), rng.normal(size=6)
    got = gc.function([], gc.optim.solve_spd(gc.constant(a), gc.constant(b)))()
    np.testing.assert_allclose(got, np.linalg.solve(a, b), rtol=1e-10)


def test_newton_cg_falls_back_to_the_gradient_on_negative_curvature():
    p = gc.parameter(np.array([1.0, -2.0]), name="p")
    loss = -gc.sum(p * p)  # concave: no Newton step exists
    step = gc.function([], loss, updates=gc.optim.NewtonCG(lr=0.1).updates(loss, [p]),
                       backend="numpy")
    step()
    np.testing.assert_allclose(p.value, [1.0, -2.0] - 0.1 * np.array([-2.0, 4.0]))


# -- argument checks -----------------------------------------------------------------------------
BAD = {
    "lr": lambda: gc.optim.SGD(lr=-0.1),
    "lr ": lambda: gc.optim.Adam(lr=float("nan")),
    "betas[0]": lambda: gc.optim.Adam(betas=(1.0, 0.999)),
    "betas[1]": lambda: gc.optim.AdamW(betas=(0.9, -0.1)),
    "eps": lambda: gc.optim.Adam(eps=-1e-8),
    "weight_decay": lambda: gc.optim.AdamW(weight_decay=-0.01),
    "momentum": lambda: gc.optim.SGD(lr=0.1, momentum=-0.5),
    "nesterov": lambda: gc.optim.SGD(lr=0.1, nesterov=True),
    "alpha": lambda: gc.optim.RMSprop(alpha=1.5),
    "lr_decay": lambda: gc.optim.Adagrad(lr_decay=-1),
    "clip_norm": lambda: gc.optim.SGD(lr=0.1, clip_norm=0.0),
    "damping": lambda: gc.optim.Newton(damping=-1.0),
    "cg_iters": lambda: gc.optim.NewtonCG(cg_iters=0),
    "t_max": lambda: gc.optim.cosine_annealing(0.1, t_max=0),
    "step_size": lambda: gc.optim.step_decay(0.1, step_size=0),
    "gamma": lambda: gc.optim.exponential_decay(0.1, gamma=1.5),
    "max_norm": lambda: gc.optim.clip_by_global_norm(gc.placeholder((2,)), -1.0),
    "params": lambda: gc.optim.Adam().updates(gc.sum(gc.placeholder((2,))), []),
    "loss": lambda: gc.optim.SGD().updates(gc.parameter(np.zeros(2)) * 2,
                                           [gc.parameter(np.zeros(2))]),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_arguments_raise_value_error_naming_the_argument(name):
    with pytest.raises(ValueError, match=f"^{name.strip().replace('[', '.').replace(']', '.')}"):
        BAD[name]()


def test_wrong_kinds_raise_type_error():
    with pytest.raises(TypeError, match="params"):
        gc.optim.SGD().updates(gc.sum(gc.placeholder((2,))), [gc.placeholder((2,))])
    with pytest.raises(TypeError, match="lr"):
        gc.optim.SGD(lr="fast")
    p = gc.parameter(np.zeros(2))
    with pytest.raises(TypeError, match="loss"):
        gc.optim.Newton().apply_gradients([p], [p])


# -- example 9 -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_conditioning_example_shortened(capsys):
    from example_loader import load_example
    results = load_example("conditioning").main(["--dim", "8", "--cond", "100", "--tol", "1e-8"])
    out = capsys.readouterr().out
    assert all(r["converged"] for r in results.values()), out
    steps = {name: r["iterations"] for name, r in results.items()}
    assert steps["Newton"] == 1
    assert steps["Newton"] < steps["momentum"] < steps["gradient descent"]
    assert steps["Adam"] < steps["gradient descent"]
    for name in steps:
        assert name in out
