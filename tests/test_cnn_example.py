"""Example 4 (a CNN on the MNIST-5k digits) in a shortened run: it learns."""
from __future__ import annotations

import pytest
from example_loader import load_example

pytestmark = pytest.mark.slow  # trains a CNN on MNIST-5k


def test_cnn_on_mnist_5k_learns_in_a_short_run(capsys):
    result = load_example("cnn_mnist").main(["--epochs", "2", "--train-images", "1500",
                                             "--no-progress"])
    assert result["accuracy"] > 0.8
    assert result["loss"][-1] < result["loss"][0]
    assert "held-out accuracy" in capsys.readouterr().out
