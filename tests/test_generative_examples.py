"""Examples 5 and 6 (a VAE on the digits, a GAN on a ring of 8 Gaussians) in shortened runs:
they learn on both backends, and one seed gives the same per-step losses on both."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from example_loader import load_example

pytestmark = pytest.mark.slow  # trains a VAE and a GAN


# a GAN setting that learns in 2,000 steps: smaller nets, wider modes, a higher rate
GAN_SHORT = ["--steps", "2000", "--hidden", "64", "--batch-size", "128", "--std", "0.1",
             "--lr", "3e-3", "--samples", "1000"]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Thousands of tiny steps: with other processes on the two cores, waiting for a second
    thread (graphc's GEMM team, OpenBLAS under the numpy backend) costs more than it gives."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "1")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1)
    with limits:
        yield


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_vae_short_run_learns(backend, tmp_path, capsys):
    out = tmp_path / "vae.png"
    res = load_example("vae_digits").main(["--epochs", "10", "--backend", backend, "--no-progress",
                                    "--out", str(out)])
    before, after = res["untrained"], res["trained"]
    # -ELBO from ~45.5 to ~25.7 nats per image in 10 epochs
    assert after["test_loss"] < 0.65 * before["test_loss"]
    assert res["loss"][-1] < res["loss"][0]
    # reconstructions beat the best constant image (the training mean, MSE ~0.073): ~0.041
    assert after["test_mse"] < 0.75 * res["mean_image_mse"]
    assert after["test_mse"] < 0.3 * before["test_mse"]
    assert 0.0 < after["test_kl"] < after["test_loss"]
    printed = capsys.readouterr().out
    assert "held-out reconstruction MSE" in printed and "untrained" in printed
    if res["figure"] is None:
        assert "no figure" in printed
    else:
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_gan_short_run_covers_the_modes(backend, capsys):
    res = load_example("gan_mixture").main(GAN_SHORT + ["--backend", backend])
    before, after = res["untrained"], res["trained"]
    # seed 0 reaches 8/8 modes and ~55 % high-quality points; the untrained generator
    # puts its points near the origin (0-1 modes, ~5 %)
    assert before["modes"] <= 1 and before["high_quality"] < 0.1
    assert after["modes"] >= 6
    assert after["high_quality"] > max(0.3, 3 * before["high_quality"])
    assert res["real"]["modes"] == 8 and res["real"]["high_quality"] > 0.95
    printed = capsys.readouterr().out
    assert "modes covered" in printed and "high-quality points" in printed


def test_vae_same_seed_same_losses_on_both_backends(capsys):
    vae = load_example("vae_digits")
    args = ["--epochs", "1", "--train-images", "320", "--no-progress"]
    runs = {b: vae.main(args + ["--backend", b]) for b in ("numpy", "llvm")}
    numpy_losses, llvm_losses = runs["numpy"]["batch_loss"], runs["llvm"]["batch_loss"]
    assert len(numpy_losses) == 5
    np.testing.assert_allclose(llvm_losses, numpy_losses, rtol=1e-4)
    assert len(set(numpy_losses)) == len(numpy_losses)  # the steps train
    np.testing.assert_allclose(runs["llvm"]["trained"]["test_loss"],
                               runs["numpy"]["trained"]["test_loss"], rtol=1e-4)


def test_gan_same_seed_same_losses_on_both_backends(capsys):
    gan = load_example("gan_mixture")
    args = ["--steps", "6", "--hidden", "32", "--batch-size", "64", "--samples", "200"]
    runs = {b: gan.main(args + ["--backend", b]) for b in ("numpy", "llvm")}
    for key in ("d_loss", "g_loss"):
        assert len(runs["numpy"][key]) == 6
        np.testing.assert_allclose(runs["llvm"][key], runs["numpy"][key], rtol=1e-4)
