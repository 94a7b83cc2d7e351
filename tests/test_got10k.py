"""got10k's own metric code as an independent reference for acvm's OTB measures, and the adapter
that runs acvm trackers inside got10k's experiments."""
import numpy as np
import pytest

pytest.importorskip("got10k", reason="the got10k check needs the extra: pip install -e '.[got10k]'")

from got10k.experiments.otb import ExperimentOTB  # noqa: E402

from acvm.data import load_sequence  # noqa: E402
from acvm.evaluation import run_ope  # noqa: E402
from acvm.got10k_adapter import got10k_tracker  # noqa: E402
from acvm.registry import make_tracker  # noqa: E402


def _got10k_curves(boxes, gt):
    """Success and precision curves by got10k's ExperimentOTB (its metrics and thresholds, not ours).
    The experiment's constructor downloads OTB; its two metric methods need only the bin counts."""
    exp = object.__new__(ExperimentOTB)
    exp.nbins_iou, exp.nbins_ce = 21, 51
    ious, errors = exp._calc_metrics(np.asarray(boxes, float), np.asarray(gt, float))
    return exp._calc_curves(ious, errors)


@pytest.mark.parametrize(("sequence", "tracker"), [("OTB_Crossing", "dcf"), ("VOT2014_car", "ncc")])
def test_auc_and_precision_match_got10k(shared_sequences, sequence, tracker):
    seq = load_sequence(shared_sequences / sequence)
    res = run_ope(make_tracker(tracker), seq, name=tracker)
    assert np.isfinite(res.groundtruth).all()            # got10k's code has no rule for frames without truth
    success, precision = _got10k_curves(res.boxes[1:], res.groundtruth[1:])
    # the same frames (acvm does not score the given frame 0): the same numbers
    assert res.auc == pytest.approx(np.mean(success), abs=1e-12)
    assert res.precision20 == pytest.approx(precision[20], abs=1e-12)
    assert 0.05 < res.auc < 0.95                          # a run with both hits and misses
    # got10k's OTB report also counts frame 0 (boxes[0] = anno[0], IoU 1, error 0): hand-computed
    n = len(seq)
    success_all, precision_all = _got10k_curves(res.boxes, res.groundtruth)
    assert np.mean(success_all) == pytest.approx(((n - 1) * res.auc + 20 / 21) / n, abs=1e-12)
    assert precision_all[20] == pytest.approx(((n - 1) * res.precision20 + 1) / n, abs=1e-12)


def test_adapter_runs_acvm_trackers_in_got10k(shared_sequences):
    seq = load_sequence(shared_sequences / "OTB_Crossing")
    tracker = got10k_tracker("dcf")
    assert tracker.name == "acvm-dcf" and tracker.is_deterministic
    boxes, times = tracker.track([str(p) for p in seq.frame_paths], seq.boxes[0])
    assert boxes.shape == (len(seq), 4) and len(times) == len(seq)
    ours = run_ope(make_tracker("dcf"), seq, name="dcf")
    success, _ = _got10k_curves(boxes[1:], seq.boxes[1:])
    # got10k decodes the JPEGs with PIL, acvm with OpenCV: nearly the same frames, nearly the same run
    assert np.mean(success) == pytest.approx(ours.auc, abs=0.02)
    with pytest.raises(ValueError, match="unknown tracker"):
        got10k_tracker("nope")


def test_ao_and_sr_match_got10k(shared_sequences):
    from got10k.experiments.got10k import ExperimentGOT10k
    from acvm.evaluation import success_rate
    seq = load_sequence(shared_sequences / "OTB_Surfer")
    res = run_ope(make_tracker("ncc"), seq, name="ncc")
    ious = res.ious[1:]
    ao, sr50, _, _ = ExperimentGOT10k._evaluate(object.__new__(ExperimentGOT10k), ious, np.array([]))
    assert np.nanmean(ious) == pytest.approx(ao, abs=1e-12)
    assert success_rate(ious, 0.5) == pytest.approx(sr50, abs=1e-12)
    assert 0 < sr50 < 1
