"""benchmarks/kernel_breakdown.py builds each model's step with the sizes option it is given
(its W7 path had called the step builder with a keyword it does not take)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import kernel_breakdown  # noqa: E402


@pytest.mark.parametrize("model", ["W5", "W7"])
def test_each_model_builds_with_its_sizes_option_and_steps(model):
    step, args = kernel_breakdown.build(model, "symbolic")
    assert step._exe.sizes == "symbolic"
    loss = np.asarray(step(*args))
    assert np.all(np.isfinite(loss))
