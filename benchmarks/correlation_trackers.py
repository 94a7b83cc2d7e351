"""The trackers of notebooks 01-02 (ncc, mosse, dcf, particle) against OpenCV's, on the six real sequences.

Targets (issue 3), one-pass evaluation, means over the sequences, OpenCV's trackers run in the same
process right before or after ours so that the speed ratio is fair on a busy machine:

* ``mosse``: AUC above ``opencv-kcf`` and ``opencv-mosse``, at >= 2x ``opencv-csrt``'s fps;
* ``dcf``: AUC >= 0.9x ``opencv-csrt``'s, at >= 0.3x its fps;
* ``particle``: runs every sequence without an error and keeps IoU > 0 on at least half the frames
  in at least half the sequences.

With ``--synthetic N`` the same trackers also run on N synthetic sequences (``acvm.synth``, seeds
100.., the set the DCF, MOSSE and particle defaults were tuned on).

    .venv/bin/python benchmarks/correlation_trackers.py [--sequences DIR...] [--synthetic 12]
                                                        [--json out.json]

Exits with status 1 when a target is missed (speed targets only count when csrt ran).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from acvm.data import list_sequences, load_sequence
from acvm.evaluation import InMemory, run_ope
from acvm.registry import available_trackers, make_tracker

OURS = ["ncc", "mosse", "dcf", "particle"]
OPENCV = ["opencv-csrt", "opencv-kcf", "opencv-mosse"]


def evaluate(sequences, trackers) -> list[dict]:
    """One-pass rows ``{tracker, sequence, auc, precision20, fps, frames, iou_positive}``."""
    rows = []
    for seq in sequences:
        for name in trackers:
            try:
                res = run_ope(make_tracker(name), seq, name=name)
            except Exception as exc:  # noqa: BLE001 - a crash is a result to report, not to hide
                rows.append({"tracker": name, "sequence": seq.name, "error": f"{type(exc).__name__}: {exc}"})
                print(f"  {name:14s} {seq.name:14s} CRASHED: {exc}")
                continue
            row = res.as_dict()
            ious = res.ious[1:]
            row["iou_positive"] = round(float(np.mean(ious[np.isfinite(ious)] > 0)), 4)
            rows.append(row)
            print(f"  {name:14s} {seq.name:14s} AUC {row['auc']:.3f}  prec@20 {row['precision20']:.3f}  "
                  f"fps {row['fps']:8.1f}  IoU>0 on {row['iou_positive']:.2f}")
    return rows


def summary(rows) -> dict:
    out = {}
    for name in dict.fromkeys(r["tracker"] for r in rows):
        ok = [r for r in rows if r["tracker"] == name and "error" not in r]
        out[name] = {"auc": float(np.mean([r["auc"] for r in ok])) if ok else float("nan"),
                     "precision20": float(np.mean([r["precision20"] for r in ok])) if ok else float("nan"),
                     "fps": float(np.mean([r["fps"] for r in ok])) if ok else float("nan"),
                     "crashes": sum(1 for r in rows if r["tracker"] == name and "error" in r),
                     "half_frames_overlap": sum(1 for r in ok if r["iou_positive"] >= 0.5),
                     "sequences": len([r for r in rows if r["tracker"] == name])}
    return out


def targets(s: dict) -> list[tuple[str, bool]]:
    """(description, met) for every target whose trackers ran."""
    out = []
    if "mosse" in s and "opencv-kcf" in s and "opencv-mosse" in s:
        out.append(("mosse AUC above opencv-kcf and opencv-mosse",
                    s["mosse"]["auc"] > max(s["opencv-kcf"]["auc"], s["opencv-mosse"]["auc"])))
    if "mosse" in s and "opencv-csrt" in s:
        out.append(("mosse fps >= 2x opencv-csrt", s["mosse"]["fps"] >= 2 * s["opencv-csrt"]["fps"]))
    if "dcf" in s and "opencv-csrt" in s:
        out.append(("dcf AUC >= 0.9x opencv-csrt", s["dcf"]["auc"] >= 0.9 * s["opencv-csrt"]["auc"]))
        out.append(("dcf fps >= 0.3x opencv-csrt", s["dcf"]["fps"] >= 0.3 * s["opencv-csrt"]["fps"]))
    if "particle" in s:
        p = s["particle"]
        out.append(("particle: no crash, IoU > 0 on half the frames in half the sequences",
                    p["crashes"] == 0 and p["half_frames_overlap"] >= p["sequences"] / 2))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sequences", nargs="*", default=None, help="sequence folders (default: the six shared ones)")
    p.add_argument("--trackers", default=",".join(OURS + OPENCV))
    p.add_argument("--synthetic", type=int, default=0, help="also run on this many synthetic sequences")
    p.add_argument("--json", default=None, help="write every row and the summary here")
    args = p.parse_args(argv)
    have = set(available_trackers())
    trackers = [t for t in args.trackers.split(",") if t in have]
    missing = [t for t in args.trackers.split(",") if t not in have]
    if missing:
        print(f"not available here, skipped: {', '.join(missing)}")
    paths = args.sequences if args.sequences else [str(p) for p in list_sequences()]
    if not paths:
        print("no sequences found (set ACVM_SEQUENCES)", file=sys.stderr)
        return 2
    t0 = time.time()
    print(f"real sequences ({len(paths)}):")
    real = evaluate([InMemory(load_sequence(path)) for path in paths], trackers)
    s = summary(real)
    payload = {"meta": {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S")},
               "real": {"summary": s, "results": real}}
    if args.synthetic:
        from acvm.synth import make_sequence
        print(f"synthetic sequences ({args.synthetic}, seeds 100..):")
        synth = [InMemory(make_sequence(seed=100 + k, n_frames=150, occlusion=k % 3 == 1, distractor=k % 3 == 2,
                                        speed=[1.5, 3, 5, 8][k % 4], target_size=[0.12, 0.2, 0.3][k % 3]))
                 for k in range(args.synthetic)]
        syn_rows = evaluate(synth, trackers)
        payload["synthetic"] = {"summary": summary(syn_rows), "results": syn_rows}
    print(f"\n{'tracker':14s} {'AUC':>6s} {'prec@20':>8s} {'fps':>8s}   (mean over {len(paths)} real sequences)")
    for name, v in s.items():
        print(f"{name:14s} {v['auc']:6.3f} {v['precision20']:8.3f} {v['fps']:8.1f}")
    if "synthetic" in payload:
        print(f"\n{'tracker':14s} {'AUC':>6s}   (mean over {args.synthetic} synthetic sequences)")
        for name, v in payload["synthetic"]["summary"].items():
            print(f"{name:14s} {v['auc']:6.3f}")
    results = targets(s)
    payload["targets"] = {d: ok for d, ok in results}
    print()
    for d, ok in results:
        print(f"{'met   ' if ok else 'MISSED'} {d}")
    print(f"({time.time() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=1)
        print(f"written to {args.json}")
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
