import numpy as np
import pytest

from acvm.data import load_sequence
from acvm.synth import PHOTOS, blob_polygon, make_sequence, photo, write_otb


def mask_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()], dtype=float)


def test_shapes_dtypes_and_determinism():
    a = make_sequence(seed=3, n_frames=12, size=(160, 120))
    b = make_sequence(seed=3, n_frames=12, size=(160, 120))
    c = make_sequence(seed=4, n_frames=12, size=(160, 120))
    assert len(a) == 12 and a.frame_size == (120, 160)
    f = a[5]
    assert f.shape == (120, 160, 3) and f.dtype == np.uint8
    assert a.boxes.shape == (12, 4) and a.boxes.dtype == np.float64
    assert a.masks.shape == (12, 120, 160) and a.masks.dtype == bool
    assert np.array_equal(a[5], b[5]) and np.array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a[5], c[5])
    assert np.array_equal(a[-1], a[11]) and len(a[2:4]) == 2
    with pytest.raises(IndexError):
        a[12]


def test_box_is_the_tight_box_of_the_rendered_target():
    """Without occlusion the mask is the whole target: its pixel box and the exact box agree to a pixel."""
    seq = make_sequence(seed=1, n_frames=30, rotation=30, scaling=0.4, shake=2.0)
    for i in range(0, 30, 4):
        assert np.abs(mask_box(seq.mask(i)) - seq.boxes[i]).max() < 1.0, i
    # the target really moves, grows and shrinks
    assert np.ptp(seq.boxes[:, 0]) > 2 and np.ptp(seq.boxes[:, 2]) > 1


def test_the_target_is_drawn_with_its_own_texture():
    """Pixels inside the mask differ from the same frame's background photo there."""
    seq = make_sequence(seed=2, n_frames=3, noise=0.0, illumination=0.0, shake=0.0, target_size=0.3)
    bare = make_sequence(seed=2, n_frames=3, noise=0.0, illumination=0.0, shake=0.0, target_size=1e-3)
    m = seq.mask(1)
    assert np.abs(seq[1][m].astype(int) - bare[1][m].astype(int)).mean() > 10
    assert np.abs(seq[1][~m].astype(int) - bare[1][~m].astype(int)).mean() < 3  # background untouched


def test_occlusion_hides_part_of_the_target_only_for_a_while():
    # same seed: the occluder's random draws come last, so the target is identical in both
    free = make_sequence(seed=5, n_frames=60, noise=0.0)
    occ = make_sequence(seed=5, n_frames=60, occlusion=True, noise=0.0)
    assert np.array_equal(free.boxes, occ.boxes)
    a_free = free.masks.sum((1, 2)).astype(float)
    a_occ = occ.masks.sum((1, 2)).astype(float)
    assert (occ.masks <= free.masks).all()            # the occluder only removes target pixels
    visible = a_occ / a_free
    assert visible.min() < 0.5                        # at some frame at least half is hidden
    assert (visible > 0.999).sum() >= 20              # and most of the sequence is clear
    assert np.isfinite(occ.occluder_boxes).all() and np.isnan(free.occluder_boxes).all()


def test_distractor_is_a_look_alike_behind_the_target():
    free = make_sequence(seed=6, n_frames=20, noise=0.0)
    dis = make_sequence(seed=6, n_frames=20, distractor=True, noise=0.0)
    assert np.array_equal(free.boxes, dis.boxes) and np.array_equal(free.masks, dis.masks)
    d = dis.distractor_boxes[10]
    assert np.isfinite(d).all()
    # similar size to the target, and drawn where the frame differs from the distractor-free one
    assert 0.6 < d[2] * d[3] / (dis.boxes[10, 2] * dis.boxes[10, 3]) < 1.7
    # the frames differ exactly where the look-alike is drawn: inside its box, and not on the target
    ys, xs = np.nonzero(np.abs(dis[10].astype(int) - free[10].astype(int)).max(2) > 0)
    assert xs.size > 0.3 * d[2] * d[3]
    assert xs.min() >= d[0] - 2 and xs.max() <= d[0] + d[2] + 2
    assert ys.min() >= d[1] - 2 and ys.max() <= d[1] + d[3] + 2
    assert not free.mask(10)[ys, xs].any() or free.mask(10)[ys, xs].mean() < 0.05


def test_write_otb_round_trip(tmp_path):
    seq = make_sequence(seed=7, n_frames=6, size=(96, 80), occlusion=True)
    path = write_otb(seq, tmp_path / "synth-7")
    assert sorted(p.name for p in (path / "img").iterdir())[0] == "0001.jpg"
    text = (path / "groundtruth_rect.txt").read_text().splitlines()[0]
    assert np.allclose([float(v) for v in text.split(",")][:2], seq.boxes[0, :2] + 1, atol=1e-3)  # 1-based
    back = load_sequence(path)
    assert len(back) == 6 and np.allclose(back.boxes, seq.boxes, atol=1e-3)
    assert np.abs(back[3].astype(int) - seq[3].astype(int)).mean() < 4   # JPEG at quality 95
    import cv2
    m = cv2.imread(str(path / "mask" / "0004.png"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(m > 127, seq.mask(3))


def test_photos_and_shapes():
    for name in ("astronaut", "camera"):
        p = photo(name)
        assert p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.uint8
    assert len(PHOTOS) >= 8
    pts = blob_polygon(np.random.default_rng(0))
    assert pts.shape == (64, 2) and np.allclose(pts.min(0), 0) and np.allclose(pts.max(0), 1)
    ell = blob_polygon(np.random.default_rng(0), wobble=0.0)
    r = np.hypot(*(ell - 0.5).T)
    assert np.allclose(r, 0.5, atol=1e-9)   # wobble 0 gives a circle in the unit square
    with pytest.raises(ValueError, match="n_frames"):
        make_sequence(n_frames=0)
    with pytest.raises(ValueError, match="shape"):
        make_sequence(shape="square")


def test_validation_sequences_follow_the_benchmarks_convention():
    from acvm.synth import make_sequence, validation_sequence
    for k in range(3):
        v = validation_sequence(k, n_frames=5)
        ref = make_sequence(seed=10_000 + k, n_frames=5, occlusion=k == 1, distractor=k == 2)
        np.testing.assert_array_equal(v.boxes, ref.boxes)
        np.testing.assert_array_equal(v[4], ref[4])


def test_clutter_adds_other_objects_behind_the_same_target():
    plain = make_sequence(seed=11, n_frames=8, noise=0.0)
    busy = make_sequence(seed=11, n_frames=8, noise=0.0, clutter=3)
    np.testing.assert_array_equal(busy.boxes, plain.boxes)            # its own random stream
    for i in (0, 7):
        fp, mp = plain.frame_and_mask(i)
        fb, mb = busy.frame_and_mask(i)
        np.testing.assert_array_equal(mb, mp)                         # drawn behind the target
        np.testing.assert_array_equal(fb[mp], fp[mp])
        changed = np.abs(fb.astype(int) - fp.astype(int)).max(-1) > 10
        assert changed.sum() > 0.02 * changed.size                    # three shapes cover a real area
    with pytest.raises(ValueError, match="clutter"):
        make_sequence(seed=0, n_frames=2, clutter=-1)
