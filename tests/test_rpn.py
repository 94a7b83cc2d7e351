"""Anchors, the delta code and anchor labels, against hand-computed cases and slow references."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from acvm import rpn
from acvm.boxes import iou


def test_anchor_shapes_keep_area_and_ratio():
    shapes = rpn.anchor_shapes(ratios=(0.25, 1.0, 2.0), scales=(4.0, 8.0), stride=8)
    assert shapes.shape == (6, 2) and shapes.dtype == np.float64
    # ratio-major: rows 0, 1 have ratio 0.25 with scales 4, 8
    np.testing.assert_allclose(shapes[0], [64.0, 16.0])          # w = 32 / 0.5, h = 32 * 0.5
    np.testing.assert_allclose(shapes[1], [128.0, 32.0])
    np.testing.assert_allclose(shapes[2], [32.0, 32.0])
    np.testing.assert_allclose(shapes[:, 1] / shapes[:, 0], [0.25, 0.25, 1, 1, 2, 2])
    np.testing.assert_allclose(shapes[:, 0] * shapes[:, 1], np.tile([32.0 ** 2, 64.0 ** 2], 3))


def test_anchor_shapes_reject_bad_input():
    with pytest.raises(ValueError, match="ratios"):
        rpn.anchor_shapes(ratios=(0.0, 1.0))
    with pytest.raises(ValueError):
        rpn.anchor_shapes(scales=())


def test_make_anchors_grid_by_hand():
    shapes = np.array([[10.0, 20.0], [30.0, 30.0]])
    a = rpn.make_anchors((3, 5), stride=8, shapes=shapes, centre=(100.0, 50.0))
    assert a.shape == (2, 3, 5, 4) and a.dtype == np.float64
    # the middle cell sits on the centre
    np.testing.assert_allclose(a[0, 1, 2], [95.0, 40.0, 10.0, 20.0])
    np.testing.assert_allclose(a[1, 1, 2], [85.0, 35.0, 30.0, 30.0])
    # top-left cell: two columns left and one row up, 8 px each
    np.testing.assert_allclose(a[0, 0, 0], [95.0 - 16, 40.0 - 8, 10.0, 20.0])
    # every anchor of column j has the same centre x, whatever its shape
    cx = a[..., 0] + a[..., 2] / 2
    np.testing.assert_allclose(cx, np.broadcast_to(100 + (np.arange(5) - 2) * 8.0, cx.shape))


def test_encode_hand_cases():
    anchor = [0.0, 0.0, 10.0, 20.0]                       # centre (5, 10)
    # same box: all zeros
    np.testing.assert_allclose(rpn.encode(anchor, anchor), np.zeros(4), atol=1e-12)
    # moved right by half a width and down by a whole height
    np.testing.assert_allclose(rpn.encode([5.0, 20.0, 10.0, 20.0], anchor), [0.5, 1.0, 0.0, 0.0])
    # twice as wide around the same centre, half as tall
    np.testing.assert_allclose(rpn.encode([-5.0, 5.0, 20.0, 10.0], anchor), [0.0, 0.0, np.log(2), -np.log(2)])


def test_decode_hand_case():
    anchor = np.array([10.0, 10.0, 20.0, 40.0])           # centre (20, 30)
    box = rpn.decode([0.25, -0.5, np.log(3), 0.0], anchor)
    # centre (20 + 5, 30 - 20), size (60, 40)
    np.testing.assert_allclose(box, [25 - 30, 10 - 20, 60, 40])


def test_decode_broadcasts_over_anchor_grid():
    anchors = rpn.make_anchors(4, 8, rpn.anchor_shapes(), centre=(32, 32))
    boxes = rpn.decode(np.zeros(4), anchors)
    np.testing.assert_allclose(boxes, anchors)
    assert boxes.shape == anchors.shape


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=2, max_size=2),
       st.lists(st.floats(0.5, 80), min_size=2, max_size=2),
       st.lists(st.floats(-50, 50), min_size=2, max_size=2),
       st.lists(st.floats(0.5, 80), min_size=2, max_size=2))
def test_encode_decode_round_trip(xy, wh, axy, awh):
    box, anchor = np.array(xy + wh), np.array(axy + awh)
    np.testing.assert_allclose(rpn.decode(rpn.encode(box, anchor), anchor), box, rtol=1e-9, atol=1e-9)
    d = np.array([xy[0] / 50, xy[1] / 50, wh[0] / 80, -wh[1] / 80])
    np.testing.assert_allclose(rpn.encode(rpn.decode(d, anchor), anchor), d, rtol=1e-9, atol=1e-9)


def test_encode_rejects_empty_boxes():
    with pytest.raises(ValueError, match="positive"):
        rpn.encode([0, 0, 0, 5], [0, 0, 5, 5])


def test_label_anchors_against_loop():
    anchors = rpn.make_anchors(7, 8, rpn.anchor_shapes(), centre=(64, 64))
    target = np.array([50.0, 40.0, 30.0, 50.0])
    labels = rpn.label_anchors(anchors, target, pos_iou=0.6, neg_iou=0.3)
    assert labels.shape == anchors.shape[:-1] and labels.dtype == np.int64
    flat_a = anchors.reshape(-1, 4)
    overlaps = np.array([iou(a, target) for a in flat_a])
    expected = np.where(overlaps >= 0.6, 1, np.where(overlaps < 0.3, 0, -1))
    expected[np.argmax(overlaps)] = 1
    np.testing.assert_array_equal(labels.reshape(-1), expected)
    assert (labels == 1).sum() >= 1 and (labels == 0).sum() > (labels == 1).sum()


def test_label_anchors_best_anchor_is_positive_even_when_poor():
    anchors = np.array([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 10.0, 10.0]])
    labels = rpn.label_anchors(anchors, [5.0, 5.0, 30.0, 30.0], pos_iou=0.6, neg_iou=0.05)
    # IoU of the first is 25/1000 < 0.05, still the best -> positive
    np.testing.assert_array_equal(labels, [1, 0])
    # a target that overlaps nothing gives no positive at all
    np.testing.assert_array_equal(rpn.label_anchors(anchors, [500.0, 500.0, 5.0, 5.0]), [0, 0])


def test_sample_labels_limits_counts_and_keeps_classes():
    labels = np.array([1] * 30 + [0] * 200 + [-1] * 20)
    out = rpn.sample_labels(labels, num_pos=16, num_total=64, rng=0)
    assert (out == 1).sum() == 16 and (out == 0).sum() == 48
    # a kept label never changes class
    kept = out >= 0
    np.testing.assert_array_equal(out[kept], labels[kept])
    # few positives: all kept, negatives fill up
    out = rpn.sample_labels(np.array([1, 1, 0, 0, 0, -1]), num_pos=16, num_total=4, rng=1)
    assert (out == 1).sum() == 2 and (out == 0).sum() == 2 and out[5] == -1
    # seeded: same result twice
    np.testing.assert_array_equal(rpn.sample_labels(labels, rng=3), rpn.sample_labels(labels, rng=3))
