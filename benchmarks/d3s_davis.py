"""D3S's masks on real DAVIS-2016 sequences: J and F against the ground-truth masks.

For every sequence of the chosen split of ``../shared/training`` that has a ``masks/`` folder (the
validation split holds DAVIS2016 dog, parkour and soapbox), D3S runs one pass from the first
frame and its mask in each later frame is compared with the ground truth: J (region IoU) and F
(boundary F-measure, DAVIS's tolerance), mean over frames 1..N-1, then over sequences. Beside it:

* ``box``: the same run's box, filled, scored as a mask (what a box tracker reports as "mask");
* ``gt box``: the ground-truth box filled, the best any box can do;
* ``--init mask`` starts D3S from the first frame's ground-truth mask, as DAVIS's protocol and
  the D3S paper do (J 75.4, F 72.6 on DAVIS-2016 val); ``--init box`` (default) from its box, as
  the VOT protocol and ``acvm bench`` do;
* ``--truth-position`` puts the crop on the true box in every frame: J and F of the segmentation
  alone, without the tracker's drift.

    .venv/bin/python benchmarks/d3s_davis.py [--data ../shared/training] [--split validation]
        [--weights F1,F2,...] [--init box|mask] [--truth-position] [--frames N] [--threads T]
        [--json out.json]

Several ``--weights`` files (for instance three training seeds) give one row each and their mean
and spread. Choose recipes with the validation split; the test set has no masks.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from acvm.d3s import D3STracker
from acvm.data import expand_sequence_folders, load_sequence
from acvm.evaluation import OPEResult, mask_scores

ROOT = Path(__file__).resolve().parents[1]


def filled_box(box, shape) -> np.ndarray:
    """An ``H×W`` bool mask of the pixels whose centres lie inside the xywh ``box``."""
    m = np.zeros(shape, bool)
    if not np.isfinite(box).all():
        return m
    x0, y0 = int(np.ceil(box[0] - 0.5)), int(np.ceil(box[1] - 0.5))
    x1, y1 = int(np.ceil(box[0] + box[2] - 0.5)), int(np.ceil(box[1] + box[3] - 0.5))
    m[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return m


def mask_sequences(data: str, split: str, names=None) -> list:
    """The sequences of ``data``'s ``split`` that have masks (optionally only those in ``names``)."""
    seqs = [load_sequence(p) for p in expand_sequence_folders([data], split)]
    seqs = [s for s in seqs if s.masks is not None and (not names or s.name in names)]
    if not seqs:
        raise SystemExit(f"no sequence with masks in {data} ({split} split"
                         f"{', names ' + ','.join(names) if names else ''})")
    return seqs


def score_sequence(tracker: D3STracker, seq, init: str = "box", n_frames: int | None = None,
                   truth_position: bool = False) -> dict:
    """One pass of ``tracker`` over ``seq``; J and F of its masks, its filled boxes and the true boxes.

    With ``truth_position`` the tracker's centre and size are set to the true box's before every
    frame, so the scores measure segmentation alone, not segmentation after tracking errors.
    """
    end = len(seq) if n_frames is None else min(len(seq), n_frames)
    frame0, mask0 = seq.frame_and_mask(0)
    tracker.init(frame0, seq.boxes[0], mask=mask0 if init == "mask" else None)
    boxes, masks, times = [seq.boxes[0]], [], []
    for i in range(1, end):
        frame = seq[i]
        if truth_position:
            x, y, w, h = seq.boxes[i]
            tracker.centre, tracker.size = np.array([x + w / 2, y + h / 2]), np.array([w, h], float)
        t0 = time.perf_counter()
        boxes.append(tracker.update(frame))
        times.append(time.perf_counter() - t0)
        masks.append(tracker.mask)
    r = OPEResult("d3s", seq.name, np.array(boxes, float), np.asarray(seq.boxes[:end], float), np.array(times))
    boxes = boxes[1:]
    gts = [seq.frame_and_mask(i)[1] for i in range(1, end)]
    shape = gts[0].shape
    m = mask_scores(masks, gts)
    b = mask_scores([filled_box(x, shape) for x in boxes], gts)
    g = mask_scores([filled_box(x, shape) for x in seq.boxes[1:end]], gts)
    return {"sequence": seq.name, "frames": end, "J": m["J"], "F": m["F"], "box_J": b["J"], "box_F": b["F"],
            "gt_box_J": g["J"], "gt_box_F": g["F"], "auc": r.auc, "fps": r.fps}


KEYS = ("J", "F", "box_J", "box_F", "gt_box_J", "gt_box_F", "auc")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "training"))
    p.add_argument("--split", default="validation")
    p.add_argument("--sequences", default="", help="comma-separated names (default: all with masks)")
    p.add_argument("--weights", default="", help="comma-separated D3S weights files (default: the shipped one)")
    p.add_argument("--init", choices=("box", "mask"), default="box")
    p.add_argument("--truth-position", action="store_true",
                   help="put the crop on the true box every frame: segmentation alone, no tracking errors")
    p.add_argument("--frames", type=int, default=None, help="at most this many frames per sequence")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the rows and means here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seqs = mask_sequences(args.data, args.split, [n for n in args.sequences.split(",") if n])
    runs = []
    for w in [x for x in args.weights.split(",") if x] or [None]:
        try:
            tracker = D3STracker(weights=w)
        except (FileNotFoundError, ValueError) as exc:
            print(f"{w}: not run: {exc}", file=sys.stderr)
            continue
        label = w or "shipped d3s.pt"
        print(f"{label} (init from {args.init}{', crop on the true box' if args.truth_position else ''})")
        rows = []
        t0 = time.perf_counter()
        for seq in seqs:
            row = score_sequence(tracker, seq, args.init, args.frames, args.truth_position)
            rows.append(row)
            print(f"  {row['sequence']:24s} J {row['J']:.3f} F {row['F']:.3f} | box J {row['box_J']:.3f} "
                  f"F {row['box_F']:.3f} | gt box J {row['gt_box_J']:.3f} | AUC {row['auc']:.3f} "
                  f"{row['fps']:5.1f} fps", flush=True)
        mean = {k: float(np.mean([r[k] for r in rows])) for k in KEYS}
        print(f"  {'mean':24s} J {mean['J']:.3f} F {mean['F']:.3f} | box J {mean['box_J']:.3f} "
              f"F {mean['box_F']:.3f} | gt box J {mean['gt_box_J']:.3f} | AUC {mean['auc']:.3f}"
              f"   ({time.perf_counter() - t0:.0f} s)")
        runs.append({"weights": label, "rows": rows, "mean": mean})
    if not runs:
        return 1
    if len(runs) > 1:
        for k in ("J", "F", "auc"):
            v = np.array([r["mean"][k] for r in runs])
            print(f"over {len(runs)} weights: {k} mean {v.mean():.3f}, min {v.min():.3f}, max {v.max():.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"data": args.data, "split": args.split, "init": args.init,
                                               "truth_position": args.truth_position,
                                               "threads": args.threads, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
