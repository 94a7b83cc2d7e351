import numpy as np
import pytest

from acvm.evaluation import (SUCCESS_THRESHOLDS, auc, precision, precision_curve, run_ope, run_vot,
                             success_curve, summarise)
from acvm.tracker import Tracker


def test_success_curve_hand_computed():
    ious = [0.0, 0.5, 1.0, 0.26]
    c = success_curve(ious)
    assert c.shape == (21,)
    # threshold 0: IoU > 0 for 3 of 4 frames; 0.25: 3 of 4; 0.3: 0.5 and 1.0; 0.5: only 1.0 (strict); 1.0: none
    assert c[0] == 0.75 and c[5] == 0.75 and c[6] == 0.5 and c[10] == 0.25 and c[20] == 0.0
    # AUC = mean over the 21 thresholds: frame IoU v counts at thresholds t < v
    expected = np.mean([(np.array(ious) > t).mean() for t in SUCCESS_THRESHOLDS])
    assert auc(ious) == pytest.approx(expected)
    # the OTB AUC of a constant IoU v is (#thresholds below v) / 21
    assert auc([0.5] * 7) == pytest.approx(10 / 21)
    assert auc([1.0]) == pytest.approx(20 / 21)


def test_precision_hand_computed():
    errors = [0.0, 19.9, 20.0, 20.1, np.nan]
    assert precision(errors) == pytest.approx(3 / 4)  # NaN frames (no ground truth) are skipped
    c = precision_curve([5, 15])
    assert c[4] == 0 and c[5] == 0.5 and c[15] == 1.0


class Scripted(Tracker):
    """Returns given boxes, one per update, to test the evaluation loop."""

    def __init__(self, boxes):
        super().__init__()
        self.boxes = list(boxes)
        self.inits = 0

    def init(self, image, box):
        self.inits += 1

    def update(self, image):
        return self.boxes.pop(0) if self.boxes else np.array([0, 0, 1, 1.0])


class FakeSeq:
    name = "fake"

    def __init__(self, boxes):
        self.boxes = np.asarray(boxes, dtype=float)

    def __len__(self):
        return len(self.boxes)

    def __getitem__(self, i):
        return np.zeros((50, 50, 3), np.uint8)


def test_run_ope_scores_and_keeps_previous_box_on_nan():
    gt = [[0, 0, 10, 10]] * 4
    tr = Scripted([[0, 0, 10, 10], [np.nan, 0, 1, 1], [5, 0, 10, 10]])
    res = run_ope(tr, FakeSeq(gt), name="scripted")
    assert np.allclose(res.boxes[2], [0, 0, 10, 10])  # NaN replaced by the previous box
    assert np.allclose(res.ious, [1, 1, 1, 1 / 3])
    assert res.auc == pytest.approx(auc([1, 1, 1 / 3]))  # frame 0 (given) is not scored
    d = res.as_dict()
    assert set(d) == {"tracker", "sequence", "auc", "precision20", "fps", "frames"} and d["frames"] == 4


def test_run_vot_reinitialises_after_failure():
    gt = np.array([[0, 0, 10, 10]] * 30, dtype=float)
    # tracker fails at frame 3, then tracks perfectly
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [100, 100, 5, 5]] + [[0, 0, 10, 10]] * 40
    tr = Scripted(boxes)
    res = run_vot(lambda: tr, FakeSeq(gt), burn_in=2, skip=5)
    assert res.failures == [3]
    assert tr.inits == 2  # re-initialised at frame 8
    # burn-in as the VOT toolkit counts it (its compute_accuracy masks the init frame and the next
    # burn_in - 1): with inits at 0 and 8, frames 2 and 10 are the first scored; 3 failed, 4-7 skipped
    scored = np.flatnonzero(~np.isnan(res.overlaps))
    assert scored[0] == 2 and scored[1] == 10 and scored[-1] == 29 and len(scored) == 21
    assert res.accuracy == pytest.approx(1.0)


def test_summarise_means():
    rows = [{"tracker": "a", "auc": 0.2, "precision20": 0.5, "fps": 10},
            {"tracker": "a", "auc": 0.4, "precision20": 0.7, "fps": 30}]
    s = summarise(rows)["a"]
    assert s["auc"] == pytest.approx(0.3) and s["fps"] == pytest.approx(20) and s["sequences"] == 2


def test_per_sequence_winners_hand_computed(tmp_path):
    from acvm.evaluation import load_bench, per_sequence_winners
    rows = [{"tracker": "a", "sequence": "s1", "auc": 0.5}, {"tracker": "b", "sequence": "s1", "auc": 0.6},
            {"tracker": "a", "sequence": "s2", "auc": 0.4}, {"tracker": "b", "sequence": "s2", "auc": 0.4}]
    assert per_sequence_winners(rows) == {"s1": "b", "s2": "a"}
    with pytest.raises(FileNotFoundError, match="acvm bench"):
        load_bench(tmp_path / "none.json")


def test_call_times_counts_calls_and_measures_them():
    import time
    from acvm.evaluation import call_times
    calls = []
    t = call_times(lambda: (calls.append(1), time.sleep(0.002)), repeats=3, warmup=2)
    assert len(calls) == 5 and t.shape == (3,)
    assert (t >= 0.0015).all() and (t < 1.0).all()


def test_normalised_precision_and_vot_robustness_hand_computed():
    from acvm.evaluation import normalised_precision, success_rate, vot_robustness
    gt = np.array([[0, 0, 10, 20], [0, 0, 10, 20], [0, 0, 10, 20], [np.nan] * 4], dtype=float)
    # centre errors normalised by the truth's size: 0, (1/10, 0) -> 0.1, (0, 20/20) -> 1.0; the NaN row skipped
    boxes = np.array([[0, 0, 10, 20], [1, 0, 10, 20], [0, 20, 10, 20], [5, 5, 5, 5]], dtype=float)
    t = np.linspace(0, 0.5, 51)
    expected = np.mean([(1 + (0.1 <= x) + (1.0 <= x)) / 3 for x in t])
    assert normalised_precision(boxes, gt) == pytest.approx(expected)
    assert normalised_precision(boxes, gt, thresholds=[0.05]) == pytest.approx(1 / 3)
    assert success_rate([1.0, 0.6, 0.5, np.nan, 0.2], 0.5) == pytest.approx(2 / 4)   # strictly above
    # the course toolkit's R = exp(-S F / M): 2 failures in 400 frames, S = 100
    assert vot_robustness(2, 400) == pytest.approx(np.exp(-0.5))
    assert vot_robustness(0, 10) == 1.0
    with pytest.raises(ValueError, match="frames"):
        vot_robustness(1, 0)
