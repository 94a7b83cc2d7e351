"""Train SiamFC with several seeds and score each on held-out synthetic sequences (and real ones).

    python benchmarks/siamfc_seeds.py --seeds 0 1 2 --steps 3000 --out runs/siamfc [--device cuda]
        [--workers 4] [--lr 3e-3] [--synthetic 12] [--sequences ../shared/sequences/*] [--json FILE]

Synthetic validation sequences use seeds 10_000 + k, which the training stream (seeded from the
training seed) is vanishingly unlikely to draw; choose settings on them, and report the real
sequences, never tune on them. Each row gives the mean OTB success AUC, the untrained network
(same tracker, random weights) first as the control.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def evaluate(make_tracker, sequences) -> dict:
    from acvm.evaluation import run_ope
    rows = {}
    for seq in sequences:
        r = run_ope(make_tracker(), seq)
        rows[seq.name] = {"auc": round(r.auc, 4), "precision20": round(r.precision20, 4), "fps": round(r.fps, 1)}
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default="runs/siamfc")
    p.add_argument("--device", default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--synthetic", type=int, default=12, help="held-out synthetic sequences to score on")
    p.add_argument("--sequences", nargs="*", default=[], help="real sequence folders to score on")
    p.add_argument("--json", default=None)
    p.add_argument("--skip-training", action="store_true", help="score existing weights in --out")
    args = p.parse_args()

    from acvm.data import load_sequence
    from acvm.siamfc import SiamFCTracker, train
    from acvm.synth import validation_sequence

    out = Path(args.out)
    seqs = [validation_sequence(k) for k in range(args.synthetic)]
    seqs += [load_sequence(s) for s in args.sequences]
    results = {"untrained": evaluate(lambda: SiamFCTracker(weights="random"), seqs)}
    for seed in args.seeds:
        path = out / f"siamfc_seed{seed}.pt"
        if not args.skip_training:
            t0 = time.perf_counter()
            train(steps=args.steps, seed=seed, out=path, device=args.device, workers=args.workers, lr=args.lr,
                  batch_size=args.batch_size, progress=False)
            print(f"seed {seed}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
        results[f"seed{seed}"] = evaluate(lambda: SiamFCTracker(weights=path), seqs)
    for name, rows in results.items():
        syn = [v["auc"] for k, v in rows.items() if k.startswith("synth-")]
        real = [v["auc"] for k, v in rows.items() if not k.startswith("synth-")]
        fps = np.mean([v["fps"] for v in rows.values()])
        print(f"{name:10s} synthetic AUC {np.mean(syn) if syn else float('nan'):.3f}   "
              f"real AUC {np.mean(real) if real else float('nan'):.3f}   {fps:.0f} fps", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
