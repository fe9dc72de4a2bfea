"""Example 4 (a CNN on the MNIST-5k digits) in a shortened run: it learns."""
from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cnn_mnist.py"


def test_cnn_on_mnist_5k_learns_in_a_short_run(capsys):
    spec = importlib.util.spec_from_file_location("cnn_mnist", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--epochs", "2", "--train-images", "1500", "--no-progress"])
    assert result["accuracy"] > 0.8
    assert result["loss"][-1] < result["loss"][0]
    assert "held-out accuracy" in capsys.readouterr().out
