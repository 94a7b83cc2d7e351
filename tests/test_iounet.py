"""acvm.iounet: proposals against acvm.boxes.iou, the scale-only ceiling against a brute-force scale
scan, overlap maximisation on a head whose prediction is the true IoU, and the training entry point."""
import numpy as np
import pytest
import torch

from acvm.boxes import iou, xywh_to_cxcywh
from acvm.iounet import (IoUHead, IoUNet, IoUNetSettings, OverlapMaximisationView, ProposalSampler,
                         draw_iou_heatmaps, iou_heatmaps, jitter_boxes, load_iounet, refine_boxes, scale_only_iou,
                         train)


def test_jitter_boxes_report_their_true_iou_and_respect_the_minimum():
    rng = np.random.default_rng(0)
    box = np.array([40.0, 30.0, 50.0, 20.0])
    boxes, ious = jitter_boxes(box, 200, rng, min_iou=0.3)
    np.testing.assert_allclose(ious, iou(boxes, box[None]), atol=1e-12)
    assert ious.min() >= 0.3 and ious.max() > 0.9 and (boxes[:, 2:] > 0).all()
    again, _ = jitter_boxes(box, 200, np.random.default_rng(0), min_iou=0.3)
    np.testing.assert_array_equal(boxes, again)


def test_scale_only_iou_equals_a_brute_force_scale_scan():
    rng = np.random.default_rng(1)
    first = np.c_[rng.uniform(0, 50, (30, 2)), rng.uniform(5, 60, (30, 2))]
    gt = np.c_[rng.uniform(0, 50, (30, 2)), rng.uniform(5, 60, (30, 2))]
    scales = np.exp(np.linspace(-3, 3, 20001))
    c = xywh_to_cxcywh(gt)
    for b, g, cc in zip(first, gt, c):
        w, h = b[2] * scales, b[3] * scales
        cand = np.stack([cc[0] - w / 2, cc[1] - h / 2, w, h], 1)
        assert scale_only_iou(b, g) == pytest.approx(iou(cand, g).max(), abs=1e-6)
    # an aspect change by ρ caps the IoU at 1 / (2√ρ − 1)
    assert scale_only_iou([0, 0, 10, 10], [0, 0, 20, 10]) == pytest.approx(1 / (2 * np.sqrt(2) - 1))


class _TrueIoUHead(torch.nn.Module):
    """A stand-in head whose 'prediction' is the exact, differentiable IoU with a fixed target."""

    def __init__(self, target):
        super().__init__()
        self.target = torch.tensor(target, dtype=torch.float32)

    def predict(self, feat, boxes, modulation):
        t = self.target
        x1 = torch.maximum(boxes[..., 0], t[0])
        y1 = torch.maximum(boxes[..., 1], t[1])
        x2 = torch.minimum(boxes[..., 0] + boxes[..., 2], t[0] + t[2])
        y2 = torch.minimum(boxes[..., 1] + boxes[..., 3], t[1] + t[3])
        inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
        return inter / (boxes[..., 2] * boxes[..., 3] + t[2] * t[3] - inter)


def test_refine_boxes_climbs_towards_the_target_when_the_prediction_is_exact():
    target = [50.0, 40.0, 30.0, 60.0]
    head = _TrueIoUHead(target)
    start = np.array([[42.0, 50.0, 40.0, 45.0], [58.0, 30.0, 25.0, 70.0]])
    history, ious = refine_boxes(head, None, None, start, steps=30, step_length=1.0)
    assert history.shape == (31, 2, 4) and ious.shape == (31, 2)
    np.testing.assert_allclose(ious, iou(history, np.array(target)), atol=1e-5)
    assert (ious[-1] > ious[0] + 0.25).all() and (ious[-1] > 0.85).all()
    np.testing.assert_allclose(history[0], start)


def test_head_is_differentiable_in_the_boxes_and_the_backbone_stays_frozen():
    torch.manual_seed(0)
    model = IoUNet()
    z, x = torch.rand(2, 3, 127, 127), torch.rand(2, 3, 255, 255)
    z_box = torch.tensor([[32.0, 32.0, 64.0, 64.0], [40.0, 20.0, 40.0, 80.0]])
    boxes = torch.tensor([[[100.0, 100.0, 50.0, 60.0]] * 3] * 2, requires_grad=True)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.train()
    assert not model.backbone.training and model.head.training
    pred = model(z, z_box, x, boxes)
    assert pred.shape == (2, 3)
    pred.sum().backward()
    assert torch.isfinite(boxes.grad).all() and boxes.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters())
    for k, v in model.backbone.state_dict().items():  # batch-norm statistics unchanged
        torch.testing.assert_close(v, before[k])


def test_proposal_sampler_makes_consistent_examples():
    sample = ProposalSampler()(np.random.default_rng(3))
    assert sample["z"].shape == (3, 127, 127) and sample["x"].shape == (3, 255, 255)
    assert sample["boxes"].shape == (IoUNetSettings().proposals, 4) and sample["ious"].dtype == np.float32
    # the regression target is the IoU of each proposal with the target's box in the search crop
    np.testing.assert_allclose(sample["ious"], iou(sample["boxes"], sample["x_box"][None]), atol=1e-6)
    assert sample["ious"].min() >= 0.1



class _Fixed:
    """A source of one sequence (a square target) with a known box."""

    def __init__(self, seq):
        self.seq = seq

    def sequence(self, rng):
        return self.seq


def test_stretched_source_draws_aspect_and_zoom_in_their_ranges():
    from acvm.synth import make_sequence
    from acvm.training import StretchedSource, stretch_sequence
    seq = make_sequence(10400, n_frames=3, size=(160, 120))
    assert stretch_sequence(seq, np.random.default_rng(0)) is seq   # nothing asked, nothing changed
    src = StretchedSource(_Fixed(seq), aspect=1.0, zoom=1.0)
    rng = np.random.default_rng(1)
    log_aspect, log_size = [], []
    for _ in range(200):
        out = src.sequence(rng)
        fx, fy = out.f[0], out.f[1]
        log_aspect.append(np.log(fy / fx))
        log_size.append(np.log(np.sqrt(fx * fy)))
        np.testing.assert_allclose(out.boxes, np.asarray(seq.boxes) * out.f)
    # h/w changes by exp(U(-1, 1)) (up to the rounding of the frame size), the size by exp(-U(0, 1))
    assert -1.05 < min(log_aspect) < -0.8 and 0.8 < max(log_aspect) < 1.05
    assert -1.05 < min(log_size) < -0.85 and max(log_size) < 0.03
    assert abs(np.mean(log_aspect)) < 0.15   # symmetric: no preference for wide or tall boxes


@pytest.mark.parametrize("settings", [IoUNetSettings(), IoUNetSettings(squeeze=0.0, aspect=1.0)],
                         ids=["squeezed crops", "stretched sequences"])
def test_proposal_sampler_sees_elongated_targets(settings):
    # the synthetic generator's h/w stays within about 0.55..1.8 (0.56..1.58 in these 24 samples
    # with neither squeeze nor aspect); pedestrians reach 3
    sampler = ProposalSampler(settings=settings)
    rng = np.random.default_rng(5)
    ratios = [s["x_box"][3] / s["x_box"][2] for s in (sampler(rng) for _ in range(24))]
    assert max(ratios) > 2.0 and min(ratios) < 0.5

def test_train_writes_weights_that_load(tmp_path):
    torch.manual_seed(0)
    from acvm.backbone import Backbone
    bb = tmp_path / "backbone.pt"
    torch.save({"state_dict": {"backbone." + k: v for k, v in Backbone().state_dict().items()}, "meta": {}}, bb)
    out = train(steps=2, seed=0, out=tmp_path / "iounet.pt", backbone=bb, workers=0, batch_size=2,
                progress=False, device="cpu")
    model = load_iounet(out)
    state = torch.load(out, weights_only=True)
    assert state["meta"]["steps"] == 2 and any(k.startswith("head.") for k in state["state_dict"])
    assert not model.training
    with pytest.raises(FileNotFoundError, match="acvm train"):
        load_iounet(tmp_path / "missing.pt")


def test_heatmaps_and_overlap_view():
    torch.manual_seed(0)
    head = IoUHead().eval()
    feat = head.test_features(torch.rand(1, 96, 26, 26))
    m = torch.rand(1, 128)
    gt = np.array([100.0, 90.0, 60.0, 40.0])
    maps = iou_heatmaps(head, feat, m, gt, n=9)
    assert maps["shift_true"][4, 4] == pytest.approx(1.0) and maps["size_true"][4, 4] == pytest.approx(1.0)
    assert maps["shift_true"][4, 5] == pytest.approx(float(iou(gt, gt + [0.15 * 60, 0, 0, 0])))
    assert draw_iou_heatmaps(maps) is not None
    history, ious = refine_boxes(head, feat, m, gt[None] + 5.0, steps=3)
    view = OverlapMaximisationView(np.zeros((255, 255, 3), np.uint8), history, ious, gt)
    fig = view.draw(2)
    assert len(fig.axes) == 2
    with pytest.raises(IndexError):
        view.draw(4)


def test_squeeze_crop_moves_the_box_with_the_content():
    from acvm.iounet import squeeze_crop
    crop = np.zeros((3, 127, 127), np.float32)
    crop[:, 40:80, 50:70] = 1.0  # a bright target exactly in the box (50, 40, 20, 40)
    for a in (-0.4, 0.3):
        out, box = squeeze_crop(crop, np.array([50.0, 40.0, 20.0, 40.0]), a)
        ys, xs = np.nonzero(out[0] > 0.5)
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()],
                                   box, atol=1.0)
        assert box[2] / box[3] == pytest.approx(0.5 * np.exp(2 * a), rel=1e-5)
