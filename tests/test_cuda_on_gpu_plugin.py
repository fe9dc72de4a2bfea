"""The plugin that sends emulated CUDA runs to a real GPU (tests/cuda_on_gpu_plugin.py): which
options it rewrites, and which it leaves for the emulator to accept or reject."""
from __future__ import annotations

import pytest

from cuda_on_gpu_plugin import _on_gpu


@pytest.mark.parametrize("options, want", [
    ({"emulate": True}, {"outputs": "numpy"}),
    ({"emulate": True, "seed": 3, "cache_dir": "c"}, {"outputs": "numpy", "cache_dir": "c"}),
    ({"emulate": True, "outputs": "numpy"}, {"outputs": "numpy"}),
])
def test_emulated_options_become_gpu_options_with_numpy_outputs(options, want):
    assert _on_gpu(options) == want


@pytest.mark.parametrize("options", [
    {},  # already a GPU run
    {"emulate": False},
    {"emulate": 1},
    {"emulate": True, "outputs": "cupy"},
    {"emulate": True, "seed": -1},
    {"emulate": True, "seed": True},
    {"emulate": True, "colour": 1},
])
def test_options_the_emulator_must_judge_are_left_alone(options):
    assert _on_gpu(options) is None
