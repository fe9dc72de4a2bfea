"""examples/char_rnn.py in its --quick form: the LSTM learns, the baselines and samples show."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from example_loader import load_example

pytestmark = pytest.mark.slow  # trains an LSTM


def test_char_rnn_quick_run_beats_the_unigram_baseline(tmp_path, capsys):
    plots = importlib.util.find_spec("matplotlib") is not None
    res = load_example("char_rnn").main(["--quick"] + (["--out", str(tmp_path / "curve.png")]
                                                       if plots else []))
    base = res["baselines"]
    assert 0 < base["bigram"] < base["unigram"] < 7  # log2(103 characters) = 6.7
    bits = res["train_bits"]
    assert sum(bits[-10:]) / 10 < sum(bits[:10]) / 10 - 0.5
    assert res["held_out_bits"][-1] < base["unigram"]
    (sample,) = res["samples"]
    assert sample.startswith("The ") and len(sample) == 4 + 60
    out = capsys.readouterr().out
    assert "held-out bits per character: LSTM" in out and "a sample" in out
    if plots:
        assert (tmp_path / "curve.png").stat().st_size > 1000


def test_char_rnn_same_losses_on_numpy_and_llvm(capsys):
    runs = {be: load_example("char_rnn").main(["--quick", "--max-steps", "8",
                                                "--backend", be]) for be in ("numpy", "llvm")}
    np.testing.assert_allclose(runs["llvm"]["train_bits"], runs["numpy"]["train_bits"],
                               rtol=1e-4)
    np.testing.assert_allclose(runs["llvm"]["held_out_bits"], runs["numpy"]["held_out_bits"],
                               rtol=1e-4)
