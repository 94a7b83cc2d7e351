import math

import cv2
import numpy as np
import pytest
import torch

from acvm.correlation import xcorr_loop
from acvm.siamfc import (WEIGHTS, SiamFCNet, SiamFCTracker, balanced_logistic_loss, response_labels, siamfc_loss,
                         target_cells)


def loss_reference(scores, labels):
    """The balanced logistic loss written out cell by cell."""
    total = 0.0
    for v, y in zip(scores.reshape(len(scores), -1), labels.reshape(len(labels), -1)):
        n_pos, n_neg = y.sum(), (1 - y).sum()
        for vi, yi in zip(v, y):
            sign = 1.0 if yi else -1.0
            total += (0.5 / n_pos if yi else 0.5 / n_neg) * math.log1p(math.exp(-sign * vi))
    return total / len(scores)


def test_labels_against_a_loop():
    got = response_labels((17, 15), centre=(7.3, 9.0), radius=2.0)
    ref = np.array([[1.0 if (i - 7.3) ** 2 + (j - 9.0) ** 2 <= 4.0 else 0.0 for j in range(15)] for i in range(17)])
    assert got.dtype == np.float32 and np.array_equal(got, ref)
    middle = response_labels((17, 17))
    assert middle.sum() == 13 and middle[8, 8] == 1 and middle[8, 10] == 1 and middle[8, 11] == 0
    batch = response_labels((17, 17), np.array([[8, 8], [0, 0]]), 2.0)
    assert batch.shape == (2, 17, 17) and batch[1, 0, 0] == 1 and batch[1].sum() == 6


def test_balanced_logistic_loss_against_the_formula():
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 3, (3, 1, 5, 6))
    labels = (rng.random((3, 1, 5, 6)) < 0.2).astype(np.float64)
    labels[:, 0, 0, 0] = 1.0
    got = balanced_logistic_loss(torch.tensor(scores), torch.tensor(labels))
    assert got.shape == () and math.isclose(float(got), loss_reference(scores, labels), rel_tol=1e-9)
    # balanced: one positive weighs as much as all the negatives together
    zero = torch.zeros(1, 1, 4, 4)
    lab = torch.zeros(1, 1, 4, 4)
    lab[0, 0, 0, 0] = 1
    assert math.isclose(float(balanced_logistic_loss(zero, lab)), math.log(2.0), rel_tol=1e-6)
    assert torch.isfinite(balanced_logistic_loss(torch.full((1, 1, 2, 2), 1e4), lab[..., :2, :2]))


def test_target_cells_follow_the_stride():
    centred = np.array([127.5 - 20, 127.5 - 10, 40, 20])
    assert np.allclose(target_cells(centred, 17), (8, 8))
    moved = centred + [16, -8, 0, 0]
    assert np.allclose(target_cells(moved, 17), (7, 10))
    assert target_cells(np.stack([centred, moved]), 17).shape == (2, 2)


def test_network_head_is_a_scaled_correlation():
    torch.manual_seed(0)
    net = SiamFCNet().eval()
    z, x = torch.rand(2, 3, 127, 127), torch.rand(2, 3, 191, 191)
    with torch.no_grad():
        out = net(z, x)
        ref = xcorr_loop(net.embed(z), net.embed(x)) * net.settings.response_scale + net.bias
    assert out.shape == (2, 1, 9, 9) and torch.allclose(out, ref, atol=1e-5)
    batch = {"z": z[:1], "x": torch.rand(1, 3, 255, 255), "x_box": torch.tensor([[107.5, 117.5, 40, 20]])}
    loss = siamfc_loss(net.train(), batch)
    loss.backward()
    assert loss.shape == () and net.backbone.conv1[0].weight.grad is not None


def textured(h, w, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def shifted(image, dx, dy, zoom=1.0, centre=(0, 0)):
    """The image content moved by (dx, dy) and scaled by ``zoom`` about ``centre``."""
    cx, cy = centre
    M = np.array([[zoom, 0, dx + cx - zoom * cx], [0, zoom, dy + cy - zoom * cy]])
    return cv2.warpAffine(image, M, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


class PixelNet(SiamFCNet):
    """A hand-made embedding with SiamFC's geometry: zero-mean pixels averaged over 15×15 windows
    every 8 pixels (127 -> 15 cells, 255 -> 31, so the score map is 17×17 with the exemplar's
    cells aligned exactly as the backbone's). It needs no training, so the tracker's geometry can
    be tested on its own."""

    def embed(self, images):
        centred = images - images.mean(dim=(1, 2, 3), keepdim=True)
        return torch.nn.functional.avg_pool2d(centred, 15, stride=8)

    def head(self, fz, fx):
        return xcorr_loop(fz, fx) * 100.0


@pytest.fixture(scope="module")
def random_tracker():
    return SiamFCTracker(net=PixelNet())


def test_tracker_follows_a_known_translation(random_tracker):
    """Whole-frame shifts: the exemplar reappears displaced by (dx, dy), and so must the box."""
    frame = textured(240, 320)
    box = np.array([140.0, 100.0, 40.0, 30.0])
    t = random_tracker
    t.init(frame, box)
    for dx, dy in ((12, -7), (-20, 9)):
        t.init(frame, box)
        out = t.update(shifted(frame, dx, dy))
        assert out.shape == (4,) and out.dtype == np.float64
        assert np.allclose(out[:2], box[:2] + [dx, dy], atol=2.0), (dx, dy, out)
    assert t.score_maps.shape == (3, 17, 17) and t.response.shape == (272, 272)
    assert 0.0 < t.confidence <= 1.0 and t.best_scale == 1


def test_tracker_picks_the_larger_scale_when_the_target_grows(random_tracker):
    frame = textured(240, 320, seed=1)
    box = np.array([130.0, 90.0, 60.0, 60.0])
    t = random_tracker
    t.init(frame, box)
    t.update(shifted(frame, 0, 0, zoom=1.08, centre=(160, 120)))
    assert t.best_scale == 2 and t.box[2] > box[2]
    t.init(frame, box)
    t.update(shifted(frame, 0, 0, zoom=1 / 1.08, centre=(160, 120)))
    assert t.best_scale == 0 and t.box[2] < box[2]


def test_untrained_network_runs(random_tracker):
    t = SiamFCTracker(weights="random", seed=0)
    frame = textured(120, 160)
    t.init(frame, [60, 40, 30, 20])
    out = t.update(frame)
    assert out.shape == (4,) and np.isfinite(out).all() and t.score_maps.shape == (3, 17, 17)


def test_tracker_checks_its_input(random_tracker):
    with pytest.raises(ValueError, match="initial box"):
        random_tracker.init(textured(64, 64), [10, 10, 0, 5])
    with pytest.raises(ValueError, match="image"):
        random_tracker.init(np.zeros((64, 64, 2), np.uint8), [10, 10, 5, 5])
    with pytest.raises(FileNotFoundError, match="acvm train siamfc"):
        SiamFCTracker(weights="/nonexistent/siamfc.pt")


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped SiamFC weights")
def test_shipped_weights_track_a_synthetic_sequence_better_than_random():
    from acvm.evaluation import run_ope
    from acvm.synth import make_sequence
    seq = make_sequence(seed=12345, n_frames=25, distractor=False)
    trained = run_ope(SiamFCTracker(), seq).auc
    untrained = run_ope(SiamFCTracker(weights="random"), seq).auc
    assert trained > 0.5 and trained > untrained


def test_score_map_viewer_draws_every_scale(random_tracker):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from acvm.siamfc import ScoreMapViewer
    from acvm.synth import make_sequence
    viewer = ScoreMapViewer(random_tracker, make_sequence(seed=3, n_frames=4, size=(160, 120)))
    assert len(viewer) == 4 and viewer.boxes.shape == (4, 4)
    fig = viewer.draw(2)
    assert len(fig.axes) == 4 and "chosen" in "".join(a.get_title() for a in fig.axes[1:])
    py, px = viewer.peaks[2]
    assert 0 <= py <= 16 and 0 <= px <= 16
    plt.close(fig)
    with pytest.raises(IndexError, match="1..3"):
        viewer.draw(0)


def test_template_update_blends_the_new_exemplar_at_rate_eta():
    """φ(z) ← (1−η)·φ(z) + η·φ(z_t) on a confident frame, computed here from the crop by hand;
    η = 0 (the default, the paper's tracker) keeps the first exemplar's embedding exactly."""
    from acvm.backbone import to_tensor
    from acvm.boxes import crop_and_resize
    from acvm.synth import make_sequence
    seq = make_sequence(seed=5, n_frames=3)
    fixed = SiamFCTracker(weights="random", seed=1, template_lr=0.0)   # the paper's fixed exemplar
    fixed.init(seq[0], seq.boxes[0])
    k0 = fixed.kernel.clone()
    fixed.update(seq[1])
    assert torch.equal(fixed.kernel, k0)
    eta = 0.2
    t = SiamFCTracker(weights="random", seed=1, template_lr=eta, template_confidence=0.0)
    t.init(seq[0], seq.boxes[0])
    t.update(seq[1])
    z = crop_and_resize(seq[1], t.centre, t.z_side, 127, pad_value=t.pad)
    with torch.no_grad():
        expected = (1 - eta) * k0 + eta * t.net.embed(to_tensor(z))
    assert torch.allclose(t.kernel, expected, atol=1e-6)
    gated = SiamFCTracker(weights="random", seed=1, template_lr=eta, template_confidence=1.1)   # never confident enough
    gated.init(seq[0], seq.boxes[0])
    gated.update(seq[1])
    assert torch.equal(gated.kernel, k0)
