"""A pytest plugin that runs the tests written for the CUDA emulator on a real GPU instead:
    GRAPHC_CUDA_ON_GPU=1 python -m pytest tests/test_cuda_backend.py ...
(tests/conftest.py loads it when that variable is set). Every compile asking for
backend="cuda" with {"emulate": True} (and, optionally, a seed or outputs="numpy") compiles
for the GPU with outputs="numpy", so the same assertions compare the GPU's results with the
reference. Options the emulator must reject keep going to it, so the option checks still
test what they say; the emulator's own race and barrier checks
(tests/test_cuda_emulator_checks.py) have no GPU counterpart and are left out of such runs.
Without a usable GPU, the session stops at once with the reason."""
from __future__ import annotations

from typing import Any

import pytest

_GPU_SAFE = {"emulate", "seed", "outputs", "cache_dir", "optimize"}


def _on_gpu(options: dict) -> dict | None:
    """The options for the GPU run standing in for an emulated one, or None to keep them."""
    if options.get("emulate") is not True or set(options) - _GPU_SAFE:
        return None
    if options.get("outputs", "numpy") != "numpy":
        return None  # the emulator must reject this one
    seed = options.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 32:
        return None
    return {k: v for k, v in options.items() if k not in ("emulate", "seed")} | {
        "outputs": "numpy"}


def pytest_configure(config: Any) -> None:
    from graphc.backends.cuda.backend import CudaBackend, gpu_problem
    why = gpu_problem()
    if why is not None:
        raise pytest.UsageError(f"GRAPHC_CUDA_ON_GPU is set but no GPU can be used: {why}")
    emulated_compile = CudaBackend.compile

    def compile_on_gpu(self: Any, program: Any, options: Any = None) -> Any:
        gpu_options = _on_gpu(dict(options or {}))
        return emulated_compile(self, program, options if gpu_options is None else gpu_options)

    CudaBackend.compile = compile_on_gpu  # type: ignore[method-assign]


def pytest_ignore_collect(collection_path: Any, config: Any) -> bool | None:
    return True if collection_path.name == "test_cuda_emulator_checks.py" else None
