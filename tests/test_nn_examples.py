"""The gc.nn examples in shortened runs, on both backends."""
from __future__ import annotations

import numpy as np
import pytest

from example_loader import load_example

pytestmark = pytest.mark.slow  # trains the gc.nn examples


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_universality_short_run_fits(backend, capsys):
    res = load_example("universality").main(["--epochs", "300", "--backend", backend])
    # the variance of f on [-2, 2] is about 0.65: an MSE below 0.01 is a close fit
    assert res["test_mse"] < 0.01 and res["train_mse"] < 0.01
    assert res["loss"][-1] < 0.02 * res["loss"][0]
    assert "final MSE" in capsys.readouterr().out


def test_universality_full_run_and_plot(tmp_path, capsys):
    plot = tmp_path / "fit.png"
    res = load_example("universality").main(["--plot", str(plot)])
    assert res["test_mse"] < 1e-3
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert res["plot"] is None and "no plot" in capsys.readouterr().out
    else:
        assert res["plot"] == str(plot) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_robust_regression_huber_beats_mse(backend, capsys):
    res = load_example("robust_regression").main(["--steps", "600", "--backend", backend])
    slope, intercept = res["truth"]
    assert res["huber"]["error"] < res["mse"]["error"]
    assert res["huber"]["error"] < 0.5
    assert abs(res["huber"]["slope"] - slope) < 0.3
    # the trained MSE line is the least-squares line (an independent numpy solve)
    np.testing.assert_allclose([res["mse"]["slope"], res["mse"]["intercept"]],
                               res["least_squares"], atol=0.05)
    out = capsys.readouterr().out
    assert "huber" in out and "mse" in out and "truth" in out
