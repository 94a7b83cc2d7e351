"""Property-based tests (hypothesis): box geometry against independent formulas, and the tracker
contract for every registered tracker on random small sequences.

Bounded so that the file runs in well under two minutes on 2 cores: few examples, no deadline,
derandomised (the same examples every run, so CI time does not vary), no example database.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acvm.boxes import (box_in_image, crop_and_resize, crop_to_image, cxcywh_to_xywh, image_to_crop, iou,
                        polygon_to_xywh, xywh_to_cxcywh, xywh_to_polygon, xywh_to_xyxy, xyxy_to_xywh)
from acvm.registry import available_trackers, make_tracker

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None)
SLOW = settings(max_examples=5, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

coord = st.floats(-500, 500, allow_nan=False, allow_infinity=False)
side = st.floats(0.01, 300, allow_nan=False, allow_infinity=False)
boxes = st.tuples(coord, coord, side, side).map(np.array)


# --- box conversions --------------------------------------------------------------------------

@FAST
@given(boxes)
def test_conversions_match_hand_formulas_and_invert(b):
    x, y, w, h = b
    assert np.allclose(xywh_to_xyxy(b), [x, y, x + w, y + h])
    assert np.allclose(xywh_to_cxcywh(b), [x + w / 2, y + h / 2, w, h])
    assert np.allclose(xyxy_to_xywh(xywh_to_xyxy(b)), b, atol=1e-9)
    assert np.allclose(cxcywh_to_xywh(xywh_to_cxcywh(b)), b, atol=1e-9)
    poly = xywh_to_polygon(b)
    assert np.allclose(poly, [x, y, x + w, y, x + w, y + h, x, y + h])
    assert np.allclose(polygon_to_xywh(poly), b, atol=1e-9)


@FAST
@given(st.lists(boxes, min_size=1, max_size=5))
def test_conversions_work_on_stacks(bs):
    arr = np.stack(bs)
    assert np.allclose(xywh_to_xyxy(arr), np.stack([xywh_to_xyxy(b) for b in bs]))
    assert iou(arr, arr).shape == (len(bs),)


# --- IoU against a pixel count ----------------------------------------------------------------

int_box = st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(1, 20), st.integers(1, 20))


def _mask(b, size=64):
    m = np.zeros((size, size), bool)
    x, y, w, h = b
    m[y:y + h, x:x + w] = True
    return m


@FAST
@given(int_box, int_box)
def test_iou_equals_the_pixel_count(a, b):
    ma, mb = _mask(a), _mask(b)
    brute = np.count_nonzero(ma & mb) / np.count_nonzero(ma | mb)
    assert float(iou(np.array(a, float), np.array(b, float))) == pytest.approx(brute, abs=1e-12)
    assert float(iou(np.array(b, float), np.array(a, float))) == pytest.approx(brute, abs=1e-12)


@FAST
@given(boxes, boxes)
def test_iou_bounds_and_identity(a, b):
    v = float(iou(a, b))
    assert 0.0 <= v <= 1.0 + 1e-12
    assert float(iou(a, a)) == pytest.approx(1.0)
    # scaling both boxes about the origin keeps the IoU
    assert float(iou(a * 2.5, b * 2.5)) == pytest.approx(v, abs=1e-9)


# --- crops ------------------------------------------------------------------------------------

@FAST
@given(st.tuples(coord, coord), st.tuples(side, side), st.tuples(st.integers(1, 300), st.integers(1, 300)), boxes)
def test_image_to_crop_and_back(centre, size, out, b):
    crop_box = image_to_crop(b, centre, size, out)
    assert np.allclose(crop_to_image(crop_box, centre, size, out), b, rtol=1e-9, atol=1e-6)
    # the cropped region itself becomes the whole crop (0, 0, out_w, out_h)
    region = np.array([centre[0] - size[0] / 2, centre[1] - size[1] / 2, size[0], size[1]])
    assert np.allclose(image_to_crop(region, centre, size, out), [0, 0, out[0], out[1]], atol=1e-6)


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(2, 20), st.integers(-25, 40), st.integers(-25, 40))
def test_unscaled_crop_is_the_image_slice_with_padding(seed, s, x0, y0):
    # size == out_size and a pixel-aligned region: every output pixel is exactly one image pixel
    # (linear interpolation at a pixel centre), or the padding colour where the region leaves the image
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    pad = (7, 8, 9)
    crop = crop_and_resize(img, (x0 + s / 2, y0 + s / 2), s, s, pad_value=pad)
    expected = np.empty((s, s, 3), np.uint8)
    expected[:] = pad
    ys, xs = np.arange(y0, y0 + s), np.arange(x0, x0 + s)
    inside_y, inside_x = (ys >= 0) & (ys < 30), (xs >= 0) & (xs < 40)
    expected[np.ix_(inside_y, inside_x)] = img[np.ix_(ys[inside_y], xs[inside_x])]
    assert np.array_equal(crop, expected)


# --- every tracker on random small sequences --------------------------------------------------

TRACKERS = available_trackers()


@st.composite
def small_sequences(draw, lo=24, hi=96):
    """3-5 frames of random images (uint8, float 0..1, float 0..255 or uint16), ``lo``-``hi`` px, and
    a valid first box (at least 4 px, inside the image)."""
    h, w = draw(st.integers(lo, hi)), draw(st.integers(lo, hi))
    n = draw(st.integers(3, 5))
    kind = draw(st.sampled_from(["uint8", "float01", "float255", "uint16"]))
    bw, bh = draw(st.integers(4, max(4, w // 2))), draw(st.integers(4, max(4, h // 2)))
    x, y = draw(st.integers(0, w - bw)), draw(st.integers(0, h - bh))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 3)).astype(np.float64)
    frames = []
    for i in range(n):
        f = np.clip(np.roll(base, (i, 2 * i), axis=(0, 1)) + rng.normal(0, 8, base.shape), 0, 255)
        frames.append({"uint8": lambda: f.astype(np.uint8), "float01": lambda: (f / 255).astype(np.float32),
                       "float255": lambda: f, "uint16": lambda: (f * 257).astype(np.uint16)}[kind]())
    return frames, np.array([x, y, bw, bh], dtype=np.float64)


@pytest.mark.parametrize("name", TRACKERS)
def test_every_tracker_keeps_the_contract_on_random_sequences(name):
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)       # small tensors: one thread is faster on a busy 2-core machine
    try:
        _contract(name)
    finally:
        torch.set_num_threads(before)


#: OpenCV's TLD takes images of 100 px or more only (acvm.opencv_trackers.LIMITS): give it those
SIZES = {"opencv-tld": (100, 128)}


def _contract(name):
    @SLOW
    @given(small_sequences(*SIZES.get(name, (24, 96))))
    def run(seq):
        frames, box0 = seq
        tracker = make_tracker(name)
        try:
            tracker.init(frames[0], box0)
        except ValueError as exc:
            # only OpenCV's guard may refuse a valid box, and it says which limit (acvm.opencv_trackers.LIMITS)
            assert name.startswith("opencv-") and f"{name} needs" in str(exc), f"{name} refused {box0}: {exc}"
            return
        for f in frames[1:]:
            b = tracker.update(f)
            assert isinstance(b, np.ndarray) and b.dtype == np.float64 and b.shape == (4,), \
                f"{name} returned {type(b).__name__} {getattr(b, 'dtype', '')} {getattr(b, 'shape', '')}"
            assert np.isfinite(b).all(), f"{name} returned a non-finite box {b}"
            assert box_in_image(b, f.shape), f"{name} returned {b}, not overlapping the {f.shape[1]}×{f.shape[0]} image"

    run()
