"""MDNet: sample generators, hard negative mining, the box regressor, fine-tuning, the multi-domain
branches, RoI geometry, and the tracker's update logic (lost -> no new samples)."""
import numpy as np
import pytest
from conftest import overlaps_on_synthetic
import torch

from acvm.backbone import LAYERS
from acvm.boxes import iou, xywh_to_cxcywh
from acvm.mdnet import (WEIGHTS, BoxRegressor, MDNet, MDNetSample, MDNetSettings, MDNetTracker,
                        MultiDomainMDNet, fine_tune, gaussian_samples, load_model, mine_hard_negatives,
                        samples_in_iou_range, train, uniform_samples)

BOX = np.array([100.0, 60.0, 40.0, 20.0])


def test_gaussian_samples_spread_and_shape():
    rng = np.random.default_rng(0)
    s = gaussian_samples(BOX, 2000, trans=0.6, scale=1.05, rng=rng)
    assert s.shape == (2000, 4) and s.dtype == np.float64
    c, c0 = xywh_to_cxcywh(s), xywh_to_cxcywh(BOX)
    r = (40 + 20) / 2
    assert np.abs(c[:, :2] - c0[:2]).max() <= 0.6 * r + 1e-9
    np.testing.assert_allclose(c[:, :2].mean(0), c0[:2], atol=0.5)       # centred on the box
    ratio = s[:, 2] / 40.0
    assert ratio.min() >= 1 / 1.05 - 1e-12 and ratio.max() <= 1.05 + 1e-12
    np.testing.assert_allclose(s[:, 3] / s[:, 2], 0.5)                   # aspect ratio kept
    # Gaussian: more candidates near the centre than at the edge of the range
    d = np.abs(c[:, 0] - c0[0]) / (0.6 * r)
    assert (d < 0.25).mean() > 2 * (d > 0.75).mean()
    np.testing.assert_array_equal(s, gaussian_samples(BOX, 2000, 0.6, 1.05, np.random.default_rng(0)))


def test_uniform_samples_fill_the_range():
    s = uniform_samples(BOX, 4000, trans=2.0, scale=1.3, rng=np.random.default_rng(1))
    c = xywh_to_cxcywh(s)
    d = (c[:, 0] - 120.0) / 60.0
    assert d.min() >= -1 and d.max() <= 1
    assert abs((np.abs(d) < 0.5).mean() - 0.5) < 0.05                    # flat, not peaked


@pytest.mark.parametrize("low,high", [(0.7, 1.0), (0.0, 0.3)])
def test_samples_in_iou_range(low, high):
    sampler = gaussian_samples if low > 0 else uniform_samples
    trans = 0.1 if low > 0 else 2.0
    s = samples_in_iou_range(sampler, BOX, 100, trans, 1.3, np.random.default_rng(2), low, high)
    assert len(s) == 100
    o = iou(s, BOX)
    assert (o >= low).all() and (o <= high).all()


def test_mine_hard_negatives_hand_cases():
    scores = np.array([0.1, 2.0, -1.0, 2.0, 0.5])
    np.testing.assert_array_equal(mine_hard_negatives(scores, 3), [1, 3, 4])   # ties: lower index first
    assert mine_hard_negatives(scores, 3).dtype == np.int64
    np.testing.assert_array_equal(mine_hard_negatives(scores, 10), [1, 3, 4, 0, 2])
    assert len(mine_hard_negatives(scores, 0)) == 0
    rng = np.random.default_rng(3)
    big = rng.normal(size=500)
    idx = mine_hard_negatives(big, 50)
    np.testing.assert_allclose(big[idx], np.sort(big)[::-1][:50])


def test_box_regressor_recovers_a_linear_code():
    rng = np.random.default_rng(4)
    target = np.array([50.0, 40.0, 30.0, 60.0])
    boxes = samples_in_iou_range(uniform_samples, target, 400, 0.3, 1.6, rng, 0.6, 1.0)
    from acvm.rpn import encode
    deltas = encode(target, boxes)
    mix = rng.normal(size=(4, 32))
    feats = deltas @ mix + 0.01 * rng.normal(size=(len(boxes), 32)) + 3.0   # an offset the bias absorbs
    reg = BoxRegressor(lam=1e-3).fit(feats[:300], boxes[:300], target)
    fixed = reg.predict(feats[300:], boxes[300:])
    assert iou(fixed, target).min() > 0.97
    assert iou(fixed, target).mean() > iou(boxes[300:], target).mean() + 0.1
    with pytest.raises(RuntimeError):
        BoxRegressor().predict(feats, boxes)


def _head(n_in=16, width=8, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(n_in, width), torch.nn.ReLU()),
                               torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU()),
                               torch.nn.Linear(width, 2))


def test_fine_tune_separates_and_mines_the_hard_negatives():
    g = torch.Generator().manual_seed(5)
    direction = torch.zeros(16)
    direction[0] = 1.0
    pos = torch.randn(64, 16, generator=g) * 0.3 + 2 * direction
    easy = torch.randn(500, 16, generator=g) * 0.3 - 2 * direction
    hard = torch.randn(40, 16, generator=g) * 0.3 + 1.0 * direction      # close to the positives
    neg = torch.cat([easy, hard])
    head = _head()
    s = MDNetSettings(batch_pos=16, batch_neg=24, batch_test=540, lr_mult=10.0)
    mined = fine_tune(head, pos, neg, iterations=60, lr=0.1, rng=np.random.default_rng(0), settings=s)
    assert len(mined) == 60 and all(len(m) == 24 for m in mined)
    # the hard ones dominate every mined batch: 40 of them are near the positives
    assert np.mean([(m >= 500).mean() for m in mined]) > 0.8
    with torch.no_grad():
        out = head(torch.cat([pos, easy]))
    score = (out[:, 1] - out[:, 0]).numpy()
    assert (score[:64] > 0).mean() > 0.9 and (score[64:] < 0).mean() > 0.99


def test_multi_domain_branches_route_by_domain():
    torch.manual_seed(0)
    model = MultiDomainMDNet(3).eval()
    x = torch.rand(2, 3, 216, 216)
    boxes = torch.tensor([[[80.0, 80.0, 50.0, 50.0], [20.0, 30.0, 40.0, 40.0]]] * 2)
    domain = torch.tensor([2, 0])
    logits = model(x, boxes, domain)
    assert logits.shape == (4, 2)
    with torch.no_grad():
        h = model.shared(model.shared.pool(model.shared.conv_features(x), boxes))
    w, b = model.fc6_weight, model.fc6_bias
    expected = torch.stack([h[0] @ w[2].T + b[2], h[1] @ w[2].T + b[2], h[2] @ w[0].T + b[0], h[3] @ w[0].T + b[0]])
    torch.testing.assert_close(logits, expected)


def test_pool_reads_the_box_from_the_crop_geometry():
    # a feature map whose every channel holds the x coordinate (crop pixels) of its cell's centre:
    # pooling a box must then give the box's centre x
    model = MDNet()
    info = LAYERS[model.settings.layer]
    n = 19
    xs = info.receptive_field / 2 + info.stride * torch.arange(n, dtype=torch.float32)
    feats = xs.expand(1, info.channels, n, n).contiguous()
    boxes = torch.tensor([[[60.0, 50.0, 40.0, 40.0], [100.0, 40.0, 24.0, 60.0]]])  # inside the map
    pooled = model.pool(feats, boxes).reshape(2, info.channels, 3, 3)
    centre_x = pooled.mean(dim=(1, 2, 3))
    torch.testing.assert_close(centre_x, torch.tensor([80.0, 112.0]), atol=1e-3, rtol=0)


def _synth_frames(n=6):
    from acvm.synth import make_sequence
    seq = make_sequence(seed=11, n_frames=n, size=(192, 144), target_size=0.3)
    return [seq[i] for i in range(n)], seq.boxes


#: a small, fast configuration for the logic tests (the defaults are exercised by the benchmark)
SMALL = dict(target_size=32.0, fc_size=32, n_samples=64, n_pos_init=64, n_neg_init=200, n_pos_update=16,
             n_neg_update=48, init_iterations=5, update_iterations=3, batch_test=128, n_bbreg=100)



pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    return MDNet(MDNetSettings(**SMALL)).eval()


def test_tracker_contract_and_repeatability(random_model):
    frames, boxes = _synth_frames()
    runs = []
    for _ in range(2):
        t = MDNetTracker(model=random_model, **SMALL)
        t.init(frames[0], boxes[0])
        runs.append(np.array([t.update(f) for f in frames[1:]]))
    assert runs[0].shape == (5, 4) and runs[0].dtype == np.float64 and np.isfinite(runs[0]).all()
    np.testing.assert_array_equal(runs[0], runs[1])
    assert t.candidates.shape == (64, 4) and t.scores.shape == (64,) and len(t.top) == 5
    np.testing.assert_allclose(t.confidence, np.sort(t.scores)[::-1][:5].mean())


def test_no_new_samples_while_lost(random_model):
    frames, boxes = _synth_frames()
    t = MDNetTracker(model=random_model, **SMALL, score_threshold=np.inf)      # every frame "lost"
    t.init(frames[0], boxes[0])
    for f in frames[1:]:
        t.update(f)
        assert t.lost and t.updated == "short" and len(t.hard_negatives) == 0
    assert len(t.pos_memory) == 1 and len(t.neg_memory) == 1                   # the first frame only
    assert t.trans == pytest.approx(min(0.6 * 1.1 ** 5, 1.5))                 # the search widened


def test_confident_frames_fill_the_memories(random_model):
    frames, boxes = _synth_frames(11)
    t = MDNetTracker(model=random_model, **SMALL, score_threshold=-np.inf, long_interval=5, n_hard_shown=7)
    t.init(frames[0], boxes[0])
    kinds = []
    for f in frames[1:]:
        t.update(f)
        kinds.append(t.updated)
    assert kinds == [None, None, None, None, "long"] * 2
    assert len(t.pos_memory) == 11 and t.hard_negatives.shape == (7, 4)
    t = MDNetTracker(model=random_model, **SMALL, score_threshold=-np.inf, online_update=False)
    t.init(frames[0], boxes[0])
    for f in frames[1:]:
        t.update(f)
        assert t.updated is None
    assert len(t.pos_memory) == 1


def test_tracker_rejects_bad_input(random_model):
    t = MDNetTracker(model=random_model, **SMALL)
    with pytest.raises(ValueError, match="initial box"):
        t.init(np.zeros((50, 50, 3), np.uint8), [60, 60, 10, 10])


def test_sample_labels_match_iou():
    sample = MDNetSample(2, n_frames=20)
    ex = sample(np.random.default_rng(0))
    assert ex["x"].shape == (3, 216, 216) and ex["x"].dtype == np.float32
    assert ex["boxes"].shape == (32, 4) and ex["labels"].tolist() == [1] * 8 + [0] * 24
    assert int(ex["domain"]) in (0, 1)


def test_train_writes_shared_layers_only(tmp_path):
    path = train(steps=1, batch_size=1, workers=0, n_domains=2, out=tmp_path / "md.pt", init=None, progress=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert not any("fc6" in k for k in state["state_dict"])
    assert state["meta"]["domains"] == 2
    assert isinstance(load_model(path), MDNet)


def test_train_on_real_folders_makes_one_domain_per_sequence(tmp_path):
    """TrainingData: one domain per train.txt sequence plus synthetic domains in the stated share."""
    from acvm.training import TrainingData
    from conftest import write_split_folder
    root = write_split_folder(tmp_path / "d", n_frames=6)
    data = TrainingData((str(root),), synthetic_fraction=0.5)
    path = train(steps=1, batch_size=1, workers=0, data=data, out=tmp_path / "md.pt", init=None, progress=False)
    meta = torch.load(path, map_location="cpu", weights_only=True)["meta"]
    assert meta["domains"] == 4                                       # a, b and two synthetic
    assert meta["data"] == list(data)
    path = train(steps=1, batch_size=1, workers=0, data=TrainingData((str(root),), 0.0), out=tmp_path / "md0.pt",
                 init=None, progress=False)
    assert torch.load(path, map_location="cpu", weights_only=True)["meta"]["domains"] == 2


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="acvm train mdnet"):
        load_model(tmp_path / "none.pt")


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="no trained MDNet weights (acvm train mdnet)")
def test_trained_tracker_follows_a_synthetic_target():
    overlaps = overlaps_on_synthetic(MDNetTracker(), seed=778, n_frames=30)
    assert np.mean(overlaps) > 0.5, overlaps


def test_tracker_mines_with_the_function_it_is_given(random_model):
    """Notebook 04 runs the tracker on the student's mining: every call goes to it, and a
    function equal to the library's gives the same run."""
    from acvm.mdnet import mine_hard_negatives
    frames, boxes = _synth_frames()
    calls = []

    def mine(scores, num):
        calls.append((len(scores), num))
        return mine_hard_negatives(scores, num)
    runs = []
    for fn in (None, mine):
        t = MDNetTracker(model=random_model, mine=fn, **SMALL)
        t.init(frames[0], boxes[0])
        runs.append(np.array([t.update(f) for f in frames[1:]]))
    assert len(calls) >= SMALL["init_iterations"] and all(n > 0 for _, n in calls)
    np.testing.assert_array_equal(runs[0], runs[1])
