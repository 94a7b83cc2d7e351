import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from acvm import boxes as B

finite = st.floats(-500, 500, allow_nan=False, allow_infinity=False)
positive = st.floats(0.5, 300, allow_nan=False, allow_infinity=False)
box_st = st.tuples(finite, finite, positive, positive)


def test_iou_hand_computed():
    # two 10x10 boxes overlapping by half: intersection 50, union 150
    assert B.iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(1 / 3)
    # one inside the other: 4/100
    assert B.iou([0, 0, 10, 10], [3, 3, 2, 2]) == pytest.approx(0.04)
    # touching edges share no area
    assert B.iou([0, 0, 10, 10], [10, 0, 10, 10]) == 0.0
    assert B.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0


def test_iou_vectorised_and_degenerate():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 10], [0, 0, 4, 4]])
    b = np.array([[5, 0, 10, 10], [0, 0, 10, 10], [np.nan, 0, 4, 4]])
    out = B.iou(a, b)
    assert out.shape == (3,)
    assert out[0] == pytest.approx(1 / 3)
    assert out[1] == 0.0  # zero width: no area, no NaN
    assert out[2] == 0.0  # NaN box: no overlap
    # broadcasting one box against many
    assert B.iou([0, 0, 10, 10], a[:1]).shape == (1,)


def test_centre_error_hand_computed():
    assert B.centre_error([0, 0, 10, 10], [3, 4, 10, 10]) == pytest.approx(5.0)
    assert B.centre_error([0, 0, 10, 10], [0, 0, 20, 20]) == pytest.approx(np.hypot(5, 5))


def test_polygon_to_box():
    poly = [291.8, 203.6, 396.4, 264.3, 442.2, 185.4, 337.6, 124.7]
    x, y, w, h = B.polygon_to_xywh(poly)
    assert (x, y) == pytest.approx((291.8, 124.7))
    assert (w, h) == pytest.approx((442.2 - 291.8, 264.3 - 124.7))
    with pytest.raises(ValueError, match="even number"):
        B.polygon_to_xywh([1, 2, 3, 4, 5])


@given(box_st)
def test_conversions_round_trip(box):
    b = np.array(box)
    assert np.allclose(B.xyxy_to_xywh(B.xywh_to_xyxy(b)), b, atol=1e-9)
    assert np.allclose(B.cxcywh_to_xywh(B.xywh_to_cxcywh(b)), b, atol=1e-9)
    assert np.allclose(B.polygon_to_xywh(B.xywh_to_polygon(b)), b, atol=1e-9)


@given(box_st, box_st)
def test_iou_bounds_and_symmetry(a, b):
    v = float(B.iou(a, b))
    assert 0.0 <= v <= 1.0 + 1e-12
    assert v == pytest.approx(float(B.iou(b, a)))
    assert float(B.iou(a, a)) == pytest.approx(1.0)


@settings(max_examples=40)
@given(box_st, st.tuples(finite, finite), st.floats(5, 400), st.integers(8, 128))
def test_crop_mapping_round_trip(box, centre, size, out):
    mapped = B.image_to_crop(box, centre, size, out)
    assert np.allclose(B.crop_to_image(mapped, centre, size, out), box, atol=1e-6)


def test_crop_and_resize_samples_the_right_pixels():
    # an image whose pixel value is its column index: a crop's centre column must read the centre
    img = np.tile(np.arange(200, dtype=np.float32), (100, 1))[:, :, None].repeat(3, 2)
    crop = B.crop_and_resize(img, centre=(50.0, 50.0), size=20, out_size=20)
    # 1:1 scale: output pixel j covers image pixel 40 + j exactly
    assert np.allclose(crop[10, :, 0], np.arange(40, 60))
    # a box drawn at known pixels lands where image_to_crop says
    img = np.zeros((120, 160, 3), np.uint8)
    img[40:60, 70:90] = 255  # box (70, 40, 20, 20)
    c = B.crop_and_resize(img, (80, 50), 80, 160)  # 2x magnification
    mapped = B.image_to_crop([70, 40, 20, 20], (80, 50), 80, 160)
    x, y, w, h = mapped
    assert (x, y, w, h) == pytest.approx((60, 60, 40, 40))
    inside = c[int(y) + 2:int(y + h) - 2, int(x) + 2:int(x + w) - 2]
    assert inside.min() == 255
    assert c[int(y) - 3, int(x) + 5].max() == 0


def test_crop_pads_with_mean_colour():
    img = np.zeros((50, 50, 3), np.uint8)
    img[:, :, 0] = 200
    img[:, :, 1] = 100
    crop = B.crop_and_resize(img, (0, 0), 40, 40)  # top-left quarter lies outside the image
    assert tuple(crop[2, 2]) == (200, 100, 0)
    crop = B.crop_and_resize(img, (0, 0), 40, 40, pad_value=(7, 7, 7))
    assert tuple(crop[2, 2]) == (7, 7, 7)


def test_crop_rejects_bad_size():
    with pytest.raises(ValueError, match="positive size"):
        B.crop_and_resize(np.zeros((10, 10, 3), np.uint8), (5, 5), 0, 10)
    with pytest.raises(ValueError, match="finite centre"):
        B.crop_and_resize(np.zeros((10, 10, 3), np.uint8), (np.nan, 5), 4, 10)


def test_context_size():
    # SiamFC: p = (w + h) / 4 on each side -> sqrt((w + 2p)(h + 2p)) with context 0.5
    assert B.context_size(10, 20, 0.5) == pytest.approx(np.sqrt(25 * 35))


def test_clip_box_and_in_image():
    assert B.box_in_image([10, 10, 5, 5], (100, 100))
    assert not B.box_in_image([200, 10, 5, 5], (100, 100))
    assert not B.box_in_image([10, 10, 0, 5], (100, 100))
    cx, cy, w, h = B.xywh_to_cxcywh(B.clip_box([500, -50, 1000, 20], (100, 200)))
    assert 0 <= cx <= 200 and 0 <= cy <= 100 and w == 200 and h == 20


def test_size_bias_and_its_removal_about_the_centre():
    np.testing.assert_allclose(B.size_bias([45.0, 10.0], [50.0, 40.0]), [0.9, 0.5])  # 0.25 clipped to 0.5
    boxes = np.array([[10.0, 20.0, 36.0, 18.0], [0.0, 0.0, 9.0, 9.0]])
    out = B.remove_size_bias(boxes, [0.9, 1.2])
    np.testing.assert_allclose(out[:, 2:], boxes[:, 2:] / [0.9, 1.2])
    np.testing.assert_allclose(out[:, :2] + out[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2)


def test_excess_aspect_hand_computed():
    assert B.excess_aspect(10.0, 30.0, 1.5) == pytest.approx(2.0)        # 3 / 1.5
    assert B.excess_aspect(30.0, 10.0, 1.5) == pytest.approx(0.5)        # (1/3) / (1/1.5)
    assert B.excess_aspect(10.0, 12.0, 1.5) == 1.0                       # within bounds
    assert B.excess_aspect(10.0, 30.0, float("inf")) == 1.0


def test_aspect_view_brings_a_tall_box_within_bounds_and_maps_back():
    image = np.zeros((240, 320, 3), np.uint8)
    image[100:190, 150:180] = 255                                         # a 30×90 white target
    box = np.array([150.0, 100.0, 30.0, 90.0])
    view = B.AspectView(box, image.shape, 1.5)
    seen = view.image(image)
    vb = view.to_view(box)
    assert seen.shape[:2] == (round(240 / np.sqrt(2)), round(320 * np.sqrt(2)))   # area kept
    assert vb[3] / vb[2] == pytest.approx(1.5, rel=0.01)
    # the white pixels of the stretched frame lie inside the mapped box (bilinear edges aside)
    ys, xs = np.nonzero(seen[..., 0] > 127)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()], vb, atol=1.0)
    np.testing.assert_allclose(view.from_view(vb), box, atol=1e-12)
    many = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    np.testing.assert_allclose(view.from_view(view.to_view(many)), many)


def test_aspect_view_is_the_identity_within_bounds():
    image = np.zeros((50, 60, 3), np.uint8)
    view = B.AspectView([10.0, 10.0, 20.0, 30.0], image.shape, 1.5)
    assert view.identity and view.image(image) is image
    np.testing.assert_array_equal(view.to_view([1.0, 2.0, 3.0, 4.0]), [1.0, 2.0, 3.0, 4.0])
