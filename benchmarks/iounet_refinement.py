"""What ATOM's IoU-Net refinement does to the DCF layer's box, frame by frame, on real sequences.

ATOM localises the target with its online DCF layer and then refines the box with IoU-Net
(gradient ascent on the predicted IoU). This runs ``atom`` once through each sequence and keeps,
on every frame where the refinement ran, three boxes: the DCF's (its peak, the size carried over
by the scale search), IoU-Net's refined box, and the box the tracker reports (the DCF's centre, the
size moved part-way towards the refined one: ``size_update_rate``, ``aspect_update_rate``). It
prints each box's mean IoU with the ground truth per sequence, and the share of frames where the
refined box overlaps the truth better than the DCF's. A refinement that helps raises the second
column above the first.

    .venv/bin/python benchmarks/iounet_refinement.py --validation ../shared/training [--weights IOUNET.pt]
                                                    [--set NAME=VALUE ...] [--json out.json]
    .venv/bin/python benchmarks/iounet_refinement.py --sequences ../shared/sequences/*/   # the test set: report only

The tracker's trajectory is the one it tracks with (refinement on), so a sequence where it lost
the target shows low IoUs in all three columns.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from acvm.boxes import iou
from acvm.evaluation import InMemory, run_ope
from acvm.registry import make_tracker, parse_settings


COLUMNS = ("dcf", "refined", "reported")


def _summary(a: np.ndarray) -> dict:
    """Mean IoU of each column of ``a`` ``(frames, 3)`` and the share of frames where refined > DCF."""
    if not len(a):
        return {k: float("nan") for k in (*COLUMNS, "refined_better")}
    return {**dict(zip(COLUMNS, map(float, a.mean(0)))), "refined_better": float((a[:, 1] > a[:, 0]).mean())}


def refinement_ious(tracker, sequence) -> tuple[np.ndarray, float]:
    """Run ``tracker`` (an ATOM tracker) through ``sequence``: per refined frame the IoU of the DCF's,
    the refined and the reported box with the ground truth, ``(frames, 3)``, and the run's AUC.
    Frames without a ground-truth box (NaN) are left out."""
    rows = []

    def keep(i, t, box):
        truth = sequence.boxes[i]
        if i == 0 or t.refined_box is None or not np.all(np.isfinite(truth)):
            return
        rows.append([float(iou(b, truth)) for b in (t.dcf_box, t.refined_box, box)])

    result = run_ope(tracker, sequence, name="atom", callback=keep)
    return np.array(rows).reshape(-1, 3), float(result.auc)


def refinement_record(tracker, sequence) -> dict:
    """:func:`refinement_ious` summarised: ``{"sequence", "auc", "frames", "dcf", "refined",
    "reported", "refined_better"}``."""
    return _record(sequence.name, *refinement_ious(tracker, sequence))


def _record(name: str, a: np.ndarray, auc: float) -> dict:
    return {"sequence": name, "auc": auc, "frames": len(a), **_summary(a)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--validation", metavar="FOLDER", help="the sequences FOLDER/validation.txt lists")
    ap.add_argument("--sequences", nargs="+", metavar="DIR", help="sequence folders instead")
    ap.add_argument("--weights", help="IoU-Net weights (default: the shipped data/weights/iounet.pt)")
    ap.add_argument("--set", action="append", metavar="NAME=VALUE", help="an ATOM setting, fixed")
    ap.add_argument("--json", help="write the per-sequence rows here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not (args.validation or args.sequences):
        ap.error("give --validation FOLDER or --sequences DIR ...")
    torch.set_num_threads(args.threads)
    from acvm.data import load_sequence, split_sequences
    paths = split_sequences(args.validation, "validation") if args.validation else args.sequences
    try:
        kwargs = parse_settings(args.set)
    except ValueError as exc:
        raise SystemExit(f"--set: {exc}") from None
    if args.weights:
        kwargs["weights"] = args.weights
    rows, frames = [], []
    print(f"{'sequence':28s} {'frames':>6s} {'AUC':>5s}   mean IoU: {'DCF':>5s} {'refined':>7s} {'reported':>8s}"
          f"   refined better")
    for p in paths:
        seq = InMemory(load_sequence(p))
        a, auc = refinement_ious(make_tracker("atom", **kwargs), seq)
        frames.append(a)
        rows.append(r := _record(seq.name, a, auc))
        print(f"{r['sequence']:28s} {r['frames']:6d} {r['auc']:5.3f}   {'':9s} {r['dcf']:5.3f} {r['refined']:7.3f} "
              f"{r['reported']:8.3f}   {r['refined_better']:.2f}", flush=True)
    mean = _summary(np.vstack(frames))
    print(f"{'all frames':28s} {sum(map(len, frames)):6d} {np.mean([r['auc'] for r in rows]):5.3f}   {'':9s} "
          f"{mean['dcf']:5.3f} {mean['refined']:7.3f} {mean['reported']:8.3f}   {mean['refined_better']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": {k: str(v) for k, v in kwargs.items()}, "sequences": rows, "all": mean}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
