"""The examples give the same numbers on the numpy and llvm backends for a fixed seed: the
same per-epoch (or per-step) losses to float tolerance, the same fitted values. (The newer
examples check this in their own test files.)"""
from __future__ import annotations

import numpy as np

import pytest
from example_loader import load_example

pytestmark = pytest.mark.slow  # runs every example on two backends


def _main(name: str, argv: list[str]):
    module = load_example(name)
    return {be: module.main(argv + ["--backend", be]) for be in ("numpy", "llvm")}


def test_mlp_digits_the_main_job(capsys):
    runs = _main("mlp_digits", ["--epochs", "2", "--no-progress"])
    np.testing.assert_allclose(runs["llvm"]["loss"], runs["numpy"]["loss"], rtol=1e-4)
    assert abs(runs["llvm"]["accuracy"] - runs["numpy"]["accuracy"]) <= 1 / 360


def test_universality(capsys):
    runs = _main("universality", ["--epochs", "40"])
    np.testing.assert_allclose(runs["llvm"]["loss"], runs["numpy"]["loss"], rtol=1e-4)


def test_robust_regression(capsys):
    runs = _main("robust_regression", ["--steps", "300"])
    for loss in ("mse", "huber"):
        for key in ("slope", "intercept"):
            np.testing.assert_allclose(runs["llvm"][loss][key], runs["numpy"][loss][key],
                                       rtol=1e-4, atol=1e-5)


def test_cnn_mnist(capsys):
    runs = _main("cnn_mnist", ["--epochs", "2", "--train-images", "256", "--no-progress"])
    np.testing.assert_allclose(runs["llvm"]["loss"], runs["numpy"]["loss"], rtol=1e-4)


def test_conditioning(capsys):
    runs = _main("conditioning", ["--dim", "8", "--cond", "100", "--tol", "1e-8"])
    methods = [k for k, v in runs["numpy"].items() if isinstance(v, dict) and
               "iterations" in v]
    assert methods
    for name in methods:  # float64 throughout: the same step counts
        assert runs["llvm"][name]["iterations"] == runs["numpy"][name]["iterations"], name
        np.testing.assert_allclose(runs["llvm"][name]["ratio"], runs["numpy"][name]["ratio"],
                                   rtol=1e-6, atol=1e-11)  # past tol, rounding rules
