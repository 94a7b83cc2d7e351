"""The STARK-style tracker: soft-argmax, GIoU, labels, loss, sampler, network and tracker contracts.

Random-weight networks only (the shipped weights are checked by benchmarks/stark_bench.py).
"""
import math

import matplotlib
import numpy as np
import pytest
import torch

from acvm import stark
from acvm.boxes import crop_to_image, xywh_to_cxcywh

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return stark.STARKNet().eval()


@pytest.fixture(scope="module")
def scene():
    """A 200×240 frame with a textured target on a smooth background, and its box."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:200, 0:240]
    image = np.stack([xx * 0.5 + 40, yy * 0.6 + 30, 120 + 0 * xx], -1)
    image[80:130, 100:140] = rng.integers(0, 255, (50, 40, 3))
    return image.astype(np.uint8), np.array([100.0, 80.0, 40.0, 50.0])


# --- pieces ----------------------------------------------------------------------------------------

def test_soft_argmax_matches_numpy_expectation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, generator=g)
    xs, ys = torch.arange(5.0) * 8 + 3, torch.arange(4.0) * 8 + 3
    xy, P = stark.soft_argmax(logits, xs, ys)
    for b in range(3):
        p = np.exp(logits[b].numpy().astype(np.float64))
        p /= p.sum()
        np.testing.assert_allclose(P[b].numpy(), p, atol=1e-6)
        np.testing.assert_allclose(xy[b].numpy(), [(p.sum(0) * xs.numpy()).sum(), (p.sum(1) * ys.numpy()).sum()],
                                   atol=1e-4)


def test_soft_argmax_of_a_sharp_peak_is_its_cell():
    logits = torch.full((1, 6, 6), -50.0)
    logits[0, 4, 1] = 50.0
    xy, _ = stark.soft_argmax(logits, torch.arange(6.0) * 10, torch.arange(6.0) * 10)
    np.testing.assert_allclose(xy[0].numpy(), [10.0, 40.0], atol=1e-4)


def test_giou_loss_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert float(stark.giou_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    # half-overlapping: IoU = 2/6, hull 2×3 = union, so GIoU = IoU
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0]])
    assert float(stark.giou_loss(a, b)) == pytest.approx(1 - 2 / 6, abs=1e-6)
    # disjoint, one unit apart: IoU 0, hull 5×2 = 10, union 8 -> GIoU = -0.2
    c = torch.tensor([[3.0, 0.0, 5.0, 2.0]])
    assert float(stark.giou_loss(a, c)) == pytest.approx(1.2, abs=1e-6)
    # it still has a gradient there (1 - IoU would not)
    p = c.clone().requires_grad_(True)
    stark.giou_loss(a, p).backward()
    assert p.grad[0, 0] > 0  # moving the box left lowers the loss


def test_corner_labels_peak_at_the_nearest_cell_and_sum_to_one():
    xs = ys = torch.arange(10.0) * 8 + 35.5
    lab = stark.corner_labels(torch.tensor([[60.0, 100.0, 110.0, 140.0]]), xs, ys, 8.0)
    assert lab.shape == (1, 2, 10, 10)
    np.testing.assert_allclose(lab.sum((-2, -1)).numpy(), 1.0, atol=1e-6)
    assert np.unravel_index(int(lab[0, 0].argmax()), (10, 10)) == (8, 3)   # y 100 -> row 8, x 60 -> col 3
    # 140, 110 lie past the grid's last centre (107.5): the nearest cell is the last one
    assert np.unravel_index(int(lab[0, 1].argmax()), (10, 10)) == (9, 9)


class _FakeNet(torch.nn.Module):
    """Stands in for STARKNet in the loss: returns given corners and logits."""

    def __init__(self, corners, logits):
        super().__init__()
        self.settings = stark.STARKSettings()
        xs = torch.arange(24.0) * 8 + 35.5
        self.head = torch.nn.Module()
        self.head.xs, self.head.ys = xs, xs
        self.out = {"corners": corners, "logits": logits}

    def forward(self, z, x):
        return self.out


def test_stark_loss_parts():
    s = stark.STARKSettings()
    xs = torch.arange(24.0) * 8 + 35.5
    box = torch.tensor([[90.0, 100.0, 60.0, 40.0]])                  # xywh in the crop
    target = torch.tensor([[90.0, 100.0, 150.0, 140.0]])
    labels = stark.corner_labels(target, xs, xs, s.heatmap_sigma * 8)
    logits = torch.log(labels.clamp(min=1e-30))
    batch = {"z": None, "x": None, "x_box": box}
    entropy = float(-(labels * torch.log(labels.clamp(min=1e-30))).sum((-2, -1)).mean())
    # exact corners and the label itself as the heat map: only the labels' entropy is left
    assert float(stark.stark_loss(_FakeNet(target, logits), batch)) == pytest.approx(s.heatmap_weight * entropy, rel=1e-4)
    # corners off by 10 px each: λ_L1 · 10 / S_x more, plus the GIoU term
    off = target + torch.tensor([[10.0, 10.0, 10.0, 10.0]])
    a = torch.tensor([[90.0, 100.0, 150.0, 140.0]])
    expect = s.l1_weight * 10 / s.search_size + s.giou_weight * float(stark.giou_loss(off, a)) + s.heatmap_weight * entropy
    assert float(stark.stark_loss(_FakeNet(off, logits), batch)) == pytest.approx(expect, rel=1e-4)


class _ColourSequence:
    """A sequence of plain frames of one colour with a constant box."""

    def __init__(self, colour, n=30):
        self.frame = np.zeros((120, 160, 3), np.uint8) + np.array(colour, np.uint8)
        self.boxes = np.tile([60.0, 40.0, 30.0, 30.0], (n, 1))

    def __len__(self):
        return len(self.boxes)

    def __getitem__(self, i):
        return self.frame


class _TwoColours:
    def __init__(self):
        self.seqs = [_ColourSequence((250, 0, 0)), _ColourSequence((0, 0, 250))]

    def sequence(self, rng):
        return self.seqs[int(rng.integers(2))]


def test_template_pairs_cut_both_templates_from_the_search_frames_sequence():
    from acvm.training import PairSettings
    sampler = stark.TemplatePairs([_TwoColours()], PairSettings(colour=0.0, grey=0.0), templates=2, reuse=3)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(12):
        s = sampler(rng)
        assert s["z"].shape == (2, 3, 127, 127) and s["x"].shape == (3, 255, 255)
        red = s["x"][0].mean() > s["x"][2].mean()
        assert all((z[0].mean() > z[2].mean()) == red for z in s["z"])
        seen.add(bool(red))
    assert seen == {True, False}


class _OneColour:
    def __init__(self, colour, weight):
        self.seq, self.weight = _ColourSequence(colour), weight

    def sequence(self, rng):
        return self.seq


def test_template_pairs_draw_each_source_in_its_share():
    # --synthetic-fraction 0.2: one source of weight 0.2, the other 0.8 (make_sources' weights)
    from acvm.training import PairSettings
    sampler = stark.TemplatePairs([_OneColour((250, 0, 0), 0.2), _OneColour((0, 0, 250), 0.8)],
                                  PairSettings(colour=0.0, grey=0.0), templates=1, reuse=1)
    rng = np.random.default_rng(1)
    red = [sampler(rng)["x"] for _ in range(400)]
    share = np.mean([x[0].mean() > x[2].mean() for x in red])
    assert 0.14 < share < 0.26      # binomial(400, 0.2): std 0.02


# --- the network -------------------------------------------------------------------------------------

def test_network_shapes_and_token_layout(net):
    z, x = torch.rand(2, 2, 3, 127, 127), torch.rand(2, 3, 255, 255)
    with torch.no_grad():
        out = net(z, x)
    assert net.z_grid == (8, 8) and net.x_grid == (24, 24)
    assert out["logits"].shape == (2, 2, 24, 24) and out["corners"].shape == (2, 4)
    L = 2 * 64 + 576
    assert len(out["attention"]) == net.settings.layers
    assert out["attention"][-1].shape == (2, net.settings.heads, L, L)
    # soft-argmax corners lie between the first and last cell centres (35.5 ... 219.5 px)
    assert (out["corners"] >= 35.5 - 1e-4).all() and (out["corners"] <= 219.5 + 1e-4).all()


def test_search_tokens_depend_on_the_template(net):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 255, 255, generator=g)
    with torch.no_grad():
        a = net(torch.rand(1, 2, 3, 127, 127, generator=g), x)
        b = net(torch.rand(1, 2, 3, 127, 127, generator=g), x)
    # random weights mix weakly, but the only path from z to the heat maps is the attention
    assert (a["logits"] - b["logits"]).abs().max() > 1e-6
    on_template = a["attention"][0][0, :, 128:, :128].sum(-1)      # search rows, template columns
    assert 0.05 < float(on_template.mean()) < 0.95


# --- the tracker -------------------------------------------------------------------------------------

def _tracker(net, **kw):
    return stark.STARKTracker(net=net, **kw)


def test_tracker_contract_and_exposed_state(net, scene):
    image, box = scene
    t = _tracker(net)
    t.init(image, box)
    out = t.update(image)
    assert out.shape == (4,) and out.dtype == np.float64 and np.isfinite(out).all()
    assert t.heatmaps.shape == (2, 24, 24)
    np.testing.assert_allclose(t.heatmaps.sum((1, 2)), 1.0, atol=1e-5)
    L = 2 * 64 + 576
    assert t.attention.shape == (L, L)
    np.testing.assert_allclose(t.attention.sum(1), 1.0, atol=1e-4)
    assert t.corner_attention.shape == (2, 2, 8, 8)
    assert 0.0 <= t.confidence <= 1.0
    assert t.search_crop.shape == (255, 255, 3) and t.templates.shape == (2, 127, 127, 3)
    rec = t.frame_record()
    assert rec["frame"] == 1 and set(rec) >= {"search_crop", "heatmaps", "corners", "corner_attention", "templates"}


CELL = 35.5 + 8 * np.arange(24)      # crop-pixel centres of the 24 search cells


def _fixed_prediction(t, cells, peak):
    """Make ``t.predict`` return heat maps peaked at the given cells ``(row, col)`` for the two
    corners with peak mass ``peak`` (> 0.5: one sharp cell, the rest far away; else flat maps)."""
    def predict(crop):
        H = np.full((2, 24, 24), 1 / 576)
        if peak > 0.5:
            H[:] = 0.0
            for k, (i, j) in enumerate(cells):
                H[k, i, j], H[k, 0, 23] = peak, 1 - peak
        n = t.n_templates * 64 + 576
        return {"corners": np.zeros(4), "heatmaps": H, "attention": np.full((n, n), 1.0 / n, np.float32)}
    t.predict = predict


def test_tracker_follows_its_corners_when_confident_and_holds_when_not(net, scene):
    image, box = scene
    cells = [(7, 8), (17, 16)]                         # top-left at (99.5, 91.5), bottom-right (163.5, 171.5)
    x1, y1, x2, y2 = CELL[8], CELL[7], CELL[16], CELL[17]
    t = _tracker(net, confidence_threshold=0.5, size_lr=1.0, max_size_change=math.inf)
    t.init(image, box)
    _fixed_prediction(t, cells, peak=0.9)
    got = t.update(image)
    assert t.confidence == pytest.approx(0.9)
    np.testing.assert_allclose(t.corners, [x1, y1, x2, y2], atol=1e-9)
    # the crop is centred on the box's centre with side S_x/S_z times the template's context region
    side = math.sqrt((40 + 45) * (50 + 45)) * 255 / 127
    assert t.search_side == pytest.approx(side)
    np.testing.assert_allclose(got, crop_to_image([x1, y1, x2 - x1, y2 - y1], (120.0, 105.0), side, 255), atol=1e-9)
    # with size_lr = 0.5 the size moves half-way, the centre all the way
    half = _tracker(net, confidence_threshold=0.5, size_lr=0.5, max_size_change=math.inf)
    half.init(image, box)
    _fixed_prediction(half, cells, peak=0.9)
    c = xywh_to_cxcywh(half.update(image))
    full = xywh_to_cxcywh(got)
    np.testing.assert_allclose(c[:2], full[:2], atol=1e-9)
    np.testing.assert_allclose(c[2:], (full[2:] + box[2:]) / 2, atol=1e-9)
    # not confident: the box stays where it was
    unsure = _tracker(net, confidence_threshold=0.5)
    unsure.init(image, box)
    _fixed_prediction(unsure, cells, peak=0.0)
    np.testing.assert_allclose(unsure.update(image), box, atol=1e-9)
    assert unsure.confidence == pytest.approx(4 / 576)   # flat maps: the first cell is the "peak"
    # the size may change by at most max_size_change a frame, each side on its own; the centre moves freely
    slow = _tracker(net, confidence_threshold=0.5, size_lr=1.0, max_size_change=0.01)
    slow.init(image, box)
    _fixed_prediction(slow, cells, peak=0.9)
    c = xywh_to_cxcywh(slow.update(image))
    np.testing.assert_allclose(c[:2], full[:2], atol=1e-9)
    grow = full[2:] > box[2:]
    np.testing.assert_allclose(c[2:], np.where(grow, box[2:] * 1.01, box[2:] / 1.01), atol=1e-9)


def test_localise_prior_picks_the_mode_near_the_last_corner(net):
    t = _tracker(net, motion_sigma=0.5, local_window=2)
    H = np.zeros((2, 24, 24))
    H[0, 3, 3], H[0, 12, 12] = 0.55, 0.45        # the stronger mode is far from the last corner
    H[1, 18, 18] = 1.0
    last = np.array([CELL[12], CELL[12], CELL[18], CELL[18]])
    corners, post = t.localise(H, last)
    np.testing.assert_allclose(corners, last, atol=1e-6)
    np.testing.assert_allclose(post.sum((1, 2)), 1.0, atol=1e-9)
    # STARK's plain soft-argmax (no prior, whole map) lands between the two modes
    plain = _tracker(net, motion_sigma=0.0, local_window=-1)
    c2, _ = plain.localise(H, last)
    np.testing.assert_allclose(c2[:2], 0.55 * CELL[3] + 0.45 * CELL[12], atol=1e-6)


def test_confidence_is_the_peak_mass(net):
    t = _tracker(net)
    sharp = np.zeros((2, 24, 24))
    sharp[:, 5, 5] = 1.0
    assert t.peak_mass(sharp) == pytest.approx(1.0)
    flat = np.full((2, 24, 24), 1 / 576)
    flat[:, 10, 10] += 1e-6                              # the peak in the middle: a 3×3 neighbourhood
    assert t.peak_mass(flat) == pytest.approx(9 / 576, rel=1e-3)
    flat[:, 10, 10] -= 2e-6                              # the first cell wins: only 2×2 cells there
    assert t.peak_mass(flat) == pytest.approx(4 / 576, rel=1e-3)


def test_corner_attention_reads_the_corner_tokens_row(net, scene):
    image, box = scene
    t = _tracker(net)
    t.init(image, box)
    t.update(image)
    A = np.random.default_rng(0).random(t.attention.shape).astype(np.float32)
    corners = np.array([35.5 + 8 * 3, 35.5 + 8 * 2, 35.5 + 8 * 20, 35.5 + 8 * 21])   # cells (2, 3) and (21, 20)
    maps = t.corner_attention_maps(corners, A)
    np.testing.assert_array_equal(maps[0].ravel(), A[128 + 2 * 24 + 3, :128])
    np.testing.assert_array_equal(maps[1].ravel(), A[128 + 21 * 24 + 20, :128])


def test_dynamic_template_updates_only_on_confident_frames(net, scene):
    image, box = scene
    t = _tracker(net, update_interval=1, update_threshold=0.0, confidence_threshold=0.0)
    t.init(image, box)
    shifted = np.roll(image, 7, axis=1)
    t.update(shifted)
    assert not np.array_equal(t.templates[1], t.templates[0])
    np.testing.assert_array_equal(t.templates[0], t.first_template)
    strict = _tracker(net, update_interval=1, update_threshold=1.01)
    strict.init(image, box)
    strict.update(shifted)
    np.testing.assert_array_equal(strict.templates[1], strict.templates[0])


def test_tracker_validates_its_input(net, scene):
    image, box = scene
    t = _tracker(net)
    with pytest.raises(ValueError, match="image"):
        t.init(image[:, :, 0:2], box)
    with pytest.raises(ValueError, match="initial box"):
        t.init(image, [10, 10, 0, 5])
    with pytest.raises(TypeError, match="image"):
        t.init([[1, 2]], box)


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        stark.STARKTracker(weights=tmp_path / "nothing.pt")


def test_weights_round_trip_with_settings(tmp_path):
    from acvm.training import save_weights
    s = stark.STARKSettings(layers=1, templates=1)
    torch.manual_seed(3)
    model = stark.STARKNet(s)
    path = save_weights(tmp_path / "w.pt", model, {"settings": {k: getattr(s, k) for k in s.__dataclass_fields__}})
    loaded, meta = stark.load_model(path)
    assert loaded.settings == s and len(loaded.encoder.blocks) == 1
    t = stark.STARKTracker(weights=path, confidence_threshold=0.9)
    assert t.settings.templates == 1 and t.settings.confidence_threshold == 0.9
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_draw_stark_frame(net, scene):
    import matplotlib.pyplot as plt
    image, box = scene
    t = _tracker(net)
    t.init(image, box)
    t.update(image)
    fig = stark.draw_stark_frame(t.frame_record())
    assert len(fig.axes) == 2 + 2 * 2
    plt.close(fig)


def test_elongated_targets_are_seen_through_a_stretched_crop(net):
    image = np.zeros((300, 300, 3), np.uint8) + 90
    box = np.array([140.0, 90.0, 20.0, 60.0])                 # h/w = 3
    t = _tracker(net, max_aspect=1.5)
    t.init(image, box)
    w_r, h_r = t.region()
    side = math.sqrt((20 + 40) * (60 + 40))                   # the square context region's side
    assert h_r / w_r == pytest.approx(3 / 1.5)                 # the target looks 1.5× taller than wide
    assert math.sqrt(w_r * h_r) == pytest.approx(side)         # the same area as the square region
    assert (60 / h_r) / (20 / w_r) == pytest.approx(1.5)
    # max_aspect = inf keeps the square region of SiamFC and STARK
    square = _tracker(net, max_aspect=float("inf"))
    square.init(image, box)
    np.testing.assert_allclose(square.region(), [side, side])
    # the predicted corners map back through the same stretched region
    cells = [(7, 8), (17, 16)]
    t2 = _tracker(net, max_aspect=1.5, confidence_threshold=0.5, size_lr=1.0, max_size_change=math.inf)
    t2.init(image, box)
    _fixed_prediction(t2, cells, peak=0.9)
    got = t2.update(image)
    region = t2.search_region
    x1, y1, x2, y2 = CELL[8], CELL[7], CELL[16], CELL[17]
    np.testing.assert_allclose(got, crop_to_image([x1, y1, x2 - x1, y2 - y1], (150.0, 120.0), tuple(region), 255),
                               atol=1e-9)
    np.testing.assert_allclose(region, np.array([w_r, h_r]) * 255 / 127)


def test_train_writes_loadable_weights_and_can_fine_tune(tmp_path):
    s = stark.STARKSettings(layers=1, templates=1)
    path = stark.train(steps=1, batch_size=2, workers=0, out=tmp_path / "s.pt", settings=s, init=None, progress=False)
    net, meta = stark.load_model(path)
    assert net.settings == s and meta["steps"] == 1 and meta["init"] == "random"
    assert len(meta["loss_curve"]) == 1 and np.isfinite(meta["final_loss"])
    assert not (tmp_path / "s.pt.ckpt").exists()
    again = stark.train(steps=1, batch_size=2, workers=0, out=tmp_path / "t.pt", init=str(path), aspect=0.5, zoom=0.5,
                        progress=False)
    _, meta2 = stark.load_model(again)
    assert meta2["init"].startswith("fine-tuned from s.pt") and meta2["aspect"] == 0.5 and meta2["zoom"] == 0.5
    assert meta2["settings"]["layers"] == 1   # a fine-tune keeps the network it starts from


def test_training_can_keep_the_siamfc_backbone_fixed(tmp_path):
    from acvm.backbone import trained_backbone
    if not stark.WEIGHTS.with_name("siamfc.pt").is_file():
        pytest.skip("no shipped SiamFC weights")
    s = stark.STARKSettings(layers=1, templates=1)
    path = stark.train(steps=2, batch_size=2, workers=0, out=tmp_path / "f.pt", settings=s, lr=1e-2, init="siamfc",
                       freeze=True, shift=64.0, progress=False)
    net, meta = stark.load_model(path)
    assert meta["init"] == "backbone from siamfc.pt, frozen" and meta["shift"] == 64.0
    siamfc = trained_backbone(stark.WEIGHTS.with_name("siamfc.pt")).state_dict()
    got = net.backbone.state_dict()
    for k, v in siamfc.items():   # weights and batch-norm statistics alike
        torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)
    torch.manual_seed(0)   # train() starts from this initialisation (seed 0); the layers after
    untouched = stark.STARKNet(s)   # the backbone moved away from it
    assert not torch.allclose(net.bottleneck.weight, untouched.bottleneck.weight)


def test_stretched_sequence_scales_frames_and_boxes_alike():
    seq = _ColourSequence((10, 20, 30), n=3)
    st = stark.StretchedSequence(seq, 0.5, 2.0)
    assert st[0].shape == (240, 80, 3) and len(st) == 3
    np.testing.assert_allclose(st.boxes[0], [30.0, 80.0, 15.0, 60.0])


def _oracle_heatmaps(t, truth):
    """Heat maps whose local soft-argmax is exactly the true box's corners in the search crop.

    The crop mapping is written out here from its definition (frame point ``p`` lands at
    ``(p − centre)·S_x/region + S_x/2``), independently of :func:`acvm.boxes.image_to_crop`; each
    corner's mass is split bilinearly over the four cells around it, so its expectation is the corner.
    """
    S = t.settings.search_size
    scale = S / np.asarray(t.search_region, dtype=np.float64)
    x, y, w, h = truth
    tl = (np.array([x, y]) - t.centre) * scale + S / 2
    br = (np.array([x + w, y + h]) - t.centre) * scale + S / 2
    H = np.zeros((2, 24, 24))
    for k, (cx, cy) in enumerate((tl, br)):
        fx, fy = (cx - CELL[0]) / 8, (cy - CELL[0]) / 8
        j, i = int(np.floor(fx)), int(np.floor(fy))
        assert 0 <= i < 23 and 0 <= j < 23, "the true corner must lie inside the cell grid"
        ax, ay = fx - j, fy - i
        H[k, i, j], H[k, i, j + 1] = (1 - ay) * (1 - ax), (1 - ay) * ax
        H[k, i + 1, j], H[k, i + 1, j + 1] = ay * (1 - ax), ay * ax
    return H


def test_tracker_geometry_follows_a_small_elongated_target_exactly(net):
    """With a network that sees perfectly, the tracker must follow a small target 3 times taller than
    wide in a small frame (OTB-like: a pedestrian) with IoU ≈ 1: the stretched crop and its inverse,
    ``min_size``, the clipping and the motion prior must not lose it on their own (the shipped network's
    low AUC on OTB's pedestrians comes from its heat maps, not from this geometry)."""
    from acvm.boxes import iou
    from acvm.synth import make_sequence
    seq = stark.StretchedSequence(make_sequence(10300, n_frames=15, size=(160, 120), target_size=0.2), 0.6, 1.8)
    assert seq.boxes[0, 3] / seq.boxes[0, 2] > 2.5 and seq.boxes[0, 2] < 15     # small and elongated
    t = _tracker(net, size_lr=1.0, max_size_change=math.inf)   # default max_aspect, motion prior, min_size
    t.init(seq[0], seq.boxes[0])
    frame = {"i": 0}
    n = t.n_templates * 64 + 576
    t.predict = lambda crop: {"corners": np.zeros(4), "heatmaps": _oracle_heatmaps(t, seq.boxes[frame["i"]]),
                              "attention": np.full((n, n), 1.0 / n, np.float32)}
    ious = []
    for i in range(1, len(seq)):
        frame["i"] = i
        ious.append(float(iou(t.update(seq[i]), seq.boxes[i])))
        assert t.confidence > t.settings.confidence_threshold
    assert min(ious) > 0.97, ious


# --- the matching branch (settings.correlation) ------------------------------------------------------

@pytest.fixture(scope="module")
def corr_net():
    torch.manual_seed(0)
    return stark.STARKNet(stark.STARKSettings(layers=1, correlation=True)).eval()


def test_adding_the_matching_branch_changes_nothing_until_trained():
    torch.manual_seed(0)
    plain = stark.STARKNet(stark.STARKSettings(layers=1)).eval()
    with_branch = stark._with_correlation(plain).eval()
    assert with_branch.settings.correlation and not with_branch.training
    g = torch.Generator().manual_seed(2)
    z, x = torch.rand(2, 2, 3, 127, 127, generator=g), torch.rand(2, 3, 255, 255, generator=g)
    with torch.no_grad():
        a, b = plain(z, x), with_branch(z, x)
    torch.testing.assert_close(a["logits"], b["logits"], rtol=0, atol=0)
    assert "response" not in a and b["response"].shape == (2, 1, 24, 24)
    with torch.no_grad():
        with_branch.corr_embed.bias.fill_(0.5)      # once the embedding moves, the output follows
        assert not torch.allclose(with_branch(z, x)["logits"], a["logits"])


def test_response_is_the_channel_summed_correlation_on_the_token_grid(corr_net):
    from scipy.signal import correlate
    g = torch.Generator().manual_seed(3)
    z, x = torch.rand(1, 3, 127, 127, generator=g), torch.rand(1, 3, 255, 255, generator=g)
    kernel = corr_net.match_kernel(z)
    assert kernel.shape == (1, 128, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(kernel, corr_net.matcher(z)[:, :, :7, :7])
        fx = corr_net.matcher(x)[0].double().numpy()
        got = corr_net.response(kernel, x)[0, 0].double().numpy()
    k = kernel[0].double().numpy()
    ref = sum(correlate(fx[c], k[c], mode="same") for c in range(fx.shape[0]))   # zero-padded, centred
    ref = (ref - ref.mean()) / ref.std(ddof=1)
    np.testing.assert_allclose(got, ref, atol=2e-4)


def test_a_network_with_the_branch_needs_the_kernel(corr_net):
    x = torch.rand(1, 3, 255, 255)
    with torch.no_grad():
        tokens = corr_net.template_tokens(torch.rand(1, 2, 3, 127, 127))
        with pytest.raises(ValueError, match="match_kernel"):
            corr_net.encode(tokens, x)


def test_tracker_keeps_the_first_templates_kernel_and_exposes_the_response(corr_net, net, scene):
    image, box = scene
    t = _tracker(corr_net, update_interval=1, update_threshold=0.0)
    t.init(image, box)
    kernel = t.kernel.clone()
    with torch.no_grad():
        torch.testing.assert_close(kernel, corr_net.match_kernel(torch.from_numpy(t.first_template).permute(2, 0, 1)[None].float() / 255))
    for _ in range(2):
        t.update(image)
    assert t.response.shape == (24, 24) and abs(float(t.response.mean())) < 1e-4
    torch.testing.assert_close(t.kernel, kernel)          # the dynamic template does not change it
    plain = _tracker(net)
    plain.init(image, box)
    plain.update(image)
    assert plain.response is None and plain.kernel is None


def test_fine_tuning_adds_the_branch_with_siamfcs_backbone_and_keeps_it_fixed(tmp_path):
    from acvm.backbone import trained_backbone
    siamfc = stark.WEIGHTS.with_name("siamfc.pt")
    if not siamfc.is_file():
        pytest.skip("no shipped SiamFC weights")
    s = stark.STARKSettings(layers=1, templates=1)
    base = stark.train(steps=1, batch_size=2, workers=0, out=tmp_path / "b.pt", settings=s, progress=False)
    path = stark.train(steps=2, batch_size=2, workers=0, out=tmp_path / "c.pt", init=str(base), lr=1e-2,
                       freeze=True, correlation=True, clutter=2, progress=False)
    net, meta = stark.load_model(path)
    before, _ = stark.load_model(base)
    assert net.settings == stark.STARKSettings(layers=1, templates=1, correlation=True)
    assert meta["init"].startswith("fine-tuned from b.pt") and "correlation channel from siamfc.pt" in meta["init"]
    for k, v in trained_backbone(siamfc).state_dict().items():     # the matcher is SiamFC's, unchanged
        torch.testing.assert_close(net.matcher.state_dict()[k], v, rtol=0, atol=0, msg=k)
    for k, v in before.backbone.state_dict().items():              # the frozen backbone too
        torch.testing.assert_close(net.backbone.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert net.corr_embed.weight.abs().sum() > 0                   # the branch's embedding trained
    assert not torch.allclose(net.bottleneck.weight, before.bottleneck.weight)


# --- STARK-ST's decoder and score head ---------------------------------------------------------------

@pytest.fixture(scope="module")
def st_net():
    torch.manual_seed(0)
    return stark.STARKNet(stark.STARKSettings(layers=1, score_head=True)).eval()


def test_score_head_reads_the_encoded_tokens_and_leaves_the_box_as_it_was(st_net):
    # the same weights without the head give the same corners: the head only adds outputs
    plain = stark.STARKNet(stark.STARKSettings(layers=1)).eval()
    extra = plain.load_state_dict(st_net.state_dict(), strict=False).unexpected_keys
    assert extra and all(k.split(".")[0] in stark.STARKNet.SCORE_PARTS for k in extra)
    g = torch.Generator().manual_seed(3)
    z, x = torch.rand(2, 2, 3, 127, 127, generator=g), torch.rand(2, 3, 255, 255, generator=g)
    with torch.no_grad():
        out, ref = st_net(z, x), plain(z, x)
    torch.testing.assert_close(out["corners"], ref["corners"])
    assert out["score"].shape == (2,) and "score" not in ref
    L = 2 * 64 + 576
    assert out["query_attention"].shape == (2, st_net.settings.heads, L)
    torch.testing.assert_close(out["query_attention"].sum(-1), torch.ones(2, st_net.settings.heads))


def test_stage_two_trains_the_score_head_alone():
    torch.manual_seed(1)
    model = stark.STARKNet(stark.STARKSettings(layers=1, score_head=True)).freeze_localisation()
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(stark.STARKNet.SCORE_PARTS)
    bn = model.head.top_left[1]
    before = bn.running_mean.clone()
    model.train()
    assert not bn.training and model.decoder.training
    g = torch.Generator().manual_seed(4)
    batch = {"z": torch.rand(3, 2, 3, 127, 127, generator=g), "x": torch.rand(3, 3, 255, 255, generator=g),
             "label": torch.tensor([1.0, 0.0, 1.0])}
    loss = stark.score_loss(model, batch)
    # the loss is the binary cross-entropy of the score's logit, by hand
    with torch.no_grad():
        p = torch.sigmoid(model(batch["z"], batch["x"])["score"])
    ref = -(batch["label"] * torch.log(p) + (1 - batch["label"]) * torch.log(1 - p)).mean()
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-5)
    loss.backward()
    assert model.score_mlp[0].weight.grad is not None and model.head.top_left[0].weight.grad is None
    torch.testing.assert_close(bn.running_mean, before)
    with pytest.raises(ValueError, match="score head"):
        stark.STARKNet(stark.STARKSettings(layers=1)).freeze_localisation()


def test_score_samples_take_negatives_from_another_sequence():
    from acvm.training import PairSettings
    ps = PairSettings(colour=0.0, grey=0.0)
    samples = stark.ScoreSamples(stark.TemplatePairs([_TwoColours()], ps, reuse=3),
                                 stark.TemplatePairs([_TwoColours()], ps, reuse=1), negatives=0.5)
    rng = np.random.default_rng(5)
    labels, agree = [], []
    for _ in range(60):
        s = samples(rng)
        labels.append(float(s["label"]))
        red_x, red_z = s["x"][0].mean() > s["x"][2].mean(), s["z"][0][0].mean() > s["z"][0][2].mean()
        agree.append(red_x == red_z)
        if s["label"] == 1.0:
            assert red_x == red_z              # a positive's search crop is the templates' sequence
    assert 0.3 < np.mean(labels) < 0.7
    # negatives come from another draw: with two sequences, about half of them differ from the templates
    neg = [a for a, lab in zip(agree, labels) if lab == 0.0]
    assert 0 < sum(not a for a in neg) < len(neg)


def test_dynamic_template_follows_the_update_rule(st_net, net, scene):
    image, box = scene
    shifted = np.roll(image, 7, axis=1)
    for rule, threshold, changes in [("score", 0.0, True), ("score", 1.01, False), ("never", 0.0, False)]:
        t = _tracker(st_net, update_interval=1, update_rule=rule, score_threshold=threshold,
                     update_threshold=0.0, confidence_threshold=0.0)
        t.init(image, box)
        t.update(shifted)
        assert 0.0 < t.score < 1.0 and t.query_attention.shape == (2 * 64 + 576,)
        assert t.template_updated == changes
        assert (not np.array_equal(t.templates[1], t.templates[0])) == changes, rule
    assert _tracker(st_net).update_rule == "score" and _tracker(net).update_rule == "confidence"
    with pytest.raises(ValueError, match="score head"):
        _tracker(net, update_rule="score")
    with pytest.raises(ValueError, match="update_rule"):
        _tracker(st_net, update_rule="sometimes")


def test_train_score_extends_a_weights_file_and_load_model_reads_it(tmp_path):
    torch.manual_seed(2)
    base = stark.STARKNet(stark.STARKSettings(layers=1))
    from acvm.weights import save_weights
    init = save_weights(tmp_path / "base.pt", base, {"command": "test", "settings": {"layers": 1}})
    out = stark.train_score(init, steps=2, batch_size=2, workers=0, progress=False)
    assert out == tmp_path / "base-st.pt"
    model, meta = stark.load_model(out)
    assert model.settings.score_head and model.settings.layers == 1 and "score head on base.pt" in meta["init"]
    torch.testing.assert_close(model.head.top_left[0].weight, base.head.top_left[0].weight)


def test_stark_st_is_the_tracker_on_the_score_head_network(tmp_path, monkeypatch):
    from acvm.registry import MODELS, make_tracker, train_command
    assert MODELS["stark-st"].starts_from == ("stark",) and stark.ST_WEIGHTS.name == "stark-st.pt"
    control = make_tracker("stark-st", weights="random")
    assert isinstance(control, stark.STARKSTTracker) and control.net.settings.score_head
    assert control.update_rule == "score"
    assert make_tracker("stark-st", weights="random", update_rule="never").update_rule == "never"
    assert "acvm train stark-st" in train_command(stark.ST_WEIGHTS)
    # train_st extends the weights it is given (the shipped stark.pt by default) into ST_WEIGHTS
    torch.manual_seed(3)
    from acvm.weights import save_weights
    init = save_weights(tmp_path / "stark.pt", stark.STARKNet(stark.STARKSettings(layers=1)),
                        {"command": "test", "settings": {"layers": 1}})
    monkeypatch.setattr(stark, "ST_WEIGHTS", tmp_path / "stark-st.pt")
    out = stark.train_st(steps=1, init=init, batch_size=2, workers=0, progress=False)
    assert out == tmp_path / "stark-st.pt"
    tracker = stark.STARKSTTracker(weights=out)
    assert tracker.update_rule == "score" and tracker.net.settings.layers == 1
    missing = tmp_path / "none" / "stark-st.pt"
    with pytest.raises(FileNotFoundError, match="stark-st"):
        stark.STARKSTTracker(weights=missing)


def test_query_attention_drawing_splits_the_tokens_by_crop(st_net, net, scene):
    import matplotlib
    matplotlib.use("Agg")
    image, box = scene
    t = _tracker(st_net, update_interval=1, score_threshold=0.0)
    t.init(image, box)
    t.update(image)
    record = t.frame_record()
    assert record["template_updated"] and 0 < record["score"] < 1
    fig = stark.draw_query_attention(record)
    search, first, dynamic = (ax.images[1].get_array() for ax in fig.axes)
    n_z = t.net.z_grid[0] * t.net.z_grid[1]
    w = record["query_attention"]
    np.testing.assert_allclose(search.ravel(), w[2 * n_z:])
    np.testing.assert_allclose(dynamic.ravel(), w[n_z:2 * n_z])
    assert abs(w.sum() - 1) < 1e-5
    plain = _tracker(net)
    plain.init(image, box)
    plain.update(image)
    with pytest.raises(ValueError, match="no score head"):
        stark.draw_query_attention(plain.frame_record())
