"""The natural-gradient example in short runs: its Fisher graphs are the matrices they claim to
be, natural gradient reaches the target loss in a few steps where first-order methods need many
or do not get there, and one seed gives the same per-step losses on numpy and llvm."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import graphc as gc
from example_loader import load_example

pytestmark = pytest.mark.slow  # compiles Hessians and Fisher matrices, trains five ways

SHORT = ["--examples", "300", "--max-iters", "1500", "--timing-steps", "2"]
# fixed rates (the search's choices for this problem): no search, a few steps each
FIXED = ["--examples", "200", "--max-iters", "25", "--timing-steps", "1",
         "--lr", "gd=0.00390625", "--lr", "adam=0.03125", "--lr", "natural=1",
         "--lr", "empirical-fisher=1", "--lr", "newton=1"]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Thousands of tiny steps: a second thread costs more than it gives on shared cores."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "1")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1)
    with limits:
        yield


def test_fisher_graphs_are_the_fisher_matrices():
    ng = load_example("natural_gradient")
    x, labels = ng.make_problem(120, 4, 10.0, seed=1)
    l_star, w_star, hess = ng.numpy_minimum(x, labels)
    problem = ng.Problem(x)
    problem.W.value = w_star.astype(np.float32)
    exact, empirical, loss = gc.function(
        [problem.x, problem.labels],
        [problem.exact_fisher(), problem.empirical_fisher(), problem.loss])(x, labels)
    np.testing.assert_allclose(loss, l_star, rtol=1e-5)
    # softmax regression: the exact Fisher is the Hessian of the mean cross-entropy
    np.testing.assert_allclose(exact, hess, rtol=2e-3, atol=1e-4 * np.abs(hess).max())
    # the empirical Fisher: 1/N sum_i g_i g_i^T from the per-example gradients, in numpy
    x64 = x.astype(np.float64)
    logits = np.concatenate([x64 @ w_star, np.zeros((len(x), 1))], axis=1)
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    residual = prob[:, :-1] - np.eye(3)[labels][:, :-1]
    g = (x64[:, :, None] * residual[:, None, :]).reshape(len(x), -1)
    np.testing.assert_allclose(empirical, g.T @ g / len(x), rtol=2e-3,
                               atol=1e-4 * np.abs(hess).max())
    assert not np.allclose(empirical, exact, rtol=1e-2)  # a different matrix


def test_short_run_natural_gradient_beats_first_order(tmp_path, capsys):
    out = tmp_path / "natgrad.png"
    res = load_example("natural_gradient").main(SHORT + ["--out", str(out)])
    gap0 = res["initial"] - res["l_star"]  # the untrained loss (W = 0, log 3) above L*
    assert gap0 > 0.2
    for name in ("natural gradient", "Newton", "empirical Fisher"):
        assert res[name]["reached"], name
        assert res[name]["final"] - res["l_star"] < 1e-3 * gap0
        assert res[name]["iterations"] <= 10, name
    natural = res["natural gradient"]["iterations"]
    # Adam gets there (~90 steps) but in many times more steps; gradient descent (~18,000
    # steps at its best rate) does not within 1,500, and is still far above L*
    assert res["Adam"]["reached"] and res["Adam"]["iterations"] >= 5 * natural
    gd = res["gradient descent"]
    assert not gd["reached"] and gd["final"] - res["l_star"] > 10 * 1e-4
    assert gd["final"] < res["initial"]  # it learns, slowly
    # the exact Fisher is the Hessian here: natural gradient and Newton take the same steps
    np.testing.assert_allclose(res["natural gradient"]["losses"], res["Newton"]["losses"],
                               rtol=1e-4)
    printed = capsys.readouterr().out
    if res["figure"] is None:
        assert "no figure" in printed
    else:
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    last = printed.strip().splitlines()[-1]
    assert last.startswith("iterations to loss <= L* + 0.0001: ") and f"natural {natural}" in last


def test_same_seed_same_losses_on_both_backends(capsys):
    ng = load_example("natural_gradient")
    runs = {b: ng.main(FIXED + ["--backend", b]) for b in ("numpy", "llvm")}
    for name in ng.SHORT:
        numpy_losses, llvm_losses = runs["numpy"][name]["losses"], runs["llvm"][name]["losses"]
        assert len(numpy_losses) == len(llvm_losses) > 3, name
        np.testing.assert_allclose(llvm_losses, numpy_losses, rtol=1e-4, err_msg=name)
        assert numpy_losses[-1] < numpy_losses[0], name  # the steps train
