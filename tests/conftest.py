"""Shared test set-up: graphc must be installed (pip install -e .), not imported by path."""
from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("graphc") is None or importlib.util.find_spec(
        "graphc.frontends") is None:
    raise pytest.UsageError(
        "graphc is not installed: run `pip install -e .[test]` from the repository root first")

import os  # noqa: E402
import tempfile  # noqa: E402

# Compiled code goes to a cache folder of this test run, never the user's own cache.
os.environ.setdefault("GRAPHC_CACHE_DIR", tempfile.mkdtemp(prefix="graphc-test-cache-"))
# ...and is signed with a key of this run, never the user's own (~/.config/graphc) or a
# team's key from the environment.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="graphc-test-config-")
for _name in ("GRAPHC_CACHE_KEY", "GRAPHC_CACHE_KEY_FILE"):
    os.environ.pop(_name, None)

# GRAPHC_CUDA_PTX_DIR=DIR records every program the run makes as CUDA C, for
# benchmarks/cuda_suite_ptx.py to assemble (.ci/run does not set it yet: docs/cuda-backend.md).
if os.environ.get("GRAPHC_CUDA_PTX_DIR"):
    pytest_plugins = ["cuda_ptx_plugin"]
# GRAPHC_CUDA_ON_GPU=1 runs the tests written for the CUDA emulator on a real GPU
# (benchmarks/gpu_checks.sh; docs/cuda-backend.md).
if os.environ.get("GRAPHC_CUDA_ON_GPU"):
    pytest_plugins = [*globals().get("pytest_plugins", []), "cuda_on_gpu_plugin"]

from hypothesis import HealthCheck, settings  # noqa: E402

# CI draws the same examples every run (derandomize, no example database): a red CI is then
# a change's fault, never the luck of the draw; `dev` stays random to find new cases.
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")
