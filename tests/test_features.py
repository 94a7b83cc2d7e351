"""acvm.features against an explicit per-pixel loop and against what HOG and colour must satisfy."""
import cv2
import numpy as np
import pytest

from acvm.features import (COLOUR_CHANNELS, HOG_CHANNELS, cell_histograms, colour_features, dcf_features,
                           hog, image_gradients)


def _loop_histograms(img, cell, n_bins):
    """The obvious version: per pixel, central differences, strongest channel, split vote."""
    img = img.astype(np.float64)
    if img.ndim == 2:
        img = img[:, :, None]
    h, w, c = img.shape
    hc, wc = h // cell, w // cell
    out = np.zeros((hc, wc, n_bins))
    for y in range(hc * cell):
        for x in range(wc * cell):
            best = (-1.0, 0.0, 0.0)
            for ch in range(c):
                gx = img[y, min(x + 1, w - 1), ch] - img[y, max(x - 1, 0), ch]
                gy = img[min(y + 1, h - 1), x, ch] - img[max(y - 1, 0), x, ch]
                if gx * gx + gy * gy > best[0]:
                    best = (gx * gx + gy * gy, gx, gy)
            mag = np.sqrt(best[0])
            t = (np.arctan2(best[2], best[1]) % (2 * np.pi)) / (2 * np.pi) * n_bins
            b0 = int(np.floor(t)) % n_bins
            frac = t - np.floor(t)
            out[y // cell, x // cell, b0] += mag * (1 - frac)
            out[y // cell, x // cell, (b0 + 1) % n_bins] += mag * frac
    return out


@pytest.mark.parametrize("shape", [(13, 18), (16, 12, 3)])
def test_cell_histograms_equal_a_per_pixel_loop(shape):
    img = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    got = cell_histograms(img, cell_size=4, n_bins=18)
    assert got.shape == (shape[0] // 4, shape[1] // 4, 18) and got.dtype == np.float32
    np.testing.assert_allclose(got, _loop_histograms(img, 4, 18), rtol=1e-4, atol=1e-3)


def test_gradient_orientation_of_simple_edges():
    ramp = np.tile(np.arange(20, dtype=np.float64) * 10, (12, 1))   # brighter to the right
    mag, ang = image_gradients(ramp)
    assert mag.shape == (1, 12, 20)
    np.testing.assert_allclose(mag[0, :, 1:-1], 20.0)
    np.testing.assert_allclose(ang[0], 0.0, atol=1e-6)
    _, ang_down = image_gradients(ramp.T.copy())                    # brighter downwards: +y is π/2
    np.testing.assert_allclose(ang_down[0], np.pi / 2, atol=1e-6)
    # all votes of a horizontal ramp fall in bin 0 of the signed histogram
    hist = cell_histograms(ramp, 4, 18)
    assert np.all(hist[..., 1:] < 1e-4) and np.all(hist[..., 0] > 0)


def test_hog_shape_range_and_contrast_invariance():
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3)).astype(np.uint8), (5, 5), 1.5)
    f = hog(img)
    assert f.shape == (12, 16, HOG_CHANNELS) and f.dtype == np.float32
    assert np.isfinite(f).all() and f.min() >= 0
    # each orientation channel averages 4 truncated values: at most 4 × 0.2 × 0.5
    assert f[..., :27].max() <= 0.4 + 1e-6
    # block normalisation removes contrast (up to the small ε)
    np.testing.assert_allclose(hog(img.astype(np.float32) * 0.5), f, atol=2e-3)


def test_hog_of_the_negative_swaps_signed_halves_and_keeps_the_rest():
    img = np.random.default_rng(2).integers(0, 256, (32, 40)).astype(np.uint8)
    f, g = hog(img), hog(255 - img)
    np.testing.assert_allclose(g[..., :9], f[..., 9:18], atol=1e-5)
    np.testing.assert_allclose(g[..., 18:], f[..., 18:], atol=1e-5)


def test_batches_equal_single_images():
    imgs = np.random.default_rng(3).integers(0, 256, (4, 24, 20, 3)).astype(np.uint8)
    batch = dcf_features(imgs, 4)
    assert batch.shape == (4, 6, 5, HOG_CHANNELS + COLOUR_CHANNELS)
    for i in range(4):
        np.testing.assert_allclose(batch[i], dcf_features(imgs[i], 4), atol=1e-6)


def test_colour_features_of_flat_colours():
    grey = np.full((8, 8, 3), 128, np.uint8)
    f = colour_features(grey, 4)
    assert f.shape == (2, 2, COLOUR_CHANNELS)
    np.testing.assert_allclose(f[..., 0], 128 / 255 - 0.5, atol=1e-6)
    np.testing.assert_allclose(f[..., 1:], 0.0, atol=1e-3)     # no chroma in grey
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    r = colour_features(red, 4)[0, 0]
    lab = cv2.cvtColor(np.array([[[1.0, 0, 0]]], np.float32), cv2.COLOR_RGB2Lab)[0, 0]
    np.testing.assert_allclose(r[1:3], lab[1:] / 128, atol=1e-4)
    assert r[3] == pytest.approx(1 - 1 / 3, abs=1e-2) and r[4] == pytest.approx(-1 / 3, abs=1e-3)


def test_errors_name_the_input():
    with pytest.raises(ValueError, match="smaller than one"):
        hog(np.zeros((3, 3)), cell_size=4)
    with pytest.raises(ValueError, match="RGB"):
        colour_features(np.zeros((8, 8)), 4)
