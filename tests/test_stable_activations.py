"""Custom activations written the textbook way (gc.elementwise_function with exp and log)
are rewritten to Sigmoid/Softplus before they are differentiated and lowered: finite, right
values and gradients far into both tails, in float32 and float64, on both backends."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import graphc as gc
from graphc.sympy_stable import stabilize
from graphc.symbolic import Sigmoid, Softplus

# (definitions in x: tests/test_grad_table.py samples every registered primitive by its
# argument names x; a, b; c, a, b)
Z = np.array([-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4])
T = sp.Symbol("z", real=True)


def _sig(z):
    return np.where(z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z))
                    / (1 + np.exp(-np.abs(z))))


def _softplus(z):
    return np.logaddexp(0.0, z)


# name: (textbook definition, float64 reference value, reference derivative), stable numpy
CASES = {
    "swish_stable": (lambda x: x / (1 + sp.exp(-x)), lambda z: z * _sig(z),
                     lambda z: _sig(z) + z * _sig(z) * _sig(-z)),
    "mish_stable": (lambda x: x * sp.tanh(sp.log(1 + sp.exp(x))),
                    lambda z: z * np.tanh(_softplus(z)),
                    lambda z: (np.tanh(_softplus(z))
                               + z * _sig(z) * (1 - np.tanh(_softplus(z)) ** 2))),
    "logistic_stable": (lambda x: sp.exp(x) / (1 + sp.exp(x)), _sig,
                        lambda z: _sig(z) * _sig(-z)),
    "softplus_stable": (lambda x: sp.log(1 + sp.exp(x)), _softplus, _sig),
    "softplus_neg_stable": (lambda x: sp.log(1 + sp.exp(-x)), lambda z: _softplus(-z),
                            lambda z: -_sig(-z)),
    "log_sigmoid_stable": (lambda x: sp.log(1 / (1 + sp.exp(-x))), lambda z: -_softplus(-z),
                           lambda z: _sig(-z)),
}
_APPLY = {name: gc.elementwise_function(name, d) for name, (d, _, _) in CASES.items()}


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_textbook_activation_is_finite_and_right_in_both_tails(name, dtype, backend):
    _, value, derivative = CASES[name]
    x = gc.placeholder((None,), dtype, name="z")
    y = _APPLY[name](x)
    got, grad = gc.function([x], [y, gc.grad(gc.sum(y), x)], backend=backend)(Z.astype(dtype))
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(grad)), (got, grad)
    tiny = np.finfo(dtype).tiny  # below it, float32 denormals carry few digits
    np.testing.assert_allclose(got, value(Z), rtol=1e-6, atol=tiny)
    # Derivatives hold sigmoid' = s*(1 - s) (PyTorch's form), exact to absolute rounding in
    # the upper tail, where 1 - s cancels
    np.testing.assert_allclose(grad, derivative(Z), rtol=1e-6, atol=np.finfo(dtype).eps)


@pytest.mark.slow  # importing torch takes seconds
def test_swish_and_mish_match_torch():
    torch = pytest.importorskip("torch")
    x = gc.placeholder((None,), "float64", name="z")
    for name, theirs in (("swish_stable", torch.nn.functional.silu),
                         ("mish_stable", torch.nn.functional.mish)):
        y = _APPLY[name](x)
        got, grad = gc.function([x], [y, gc.grad(gc.sum(y), x)], backend="numpy")(Z)
        t = torch.tensor(Z, requires_grad=True)
        out = theirs(t)
        out.sum().backward()
        np.testing.assert_allclose(got, out.detach().numpy(), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-12, atol=1e-300)


def test_rewrites():
    cases = [(T / (1 + sp.exp(-T)), T * Sigmoid(T)),
             (sp.exp(T) / (1 + sp.exp(T)), Sigmoid(T)),
             (sp.exp(T) / (1 + sp.exp(T)) ** 2, Sigmoid(T) * Sigmoid(-T)),
             (sp.log(1 + sp.exp(T)), Softplus(T)),
             (sp.log(1 + sp.exp(-2 * T)), Softplus(-2 * T)),
             (sp.log(1 / (1 + sp.exp(-T))), -Softplus(-T)),
             (1 - 1 / (1 + sp.exp(-T)), Sigmoid(-T)),
             (sp.tanh(sp.log(1 + sp.exp(T))), sp.tanh(Softplus(T)))]
    for before, after in cases:
        assert stabilize(before) == after, before
        # the same function: compare at a few points where the textbook form is fine
        for v in (-3.0, 0.5, 2.0):
            a = float(before.subs(T, v))
            b = float(after.subs(T, v).rewrite(sp.exp))
            assert a == pytest.approx(b, rel=1e-12)


def test_rewrites_leave_other_expressions_alone():
    for e in (T * sp.exp(T), sp.log(2 + sp.exp(T)), 1 / (1 + T ** 2), sp.exp(-T) + 1,
              sp.Piecewise((T, T > 0), (0, True))):
        assert stabilize(e) == e
