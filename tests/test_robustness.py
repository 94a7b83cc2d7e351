"""Every tracker on scenes made to break it: the target leaves the frame, is fully occluded for
20 frames, is 4×4 pixels, or fills the frame; grey-scale and very large frames; bad init boxes.

Contract checked: no exception, every box finite and inside a bounded region around the image,
and a tracker that reports confidence reports less of it while the target is invisible.
"""
import numpy as np
import pytest

from acvm.registry import available_trackers, make_tracker

H, W = 120, 160


def _background(rng):
    # smooth random texture, so there is structure to track against
    small = rng.integers(40, 200, (H // 8, W // 8, 3)).astype(np.float32)
    import cv2
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def _target(rng, h, w):
    # a random, non-periodic texture: a periodic one would let a tracker lock on a shifted copy
    import cv2
    small = rng.integers(0, 256, (max(2, h // 3), max(2, w // 3), 3)).astype(np.float32)
    patch = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    patch[..., 1] = patch[..., 1] * 0.3  # more saturated than the background
    return patch.clip(0, 255).astype(np.uint8)


def make_scene(kind: str, n: int = 30, seed: int = 0):
    """Frames (list of H×W×3 uint8), boxes (n, 4) with NaN where the target is invisible."""
    rng = np.random.default_rng(seed)
    bg = _background(rng)
    size = {"tiny": (4, 4), "fills": (H - 2, W - 2)}.get(kind, (24, 20))
    patch = _target(rng, *size)
    frames, boxes = [], []
    for i in range(n):
        img = bg.copy()
        h, w = size
        if kind == "leaves":
            x, y = 60 + 5 * i, 50  # leaves through the right edge at frame 20
        elif kind == "fills":
            x, y = 1, 1
        else:
            x, y = 60 + 2 * np.sin(i / 3), 50 + i % 3
        x, y = int(round(x)), int(round(y))
        visible = True
        x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
        if x1 > x0 and y1 > y0:
            img[y0:y1, x0:x1] = patch[y0 - y:y1 - y, x0 - x:x1 - x]
        else:
            visible = False
        if kind == "occluded" and 5 <= i < 25:
            img[30:110, 40:120] = 128  # a grey board hides the target completely
            visible = False
        frames.append(img)
        boxes.append([x, y, w, h] if visible else [np.nan] * 4)
    return frames, np.array(boxes, dtype=float)


TRACKERS = available_trackers()
COURSE_TRACKERS = [t for t in TRACKERS if not t.startswith("opencv-")]


def _run(name, frames, box0):
    tracker = make_tracker(name)
    tracker.init(frames[0], box0)
    out, conf = [], []
    for f in frames[1:]:
        b = np.asarray(tracker.update(f), dtype=float)
        out.append(b)
        conf.append(tracker.confidence)
    return np.array(out), conf


def _assert_sane(name, boxes, shape):
    h, w = shape[:2]
    assert boxes.shape[1:] == (4,), f"{name} returned boxes of shape {boxes.shape[1:]}"
    assert np.isfinite(boxes).all(), f"{name} returned a non-finite box"
    cx, cy = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    assert (boxes[:, 2] > 0).all() and (boxes[:, 3] > 0).all(), f"{name} returned an empty box"
    assert (cx > -w).all() and (cx < 2 * w).all() and (cy > -h).all() and (cy < 2 * h).all(), \
        f"{name} wandered far outside the image"
    assert (boxes[:, 2] < 4 * max(h, w)).all() and (boxes[:, 3] < 4 * max(h, w)).all(), f"{name} box exploded"


#: (tracker, scene) pairs that fail for a known reason; strict: the test fails once they pass
KNOWN_FAILURES = {
    # with max_size_change 1.05 (chosen on validation, docs/validation.md) the mask rarely moves the
    # box and D3S's DCF alone, on the SiamFC backbone's conv4, stops following this small target
    # (5 px a frame over a textured background) at frame 3: it is then confident on the background
    ("d3s", "leaves"): "D3S's DCF loses the target before it leaves (max_size_change 1.05)",
}


def _scene_cases():
    for name in COURSE_TRACKERS + ["opencv-csrt", "opencv-kcf"]:
        for kind in ["leaves", "occluded", "tiny", "fills"]:
            reason = KNOWN_FAILURES.get((name, kind))
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            yield pytest.param(name, kind, marks=marks, id=f"{name}-{kind}")


@pytest.mark.parametrize(("name", "kind"), list(_scene_cases()))
def test_tracker_survives(name, kind):
    frames, gt = make_scene(kind)
    boxes, conf = _run(name, frames, gt[0])
    _assert_sane(name, boxes, frames[0].shape)
    tracker_has_confidence = all(c is not None for c in conf)
    if tracker_has_confidence and kind in ("leaves", "occluded") and not name.startswith("opencv-"):
        conf = np.asarray(conf, dtype=float)
        assert np.isfinite(conf).all(), f"{name} reported a non-finite confidence"
        # compare the first frames (target in full view) with the first frames without it:
        # later, a tracker that keeps learning may grow confident on the background itself
        invisible = np.flatnonzero(~np.isfinite(gt[1:]).all(1))
        first_gone = invisible[0]
        seen = conf[:3].mean()
        hidden = conf[first_gone:first_gone + 3].mean()
        assert hidden < seen, (f"{name} is as confident with the target {'gone' if kind == 'leaves' else 'occluded'} "
                               f"({hidden:.3f}) as when it is visible ({seen:.3f})")


@pytest.mark.parametrize("name", COURSE_TRACKERS)
def test_grey_and_large_frames(name):
    frames, gt = make_scene("occluded", n=4)
    grey = [f.mean(2).astype(np.uint8) for f in frames]  # H×W arrays: converted, not rejected
    boxes, _ = _run(name, grey, gt[0])
    _assert_sane(name, boxes, grey[0].shape)
    import cv2
    big = [cv2.resize(f, (W * 12, H * 12), interpolation=cv2.INTER_NEAREST) for f in frames[:3]]
    boxes, _ = _run(name, big, gt[0] * 12)
    _assert_sane(name, boxes, big[0].shape)


@pytest.mark.parametrize("name", COURSE_TRACKERS + ["opencv-csrt"])
@pytest.mark.parametrize("box, message", [
    ([10, 10, 0, 5], "empty"),
    ([10, 10, -3, 5], "empty"),
    ([1000, 10, 10, 10], "outside"),
    ([np.nan, 10, 10, 10], "NaN"),
    ([1, 2, 3], "4 numbers"),
])
def test_bad_init_box_is_named(name, box, message):
    frames, _ = make_scene("tiny", n=2)
    with pytest.raises(ValueError, match=message):
        make_tracker(name).init(frames[0], box)


@pytest.mark.parametrize("name", COURSE_TRACKERS)
def test_bad_image_is_named(name):
    frames, gt = make_scene("tiny", n=2)
    with pytest.raises((ValueError, TypeError), match="image"):
        make_tracker(name).init(np.zeros((10, 10, 7), np.uint8), gt[0])
    nan_frame = frames[0].astype(np.float32)
    nan_frame[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make_tracker(name).init(nan_frame, gt[0])
