"""The STARK-style tracker against SiamFC, its untrained control and OpenCV's CSRT on real sequences.

Targets (issue 6): mean OTB success AUC over the six course sequences at least SiamFC's, reported
also as a ratio to CSRT's; speed at least 0.15 × CSRT's frames per second on the same machine,
measured in the same run (the machine is shared, so only same-run ratios mean anything).

    .venv/bin/python benchmarks/stark_bench.py [SEQUENCE_DIR ...] [--threads 1] [--frames N] [--json FILE]

Without sequence folders it uses the six course sequences. Prints one row per tracker (mean AUC,
precision@20px, fps) plus the per-sequence AUCs, and exits with status 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

# idle OpenMP threads sleep instead of spinning (set before torch loads): on a shared machine
# spinning threads make PyTorch many times slower and the fps numbers meaningless
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

COURSE = ["OTB_Crossing", "OTB_Human7", "OTB_Surfer", "VOT2014_ball", "VOT2014_car", "VOT2015_bag"]


def factories() -> dict:
    from acvm.stark import BASE_WEIGHTS, STARKTracker
    from acvm.registry import make_tracker
    out = {"stark": lambda: STARKTracker(), "stark-untrained": lambda: STARKTracker(weights="random")}
    if BASE_WEIGHTS.is_file():   # the ablation: the network the shipped one is fine-tuned from, no matching branch
        out["stark-base"] = lambda: STARKTracker(weights=BASE_WEIGHTS)
    try:
        make_tracker("siamfc")
        out["siamfc"] = lambda: make_tracker("siamfc")
    except FileNotFoundError:
        print("(no SiamFC weights: siamfc left out)")
    out["opencv-csrt"] = lambda: make_tracker("opencv-csrt")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sequences", nargs="*", help="sequence folders (default: the six course sequences)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    p.add_argument("--frames", type=int, default=None, help="only the first N frames of each sequence")
    p.add_argument("--trackers", default=None, help="comma-separated subset of: stark, stark-base, stark-untrained, siamfc, opencv-csrt")
    p.add_argument("--json", default=None, help="write the rows and the summary here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from acvm.data import course_sequence, load_sequence
    from acvm.evaluation import run_ope, summarise
    seqs = [load_sequence(s) for s in args.sequences] if args.sequences else [course_sequence(n) for n in COURSE]
    makers = factories()
    if args.trackers:
        makers = {k: v for k, v in makers.items() if k in args.trackers.split(",")}
    rows = []
    t0 = time.time()
    for seq in seqs:
        for name, make in makers.items():   # interleaved per sequence: a busy neighbour slows all alike
            r = run_ope(make(), seq, name=name, end=args.frames)
            rows.append(r.as_dict())
            print(f"  {name:16s} {seq.name:14s} AUC {r.auc:.3f}  prec@20 {r.precision20:.3f}  {r.fps:6.1f} fps", flush=True)
    summary = summarise(rows)
    print(f"\n{'tracker':16s} {'AUC':>6s} {'prec@20':>8s} {'fps':>7s}   (mean over {len(seqs)} sequences, "
          f"{torch.get_num_threads()} torch threads, {time.time() - t0:.0f} s)")
    for name, s in summary.items():
        print(f"{name:16s} {s['auc']:6.3f} {s['precision20']:8.3f} {s['fps']:7.1f}")
    ok = True
    if "opencv-csrt" in summary and "stark" in summary:
        csrt = summary["opencv-csrt"]
        ratio_auc = summary["stark"]["auc"] / csrt["auc"]
        ratio_fps = summary["stark"]["fps"] / csrt["fps"]
        print(f"stark / CSRT: AUC ratio {ratio_auc:.2f}, fps ratio {ratio_fps:.2f} (target >= 0.15)")
        ok &= ratio_fps >= 0.15
    if "siamfc" in summary and "stark" in summary:
        print(f"stark AUC - siamfc AUC: {summary['stark']['auc'] - summary['siamfc']['auc']:+.3f} (target >= 0)")
        ok &= summary["stark"]["auc"] >= summary["siamfc"]["auc"]
    if args.json:
        from pathlib import Path
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "threads": torch.get_num_threads(),
                                               "summary": summary, "results": rows}, indent=1))
    print("targets met" if ok else "targets missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
