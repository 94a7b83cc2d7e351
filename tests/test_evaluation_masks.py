"""DAVIS mask measures (J, F) in acvm.evaluation, against masks small enough to score by hand."""
import numpy as np
import pytest

from acvm.evaluation import (boundary_precision_recall, boundary_tolerance_px, contour_accuracy,
                             mask_boundary, mask_scores, region_similarity)


def square(shape, top, left, size):
    m = np.zeros(shape, bool)
    m[top:top + size, left:left + size] = True
    return m


# ---- J ------------------------------------------------------------------------------------

def test_j_of_two_overlapping_rows_is_one_third():
    # intersection 1 pixel, union 3 pixels
    assert region_similarity([[1, 1, 0]], [[0, 1, 1]]) == pytest.approx(1 / 3)


def test_j_of_squares_shifted_by_one_column():
    a = square((6, 6), 1, 1, 4)
    b = square((6, 6), 1, 2, 4)
    # 4x3 = 12 shared pixels, 16 + 16 - 12 = 20 in the union
    assert region_similarity(a, b) == pytest.approx(12 / 20)
    assert region_similarity(b, a) == pytest.approx(12 / 20)


def test_j_davis_convention_for_empty_masks():
    empty = np.zeros((5, 5), bool)
    assert region_similarity(empty, empty) == 1.0
    assert region_similarity(empty, square((5, 5), 0, 0, 2)) == 0.0
    assert region_similarity(square((5, 5), 0, 0, 2), empty) == 0.0


def test_j_accepts_0_1_integers_and_rejects_mismatched_shapes():
    assert region_similarity(np.array([[0, 2]]), np.array([[0, 1]])) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        region_similarity(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="mask must be a 2-D"):
        region_similarity(np.zeros((3, 3, 1)), np.zeros((3, 3)))


# ---- boundaries ---------------------------------------------------------------------------

def test_boundary_of_a_square_is_its_outer_ring():
    expected = np.array([[0, 0, 0, 0, 0, 0],
                         [0, 1, 1, 1, 1, 0],
                         [0, 1, 0, 0, 1, 0],
                         [0, 1, 0, 0, 1, 0],
                         [0, 1, 1, 1, 1, 0],
                         [0, 0, 0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(mask_boundary(square((6, 6), 1, 1, 4)), expected)


def test_boundary_closes_at_the_image_border():
    b = mask_boundary(np.ones((3, 3), bool))
    expected = np.ones((3, 3), bool)
    expected[1, 1] = False
    np.testing.assert_array_equal(b, expected)


def test_boundary_uses_four_neighbours_only():
    # the centre of a plus sign has all four neighbours inside, though its diagonals are out
    plus = np.pad(np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool), 1)
    expected = plus.copy()
    expected[2, 2] = False
    np.testing.assert_array_equal(mask_boundary(plus), expected)


# ---- F ------------------------------------------------------------------------------------

def test_f_of_shifted_squares_depends_on_the_tolerance():
    a = square((6, 6), 1, 1, 4)
    b = square((6, 6), 1, 2, 4)
    # exact matching: the top and bottom rows share columns 2..4, 6 of 12 ring pixels each way
    assert boundary_precision_recall(a, b, tolerance_px=0) == (0.5, 0.5)
    assert contour_accuracy(a, b, tolerance_px=0) == pytest.approx(0.5)
    # one pixel of slack matches every ring pixel
    assert contour_accuracy(a, b, tolerance_px=1) == 1.0


def test_f_with_different_precision_and_recall():
    gt = square((6, 6), 1, 1, 4)      # 12 ring pixels
    small = square((6, 6), 1, 1, 2)   # 4 boundary pixels, 3 of them on gt's ring
    p, r = boundary_precision_recall(small, gt, tolerance_px=0)
    assert (p, r) == (3 / 4, 3 / 12)
    assert contour_accuracy(small, gt, tolerance_px=0) == pytest.approx(2 * 0.75 * 0.25 / 1.0)


def test_default_tolerance_is_davis_fraction_of_the_diagonal():
    assert boundary_tolerance_px((100, 100)) == 2          # ceil(0.008 * 141.4) = ceil(1.13)
    assert boundary_tolerance_px((480, 854)) == 8          # DAVIS 480p: ceil(7.84)
    gt = square((100, 100), 30, 30, 40)
    assert contour_accuracy(square((100, 100), 30, 32, 40), gt) == 1.0
    # three columns off (ring of 156 pixels): the whole trailing side (40 pixels) is 3 px from
    # anything, and the leading side only matches within 2 rows of the top and bottom (34 left)
    p, r = boundary_precision_recall(square((100, 100), 30, 33, 40), gt)
    assert p == r == pytest.approx((156 - 40 - 34) / 156)


def test_f_davis_convention_for_empty_masks():
    empty = np.zeros((8, 8), bool)
    full = square((8, 8), 2, 2, 3)
    assert contour_accuracy(empty, empty) == 1.0
    assert boundary_precision_recall(empty, full) == (1.0, 0.0)
    assert boundary_precision_recall(full, empty) == (0.0, 1.0)
    assert contour_accuracy(empty, full) == 0.0 and contour_accuracy(full, empty) == 0.0


def _slow_boundary(m):
    h, w = m.shape
    out = np.zeros_like(m)
    for y in range(h):
        for x in range(w):
            if m[y, x]:
                for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    yy, xx = y + dy, x + dx
                    if not (0 <= yy < h and 0 <= xx < w) or not m[yy, xx]:
                        out[y, x] = True
    return out


def _slow_matched_fraction(a, b, r):
    pa, pb = np.argwhere(a), np.argwhere(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min(1)
    return float((d <= r).mean())


@pytest.mark.parametrize("seed", range(5))
def test_f_matches_a_brute_force_version_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    from scipy import ndimage
    a = ndimage.binary_opening(rng.random((20, 24)) < 0.55)
    b = ndimage.binary_opening(rng.random((20, 24)) < 0.55)
    np.testing.assert_array_equal(mask_boundary(a), _slow_boundary(a))
    for r in (0, 1, 1.5, 3):
        p, rec = boundary_precision_recall(a, b, tolerance_px=r)
        assert p == pytest.approx(_slow_matched_fraction(_slow_boundary(a), _slow_boundary(b), r))
        assert rec == pytest.approx(_slow_matched_fraction(_slow_boundary(b), _slow_boundary(a), r))


def test_mask_scores_averages_over_frames():
    a = square((6, 6), 1, 1, 4)
    b = square((6, 6), 1, 2, 4)
    s = mask_scores([a, a, np.zeros((6, 6))], [a, b, a], tolerance=0.0)
    # J: 1, 0.6, 0; F (exact matching): 1, 0.5, 0
    assert s["J"] == pytest.approx(1.6 / 3)
    assert s["F"] == pytest.approx(1.5 / 3)
    assert s["J&F"] == pytest.approx((1.6 / 3 + 1.5 / 3) / 2)
    assert s["J_recall"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="as many masks"):
        mask_scores([a], [a, b])
