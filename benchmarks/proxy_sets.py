"""Trackers and settings on the held-out synthetic proxy sets, where the course chooses its defaults.

The learned trackers' settings (and which trained weights ship) are chosen here, never on the six
real sequences of ``../shared/sequences/``, which stay the test. The five sets of
:data:`acvm.training.PROXY_SETS` (six sequences of 100 frames each) are each hard in one way the
real ones are: elongated targets, clutter, camera shake, small targets. One-pass evaluation, mean
success AUC per set and over the sets.

    .venv/bin/python benchmarks/proxy_sets.py siamrpn [--set penalty_k=0.2 ...] [--grid lr=0.2,0.4 ...]
                                              [--weights FILE] [--sets plain,small] [--per-sequence]
                                              [--json out.json] [--threads 1]

``--validation ../shared/training`` runs the real validation split instead (the sequences its
``validation.txt`` lists): the validation protocol, where every setting, seed and recipe of a learned
tracker is chosen (docs/validation.md records the choices).

``--test ../shared/sequences/*/`` reports on the test set, with the same tracker keywords, once the
choice was made on validation (the untrained control: ``--set weights=random``).

``--set NAME=VALUE`` fixes a tracker keyword (any field of the tracker's settings); ``--grid
NAME=V1,V2,...`` runs every combination. Frames are rendered once and shared by every run.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import numpy as np
import torch

from acvm.evaluation import InMemory, run_ope
from acvm.registry import make_tracker, parse_settings
from acvm.training import PROXY_SETS, proxy_sequence


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tracker", help="a name from `acvm trackers`")
    ap.add_argument("--set", action="append", metavar="NAME=VALUE", help="a tracker keyword, fixed")
    ap.add_argument("--grid", action="append", metavar="NAME=V1,V2", help="a tracker keyword, every value tried")
    ap.add_argument("--weights", help="weights file for the tracker (default: the shipped one)")
    ap.add_argument("--sets", default=",".join(PROXY_SETS), help="comma-separated proxy sets")
    ap.add_argument("--validation", metavar="FOLDER",
                    help="run the real sequences FOLDER/validation.txt lists instead of the synthetic sets")
    ap.add_argument("--test", nargs="+", metavar="DIR",
                    help="report on these sequence folders instead (the test set, ../shared/sequences/*/: "
                         "measured once a choice is frozen, never chosen by)")
    ap.add_argument("--sequences", type=int, default=6, help="sequences per set (k = 0..N-1)")
    ap.add_argument("--per-sequence", action="store_true", help="print every sequence's AUC")
    ap.add_argument("--json", help="write every run's per-sequence AUCs here")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: like the benchmark workers)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    try:
        fixed = parse_settings(args.set)
        grid = {}
        for item in args.grid or []:      # NAME=V1,V2: each value parsed as --set parses one
            if "=" not in item:
                raise ValueError(f"expected NAME=V1,V2, got {item!r}")
            name, values = (part.strip() for part in item.split("=", 1))
            grid[name] = [parse_settings([f"{name}={v}"])[name] for v in values.split(",")]
    except ValueError as exc:
        raise SystemExit(f"--set/--grid: {exc}") from None
    if args.weights:
        fixed["weights"] = args.weights
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    t0 = time.perf_counter()
    if args.validation and args.test:
        raise SystemExit("--validation and --test: choose one")
    if args.test or args.validation:
        from acvm.data import load_sequence, split_sequences
        name, paths = ("test", args.test) if args.test else \
            ("validation", split_sequences(args.validation, "validation"))
        data = {name: [InMemory(load_sequence(p)) for p in paths]}
    else:
        data = {name: [InMemory(proxy_sequence(name, k)) for k in range(args.sequences)] for name in sets}
    print(f"rendered {sum(map(len, data.values()))} sequences in {time.perf_counter() - t0:.0f} s", flush=True)

    runs = []
    for combo in itertools.product(*grid.values()):
        kwargs = {**fixed, **dict(zip(grid, combo))}
        try:
            make_tracker(args.tracker, **kwargs)
        except TypeError as exc:                        # an unknown setting: name it, no deep traceback
            raise SystemExit(f"{args.tracker} does not take {kwargs}: {exc}") from None
        t0 = time.perf_counter()
        aucs = {name: [run_ope(make_tracker(args.tracker, **kwargs), seq).auc for seq in seqs]
                for name, seqs in data.items()}
        means = {name: float(np.mean(v)) for name, v in aucs.items()}
        mean = float(np.mean(list(means.values())))
        print(f"{args.tracker} {kwargs}: " + "  ".join(f"{n} {m:.3f}" for n, m in means.items())
              + f"  mean {mean:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        if args.per_sequence:
            for name, v in aucs.items():
                print(f"    {name:8s} " + " ".join(f"{a:.2f}" for a in v))
        runs.append({"tracker": args.tracker, "kwargs": {k: str(v) for k, v in kwargs.items()},
                     "aucs": aucs, "means": means, "mean": mean})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(["benchmarks/proxy_sets.py"] + sys.argv[1:]), "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
