"""ATOM against SiamFC, the untrained control and OpenCV's CSRT, on the six real sequences.

Targets (issue 5), one-pass evaluation, means over the sequences, every tracker run on the same
decoded frames one after another so that the speed ratio is fair on a busy machine:

* ``atom``: mean success AUC above ``siamfc``'s, at >= 0.1x ``opencv-csrt``'s frames per second;
* report ``atom``'s AUC as a ratio to ``opencv-csrt``'s, and the untrained control
  (``atom`` with a random backbone and no IoU-Net, ``weights="random"``) next to it.

The ATOM defaults were chosen on synthetic sequences (``--synthetic N`` runs the same comparison
on N of them, seeds 10000..), never on the six real ones.

    .venv/bin/python benchmarks/atom_trackers.py [--sequences DIR...] [--synthetic 6] [--json out.json]
                                                 [--trackers "atom,atom (no IoU-Net),siamfc"]
                                                 [--iounet WEIGHTS] [--size-update-rate R] [--set NAME=VALUE]

``--iounet``, ``--size-update-rate`` and ``--set`` (any :class:`acvm.atom.ATOMSettings` field, e.g.
``--set calibrate=True``) change every ``atom`` variant.

Exits with status 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import json
import sys

from acvm.data import list_sequences, load_sequence, sequences_dir
from acvm.evaluation import InMemory, run_ope, summarise
from acvm.registry import available_trackers, make_tracker, parse_settings

ATOM_OPTIONS: dict = {}   # --iounet, --size-update-rate
TRACKERS = {
    "atom": lambda: make_tracker("atom", **ATOM_OPTIONS),
    "atom (untrained)": lambda: make_tracker("atom", weights="random"),
    "atom (no IoU-Net)": lambda: make_tracker("atom", use_iounet=False, **ATOM_OPTIONS),
    "siamfc": lambda: make_tracker("siamfc"),
    "opencv-csrt": lambda: make_tracker("opencv-csrt"),
}
DEFAULT = ["atom", "atom (untrained)", "siamfc", "opencv-csrt"]


def evaluate(sequences, trackers: dict) -> list[dict]:
    rows = []
    for seq in sequences:
        for name, make in trackers.items():
            res = run_ope(make(), seq, name=name)
            rows.append({"tracker": name, "sequence": seq.name, "auc": res.auc, "precision20": res.precision20,
                         "fps": res.fps, "frames": len(seq)})
            print(f"  {name:17s} {seq.name:14s} AUC {res.auc:.3f}  prec {res.precision20:.3f}  {res.fps:6.1f} fps",
                  flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", nargs="*", default=None, help="sequence folders (default: the shared six)")
    ap.add_argument("--synthetic", type=int, default=0, help="also run on this many synthetic sequences")
    ap.add_argument("--trackers", default=",".join(DEFAULT), help=f"comma-separated, from: {', '.join(TRACKERS)}")
    ap.add_argument("--json", default=None)
    ap.add_argument("--iounet", default=None, help="IoU-Net weights for atom (default data/weights/iounet.pt)")
    ap.add_argument("--size-update-rate", type=float, default=None, help="atom's size_update_rate (default: its own)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override an ATOMSettings field of every atom variant (repeatable), e.g. calibrate=True")
    ap.add_argument("--synthetic-scaling", type=float, default=0.3,
                    help="largest log-scale change of the synthetic targets (acvm.synth.make_sequence's scaling)")
    ap.add_argument("--no-real", action="store_true", help="skip the real sequences (with --synthetic)")
    args = ap.parse_args()
    if args.iounet:
        ATOM_OPTIONS["weights"] = args.iounet
    if args.size_update_rate is not None:
        ATOM_OPTIONS["size_update_rate"] = args.size_update_rate
    ATOM_OPTIONS.update(parse_settings(args.set))
    names = [t.strip() for t in args.trackers.split(",") if t.strip()]
    trackers = {k: TRACKERS[k] for k in names if not k.startswith("opencv-") or k in available_trackers()}
    paths = args.sequences if args.sequences else list_sequences(sequences_dir())
    real = [] if args.no_real else [InMemory(load_sequence(p)) for p in paths]
    rows = evaluate(real, trackers)
    result = {"real": summarise(rows), "rows": rows}
    if args.synthetic:
        from acvm.synth import validation_sequence
        synth = [InMemory(validation_sequence(k, scaling=args.synthetic_scaling), f"synth{10000 + k}")
                 for k in range(args.synthetic)]
        result["synthetic"] = summarise(evaluate(synth, trackers))
    print()
    for part in ("real", "synthetic"):
        if part in result:
            print(f"{part}: mean over sequences")
            for name, s in result[part].items():
                print(f"  {name:17s} AUC {s['auc']:.3f}  precision@20 {s['precision20']:.3f}  {s['fps']:6.1f} fps")
    s = result["real"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if "atom" not in s or "siamfc" not in s:
        return 0
    ok = s["atom"]["auc"] > s["siamfc"]["auc"]
    if "opencv-csrt" in s:
        csrt = s["opencv-csrt"]
        speed = s["atom"]["fps"] / csrt["fps"]
        ok &= speed >= 0.1
        print(f"atom: AUC {s['atom']['auc']:.3f} = {s['atom']['auc'] / csrt['auc']:.2f}x opencv-csrt's "
              f"({csrt['auc']:.3f}); speed {speed:.2f}x csrt's ({csrt['fps']:.1f} fps)")
    print(f"targets (atom AUC above siamfc, >= 0.1x csrt's fps): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
