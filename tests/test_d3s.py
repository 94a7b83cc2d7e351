"""D3S: GEM, GIM, feature alignment, the box from a mask, the tracker's contract and training."""
import math

import cv2
import numpy as np
import pytest
import torch

from acvm.backbone import LAYERS
from acvm.boxes import crop_and_resize
from acvm.d3s import (MARGIN, D3SNet, D3SSampler, D3SSettings, D3STracker, align_features, box_from_mask,
                      distance_likelihood, draw_d3s, gem_likelihood, gim, largest_component, record_d3s,
                      top_k_similarity, train)


# ---- GEM ----------------------------------------------------------------------------------

def test_distance_likelihood_from_one_pixel_is_exp_of_the_euclidean_distance():
    seed = np.zeros((7, 9), bool)
    seed[2, 5] = True
    L = distance_likelihood(seed, radius=2.0)
    yy, xx = np.mgrid[:7, :9]
    np.testing.assert_allclose(L, np.exp(-np.hypot(yy - 2, xx - 5) / 2.0), rtol=1e-6)
    assert L.dtype == np.float32 and L[2, 5] == 1.0


def test_distance_likelihood_measures_to_the_nearest_seed_pixel():
    rng = np.random.default_rng(0)
    seed = rng.random((12, 10)) < 0.05
    seed[0, 0] = True
    L = distance_likelihood(seed, radius=3.0)
    pts = np.argwhere(seed)
    for y, x in [(5, 5), (11, 9), (0, 9), (7, 1)]:
        d = np.min(np.hypot(pts[:, 0] - y, pts[:, 1] - x))
        assert L[y, x] == pytest.approx(math.exp(-d / 3.0), rel=1e-6)
    assert not distance_likelihood(np.zeros((3, 3), bool), 1.0).any()


def test_gem_likelihood_peaks_on_the_pixel_holding_the_peak():
    L = gem_likelihood((10.7, 3.2), 16, radius=4.0)
    assert np.unravel_index(np.argmax(L), L.shape) == (3, 10)
    assert L[3, 14] == pytest.approx(math.exp(-1.0), rel=1e-6)
    # a peak outside the crop is clamped to the border pixel
    assert gem_likelihood((-5, 40), 16, 2.0)[15, 0] == 1.0


# ---- GIM ----------------------------------------------------------------------------------

def _slow_top_k(f_test, f_train, select, k):
    b, c, h, w = f_test.shape
    out = np.zeros((b, h, w))
    for n in range(b):
        t = f_train[n].reshape(c, -1).T
        t = t / np.linalg.norm(t, axis=1, keepdims=True)
        sel = select[n].reshape(-1)
        for y in range(h):
            for x in range(w):
                q = f_test[n, :, y, x] / np.linalg.norm(f_test[n, :, y, x])
                sims = sorted(list(t[sel] @ q) + [-1.0] * max(0, k - sel.sum()), reverse=True)
                out[n, y, x] = np.mean(sims[:k])
    return out


@pytest.mark.parametrize("k", [1, 3])
def test_top_k_similarity_matches_a_loop(k):
    g = torch.Generator().manual_seed(0)
    f_test, f_train = torch.randn(2, 5, 3, 4, generator=g), torch.randn(2, 5, 4, 4, generator=g)
    select = torch.rand(2, 4, 4, generator=g) < 0.5
    select[1] = False
    select[1, 0, 0] = True          # one selected vector: the rest of the top-3 is padded with -1
    got = top_k_similarity(f_test, f_train, select, k).numpy()
    np.testing.assert_allclose(got, _slow_top_k(f_test.numpy(), f_train.numpy(), select.numpy(), k), atol=1e-5)


def test_gim_finds_a_copied_foreground_vector():
    g = torch.Generator().manual_seed(1)
    f_train = torch.randn(1, 8, 4, 4, generator=g)
    fg = torch.zeros(1, 4, 4, dtype=torch.bool)
    fg[0, 1:3, 1:3] = True
    f_test = f_train.clone()
    out = gim(f_test, f_train, fg, k=1)
    # every test vector is a train vector: similarity 1 to its own side
    assert torch.allclose(out["F"][fg], torch.ones(4)) and torch.allclose(out["B"][~fg], torch.ones(12))
    assert torch.allclose(out["P"], torch.softmax(torch.stack([out["F"], out["B"]]), 0)[0])
    assert (out["P"][fg] > 0.5).all() and (out["P"][~fg] < 0.5).all()


# ---- feature alignment --------------------------------------------------------------------

@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv3", "conv4"])
def test_aligned_cells_sit_on_their_crop_cells(layer):
    info, crop = LAYERS[layer], 128
    cells = crop // info.stride
    index = torch.arange(200.0).reshape(1, 1, 1, 200).expand(1, 1, 200, 200)
    first = int(align_features(index, layer, cells)[0, 0, 0, 0])
    for j in (0, cells - 1):
        # a cell's receptive field starts at input pixel stride·i, i.e. crop pixel stride·i - MARGIN
        centre = info.stride * (first + j) + info.receptive_field / 2 - MARGIN
        assert abs(centre - (info.stride * j + info.stride / 2)) <= info.stride / 2


def test_network_maps_tile_the_crop():
    net = D3SNet().eval()
    with torch.no_grad():
        f = net.features(torch.rand(1, 3, 128 + 2 * MARGIN, 128 + 2 * MARGIN), 128)
    assert {k: tuple(v.shape[-2:]) for k, v in f.items()} == {
        "conv1": (64, 64), "conv2": (32, 32), "conv3": (16, 16), "conv4": (16, 16), "project": (16, 16)}


# ---- box from mask ------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["bounds", "minarea"])
def test_box_of_a_filled_rectangle_is_exact(method):
    m = np.zeros((40, 50), bool)
    m[5:17, 8:30] = True           # rows 5..16, columns 8..29
    np.testing.assert_allclose(box_from_mask(m, method), [8, 5, 22, 12], atol=1e-4)


def test_rotated_rectangle_gives_its_corners_and_their_box():
    corners = cv2.boxPoints(((50.0, 40.0), (40.0, 16.0), 30.0))
    m = np.zeros((80, 100), np.uint8)
    # OpenCV puts pixel centres on integers, ours at i + 0.5
    cv2.fillPoly(m, [np.round((corners - 0.5) * 16).astype(np.int32)], 1, shift=4)
    poly = box_from_mask(m, "polygon").reshape(4, 2)
    # every true corner has a fitted corner within 2 px (fillPoly also fills pixels the edge grazes)
    assert max(np.min(np.linalg.norm(poly - c, axis=1)) for c in corners) < 2.0
    x, y, w, h = box_from_mask(m, "minarea")
    (x0, y0), (x1, y1) = corners.min(0), corners.max(0)
    np.testing.assert_allclose([x, y, x + w, y + h], [x0, y0, x1, y1], atol=2.0)
    # the axis-aligned box of the rotated rectangle never lies inside the pixels' tight box
    b = box_from_mask(m, "bounds")
    assert w >= b[2] - 1e-6 and h >= b[3] - 1e-6


def test_box_uses_the_largest_component_and_empty_masks_give_nan():
    m = np.zeros((30, 30), bool)
    m[2:4, 2:4] = True
    m[10:20, 12:15] = True
    np.testing.assert_array_equal(largest_component(m), np.pad(np.ones((10, 3), bool), ((10, 10), (12, 15))))
    np.testing.assert_allclose(box_from_mask(m, "bounds"), [12, 10, 3, 10])
    assert np.isnan(box_from_mask(np.zeros((5, 5)), "minarea")).all()
    assert box_from_mask(np.zeros((5, 5)), "polygon").shape == (8,)
    with pytest.raises(ValueError, match="method"):
        box_from_mask(m, "hull")


# ---- the tracker --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def random_net():
    torch.manual_seed(0)
    return D3SNet().eval()


def _scene(shift=(0, 0)):
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (200, 260, 3), dtype=np.uint8), (5, 5), 0)
    img[80:120, 100:150] = [230, 40, 40]
    M = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    return cv2.warpAffine(img, M, (260, 200), borderMode=cv2.BORDER_REFLECT)


def test_tracker_contract(random_net):
    t = D3STracker(net=random_net)
    img = _scene()
    t.init(img, [100, 80, 50, 40])
    box = t.update(_scene((3, 2)))
    assert box.shape == (4,) and box.dtype == np.float64 and np.isfinite(box).all()
    assert t.mask.shape == (200, 260) and t.mask.dtype == bool
    S = t.settings.crop_size
    for name in ("gem", "gim", "probability"):
        assert getattr(t, name).shape == (S, S)
    assert t.response.shape == (S // 8, S // 8) and t.crop.shape == (S, S, 3)
    assert isinstance(t.confidence, float)
    with pytest.raises(ValueError, match="initial box"):
        t.init(img, [10, 10, 0, 5])
    with pytest.raises(ValueError, match="image"):
        t.update(np.zeros((5, 5, 7)))


def test_gem_follows_a_translation(random_net):
    # the DCF on translation-equivariant features finds a shift of one cell (8 crop pixels)
    t = D3STracker(net=random_net, search_factor=4.0)
    t.init(_scene(), [100, 80, 50, 40])
    k = t.settings.crop_size / (4.0 * math.sqrt(50 * 40))     # crop pixels per frame pixel
    t.update(_scene((8 / k, 0)))
    peak = np.unravel_index(np.argmax(t.gem), t.gem.shape)
    assert abs(peak[1] - (64 + 8)) <= 3 and abs(peak[0] - 64) <= 3


def test_frame_mask_lands_where_the_crop_was_cut(random_net):
    t = D3STracker(net=random_net)
    t.init(_scene(), [100, 80, 50, 40])
    crop_mask = np.zeros((128, 128), bool)
    crop_mask[32:96, 48:80] = True
    frame_mask = t._frame_mask(crop_mask, (200, 260))
    ys, xs = np.nonzero(frame_mask)
    expected = t._to_frame(np.array([48.0, 32.0, 32.0, 64.0]))
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1],
                               [expected[0], expected[1], expected[0] + expected[2], expected[1] + expected[3]],
                               atol=1.0)


def test_record_and_draw(random_net):
    from acvm.synth import make_sequence
    seq = make_sequence(seed=2, n_frames=3)
    frames = record_d3s(D3STracker(net=random_net), seq)
    assert [f["index"] for f in frames] == [1, 2]
    fig = draw_d3s(frames, 1)
    assert len(fig.axes) == 4
    import matplotlib.pyplot as plt
    plt.close(fig)
    with pytest.raises(IndexError):
        draw_d3s(frames, 5)


# ---- training -----------------------------------------------------------------------------

def test_sampler_masks_agree_with_the_sequence():
    s = D3SSampler(shift=0.0, scale_jitter=0.0, peak_noise=0.0, box_mask=0.0)
    ex = s(np.random.default_rng(0))
    S = D3SSettings().crop_size
    assert ex["z"].shape == (3, S + 2 * MARGIN, S + 2 * MARGIN) and ex["x_mask"].shape == (S, S)
    # the test crop is centred on the target's box, and GEM's peak is its centre
    ys, xs = np.nonzero(ex["x_mask"])
    assert abs((xs.min() + xs.max() + 1) / 2 - S / 2) < 4 and abs((ys.min() + ys.max() + 1) / 2 - S / 2) < 4
    assert ex["likelihood"][S // 2 - 1:S // 2 + 1, S // 2 - 1:S // 2 + 1].max() == 1.0


@pytest.mark.slow
def test_train_writes_loadable_weights(tmp_path):
    path = train(steps=1, seed=0, out=tmp_path / "d3s.pt", batch_size=1, workers=0, progress=False)
    state = torch.load(path, weights_only=True)
    assert state["meta"]["steps"] == 1 and "backbone" in state["meta"]
    t = D3STracker(weights=str(path))
    t.init(_scene(), [100, 80, 50, 40])
    assert np.isfinite(t.update(_scene((2, 0)))).all()


def test_shipped_weights_segment_a_synthetic_target():
    from acvm.d3s import DEFAULT_WEIGHTS
    from acvm.evaluation import region_similarity
    from acvm.synth import make_sequence
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("data/weights/d3s.pt not trained here (acvm train d3s)")
    seq = make_sequence(seed=10_003, n_frames=12)
    t = D3STracker()
    t.init(seq[0], seq.boxes[0])
    js = []
    for i in range(1, len(seq)):
        frame, gt = seq.frame_and_mask(i)
        t.update(frame)
        js.append(region_similarity(t.mask, gt))
    # an untrained refinement pathway (frozen SiamFC backbone) gives J about 0.1 here; the shipped one about 0.9
    assert np.mean(js) > 0.6


def test_sampler_takes_real_masks_only_from_sequences_that_have_them(tmp_path):
    """A folder source teaches segmentation with its masked sequences only, at its stated share."""
    from acvm.evaluation import InMemory
    from acvm.synth import make_sequence, write_otb
    from acvm.training import FolderSource, SyntheticSource
    masked = make_sequence(seed=31, n_frames=12, size=(200, 150), rotation=0.0)
    write_otb(masked, tmp_path / "masked")
    write_otb(InMemory(make_sequence(seed=32, n_frames=12, size=(200, 150)), name="plain"), tmp_path / "plain")
    folder = FolderSource([tmp_path / "masked", tmp_path / "plain"])
    assert sorted(s.name for s in folder.sequences) == ["masked", "plain"]
    only = folder.with_masks()
    assert [s.name for s in only.sequences] == ["masked"] and only.cache is folder.cache
    assert len(folder.sequences) == 2                    # the original source is left as it was
    with pytest.raises(ValueError, match="masks/ folder"):
        FolderSource([tmp_path / "plain"]).with_masks()

    synthetic = SyntheticSource(n_frames=12)
    synthetic.weight, folder.weight = 0.25, 0.75
    sampler = D3SSampler([synthetic, folder], shift=0.0, scale_jitter=0.0, peak_noise=0.0, box_mask=0.0,
                         pairs_per_sequence=1)
    np.testing.assert_allclose(sampler.weights, [0.25, 0.75])
    rng = np.random.default_rng(0)
    drawn = []
    for _ in range(40):
        ex = sampler(rng)
        drawn.append(getattr(sampler._seq, "name", "synthetic"))
        if drawn[-1] == "masked":
            assert ex["x_mask"].sum() > 30          # a real mask reached the example
    assert "plain" not in drawn
    assert 20 <= drawn.count("masked") <= 38       # about 3 in 4 draws, from the one masked sequence


def test_init_from_a_mask_uses_its_cells_as_the_foreground(random_net):
    img = _scene()
    mask = np.zeros(img.shape[:2], bool)
    mask[80:120, 100:125] = True                     # the left half of the red box
    t = D3STracker(net=random_net)
    t.init(img, [100, 80, 50, 40], mask=mask)
    # the template's foreground cells are the mask's, cut with the crop's geometry
    centre, side = t.crop_geometry()
    crop = crop_and_resize(mask.astype(np.float32), centre, side, t.settings.crop_size, pad_value=0.0) > 0.5
    np.testing.assert_array_equal(t.template_fg[0].numpy(), t._cells(crop)[0].numpy())
    box = D3STracker(net=random_net, init_refine=False)
    box.init(img, [100, 80, 50, 40])
    assert t.template_fg.sum() < box.template_fg.sum()
    assert np.isfinite(t.update(_scene((2, 1)))).all()
    with pytest.raises(ValueError, match="initial mask is 10×20"):
        t.init(img, [100, 80, 50, 40], mask=np.zeros((20, 10), bool))


def test_davis_benchmark_scores_validation_masks_against_an_independent_count(tmp_path, random_net):
    """benchmarks/d3s_davis.py: only the validation split's masked sequences, J from pixel counts."""
    import importlib.util
    from conftest import ROOT, write_split_folder
    spec = importlib.util.spec_from_file_location("d3s_davis", ROOT / "benchmarks" / "d3s_davis.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # pixels whose centres lie in the box: x in 1..3 (centres 1.5..3.5 within [1.5, 4.5)), y in 2..3
    expected = np.zeros((6, 7), bool)
    expected[2:4, 1:4] = True
    np.testing.assert_array_equal(bench.filled_box(np.array([1.5, 2.0, 3.0, 2.0]), (6, 7)), expected)
    assert not bench.filled_box(np.array([np.nan, 0, 1, 1]), (6, 7)).any()
    root = write_split_folder(tmp_path, n_frames=6)
    seqs = bench.mask_sequences(str(root), "validation")
    assert [s.name for s in seqs] == ["c"]
    row = bench.score_sequence(D3STracker(net=random_net), seqs[0], init="mask")
    seq = seqs[0]
    gts = [seq.frame_and_mask(i)[1] for i in range(1, len(seq))]
    js = []
    for box, gt in zip(seq.boxes[1:], gts):
        x0, y0 = np.ceil(box[:2] - 0.5).astype(int)
        x1, y1 = np.ceil(box[:2] + box[2:] - 0.5).astype(int)
        inside = gt[y0:y1, x0:x1].sum()
        js.append(inside / (gt.sum() + (y1 - y0) * (x1 - x0) - inside))
    assert row["frames"] == 6 and row["gt_box_J"] == pytest.approx(np.mean(js))
    assert 0.0 <= row["J"] <= 1.0 and 0.0 <= row["F"] <= 1.0 and 0.0 <= row["auc"] <= 1.0
