"""Print the README's results table (markdown) from an ``acvm bench --json`` file.

    python benchmarks/readme_table.py data/bench/results.json
"""
import json
import sys

import numpy as np

sys.path.insert(0, ".")
from acvm.evaluation import load_bench, summarise  # noqa: E402

path = sys.argv[1] if len(sys.argv) > 1 else "data/bench/results.json"
rows = load_bench(path)
meta = json.load(open(path)).get("meta", {})
s = summarise(rows)
ref = s["opencv-csrt"]
print(f"`{meta.get('command', '')}` ({meta.get('machine', '')}, {meta.get('date', '')})\n")
print("| tracker | mean AUC | AUC / CSRT | precision@20 | fps | fps / CSRT | VOT accuracy | VOT failures |")
print("|---|---|---|---|---|---|---|---|")
for t in sorted(s, key=lambda t: -s[t]["auc"]):
    r = [x for x in rows if x["tracker"] == t and "error" not in x]   # failed runs: summarise warns
    acc = np.mean([x.get("vot_accuracy", np.nan) for x in r])
    fails = sum(x.get("vot_failures", 0) for x in r)
    print(f"| {t} | {s[t]['auc']:.3f} | {s[t]['auc'] / ref['auc']:.2f} | {s[t]['precision20']:.3f} | "
          f"{s[t]['fps']:.1f} | {s[t]['fps'] / ref['fps']:.2f} | {acc:.3f} | {fails} |")

# per sequence: success AUC, and the mean IoU on VOT2015_bag (issue 7's D3S target)
seqs = sorted({x["sequence"] for x in rows})
short = [q.split("_", 1)[-1] for q in seqs]
print("\n| tracker | " + " | ".join(short) + " | bag mean IoU |")
print("|---|" + "---|" * (len(seqs) + 1))
for t in sorted(s, key=lambda t: -s[t]["auc"]):
    by = {x["sequence"]: x for x in rows if x["tracker"] == t}
    cells = [("failed" if "error" in by[q] else f"{by[q]['auc']:.3f}") if q in by else "" for q in seqs]
    bag = by.get("VOT2015_bag", {}).get("mean_iou")
    print(f"| {t} | " + " | ".join(cells) + f" | {'' if bag is None else f'{bag:.3f}'} |")
