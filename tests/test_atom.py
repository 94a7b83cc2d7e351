"""acvm.atom: crops against acvm.boxes and numpy's own rotations, label geometry against the
backbone's receptive fields, the sample memory's weights, and the tracker on a synthetic sequence."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from acvm.atom import (ATOMSettings, ATOMTracker, SampleMemory, apply_filter, augmented_crops, crop_coords,
                       feature_coords, localise, make_labels, response_extent, search_region, warp_crop)
from acvm.backbone import Backbone, to_tensor
from acvm.boxes import crop_and_resize, iou
from acvm.iounet import IoUNet
from acvm.optim import DCFProblem, leaky_response


def _image(seed=0, shape=(120, 160)):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def test_warp_crop_matches_crop_and_resize_numpy_rotations_and_flips():
    img = _image()
    centre, side = (70.3, 55.8), 41.0
    plain = warp_crop(img, centre, side, 41)
    np.testing.assert_array_equal(plain, crop_and_resize(img, centre, side, 41))
    # a crop of exactly one pixel per output pixel, centred on a pixel corner
    straight = warp_crop(img, (80.0, 60.0), 40.0, 40)
    np.testing.assert_array_equal(straight, img[40:80, 60:100])
    np.testing.assert_array_equal(warp_crop(img, (80.0, 60.0), 40.0, 40, flip=True), straight[:, ::-1])
    # a positive angle turns the content clockwise on screen (y points down)
    np.testing.assert_array_equal(warp_crop(img, (80.0, 60.0), 40.0, 40, angle=90.0), np.rot90(straight, -1))


def test_augmented_crops_put_the_target_where_their_centres_say():
    img = np.zeros((200, 240, 3), np.uint8)
    box = np.array([100.0, 80.0, 30.0, 24.0])
    img[88:96, 111:119] = 255  # an 8×8 bright square at the box centre (115, 92)
    crops, centres = augmented_crops(img, box, ATOMSettings(aug_blur=()))
    assert crops.shape[1:] == (255, 255, 3) and len(crops) == len(centres) == 1 + 4 + 1 + 4
    for crop, c in zip(crops, centres):
        ys, xs = np.nonzero(crop[..., 0] > 128)
        assert abs(xs.mean() + 0.5 - c[0]) < 1.5 and abs(ys.mean() + 0.5 - c[1]) < 1.5


def test_feature_coords_follow_the_backbone_receptive_fields():
    torch.manual_seed(0)
    net = Backbone().eval()
    img = np.full((255, 255, 3), 128, np.uint8)
    bumped = img.copy()
    bumped[130, 120] = 255  # crop pixel (120.5, 130.5), far enough from the border
    with torch.no_grad():
        a = net.features(to_tensor(img), "conv4")[0].abs().sum(0)
        b = net.features(to_tensor(bumped), "conv4")[0].abs().sum(0)
    ys, xs = np.nonzero((a - b).abs().numpy() > 1e-6)
    fx, fy = feature_coords(np.array([120.5, 130.5]), "conv4")
    # the cells that see the pixel are centred on its feature coordinate
    assert abs((xs.min() + xs.max()) / 2 - fx) <= 0.5 and abs((ys.min() + ys.max()) / 2 - fy) <= 0.5
    np.testing.assert_allclose(crop_coords(feature_coords([[12.0, 200.0]], "conv3"), "conv3"), [[12.0, 200.0]])


def test_labels_peak_at_the_centre_and_localise_inverts_them():
    labels = make_labels(np.array([[100.0, 140.0]]), (64.0, 48.0), (24, 24), "conv4")
    centre, peak = localise(labels[0], "conv4")
    np.testing.assert_allclose(centre, [100.0, 140.0], atol=0.3)
    assert peak == pytest.approx(labels.max())
    left, right, bottom, top = response_extent((24, 24), "conv4")
    assert right - left == pytest.approx(24 * 8) and bottom - top == pytest.approx(24 * 8)
    assert left == pytest.approx(35.5 - 4 - 0.5)  # cell 0's centre is at half the receptive field
    # on the frame: a 510-pixel search square at (100, 50) doubles everything
    left2, right2, _, top2 = response_extent((24, 24), "conv4", [100.0, 50.0, 510.0, 510.0])
    assert right2 - left2 == pytest.approx(2 * 24 * 8) and left2 == pytest.approx(100 + 2 * (35.5 - 4) - 0.5)


def test_sample_memory_weights_decay_with_age_and_keep_the_first_frame():
    x0 = torch.zeros(4, 2, 5, 5)
    mem = SampleMemory(x0, torch.zeros(4, 5, 5), capacity=8, learning_rate=0.2, init_min_weight=0.5)
    for k in range(10):
        mem.add(torch.full((2, 5, 5), float(k + 1)), torch.zeros(5, 5))
    g = mem.gamma[: mem.size]
    assert mem.size == 8 and float(g.sum()) == pytest.approx(1.0)
    assert float(g[:4].sum()) == pytest.approx(0.5)  # the first frame's share is held at its minimum
    later = g[4:].numpy()
    ages = 10 - mem.x[4:, 0, 0, 0].numpy()          # sample k+1 was added k steps before the last
    order = np.argsort(ages)
    assert np.all(np.diff(later[order]) < 0)        # older samples weigh less
    np.testing.assert_allclose(later[order][1:] / later[order][:-1], 0.8, rtol=1e-6)
    assert set(mem.x[4:, 0, 0, 0].tolist()) == {7.0, 8.0, 9.0, 10.0}  # the oldest were replaced


def test_apply_filter_is_the_problems_response():
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.normal(size=(3, 4, 9, 9)), dtype=torch.float32)
    problem = DCFProblem(x, np.zeros((3, 9, 9)), 5, activation=lambda s: leaky_response(s, 0.05))
    w = torch.tensor(rng.normal(size=problem.n), dtype=torch.float32)
    torch.testing.assert_close(apply_filter(x, problem.filter(w)), problem.response(w))


@pytest.fixture(scope="module")
def synthetic():
    from acvm.synth import make_sequence
    return make_sequence(seed=3, n_frames=25, speed=1.5, occlusion=False, distractor=False)


def test_tracker_follows_a_synthetic_target_and_exposes_its_views(synthetic):
    torch.manual_seed(0)
    tracker = ATOMTracker(model=IoUNet(), use_iounet=True, seed=0)
    tracker.init(synthetic[0], synthetic.boxes[0])
    losses = tracker.init_result.losses
    assert losses[-1] < 0.3 * losses[0]  # the first-frame Gauss–Newton fit did its job
    boxes = [tracker.update(synthetic[i]) for i in range(1, len(synthetic))]
    assert all(b.shape == (4,) and b.dtype == np.float64 and np.isfinite(b).all() for b in boxes)
    assert tracker.response.shape == (24, 24) and isinstance(tracker.confidence, float)
    assert tracker.proposals.shape == (10, 4) and tracker.proposal_history.shape == (6, 10, 4)
    centres_ok = np.mean(iou(np.array(boxes), synthetic.boxes[1:]) > 0.3)
    assert centres_ok > 0.8  # even random features and a random IoU head keep a slow target


def test_tracker_rejects_bad_input_naming_the_argument(synthetic):
    tracker = ATOMTracker(model=IoUNet())
    with pytest.raises(ValueError, match="initial box"):
        tracker.init(synthetic[0], [10, 10, 0, 5])
    with pytest.raises(ValueError, match="image"):
        tracker.init(np.zeros((5, 5, 2)), [1, 1, 3, 3])


def test_search_region_is_siamfc_context_scaled_to_the_search_crop():
    centre, side = search_region([10.0, 20.0, 40.0, 20.0])
    np.testing.assert_allclose(centre, [30.0, 30.0])
    assert side == pytest.approx(np.sqrt(70 * 50) * 255 / 127)


def test_untrained_control_is_registered_and_skips_iounet(synthetic):
    from acvm.registry import make_tracker
    tracker = make_tracker("atom", weights="random", seed=1, scale_num=1)
    assert isinstance(tracker, ATOMTracker) and not tracker.settings.use_iounet
    tracker.init(synthetic[0], synthetic.boxes[0])
    box = tracker.update(synthetic[1])
    np.testing.assert_allclose(box[2:], synthetic.boxes[0][2:])  # no IoU-Net, no scale search: the size stays
    assert tracker.proposals is None


def test_scale_search_takes_the_best_penalised_peak_and_moves_the_size_towards_it(synthetic):
    torch.manual_seed(0)
    s = ATOMSettings(use_iounet=False, scale_num=3, scale_step=1.1, scale_penalty=0.9, scale_lr=0.5,
                     target_not_found=0.0)
    tracker = ATOMTracker(s, model=IoUNet())
    tracker.init(synthetic[0], synthetic.boxes[0])
    old = tracker.box.copy()
    box = tracker.update(synthetic[1])
    factors = np.array([1 / 1.1, 1.0, 1.1])
    centre, side = search_region(old, s)
    # each scale's peak is the DCF layer's on a crop of side × factor, cut independently here
    for f, peak in zip(factors, tracker.scale_peaks):
        x = tracker._project(tracker.backbone.features(to_tensor(warp_crop(synthetic[1], centre, side * f, 255)), "conv4"))
        assert float(apply_filter(x, tracker.filter, s).max()) == pytest.approx(peak, rel=1e-4)
    k = int(np.argmax(tracker.scale_peaks * np.array([0.9, 1.0, 0.9])))
    np.testing.assert_allclose(box[2:], old[2:] * (0.5 + 0.5 * factors[k]), rtol=1e-9)
    assert tracker.search_box[2] == pytest.approx(side * factors[k])


def test_first_frame_calibration_divides_out_a_known_size_bias():
    """A stub IoU predictor whose maximum is the truth shrunk to 0.9×: calibrated, the box stays on the truth."""
    from acvm.boxes import image_to_crop
    img = _image(5, (200, 240))
    box = np.array([90.0, 70.0, 48.0, 40.0])
    s = ATOMSettings(scale_num=1, refine_position=False, size_update_rate=1.0, calibrate=True,
                     target_not_found=0.0, num_init_random_boxes=3)
    centre, side = search_region(box, s)
    peak = image_to_crop(box, centre, side, s.search_size)   # the truth in the search crop ...
    cx, cy, w, h = peak[0] + peak[2] / 2, peak[1] + peak[3] / 2, 0.9 * peak[2], 0.9 * peak[3]  # ... shrunk

    def predict(head_feat, boxes, modulation):
        # a smooth bump whose gradient step (× box size, as in ascent_step) is a Newton step to the peak
        bcx, bcy = boxes[..., 0] + boxes[..., 2] / 2, boxes[..., 1] + boxes[..., 3] / 2
        return (1 - (bcx - cx) ** 2 / (2 * w) - (bcy - cy) ** 2 / (2 * h)
                - w / 2 * torch.log(boxes[..., 2] / w) ** 2 - h / 2 * torch.log(boxes[..., 3] / h) ** 2)

    torch.manual_seed(0)
    model = IoUNet()
    model.head.predict = predict
    tracker = ATOMTracker(s, model=model)
    tracker.init(img, box)
    np.testing.assert_allclose(tracker.size_bias, [0.9, 0.9], rtol=0.02)
    np.testing.assert_allclose(tracker.update(img)[2:], box[2:], rtol=0.02)
    uncalibrated = ATOMTracker(replace(s, calibrate=False), model=model)
    uncalibrated.init(img, box)
    np.testing.assert_allclose(uncalibrated.size_bias, [1.0, 1.0])
    assert np.all(uncalibrated.update(img)[2:] < 0.93 * box[2:])  # the bias the calibration removes


def test_tall_target_is_tracked_in_a_stretched_view_and_reported_in_frame_pixels():
    from acvm.boxes import excess_aspect, xywh_to_cxcywh
    from acvm.synth import make_sequence
    from acvm.training import StretchedSequence
    seq = StretchedSequence(make_sequence(seed=3, n_frames=20, speed=1.5), 0.6, 2.0)
    tracker = ATOMTracker(max_aspect=2.0)
    tracker.init(seq[0], seq.boxes[0])
    r = excess_aspect(*seq.boxes[0][2:], 2.0)
    assert r > 1.2 and not tracker.view.identity
    boxes = []
    for i in range(1, len(seq)):
        boxes.append(tracker.update(seq[i]))
        # the searched square of the view is, in the frame, a rectangle r times taller than wide
        sb = tracker.search_box
        assert sb[3] / sb[2] == pytest.approx(r, rel=0.02)
        c = xywh_to_cxcywh(boxes[-1])[:2]
        assert sb[0] < c[0] < sb[0] + sb[2] and sb[1] < c[1] < sb[1] + sb[3]
        assert np.all((tracker.refined[:, 2:] > 0))
    assert np.mean(iou(np.array(boxes), seq.boxes[1:])) > 0.6


def test_size_and_aspect_are_damped_separately():
    """``_limit``: equal rates interpolate w and h geometrically; ``aspect_update_rate=0`` keeps h/w."""
    tracker = object.__new__(ATOMTracker)          # _limit reads only the settings
    previous, refined = np.array([10.0, 10.0, 20.0, 60.0]), np.array([0.0, 0.0, 40.0, 40.0])
    tracker.settings = ATOMSettings(size_update_rate=0.5, aspect_update_rate=None, max_scale_change=10.0)
    out = tracker._limit(refined, previous)
    np.testing.assert_allclose(out[2:], [np.sqrt(20 * 40), np.sqrt(60 * 40)], rtol=1e-12)   # hand-computed
    np.testing.assert_allclose(out[:2] + out[2:] / 2, [20.0, 40.0], rtol=1e-12)             # the DCF's centre kept
    tracker.settings = ATOMSettings(size_update_rate=0.5, aspect_update_rate=0.0, max_scale_change=10.0)
    out = tracker._limit(refined, previous)
    assert out[3] / out[2] == pytest.approx(3.0, rel=1e-12)                                 # the old shape
    assert out[2] * out[3] == pytest.approx(np.sqrt(20 * 60 * 40 * 40), rel=1e-12)          # the damped area


def test_dcf_and_refined_boxes_are_exposed_and_the_reported_box_lies_between(synthetic):
    """``dcf_box`` is the box before IoU-Net, ``refined_box`` its refinement; with the size and aspect
    rates at 0 the tracker reports the DCF's box (clipped), at 1 the refined size (clamped)."""
    import importlib.util
    from conftest import ROOT
    spec = importlib.util.spec_from_file_location("iounet_refinement", ROOT / "benchmarks" / "iounet_refinement.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    refinement_record = bench.refinement_record
    from acvm.boxes import xywh_to_cxcywh
    from acvm.evaluation import run_ope
    torch.manual_seed(0)
    model = IoUNet().eval()
    frozen = ATOMTracker(model=model, size_update_rate=0.0, aspect_update_rate=0.0, seed=0)
    frozen.init(synthetic[0], synthetic.boxes[0])
    for i in range(1, 6):
        box = frozen.update(synthetic[i])
        assert frozen.refined_box is not None and frozen.refined_box.shape == (4,)
        np.testing.assert_allclose(box, frozen.dcf_box, atol=1e-6)
    free = ATOMTracker(model=model, size_update_rate=1.0, aspect_update_rate=1.0, max_scale_change=10.0,
                       min_predicted_iou=-np.inf, seed=0)  # a random head may predict IoUs below 0
    free.init(synthetic[0], synthetic.boxes[0])
    box = free.update(synthetic[1])
    np.testing.assert_allclose(xywh_to_cxcywh(box)[2:], xywh_to_cxcywh(free.refined_box)[2:], rtol=1e-6)
    np.testing.assert_allclose(xywh_to_cxcywh(box)[:2], xywh_to_cxcywh(free.dcf_box)[:2], atol=1e-6)
    # the benchmark's record: the reported column is the run's own per-frame IoU, computed apart
    from acvm.synth import make_sequence
    short = make_sequence(seed=3, n_frames=8, speed=1.5, occlusion=False, distractor=False)
    rec = refinement_record(ATOMTracker(model=model, seed=0), short)
    run = run_ope(ATOMTracker(model=model, seed=0), short)
    assert rec["frames"] == 7 and rec["reported"] == pytest.approx(float(np.mean(run.ious[1:])))
    off = refinement_record(ATOMTracker(model=model, use_iounet=False, seed=0), short)
    assert off["frames"] == 0  # no refinement, no rows
