"""Each example runs in a shortened form and shows it did its job."""
from __future__ import annotations

import subprocess
import sys

import pytest
from example_loader import EXAMPLES, load_example

pytestmark = pytest.mark.slow  # trains the example networks


def test_mlp_digits_learns_in_a_few_epochs(capsys):
    result = load_example("mlp_digits").main(["--epochs", "6", "--no-progress"])
    assert result["accuracy"] > 0.93
    assert result["loss"][-1] < 0.5 * result["loss"][0]
    out = capsys.readouterr().out
    assert "test accuracy" in out and "epoch   6" in out


def test_show_mlp_gradient_prints_named_gradients_and_writes_dot(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "show_mlp_gradient.py"),
                             "--out", str(tmp_path / "g")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    for name in ("dloss/dW1", "dloss/db1", "dloss/dW2", "dloss/db2", "dtanh/dx"):
        assert name in result.stdout
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith("digraph") and "matmul" in dot
