"""The PixelCNN example (examples/pixelcnn_digits.py): its masks make the model autoregressive
(no logit sees its own pixel or a later one), band sampling gives the whole image's
probabilities, a short run beats independent pixels clearly, and one seed gives the same
per-step losses on the numpy and llvm backends."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import graphc as gc
from example_loader import load_example

SIDE = 28


@pytest.fixture(scope="module")
def pixelcnn():
    return load_example("pixelcnn_digits")


@pytest.fixture
def one_thread(monkeypatch):
    """Many small steps: with other processes on the two cores, waiting for a second thread
    costs more than it gives (as in test_generative_examples)."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "1")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1)
    with limits:
        yield


def _probabilities(pixelcnn, layers: int, height: int, backend: str = "numpy"):
    """A small untrained PixelCNN's compiled p(x_ij = 1 | ...) for images of `height` rows,
    its biases nonzero so that every layer's padding matters."""
    model = pixelcnn.build(8, layers, seed=3)
    rng = np.random.default_rng(1)
    for p in model.parameters():
        if p.value.ndim == 1:
            p.value = rng.normal(0.0, 0.5, p.value.shape).astype(np.float32)
    x = gc.placeholder((None, 1, height, SIDE), name="x")
    return gc.function([x], gc.sigmoid(model(x)), backend=backend)


def test_masks(pixelcnn):
    a, b = (pixelcnn.causal_mask(1, 1, 3, kind)[0, 0] for kind in "AB")
    np.testing.assert_array_equal(a, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(b, [[1, 1, 1], [1, 1, 0], [0, 0, 0]])


def test_no_logit_sees_its_own_pixel_or_a_later_one(pixelcnn):
    probabilities = _probabilities(pixelcnn, layers=3, height=SIDE)
    rng = np.random.default_rng(0)
    image = (rng.random((1, 1, SIDE, SIDE)) < 0.3).astype(np.float32)
    before = probabilities(image)[0, 0].ravel()
    for i, j in [(0, 0), (5, 9), (14, 0), (14, 27), (27, 27)]:
        flipped = image.copy()
        flipped[0, 0, i, j] = 1.0 - flipped[0, 0, i, j]
        after = probabilities(flipped)[0, 0].ravel()
        k = i * SIDE + j  # raster position of the flipped pixel
        np.testing.assert_array_equal(after[:k + 1], before[:k + 1])  # itself and earlier
        if k + 1 < SIDE * SIDE:  # later pixels see it (the next one through mask A's left tap)
            assert np.any(after[k + 1:] != before[k + 1:])


def test_a_band_of_rows_gives_the_whole_images_probabilities(pixelcnn):
    layers = 3
    rows_up = pixelcnn.reach(layers)
    height = pixelcnn.band_height(rows_up)
    assert height < SIDE
    whole = _probabilities(pixelcnn, layers, SIDE)
    band = _probabilities(pixelcnn, layers, height)
    image = (np.random.default_rng(2).random((2, 1, SIDE, SIDE)) < 0.3).astype(np.float32)
    expected = whole(image)
    for i in range(SIDE):
        top = max(0, i - rows_up)
        got = band(image[:, :, top:top + height])[:, 0, i - top]
        np.testing.assert_allclose(got, expected[:, 0, i], rtol=1e-5, atol=1e-6)
    # one row fewer is not enough: the top edge's zero padding reaches row i
    short = _probabilities(pixelcnn, layers, height - 1)
    i = SIDE - 1
    got = short(image[:, :, i - height + 2:i + 1])[:, 0, -1]
    assert np.abs(got - expected[:, 0, i]).max() > 1e-4


@pytest.mark.slow
def test_short_run_beats_independent_pixels(pixelcnn, one_thread, tmp_path, capsys):
    out = tmp_path / "samples.png"
    # --quick (16 channels, one epoch) on 1,000 images, in 63 steps of 16 at a higher rate
    res = pixelcnn.main(["--quick", "--train-images", "1000", "--batch-size", "16", "--lr", "4e-3",
                         "--test-images", "200", "--samples", "2", "--no-progress",
                         "--out", str(out)])
    # seed 0: untrained ~1.04 bits/pixel, independent pixels ~0.375, trained ~0.23
    assert res["trained_bits"] < 0.8 * res["baseline_bits"]
    assert res["trained_bits"] < 0.4 * res["untrained_bits"]
    assert res["loss"][-1] < res["batch_loss"][0]
    assert res["samples"].shape == (2, 1, SIDE, SIDE)
    assert set(np.unique(res["samples"])) <= {0.0, 1.0}
    printed = capsys.readouterr().out
    last = printed.strip().splitlines()[-1]
    assert last.startswith("held-out NLL") and "independent pixels" in last
    if res["figure"] is None:
        assert "no figure" in printed
    else:
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_same_seed_same_losses_on_both_backends(pixelcnn, one_thread, capsys):
    args = ["--epochs", "1", "--channels", "8", "--layers", "3", "--train-images", "96",
            "--test-images", "40", "--no-progress"]
    runs = {b: pixelcnn.main(args + ["--backend", b]) for b in ("numpy", "llvm")}
    numpy_losses, llvm_losses = runs["numpy"]["batch_loss"], runs["llvm"]["batch_loss"]
    assert len(numpy_losses) == 3
    np.testing.assert_allclose(llvm_losses, numpy_losses, rtol=1e-4)
    assert len(set(numpy_losses)) == len(numpy_losses)  # the steps train
    for key in ("untrained_bits", "trained_bits"):
        np.testing.assert_allclose(runs["llvm"][key], runs["numpy"][key], rtol=1e-4)
