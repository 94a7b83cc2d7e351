"""acvm.dcf: the closed form against a spatial least-squares solve, and the trackers on scenes with known motion."""
import cv2
import numpy as np
import pytest

from acvm.correlation import circular_correlate, gaussian_label
from acvm.dcf import (DCFTracker, MOSSETracker, NCCTracker, ResponseViewer, closed_form_filter,
                      filter_response, filter_terms, fft2, mosse_preprocess, wrapped_peak)
from acvm.registry import make_tracker


def _ridge_in_space(f, g, lam):
    """min_h ‖f ⋆ h − g‖² + λ‖h‖² with the circulant data matrix written out (the slow, obvious way)."""
    f = f if f.ndim == 3 else f[:, :, None]
    H, W, D = f.shape
    # row (u, v) of the data matrix holds f shifted by (u, v): (f ⋆ h)[u, v] = Σ f[u+i, v+j] h[i, j]
    X = np.stack([np.roll(f, (-u, -v), axis=(0, 1)).ravel() for u in range(H) for v in range(W)])
    h = np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ g.ravel())
    return h.reshape(H, W, D)


@pytest.mark.parametrize("channels", [None, 3])
def test_closed_form_equals_spatial_ridge_regression(channels):
    rng = np.random.default_rng(0)
    shape = (6, 7) if channels is None else (6, 7, channels)
    f, z = rng.normal(size=shape), rng.normal(size=shape)
    g = gaussian_label((6, 7), 1.0, circular=True)
    lam = 0.1
    H_conj = closed_form_filter(f, g, lam)
    assert H_conj.shape == shape and np.iscomplexobj(H_conj)
    if channels is None:
        h = _ridge_in_space(f, g, lam)[:, :, 0]
        expected = circular_correlate(z, h)
        np.testing.assert_allclose(filter_response(H_conj, z), expected, atol=1e-9)
    else:
        # one training patch: the per-channel closed form is the exact multi-channel solution
        h = _ridge_in_space(f, g, lam)
        np.testing.assert_allclose(filter_response(H_conj, z), circular_correlate(z, h), atol=1e-9)


def test_filter_reproduces_g_on_its_training_patch_when_lambda_is_tiny():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(16, 20))
    g = gaussian_label((16, 20), 2.0, circular=True)
    np.testing.assert_allclose(filter_response(closed_form_filter(f, g, 1e-10), f), g, atol=1e-5)
    A, B = filter_terms(fft2(f), fft2(g))
    np.testing.assert_allclose(A / (B + 1e-10), closed_form_filter(f, g, 1e-10))


def test_wrapped_peak_reads_circular_displacements():
    g = gaussian_label((20, 30), 2.0, circular=True)
    assert wrapped_peak(np.roll(g, (3, -5), axis=(0, 1))) == pytest.approx((3.0, -5.0), abs=1e-9)
    assert wrapped_peak(np.roll(g, (-9, 14), axis=(0, 1))) == pytest.approx((-9.0, 14.0), abs=1e-9)


def test_mosse_preprocess_normalises():
    p = np.random.default_rng(2).integers(0, 256, (20, 24)).astype(np.uint8)
    x = mosse_preprocess(p, np.ones((20, 24)))
    assert abs(x.mean()) < 1e-12 and np.linalg.norm(x) == pytest.approx(1.0, abs=1e-4)
    # gain and offset in the log domain do not matter
    q = np.expm1(3.0 * np.log1p(p.astype(np.float64)) + 1.0)
    np.testing.assert_allclose(mosse_preprocess(q), mosse_preprocess(p), atol=1e-6)
    w = np.outer(np.hanning(20), np.hanning(24))
    np.testing.assert_allclose(mosse_preprocess(p), x * w, atol=1e-12)


def _scene(n_frames=20, step=(3, 2), scale_per_frame=1.0, size=(240, 320), seed=0):
    """A textured target on a textured background, moving by ``step`` and scaling per frame; exact boxes."""
    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.integers(0, 256, (*size, 3)).astype(np.uint8), (0, 0), 3)
    target = cv2.GaussianBlur(rng.integers(0, 256, (60, 50, 3)).astype(np.uint8), (0, 0), 1.5)
    frames, boxes = [], []
    for t in range(n_frames):
        s = scale_per_frame ** t
        w, h = 50 * s, 60 * s
        cx, cy = 100 + step[0] * t, 90 + step[1] * t
        frame = bg.copy()
        patch = cv2.resize(target, (int(round(w)), int(round(h))), interpolation=cv2.INTER_LINEAR)
        x0, y0 = int(round(cx - patch.shape[1] / 2)), int(round(cy - patch.shape[0] / 2))
        # paste the part of the patch that lies inside the frame
        ys, xs = slice(max(y0, 0), min(y0 + patch.shape[0], size[0])), slice(max(x0, 0), min(x0 + patch.shape[1], size[1]))
        if ys.start < ys.stop and xs.start < xs.stop:
            frame[ys, xs] = patch[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        frames.append(frame)
        boxes.append([x0, y0, patch.shape[1], patch.shape[0]])
    return frames, np.array(boxes, dtype=np.float64)


@pytest.mark.parametrize("name", ["ncc", "mosse", "dcf"])
def test_trackers_follow_a_translating_target(name):
    frames, boxes = _scene()
    tracker = make_tracker(name)
    tracker.init(frames[0], boxes[0])
    for frame, gt in zip(frames[1:], boxes[1:]):
        box = tracker.update(frame)
        assert box.shape == (4,) and box.dtype == np.float64
        assert np.abs((box[:2] + box[2:] / 2) - (gt[:2] + gt[2:] / 2)).max() < 2.0
    assert tracker.response is not None and tracker.confidence is not None and np.isfinite(tracker.confidence)


def test_dcf_estimates_scale():
    frames, boxes = _scene(n_frames=25, step=(1, 1), scale_per_frame=1.012)
    true_scale = boxes[-1, 2] / boxes[0, 2]
    assert true_scale > 1.3
    scales = {}
    for lr in (0.01, None):
        t = DCFTracker() if lr is None else DCFTracker(learning_rate=lr)
        t.init(frames[0], boxes[0])
        for frame in frames[1:]:
            t.update(frame)
        scales[lr] = t.scale
    # with DSST's slow translation model the centre stays exact and the scale filter follows the
    # growth to within 6 %; the default (η = 0.03, chosen on real video) adapts the translation
    # filter to the growing patch, its centre moves a pixel or two and the scale lags (1.25 of 1.34)
    assert scales[0.01] == pytest.approx(true_scale, rel=0.06)
    assert np.log(scales[None]) > 0.7 * np.log(true_scale)
    assert t.scale_response.shape == (t.settings.n_scales,)
    # a tracker without scale search keeps the size
    m = MOSSETracker()
    m.init(frames[0], boxes[0])
    assert np.allclose(m.update(frames[1])[2:], boxes[0, 2:])


@pytest.mark.parametrize("name", ["ncc", "mosse", "dcf"])
def test_target_leaving_the_frame_and_blank_frames_give_finite_boxes(name):
    frames, boxes = _scene(n_frames=30, step=(12, 0))   # runs off the right edge
    blank = np.zeros_like(frames[0])
    tracker = make_tracker(name)
    tracker.init(frames[0], boxes[0])
    for frame in frames[1:] + [blank] * 3:
        box = tracker.update(frame)
        assert np.isfinite(box).all() and box[2] > 0 and box[3] > 0
        cx, cy = box[:2] + box[2:] / 2
        assert 0 <= cx <= 320 and 0 <= cy <= 240
    # a target initialised in a corner, half outside
    tracker = make_tracker(name)
    tracker.init(frames[0], [-20, -25, 50, 60])
    assert np.isfinite(tracker.update(frames[1])).all()


@pytest.mark.parametrize("cls", [NCCTracker, MOSSETracker, DCFTracker])
def test_init_rejects_bad_input_with_clear_errors(cls):
    frame = np.zeros((50, 60, 3), np.uint8)
    with pytest.raises(ValueError, match="initial box"):
        cls().init(frame, [10, 10, 0, 5])
    with pytest.raises(ValueError, match="outside"):
        cls().init(frame, [100, 100, 5, 5])
    with pytest.raises(TypeError, match="image"):
        cls().init([[0]], [1, 1, 5, 5])


def test_settings_are_frozen_and_overridable():
    t = DCFTracker(padding=1.5, colour=False)
    assert t.settings.padding == 1.5 and not t.settings.colour
    with pytest.raises(Exception):
        t.settings.padding = 3.0
    with pytest.raises(TypeError):
        DCFTracker(not_a_setting=1)


def test_response_viewer_callback_draws_and_caches():
    import matplotlib.pyplot as plt
    frames, boxes = _scene(n_frames=6)
    v = ResponseViewer(frames, boxes, name="scene")
    fig = v.draw(3, sigma=2.0, lam=1e-2, learning_rate=0.125)
    assert len(fig.axes) == 3   # frame, response, colour bar
    plt.close(fig)
    run = v.run(2.0, 1e-2, 0.125)
    assert run["boxes"].shape == (6, 4) and len(run["responses"]) == 6
    assert v.run(2.0, 1e-2, 0.125) is run
    # the response of a well-tracked frame peaks near the centre of the (centred) map
    r = run["responses"][3]
    peak = np.unravel_index(np.argmax(r), r.shape)
    assert abs(peak[0] - r.shape[0] // 2) <= 3 and abs(peak[1] - r.shape[1] // 2) <= 3
    with pytest.raises(IndexError):
        v.draw(6)
