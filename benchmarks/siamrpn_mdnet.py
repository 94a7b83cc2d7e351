"""Issue 7's targets: SiamRPN above SiamFC, MDNet above MOSSE (one-pass AUC on the six real sequences).

    python benchmarks/siamrpn_mdnet.py [--sequences ../shared/sequences/*] [--synthetic 0]
        [--trackers siamrpn,siamfc,mdnet,mosse,...] [--weights-dir data/weights] [--seeds 0 1 2]
        [--rpn-weights FILE] [--train] [--steps-rpn N] [--steps-mdnet N] [--device cuda] [--jobs 4] [--threads 2] [--json FILE]

Tracker names: ``siamrpn``, ``siamrpn-nocal`` (without the first-frame size calibration),
``siamrpn-random`` (the untrained control: same tracker, random network), ``siamfc``, ``mdnet``, ``mdnet-random``, ``mdnet-noupdate`` (first-frame fine-tuning
only), ``mosse`` and any ``opencv-*``. With ``--seeds`` the learned trackers are scored once per
weights file ``<weights-dir>/<name>_seed<S>.pt`` (``--train`` makes them first), otherwise with the
shipped ``data/weights/<name>.pt``. Synthetic validation sequences (seeds 10_000 + k, never drawn in
training) are for choosing settings; the real sequences are for reporting only.

Prints one row per tracker (mean AUC, mean precision@20px, frames per second over all frames)
and exits with status 1 when a target is missed: mean AUC(siamrpn) > mean AUC(siamfc) and
mean AUC(mdnet) > mean AUC(mosse), each averaged over seeds when there are several.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def make(name: str, weights_dir: Path | None, seed: int | None, rpn_weights: Path | None = None):
    """Build a tracker by benchmark name (see the module docstring)."""
    from acvm.registry import make_tracker

    def weights(model: str):
        if model == "siamrpn" and rpn_weights is not None:
            return rpn_weights
        if weights_dir is None or seed is None:
            return None
        return weights_dir / f"{model}_seed{seed}.pt"

    if name in ("siamrpn", "siamrpn-nocal"):
        from acvm.siamrpn import SiamRPNTracker
        return SiamRPNTracker(weights=weights("siamrpn"), calibrate=name == "siamrpn")
    if name == "siamrpn-random":
        from acvm.siamrpn import SiamRPNTracker
        return SiamRPNTracker(weights="random")
    if name in ("mdnet", "mdnet-noupdate"):
        from acvm.mdnet import MDNetTracker
        return MDNetTracker(weights=weights("mdnet"), online_update=name == "mdnet")
    if name == "mdnet-random":
        from acvm.mdnet import MDNetTracker
        return MDNetTracker(weights="random")
    return make_tracker(name)


def _job(job):
    name, seq_spec, weights_dir, seed, threads, rpn_weights = job
    import torch
    torch.set_num_threads(threads)
    from acvm.data import load_sequence
    from acvm.evaluation import run_ope
    from acvm.synth import make_sequence
    seq = (make_sequence(seed=seq_spec, n_frames=100, occlusion=seq_spec % 3 == 1, distractor=seq_spec % 3 == 2)
           if isinstance(seq_spec, int) else load_sequence(seq_spec))
    r = run_ope(make(name, weights_dir, seed, rpn_weights), seq, name=name)
    return {"tracker": name, "seed": seed, "sequence": getattr(seq, "name", str(seq_spec)),
            "auc": float(r.auc), "precision20": float(r.precision20), "frames": len(seq),
            "seconds": (len(seq) - 1) / max(float(r.fps), 1e-9)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sequences", nargs="*", default=sorted(glob.glob(str(ROOT.parent / "shared" / "sequences" / "*/"))))
    p.add_argument("--synthetic", type=int, default=0, help="also score on this many synthetic validation sequences")
    p.add_argument("--trackers", default="siamrpn,siamrpn-random,siamfc,mdnet,mdnet-noupdate,mdnet-random,mosse")
    p.add_argument("--weights-dir", default=None, help="folder of <model>_seed<S>.pt files (with --seeds)")
    p.add_argument("--seeds", type=int, nargs="*", default=None)
    p.add_argument("--rpn-weights", default=None, help="SiamRPN weights file to score instead of the shipped one")
    p.add_argument("--train", action="store_true", help="train siamrpn and mdnet for every seed first")
    p.add_argument("--steps-rpn", type=int, default=None)
    p.add_argument("--steps-mdnet", type=int, default=None)
    p.add_argument("--device", default=None, help="device for --train")
    p.add_argument("--jobs", type=int, default=1, help="tracker runs in parallel")
    p.add_argument("--threads", type=int, default=2, help="torch threads per tracker run")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    weights_dir = Path(args.weights_dir) if args.weights_dir else None
    seeds = args.seeds or [None]
    if args.train:
        if weights_dir is None or args.seeds is None:
            p.error("--train needs --weights-dir and --seeds")
        from acvm import mdnet, siamrpn
        for s in args.seeds:
            for name, module, steps in (("siamrpn", siamrpn, args.steps_rpn), ("mdnet", mdnet, args.steps_mdnet)):
                t0 = time.perf_counter()
                module.train(steps=steps, seed=s, out=weights_dir / f"{name}_seed{s}.pt", device=args.device,
                             progress=False)
                print(f"{name} seed {s}: trained in {time.perf_counter() - t0:.0f} s", flush=True)

    learned = {"siamrpn", "siamrpn-nocal", "mdnet", "mdnet-noupdate"}
    rpn_weights = Path(args.rpn_weights) if args.rpn_weights else None
    names = [n.strip() for n in args.trackers.split(",") if n.strip()]
    specs = [s.rstrip("/") for s in args.sequences] + [10_000 + k for k in range(args.synthetic)]
    jobs = [(n, spec, weights_dir, s if n in learned else None, args.threads, rpn_weights)
            for n in names for s in (seeds if n in learned else [None]) for spec in specs]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(_job, jobs))
    else:
        rows = [_job(j) for j in jobs]

    def table(kind: str) -> dict:
        sel = [r for r in rows if (r["sequence"].startswith("synth")) == (kind == "synthetic")]
        out = {}
        for n in names:
            mine = [r for r in sel if r["tracker"] == n]
            if not mine:
                continue
            per_seed = {}
            for r in mine:
                per_seed.setdefault(r["seed"], []).append(r["auc"])
            out[n] = {"auc": float(np.mean([r["auc"] for r in mine])),
                      "auc_per_seed": {str(k): round(float(np.mean(v)), 3) for k, v in per_seed.items()},
                      "precision20": float(np.mean([r["precision20"] for r in mine])),
                      "fps": sum(r["frames"] - 1 for r in mine) / sum(r["seconds"] for r in mine)}
        return out

    summary = {k: table(k) for k in ("real", "synthetic") if any((r["sequence"].startswith("synth")) == (k == "synthetic") for r in rows)}
    for kind, tab in summary.items():
        print(f"\n{kind} sequences ({args.threads} torch threads per run, {args.jobs} runs at a time)")
        print(f"{'tracker':16s} {'AUC':>6s} {'prec@20':>8s} {'fps':>7s}  AUC per seed")
        for n, v in tab.items():
            print(f"{n:16s} {v['auc']:6.3f} {v['precision20']:8.3f} {v['fps']:7.1f}  {v['auc_per_seed']}")
    real = summary.get("real", {})
    print("\nper sequence (real):")
    for r in rows:
        if not r["sequence"].startswith("synth"):
            print(f"  {r['tracker']:16s} seed {r['seed']}  {r['sequence']:14s} AUC {r['auc']:.3f}  "
                  f"fps {(r['frames'] - 1) / r['seconds']:.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    ok = True
    for a, b in (("siamrpn", "siamfc"), ("mdnet", "mosse")):
        if a in real and b in real:
            hit = real[a]["auc"] > real[b]["auc"]
            ok &= hit
            print(f"target {a} > {b}: {real[a]['auc']:.3f} vs {real[b]['auc']:.3f} -> {'met' if hit else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
