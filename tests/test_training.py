import itertools

import numpy as np
import pytest
import torch

from acvm.boxes import context_size, xywh_to_cxcywh
from acvm.synth import make_sequence, write_otb
from conftest import write_split_folder
from acvm.training import (FolderSource, PairSampler, PairSettings, SyntheticSource, TrainingData, batches,
                           colour_jitter, fit, load_weights, make_sources, save_weights, training_meta)

SMALL = PairSettings(template_size=63, search_size=127, colour=0.0, grey=0.0)


def mask_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()], dtype=float)


def test_pair_geometry_agrees_with_the_rendered_mask():
    """The box mapped into the search crop and the mask cut with the same crop describe the same target."""
    sampler = PairSampler([SyntheticSource(n_frames=30, rotation=0.0)], SMALL, masks=True)
    rng = np.random.default_rng(0)
    for _ in range(4):
        p = sampler(rng)
        assert p["z"].shape == (3, 63, 63) and p["x"].shape == (3, 127, 127)
        assert p["z"].dtype == np.float32 and 0.0 <= p["x"].min() and p["x"].max() <= 1.0
        assert p["x_mask"].shape == (127, 127) and set(np.unique(p["x_mask"])) <= {0.0, 1.0}
        assert abs(int(p["gap"])) <= SMALL.max_gap
        if p["x_mask"].sum() > 0.9 * p["x_box"][2] * p["x_box"][3] * 0.7:  # target not occluded
            assert np.abs(mask_box(p["x_mask"] > 0) - p["x_box"]).max() < 2.5
        # the template is centred with context: the target fills 63 / context_size of its side
        cz = xywh_to_cxcywh(p["z_box"])
        assert np.allclose(cz[:2], 31.5, atol=1e-4)
        side = context_size(cz[2], cz[3])  # context_size is scale-free, so it equals the crop side
        assert np.isclose(side, 63, rtol=1e-4)
        # the search target is near the centre: at most `shift` crop pixels off, plus the stretch
        cx = xywh_to_cxcywh(p["x_box"])
        assert np.all(np.abs(cx[:2] - 63.5) <= SMALL.shift * 1.06 + 1e-6)


def test_sampler_is_seeded_and_reads_folders(tmp_path):
    seq = make_sequence(seed=11, n_frames=15, size=(160, 120))
    write_otb(seq, tmp_path / "a")
    write_otb(make_sequence(seed=12, n_frames=10, size=(160, 120)), tmp_path / "b")
    src = FolderSource([tmp_path])          # a folder of sequence folders counts as all of them
    assert len(src.sequences) == 2
    sampler = PairSampler(src, SMALL)
    a = sampler(np.random.default_rng(5))
    b = sampler(np.random.default_rng(5))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    kinds = make_sources(["synthetic", tmp_path / "a"])
    assert isinstance(kinds[0], SyntheticSource) and isinstance(kinds[1], FolderSource)
    assert isinstance(make_sources(None)[0], SyntheticSource)
    import shutil
    shutil.rmtree(tmp_path / "a" / "mask")
    shutil.rmtree(tmp_path / "b" / "mask")
    with pytest.raises(ValueError, match="no masks"):
        PairSampler(FolderSource([tmp_path]), SMALL, masks=True)(np.random.default_rng(0))


def sample_vector(rng):
    return {"v": rng.normal(size=3).astype(np.float32), "i": np.int64(rng.integers(10))}


def test_batches_stack_and_are_reproducible():
    sample = sample_vector  # module level, so that a spawned worker can import it
    first = next(batches(sample, batch_size=4, seed=1))
    again = next(batches(sample, batch_size=4, seed=1))
    later = next(batches(sample, batch_size=4, seed=1, start=100))
    assert first["v"].shape == (4, 3) and first["v"].dtype == torch.float32 and first["i"].shape == (4,)
    assert torch.equal(first["v"], again["v"]) and not torch.equal(first["v"], later["v"])


@pytest.mark.slow
def test_a_worker_process_draws_the_same_stream():
    first = next(batches(sample_vector, batch_size=4, seed=1))
    worker = next(batches(sample_vector, batch_size=4, seed=1, workers=1))   # a spawned process: ~3 s to start
    assert torch.equal(worker["v"], first["v"])


def _regression_problem():
    w_true = torch.tensor([[2.0, -1.0, 0.5]])

    def stream(start):
        for step in itertools.count(start):
            g = torch.Generator().manual_seed(step)
            x = torch.randn(16, 3, generator=g)
            yield {"x": x, "y": x @ w_true.T}

    def loss_fn(model, batch):
        return ((model(batch["x"]) - batch["y"]) ** 2).mean()

    return stream, loss_fn


class _Stop(Exception):
    pass


def _stop_at(last):
    def callback(step, loss):
        if step == last:
            raise _Stop  # an interrupted run: its last checkpoint is at a multiple of checkpoint_every
    return callback


def test_fit_lowers_the_loss_and_resumes_exactly(tmp_path):
    stream, loss_fn = _regression_problem()
    kw = dict(lr=0.3, lr_end=0.01, progress=False, device="cpu")
    torch.manual_seed(0)
    full_model = torch.nn.Linear(3, 1)
    full = fit(full_model, loss_fn, stream, 40, **kw)
    assert full.losses.shape == (40,) and full.losses[-5:].mean() < 0.05 * full.losses[:5].mean()

    torch.manual_seed(0)
    ckpt = tmp_path / "m.ckpt"
    with pytest.raises(_Stop):
        fit(torch.nn.Linear(3, 1), loss_fn, stream, 40, checkpoint=ckpt, checkpoint_every=15,
            callback=_stop_at(22), **kw)
    assert torch.load(ckpt, weights_only=True)["step"] == 15
    torch.manual_seed(123)   # a different start: everything must come from the checkpoint
    resumed_model = torch.nn.Linear(3, 1)
    resumed = fit(resumed_model, loss_fn, stream, 40, checkpoint=ckpt, resume=True, **kw)
    assert np.allclose(resumed.losses, full.losses, rtol=1e-5)
    assert torch.allclose(resumed_model.weight, full_model.weight, atol=1e-6)


def test_weights_file_round_trip(tmp_path):
    model = torch.nn.Conv2d(3, 4, 3)
    meta = training_meta(steps=10, seed=3, data=None, seconds=1.25, lr=0.1)
    path = save_weights(tmp_path / "w" / "m.pt", model, meta)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"state_dict", "meta"}
    assert {"command", "steps", "seed", "data", "seconds", "torch"} <= set(raw["meta"])
    other = torch.nn.Conv2d(3, 4, 3)
    back = load_weights(path, other)
    assert back["seed"] == 3 and back["data"] == ["synthetic"] and back["lr"] == 0.1
    assert torch.equal(other.weight, model.weight)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_weights(tmp_path / "nothing.pt")


def test_colour_jitter():
    img = np.full((8, 8, 3), 100, np.uint8)
    assert colour_jitter(img, np.random.default_rng(0), 0.0) is img
    out = colour_jitter(img, np.random.default_rng(0), 0.3)
    assert out.dtype == np.uint8 and out.shape == img.shape and not np.array_equal(out, img)
    assert len(np.unique(out.reshape(-1, 3), axis=0)) == 1   # one gain per channel, the same everywhere


def test_synthetic_source_clutter_leaves_the_default_stream_alone():
    # the shipped weights' data streams must not change when clutter is off
    plain = SyntheticSource(n_frames=5).sequence(np.random.default_rng(3))
    off = SyntheticSource(n_frames=5, max_clutter=0).sequence(np.random.default_rng(3))
    assert plain.settings == off.settings and plain.settings["clutter"] == 0
    drawn = {SyntheticSource(n_frames=5, max_clutter=3).sequence(np.random.default_rng(k)).settings["clutter"]
             for k in range(40)}
    assert drawn == {0, 1, 2, 3}
    assert make_sources(None, clutter=2)[0].max_clutter == 2
    assert make_sources(["synthetic"], clutter=2)[0].max_clutter == 2


def _centre_steps(boxes):
    """Per-frame centre displacement in units of the target's size (geometric mean of w and h)."""
    b = np.asarray(boxes, dtype=np.float64)
    c = b[:, :2] + b[:, 2:] / 2
    return np.hypot(*np.diff(c, axis=0).T) / np.sqrt(b[:-1, 2] * b[:-1, 3])


def test_proxy_sets_are_the_validation_sequences_made_hard_in_one_way_each():
    from acvm.synth import validation_sequence
    from acvm.training import PROXY_SETS, proxy_sequence
    assert PROXY_SETS == ("plain", "tall", "clutter", "shake", "small")
    for k in (0, 1):
        plain = validation_sequence(k, n_frames=30)
        np.testing.assert_array_equal(proxy_sequence("plain", k, 30).boxes, plain.boxes)
        # tall: the same frames stretched 0.8 x 2.0, so the target is 2.5 times as elongated
        tall = proxy_sequence("tall", k, 30)
        np.testing.assert_allclose((tall.boxes[:, 3] / tall.boxes[:, 2]) / (plain.boxes[:, 3] / plain.boxes[:, 2]),
                                   2.5, rtol=0.02)
        # small: a target of about 10 % of the frame's shorter side (240 px), far below the plain draw
        side = np.sqrt(np.prod(proxy_sequence("small", k, 30).boxes[:, 2:], 1))
        assert 10 < np.median(side) < 30 < np.median(np.sqrt(np.prod(plain.boxes[:, 2:], 1)))
        # shake: the target jumps as much as in OTB Human7 (median step about 0.2 target sizes)
        assert np.median(_centre_steps(proxy_sequence("shake", k, 30).boxes)) > 2 * np.median(_centre_steps(plain.boxes))
    assert proxy_sequence("clutter", 0, 5).settings["clutter"] == 4
    with pytest.raises(ValueError, match="unknown proxy set 'tiny'.*plain, tall"):
        proxy_sequence("tiny", 0)


def test_in_memory_sequence_keeps_frames_and_boxes():
    from acvm.evaluation import InMemory
    seq = make_sequence(seed=5, n_frames=6, size=(64, 48))
    mem = InMemory(seq, name="five", n_frames=4)
    assert (mem.name, len(mem), mem.boxes.shape) == ("five", 4, (4, 4))
    np.testing.assert_array_equal(mem[3], seq[3])
    assert InMemory(seq).name == seq.name and len(InMemory(seq)) == 6


def test_real_masks_reach_the_pair_sampler(tmp_path):
    """Masks read from a folder (as DAVIS's) are cut with the same crop as the box, as for synthetic ones."""
    seq = make_sequence(seed=31, n_frames=20, size=(200, 150), rotation=0.0)
    write_otb(seq, tmp_path / "s")
    src = FolderSource([tmp_path / "s"])
    assert len(src.sequences[0].masks) == 20
    for i in (0, 7):
        assert np.array_equal(src.sequences[0].frame_and_mask(i)[1], seq.frame_and_mask(i)[1])
    sampler = PairSampler(src, SMALL, masks=True)
    rng = np.random.default_rng(3)
    for _ in range(4):
        p = sampler(rng)
        if p["x_mask"].sum() > 0.6 * p["x_box"][2] * p["x_box"][3]:
            assert np.abs(mask_box(p["x_mask"] > 0) - p["x_box"]).max() < 2.5


def test_training_data_reads_train_txt_mixes_and_describes_itself(tmp_path):
    root = write_split_folder(tmp_path, n_frames=12)
    data = TrainingData((str(root),), synthetic_fraction=0.25)
    sources = make_sources(data)
    assert [type(s) for s in sources] == [SyntheticSource, FolderSource]
    assert [s.weight for s in sources] == [0.25, 0.75]
    assert sorted(s.name for s in sources[1].sequences) == ["a", "b"]      # validation's c never trains
    sampler = PairSampler(sources, SMALL)
    assert np.allclose(sampler.weights, [0.25, 0.75])
    described = list(data)
    import hashlib
    digest = hashlib.sha256((root / "train.txt").read_bytes()).hexdigest()[:12]
    assert described[0] == "synthetic (fraction 0.25)"
    assert f"train.txt sha256 {digest}, 2 sequences, fraction 0.75" in described[1]
    assert training_meta(1, 0, data, 0.0)["data"] == described
    # all real, all synthetic
    assert [type(s) for s in make_sources(TrainingData((str(root),), 0.0))] == [FolderSource]
    assert [type(s) for s in make_sources(TrainingData((str(root),), 1.0))] == [SyntheticSource]
    with pytest.raises(ValueError, match="synthetic-fraction"):
        TrainingData((str(root),), 1.5)


def test_synthetic_fraction_is_the_share_of_pairs(tmp_path):
    """Over many draws the share of pairs cut from synthetic sequences is the stated fraction."""
    root = write_split_folder(tmp_path, n_frames=12)
    sources = make_sources(TrainingData((str(root),), synthetic_fraction=0.3))
    seen = []
    for s in sources:
        real_sequence = s.sequence
        s.sequence = (lambda f, kind: (lambda rng: (seen.append(kind), f(rng))[1]))(real_sequence, type(s).__name__)
    sampler = PairSampler(sources, PairSettings(template_size=31, search_size=63, colour=0.0, grey=0.0))
    rng = np.random.default_rng(0)
    for _ in range(400):
        sampler(rng)
    share = seen.count("SyntheticSource") / len(seen)
    assert abs(share - 0.3) < 0.07            # binomial: 3 standard deviations of 400 draws is 0.069


def test_folder_source_caches_decoded_frames(tmp_path):
    root = write_split_folder(tmp_path, n_frames=12)
    src = FolderSource([root], cache_bytes=10 * 160 * 120 * 3)      # room for 10 frames
    seq = src.sequences[0]
    first = seq[3]
    assert src.cache.misses == 1 and seq[3] is first and src.cache.hits == 1
    from acvm.data import read_frame
    assert np.array_equal(first, read_frame(seq.frame_paths[3]))
    with pytest.raises(ValueError):
        first[0, 0, 0] = 1                      # shared frames are read-only
    for i in range(12):
        seq[i]
    assert len(src.cache) == 10 and src.cache.bytes <= src.cache.max_bytes
