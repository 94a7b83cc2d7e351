"""acvm.correlation against independent references: OpenCV, SciPy, explicit loops and np.roll."""
import cv2
import numpy as np
import pytest
import scipy.signal
import torch

from acvm.correlation import (circular_correlate, correlate_fft, correlate_spatial, cosine_window,
                              gaussian_label, normalized_cross_correlation, psr, subpixel_peak,
                              xcorr, xcorr_depthwise, xcorr_loop)
from acvm.data import sequences_dir, load_sequence


def _real_patch_and_template():
    root = sequences_dir()
    if root is None or not (root / "OTB_Human7").is_dir():
        pytest.skip("the shared sequences are not available")
    seq = load_sequence(root / "OTB_Human7")
    frame = seq[0]
    x, y, w, h = np.round(seq.boxes[0]).astype(int)
    region = frame[max(0, y - 20):y + h + 20, max(0, x - 20):x + w + 20]
    template = frame[y:y + h, x:x + w]
    return region, template, (y - max(0, y - 20), x - max(0, x - 20))


@pytest.mark.parametrize("channels", [None, 1, 3, 5])
def test_spatial_and_fft_equal_opencv_tm_ccorr_on_random_input(channels):
    rng = np.random.default_rng(channels or 0)
    shape_f = (37, 52) if channels is None else (37, 52, channels)
    shape_h = (9, 14) if channels is None else (9, 14, channels)
    f = rng.random(shape_f).astype(np.float32)
    h = rng.random(shape_h).astype(np.float32)
    expected = cv2.matchTemplate(f, h, cv2.TM_CCORR) if (channels or 1) <= 4 else \
        sum(cv2.matchTemplate(f[:, :, c], h[:, :, c], cv2.TM_CCORR) for c in range(channels))
    for fn in (correlate_spatial, correlate_fft):
        got = fn(f, h)
        assert got.shape == (29, 39) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_spatial_and_fft_equal_scipy_correlate_in_float64():
    rng = np.random.default_rng(1)
    f, h = rng.normal(size=(40, 33)), rng.normal(size=(7, 12))
    expected = scipy.signal.correlate(f, h, mode="valid", method="direct")
    for fn in (correlate_spatial, correlate_fft):
        got = fn(f, h)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    # multi-channel: scipy correlates the 3-D arrays, the channel axis collapses to 1
    f3, h3 = rng.normal(size=(25, 30, 3)), rng.normal(size=(6, 5, 3))
    expected3 = scipy.signal.correlate(f3, h3, mode="valid")[:, :, 0]
    np.testing.assert_allclose(correlate_spatial(f3, h3), expected3, atol=1e-10)
    np.testing.assert_allclose(correlate_fft(f3, h3), expected3, atol=1e-10)


def test_template_as_large_as_the_image_gives_one_value():
    rng = np.random.default_rng(2)
    f = rng.random((8, 8))
    assert correlate_fft(f, f).shape == (1, 1)
    np.testing.assert_allclose(correlate_spatial(f, f)[0, 0], (f * f).sum())


def test_real_frame_all_methods_agree_with_opencv_and_peak_on_the_target():
    region, template, (ty, tx) = _real_patch_and_template()
    f = region.astype(np.float32)
    h = template.astype(np.float32)
    cv_ccorr = cv2.matchTemplate(f, h, cv2.TM_CCORR)
    np.testing.assert_allclose(correlate_spatial(f, h), cv_ccorr, rtol=1e-4)
    np.testing.assert_allclose(correlate_fft(f, h), cv_ccorr, rtol=1e-4)
    ncc = normalized_cross_correlation(f, h)
    np.testing.assert_allclose(ncc, cv2.matchTemplate(f, h, cv2.TM_CCORR_NORMED), atol=1e-5)
    coeff = normalized_cross_correlation(f, h, zero_mean=True)
    np.testing.assert_allclose(coeff, cv2.matchTemplate(f, h, cv2.TM_CCOEFF_NORMED), atol=1e-4)
    # the template was cut from this frame: the coefficient is 1 exactly where it came from
    assert np.unravel_index(np.argmax(coeff), coeff.shape) == (ty, tx)
    assert coeff[ty, tx] == pytest.approx(1.0, abs=1e-9)


def test_ncc_is_invariant_to_brightness_and_bounded():
    rng = np.random.default_rng(3)
    f = rng.random((30, 30, 3))
    h = f[5:15, 8:20].copy()
    a = normalized_cross_correlation(f, h)
    np.testing.assert_allclose(normalized_cross_correlation(3.0 * f, h), a, atol=1e-12)
    b = normalized_cross_correlation(f, h, zero_mean=True)
    np.testing.assert_allclose(normalized_cross_correlation(2.0 * f + 5.0, h, zero_mean=True), b, atol=1e-9)
    assert a.max() <= 1 + 1e-12 and b.min() >= -1 - 1e-12
    # a window of zeros has no direction: 0, not NaN
    f[:] = 0
    assert np.all(normalized_cross_correlation(f, h) == 0)


def test_input_errors_name_the_problem():
    with pytest.raises(ValueError, match="channels"):
        correlate_spatial(np.zeros((9, 9, 3)), np.zeros((3, 3, 2)))
    with pytest.raises(ValueError, match="fit inside"):
        correlate_fft(np.zeros((5, 5)), np.zeros((6, 2)))
    with pytest.raises(ValueError, match="same shape"):
        circular_correlate(np.zeros((5, 5)), np.zeros((5, 4)))


def test_circular_correlation_equals_roll_sum_and_finds_the_shift():
    rng = np.random.default_rng(4)
    f, h = rng.normal(size=(9, 12, 2)), rng.normal(size=(9, 12, 2))
    expected = np.array([[(np.roll(f, (-u, -v), axis=(0, 1)) * h).sum() for v in range(12)] for u in range(9)])
    np.testing.assert_allclose(circular_correlate(f, h), expected, atol=1e-10)
    moved = np.roll(h, (3, -4), axis=(0, 1))
    peak = np.unravel_index(np.argmax(circular_correlate(moved, h)), (9, 12))
    assert peak == (3, 12 - 4)


def test_xcorr_equals_numpy_correlation_per_pair():
    torch.manual_seed(0)
    z, x = torch.randn(3, 4, 5, 6, dtype=torch.float64), torch.randn(3, 4, 16, 13, dtype=torch.float64)
    out, depth = xcorr(z, x), xcorr_depthwise(z, x)
    assert out.shape == (3, 1, 12, 8) and depth.shape == (3, 4, 12, 8)
    for b in range(3):
        xb, zb = x[b].permute(1, 2, 0).numpy(), z[b].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(out[b, 0].numpy(), correlate_spatial(xb, zb), atol=1e-10)
        for c in range(4):
            np.testing.assert_allclose(depth[b, c].numpy(), correlate_spatial(xb[:, :, c], zb[:, :, c]), atol=1e-10)
    torch.testing.assert_close(xcorr_loop(z, x), out)
    torch.testing.assert_close(depth.sum(1, keepdim=True), out)


def test_xcorr_is_differentiable_and_checks_shapes():
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    xcorr(z, x).sum().backward()
    # d/dz of Σ_uv Σ x[u+i, v+j] z[i, j] is the sum of x over the window positions
    expected = torch.stack([torch.stack([x[:, :, i:i + 6, j:j + 6].sum((2, 3)) for j in range(4)], -1)
                            for i in range(4)], -2)
    torch.testing.assert_close(z.grad, expected.detach(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="batch and channels"):
        xcorr(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 9, 9))
    with pytest.raises(ValueError, match="larger"):
        xcorr_depthwise(torch.zeros(1, 1, 10, 4), torch.zeros(1, 1, 9, 9))


@pytest.mark.parametrize("shape", [(8, 9), (15, 20), (7, 7)])
def test_gaussian_label_centred_and_circular(shape):
    g = gaussian_label(shape, 2.0)
    assert g.shape == shape and g.dtype == np.float64
    assert np.unravel_index(np.argmax(g), shape) == (shape[0] // 2, shape[1] // 2) and g.max() == 1.0
    # one step from the peak the value is exp(-1/(2σ²))
    assert g[shape[0] // 2, shape[1] // 2 + 1] == pytest.approx(np.exp(-1 / 8))
    gc = gaussian_label(shape, 2.0, circular=True)
    np.testing.assert_allclose(gc, np.fft.ifftshift(g), atol=1e-15)
    assert gc[0, 0] == 1.0
    off = gaussian_label(shape, 1.5, centre=(2.5, 3.0))
    assert off[2, 3] == pytest.approx(off[3, 3]) and off[2, 3] == pytest.approx(np.exp(-0.25 / 4.5))
    with pytest.raises(ValueError, match="sigma"):
        gaussian_label(shape, 0.0)


def test_cosine_window_is_scipy_hann():
    w = cosine_window((10, 17))
    np.testing.assert_allclose(w, np.outer(scipy.signal.windows.hann(10), scipy.signal.windows.hann(17)))


def test_psr_matches_definition_and_separates_sharp_from_flat():
    rng = np.random.default_rng(5)
    r = rng.normal(scale=0.1, size=(40, 40))
    r[20, 13] = 5.0
    side = np.ones_like(r, bool)
    side[15:26, 8:19] = False
    assert psr(r) == pytest.approx((5.0 - r[side].mean()) / r[side].std())
    assert psr(r) > 30
    assert psr(rng.normal(size=(40, 40))) < 6
    assert psr(np.ones((5, 5))) == 0.0


def test_subpixel_peak_recovers_a_sampled_parabola():
    ys, xs = np.mgrid[0:15, 0:20]
    cy, cx = 6.3, 11.8
    r = -((ys - cy) ** 2) - 0.5 * (xs - cx) ** 2
    y, x = subpixel_peak(r)
    assert y == pytest.approx(cy, abs=1e-9) and x == pytest.approx(cx, abs=1e-9)
    # a peak on the border of a circular response is refined with wrapped neighbours
    g = np.roll(-((ys - 7.0 - 0.3) ** 2) - (xs - 10.0) ** 2, (-7, -10), axis=(0, 1))
    y, x = subpixel_peak(g, circular=True)
    assert y == pytest.approx(0.3, abs=1e-9) and x == pytest.approx(0.0, abs=1e-9)
    assert subpixel_peak(g, circular=False) == (0.0, 0.0)
