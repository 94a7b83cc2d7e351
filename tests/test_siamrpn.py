"""SiamRPN: the network's geometry, the loss against a hand-written reference, the anchor targets,
the change penalty by hand, and the tracker's decoding path with a stub network whose answer we know."""
import numpy as np
import pytest
from conftest import overlaps_on_synthetic
import torch

from acvm import rpn
from acvm.boxes import context_size, cxcywh_to_xywh, image_to_crop, iou, xywh_to_cxcywh
from acvm.siamrpn import (WEIGHTS, RPNSample, SiamRPN, SiamRPNSettings, SiamRPNTracker, change_penalty,
                          load_model, rpn_loss, search_anchors, stretch_box, stretch_crop, train)



pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return SiamRPN().eval()


def test_shapes_and_anchor_grid(net):
    s = SiamRPNSettings()
    assert s.score_size == 17 and s.k == 5
    cls, reg = net(torch.rand(2, 3, 127, 127), torch.rand(2, 3, 255, 255))
    assert cls.shape == (2, 5, 2, 17, 17) and reg.shape == (2, 5, 4, 17, 17)
    anchors = search_anchors(s)
    assert anchors.shape == (5, 17, 17, 4)
    centre = xywh_to_cxcywh(anchors[:, 8, 8])
    np.testing.assert_allclose(centre[:, :2], 127.5)
    np.testing.assert_allclose(centre[:, 2] * centre[:, 3], 64.0 ** 2)


def test_template_kernels_are_reused(net):
    z, x = torch.rand(1, 3, 127, 127), torch.rand(1, 3, 255, 255)
    with torch.no_grad():
        a = net(z, x)
        b = net.detect(net.template(z), x)
        c = net(torch.rand(1, 3, 127, 127), x)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    assert not torch.allclose(a[0], c[0])       # another template gives another answer


def test_head_is_a_correlation_translation_equivariant(net):
    # moving the search region by one stride (8 px) moves every output by one cell
    g = torch.Generator().manual_seed(1)
    big = torch.rand(1, 3, 255, 263, generator=g)
    z = torch.rand(1, 3, 127, 127, generator=g)
    with torch.no_grad():
        cls0, reg0 = net(z, big[..., :255])
        cls1, reg1 = net(z, big[..., 8:263])
    torch.testing.assert_close(cls1[..., :-1], cls0[..., 1:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(reg1[..., :-1], reg0[..., 1:], atol=1e-4, rtol=1e-4)


def test_rpn_loss_against_hand_reference():
    g = torch.Generator().manual_seed(2)
    cls = torch.randn(2, 3, 2, 4, 4, generator=g)
    reg = torch.randn(2, 3, 4, 4, 4, generator=g)
    labels = torch.randint(-1, 2, (2, 3, 4, 4), generator=g)
    deltas = torch.randn(2, 3, 4, 4, 4, generator=g)
    total, parts = rpn_loss(cls, reg, labels, deltas, reg_weight=1.2)

    c, r, lab, d = cls.numpy(), reg.numpy(), labels.numpy(), deltas.numpy()
    ce, sl, npos = [], [], 0
    for b in range(2):
        for k in range(3):
            for i in range(4):
                for j in range(4):
                    if lab[b, k, i, j] < 0:
                        continue
                    z = c[b, k, :, i, j].astype(np.float64)
                    ce.append(np.log(np.exp(z).sum()) - z[lab[b, k, i, j]])
                    if lab[b, k, i, j] == 1:
                        npos += 1
                        diff = np.abs(r[b, k, :, i, j] - d[b, k, i, j])
                        beta = 1 / 9
                        sl.append(np.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta))
    l_cls = np.mean(ce)
    l_reg = np.concatenate(sl).mean()
    np.testing.assert_allclose(parts.numpy(), [l_cls, l_reg], rtol=1e-5)
    np.testing.assert_allclose(float(total), l_cls + 1.2 * l_reg, rtol=1e-5)


def test_rpn_sample_targets():
    target = np.array([100.0, 110.0, 50.0, 30.0], dtype=np.float32)

    def pairs(rng):
        return {"z": np.zeros((3, 127, 127), np.float32), "x": np.zeros((3, 255, 255), np.float32),
                "x_box": target}

    sample = RPNSample(pairs, aspect=0.0)(np.random.default_rng(0))
    labels, deltas = sample["labels"], sample["deltas"]
    np.testing.assert_array_equal(sample["reg_mask"], rpn.label_anchors(search_anchors(), target) == 1)
    assert labels.shape == (5, 17, 17) and deltas.shape == (5, 17, 17, 4) and deltas.dtype == np.float32
    assert 1 <= (labels == 1).sum() <= 16 and (labels >= 0).sum() == 64
    anchors = search_anchors()
    overlap = iou(anchors, target)
    assert (overlap[labels == 0] < 0.3).all()
    assert ((overlap[labels == 1] >= 0.6) | (overlap[labels == 1] == overlap.max())).all()
    # the stored deltas move every anchor onto the target
    np.testing.assert_allclose(rpn.decode(deltas, anchors), np.broadcast_to(target, anchors.shape), atol=1e-3)


def test_relative_labels_let_a_large_target_teach_the_regression():
    # a 128 × 128 target on the crop's centre, twice the 64-pixel anchors: every square anchor
    # whose centre lies within 32 px of the target's is inside it, IoU = 64² / 128² = 0.25
    target = np.array([127.5 - 64, 127.5 - 64, 128.0, 128.0])

    def pairs(rng):
        return {"z": np.zeros((3, 127, 127), np.float32), "x": np.zeros((3, 255, 255), np.float32),
                "x_box": target.astype(np.float32)}

    anchors = search_anchors()
    square = SiamRPNSettings().ratios.index(1.0)
    centres = anchors[square, ..., :2] + anchors[square, ..., 2:] / 2
    inside = (np.abs(centres - 127.5) <= 32).all(-1)
    assert inside.sum() == 81                                   # 9 × 9 cells at stride 8
    fixed = RPNSample(pairs)(np.random.default_rng(0))
    assert fixed["reg_mask"].sum() == 1                         # only the best anchor: 0.25 < 0.6
    assert (fixed["labels"][square][inside] == 0).any()         # anchors on the target called background
    sample = RPNSample(pairs, relative=0.75)(np.random.default_rng(0))
    assert (sample["reg_mask"][square][inside] == 1).all()
    assert not sample["reg_mask"][iou(anchors, target) < 0.75 * 0.25].any()
    # the classification keeps the fixed thresholds
    np.testing.assert_array_equal(sample["labels"], fixed["labels"])


def test_rpn_loss_regresses_where_the_mask_says():
    g = torch.Generator().manual_seed(3)
    cls, reg = torch.randn(1, 2, 2, 3, 3, generator=g), torch.randn(1, 2, 4, 3, 3, generator=g)
    labels = torch.full((1, 2, 3, 3), -1)
    labels[0, 0, 1, 1] = 1
    deltas = torch.zeros(1, 2, 3, 3, 4)
    mask = torch.zeros(1, 2, 3, 3)
    mask[0, 1, 2, 0] = 1.0                                  # regress a positive the sampling dropped
    _, parts = rpn_loss(cls, reg, labels, deltas, reg_mask=mask)
    d = reg[0, 1, :, 2, 0].abs()
    expected = torch.where(d < 1 / 9, 0.5 * d ** 2 * 9, d - 0.5 / 9).mean()
    torch.testing.assert_close(parts[1], expected)


def test_stretch_moves_the_content_like_the_box():
    crop = np.zeros((3, 255, 255), np.float32)
    crop[:, 100:140, 90:170] = 1.0                          # x 90..170, y 100..140: an 80 × 40 box
    box = np.array([90.0, 100.0, 80.0, 40.0])
    for r in (np.log(2.0), -0.5):
        out = stretch_crop(crop, r)
        assert out.shape == crop.shape and out.dtype == np.float32
        ys, xs = np.nonzero(out[0] > 0.5)
        found = np.array([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()], dtype=float)
        expected = stretch_box(box, 255, r)
        np.testing.assert_allclose(found, expected, atol=1.0)
        np.testing.assert_allclose(expected[3] / expected[2], 0.5 * np.exp(r))         # aspect × e^r
        np.testing.assert_allclose(expected[2] * expected[3], 80 * 40)               # area kept


def test_change_penalty_by_hand():
    prev = [0.0, 0.0, 10.0, 10.0]
    np.testing.assert_allclose(change_penalty([5.0, 5.0, 10.0, 10.0], prev, k=0.3), 1.0)
    # 20 × 10: padded size sqrt(35 · 25) vs sqrt(20 · 20) = 20; aspect 2 vs 1
    r = np.sqrt(35 * 25) / 20.0
    np.testing.assert_allclose(change_penalty([0, 0, 20.0, 10.0], prev, k=0.3), np.exp(-0.3 * (r * 2 - 1)))
    # shrinking is penalised like growing: 5 × 5 has padded size 10, ratio 2
    np.testing.assert_allclose(change_penalty([0, 0, 5.0, 5.0], prev, k=0.3), np.exp(-0.3 * (2 * 1 - 1)))
    out = change_penalty(np.array([[0, 0, 10, 10], [0, 0, 30, 10]], dtype=float), prev, k=0.1)
    assert out.shape == (2,) and out[0] == 1.0 and 0 < out[1] < 1


class _StubRPN(torch.nn.Module):
    """A 'network' that scores one anchor high and regresses every anchor onto a known crop box."""

    def __init__(self, crop_box, anchor=(2, 10, 6)):
        super().__init__()
        self.crop_box, self.anchor = crop_box, anchor
        self.anchors = search_anchors()

    def template(self, z):
        return None

    def detect(self, kernels, x):
        cls = torch.zeros(1, 5, 2, 17, 17)
        cls[(0, self.anchor[0], 1, self.anchor[1], self.anchor[2])] = 30.0
        deltas = rpn.encode(self.crop_box, self.anchors)             # (5, 17, 17, 4)
        reg = torch.as_tensor(deltas, dtype=torch.float32).permute(0, 3, 1, 2)[None]
        return cls, reg


def _frame():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)


@pytest.mark.parametrize("lr", [1.0, 0.5])
def test_tracker_decodes_the_chosen_proposal(lr):
    image, start = _frame(), np.array([120.0, 80.0, 40.0, 60.0])
    truth = np.array([131.0, 71.0, 56.0, 48.0])                    # moved, wider and shorter
    s = SiamRPNSettings(penalty_k=0.0, window_influence=0.0, lr=lr, calibrate=False)
    side = context_size(40.0, 60.0, 0.5) * 255 / 127
    crop_box = image_to_crop(truth, xywh_to_cxcywh(start)[:2], side, 255)
    tracker = SiamRPNTracker(model=_StubRPN(crop_box), settings=s)
    tracker.init(image, start)
    box = tracker.update(image)
    assert box.shape == (4,) and box.dtype == np.float64
    expected_size = (1 - lr) * start[2:] + lr * truth[2:]          # score ≈ 1, penalty 1
    np.testing.assert_allclose(xywh_to_cxcywh(box)[:2], xywh_to_cxcywh(truth)[:2], atol=1e-3)
    np.testing.assert_allclose(box[2:], expected_size, atol=1e-3)
    assert tracker.proposals.shape == (5 * 17 * 17, 4) and tracker.scores.shape == (5 * 17 * 17,)
    best = np.ravel_multi_index((2, 10, 6), (5, 17, 17))
    np.testing.assert_allclose(tracker.proposals[best], truth, atol=1e-3)
    assert int(np.argmax(tracker.scores)) == best and tracker.confidence > 0.99


def test_tracker_penalty_prefers_unchanged_shape():
    # two equally scored anchors: one keeps the shape, one proposes a 3× wider box; penalty decides
    image, start = _frame(), np.array([120.0, 80.0, 40.0, 40.0])
    side = context_size(40.0, 40.0, 0.5) * 255 / 127
    centre = xywh_to_cxcywh(start)[:2]

    class TwoAnchors(_StubRPN):
        def detect(self, kernels, x):
            cls, reg = super().detect(kernels, x)
            cls[0, 1, 1, 8, 8] = 30.0                            # second candidate, same score
            wide = rpn.encode(image_to_crop([100.0, 80.0, 120.0, 40.0], centre, side, 255), self.anchors[1, 8, 8])
            reg[0, 1, :, 8, 8] = torch.as_tensor(wide, dtype=torch.float32)
            return cls, reg

    same = image_to_crop([124.0, 80.0, 40.0, 40.0], centre, side, 255)
    tracker = SiamRPNTracker(model=TwoAnchors(same, anchor=(2, 8, 8)), window_influence=0.0, penalty_k=0.2, lr=1.0,
                             calibrate=False)
    tracker.init(image, start)
    box = tracker.update(image)
    np.testing.assert_allclose(box, [124.0, 80.0, 40.0, 40.0], atol=1e-3)


def test_first_frame_calibration_stops_a_biased_regression_running_away():
    # regression (issue 7): the trained head proposes a near-fixed multiple of the tracker's own
    # size (1.5× too wide on OTB's walkers) instead of measuring the target; box smoothing
    # compounded that factor every frame. The stub proposes, whatever the crop, a box 1.5× as
    # wide as the first one at the crop's centre: a perfectly static scene
    image, start = _frame(), np.array([120.0, 60.0, 30.0, 90.0])
    side = context_size(30.0, 90.0, 0.5) * 255 / 127
    wide = xywh_to_cxcywh(image_to_crop(start, xywh_to_cxcywh(start)[:2], side, 255))
    wide[2] *= 1.5
    for calibrate in (False, True):
        # max_aspect=inf: the stub's proposal is in the unstretched crop's pixels
        tracker = SiamRPNTracker(model=_StubRPN(cxcywh_to_xywh(wide), anchor=(4, 8, 8)), calibrate=calibrate, lr=0.5,
                                 max_aspect=float("inf"))
        tracker.init(image, start)
        for _ in range(10):
            box = tracker.update(image)
        if calibrate:
            np.testing.assert_allclose(tracker.size_bias, [1.5, 1.0], rtol=1e-5)
            np.testing.assert_allclose(box, start, atol=1e-3)            # nothing moved, nothing changes
        else:
            np.testing.assert_allclose(tracker.size_bias, [1.0, 1.0])
            assert box[2] > 1.5 * start[2]                               # grown past the bias itself


def test_tracker_rejects_bad_input(net):
    tracker = SiamRPNTracker(model=net)
    with pytest.raises(ValueError, match="initial box"):
        tracker.init(_frame(), [10, 10, 0, 5])
    with pytest.raises(TypeError, match="image"):
        tracker.init("frame.jpg", [10, 10, 5, 5])


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="acvm train siamrpn"):
        load_model(tmp_path / "none.pt")


def test_train_writes_loadable_weights(tmp_path):
    path = train(steps=1, batch_size=1, workers=0, out=tmp_path / "rpn.pt", init=None, progress=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["meta"]["model"] == "siamrpn" and state["meta"]["steps"] == 1
    assert not (tmp_path / "rpn.pt.ckpt").exists()
    model = load_model(path)
    assert isinstance(model, SiamRPN)


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="no trained SiamRPN weights (acvm train siamrpn)")
def test_trained_tracker_follows_a_synthetic_target():
    overlaps = overlaps_on_synthetic(SiamRPNTracker(), seed=777, n_frames=40)
    assert np.mean(overlaps) > 0.5, overlaps


def test_tall_target_is_tracked_in_a_stretched_view_and_reported_in_frame_pixels():
    from acvm.boxes import iou as box_iou
    from acvm.synth import make_sequence
    from acvm.training import StretchedSequence
    seq = StretchedSequence(make_sequence(seed=777, n_frames=30), 0.6, 2.0)   # a pedestrian-like 1:3 target
    tracker = SiamRPNTracker()
    tracker.init(seq[0], seq.boxes[0])
    assert not tracker.view.identity
    boxes = []
    for i in range(1, len(seq)):
        boxes.append(tracker.update(seq[i]))
        # the box's centre is the chosen proposal's: both mapped back from the view alike
        chosen = xywh_to_cxcywh(tracker.proposals[int(np.argmax(tracker.penalised))])
        np.testing.assert_allclose(xywh_to_cxcywh(boxes[-1])[:2], chosen[:2], atol=1e-6)
    assert np.mean(box_iou(np.array(boxes), seq.boxes[1:])) > 0.5


def test_tracker_decodes_with_the_function_it_is_given():
    """Notebook 06 runs the tracker on the student's decode: it is what turns deltas into boxes."""
    image, start = _frame(), np.array([120.0, 80.0, 40.0, 60.0])
    truth = np.array([131.0, 71.0, 56.0, 48.0])
    s = SiamRPNSettings(penalty_k=0.0, window_influence=0.0, lr=1.0, calibrate=False)
    side = context_size(40.0, 60.0, 0.5) * 255 / 127
    crop_box = image_to_crop(truth, xywh_to_cxcywh(start)[:2], side, 255)
    calls = []

    def shifted(deltas, anchors):                      # a decode that puts every box 5 px to the right
        calls.append(deltas.shape)
        return rpn.decode(deltas, anchors) + [5.0, 0.0, 0.0, 0.0]
    boxes = []
    for fn in (None, shifted):
        tracker = SiamRPNTracker(model=_StubRPN(crop_box), settings=s, decode=fn)
        tracker.init(image, start)
        boxes.append(tracker.update(image))
    assert calls == [(5 * 17 * 17, 4)]
    scale = side / 255                                 # crop pixels -> image pixels
    np.testing.assert_allclose(boxes[1] - boxes[0], [5.0 * scale, 0, 0, 0], atol=1e-6)


def test_up_channel_head_correlates_each_kernel_with_every_channel():
    """The lecture's up-channel head against a loop of plain conv2d calls, one per kernel."""
    import torch.nn.functional as F
    from acvm.siamrpn import RPNHead, UpChannelHead
    torch.manual_seed(0)
    head = UpChannelHead(c_in=16, hidden=8, k=3).eval()
    fz, fx = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 24, 24)
    cls, reg = head(head.kernels(fz), fx)
    assert cls.shape == (2, 3, 2, 17, 17) and reg.shape == (2, 3, 4, 17, 17)
    kz, x = head.cls_z(fz), head.cls_x(fx)
    for b in range(2):
        for n in range(6):
            ref = F.conv2d(x[b:b + 1], kz[b, n * 8:(n + 1) * 8][None])[0, 0]
            torch.testing.assert_close(cls[b].reshape(6, 17, 17)[n], ref, atol=1e-4, rtol=1e-4)
    # same shapes as the depth-wise head, many more parameters
    dw = RPNHead(c_in=16, hidden=8, k=3)
    out = dw(dw.kernels(fz), fx)
    assert out[0].shape == cls.shape and out[1].shape == reg.shape
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(UpChannelHead()) > 5 * count(RPNHead())
