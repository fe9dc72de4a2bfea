"""The efficient-convolutions example (a plain CNN against a depthwise-separable and a strided one
on MNIST-5k): its multiply-add and parameter counts follow the layer formulas, each model
learns in the quick run, and one seed gives the same per-step losses on both backends."""
from __future__ import annotations

import numpy as np
import pytest

from example_loader import load_example

KINDS = ("plain", "separable", "strided")


@pytest.fixture(scope="module")
def example():
    return load_example("efficient_convs")


@pytest.mark.parametrize("c1, c2", [(16, 32), (8, 16), (4, 12)])
def test_counts_follow_the_layer_formulas(example, c1, c2):
    dense = c2 * 7 * 7 * 10
    conv1 = 28 * 28 * c1 * 9                            # 3x3, 1 -> c1, 28x28 outputs
    expected_macs = {
        "plain": conv1 + 14 * 14 * c2 * c1 * 9 + dense,
        "separable": conv1 + 14 * 14 * c1 * 9 + 14 * 14 * c1 * c2 + dense,
        "strided": 14 * 14 * c1 * 9 + 7 * 7 * c2 * c1 * 9 + dense,
    }
    full = (c1 * 9 + c1) + (c2 * c1 * 9 + c2) + (dense + 10)
    expected_params = {
        "plain": full, "strided": full,
        "separable": (c1 * 9 + c1) + (c1 * 9 + c1) + (c1 * c2 + c2) + (dense + 10),
    }
    layers = {}
    for kind in KINDS:
        model = example.build(kind, c1, c2, seed=0)
        macs, layers[kind] = example.multiply_adds(model)
        assert macs == expected_macs[kind], kind
        assert sum(m for _, m in layers[kind]) == macs
        assert example.count_parameters(model) == expected_params[kind], kind
    # the factorized middle conv costs 1/C2 + 1/9 of the full 3x3 one
    plain_conv2 = dict(layers["plain"])["conv2"]
    separable = dict(layers["separable"])
    assert (separable["depthwise"] + separable["pointwise"]) / plain_conv2 == \
        pytest.approx(1 / c2 + 1 / 9)
    # stride 2 computes a quarter of the outputs of the 14x14 conv
    assert dict(layers["strided"])["conv2"] * 4 == plain_conv2


@pytest.mark.slow  # compiles and trains a CNN on 1,280 MNIST-5k images
@pytest.mark.parametrize("kind", KINDS)
def test_quick_run_learns(example, kind, tmp_path, capsys):
    out = tmp_path / "convs.png"
    argv = ["--quick", "--kinds", kind, "--no-progress"]
    if kind == "plain":
        argv += ["--out", str(out)]
    res = example.main(argv)
    r = res["results"][kind]
    # untrained ~10 % (chance); after 2 epochs on 1,280 images ~89-91 %
    assert r["untrained"] < 0.3
    assert r["accuracy"] > max(0.75, r["untrained"] + 0.5)
    assert r["loss"][-1] < 0.6 * r["loss"][0]
    assert len(r["curve"]) == 2 and len(r["batch_loss"]) == 2 * (1280 // 64)
    assert 0.0 < r["step_ms"] < 1e4
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1].startswith(f"held-out accuracy: {kind} ")
    assert "MACs/ex" in printed and "step ms" in printed
    if kind == "plain":
        if res["figure"] is None:
            assert "no figure" in printed
        else:
            assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # compiles each CNN for llvm and runs it on numpy too
@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_losses_on_both_backends(example, kind, capsys):
    argv = ["--kinds", kind, "--train-images", "192", "--epochs", "1", "--channels", "4", "8",
            "--no-progress"]
    runs = {b: example.main(argv + ["--backend", b])["results"][kind] for b in ("numpy", "llvm")}
    numpy_losses, llvm_losses = runs["numpy"]["batch_loss"], runs["llvm"]["batch_loss"]
    assert len(numpy_losses) == 3
    assert len(set(numpy_losses)) == 3  # the steps train
    np.testing.assert_allclose(llvm_losses, numpy_losses, rtol=1e-4)
    assert abs(runs["llvm"]["accuracy"] - runs["numpy"]["accuracy"]) <= 2 / 1000
    assert runs["llvm"]["untrained"] == runs["numpy"]["untrained"]
