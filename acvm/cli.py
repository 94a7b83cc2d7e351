"""The ``acvm`` command (also ``python -m acvm``).

    acvm trackers
    acvm track NAME SEQUENCE_DIR --out FILE
    acvm bench SEQUENCE_DIR... --trackers a,b,... --json FILE [--plot FILE] [--workers N] [--vot] [--split S]
    acvm train NAME [--steps N] [--data DIR...] [--synthetic-fraction F] [--seed S] [--out FILE] [--resume]
               [--threads N]
    acvm data synth OUT_DIR [--seed S] [--frames N] [--occlusion] [--distractor]
    acvm course build | check | execute NOTEBOOK... | slides [NOTEBOOK...] --out DIR
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from .registry import TRAINERS   # ``acvm train NAME`` -> "module:function" (a view of registry.MODELS)

__all__ = ["main", "TRAINERS", "bench"]


def _fail(message: str) -> "NoReturn":  # noqa: F821
    print(f"acvm: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _cmd_trackers(args) -> int:
    from .registry import MODELS, available_trackers, weights_file
    for n in available_trackers():
        if n.startswith("opencv-"):
            print(f"{n:20s} OpenCV")
            continue
        model = MODELS[n]
        line = f"{n:20s} {model.tracker.partition(':')[0]:14s}"
        if model.weights:
            path = weights_file(n)
            line += f"  weights {model.weights}" + ("" if path.is_file() else f" (missing: acvm train {n})")
        print(line)
    return 0


def _cmd_track(args) -> int:
    from .data import load_sequence
    from .evaluation import run_ope
    from .registry import make_tracker
    seq = load_sequence(args.sequence)
    tracker = make_tracker(args.name)
    result = run_ope(tracker, seq, name=args.name, progress=not args.quiet)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(out, result.boxes, fmt="%.2f", delimiter=",")
    print(f"{args.name} on {seq.name}: {len(seq)} frames at {result.fps:.1f} frames per second "
          f"(AUC {result.auc:.3f}, precision@20px {result.precision20:.3f}); boxes written to {out}")
    return 0


def _bench_job(job):
    tracker_name, seq_path, vot, threads = job
    if threads:
        try:
            import torch
            torch.set_num_threads(threads)
        except ImportError:  # pragma: no cover
            pass
    from .data import load_sequence
    from .evaluation import run_ope, run_vot, success_curve, precision_curve
    from .registry import make_tracker
    seq = load_sequence(seq_path)
    res = run_ope(make_tracker(tracker_name), seq, name=tracker_name)
    row = res.as_dict()
    row["success_curve"] = [round(float(v), 4) for v in success_curve(res.ious[1:])]
    row["precision_curve"] = [round(float(v), 4) for v in precision_curve(res.centre_errors[1:])]
    row["mean_iou"] = round(float(np.nanmean(res.ious[1:])), 4)
    if vot:
        v = run_vot(lambda: make_tracker(tracker_name), seq, name=tracker_name)
        row["vot_accuracy"] = round(v.accuracy, 4)
        row["vot_failures"] = v.n_failures
    return row


def bench(sequences: list[str], trackers: list[str], workers: int = 1, vot: bool = False,
          progress: bool = True, threads: int | None = None) -> list[dict]:
    """Run one-pass evaluation of every tracker on every sequence; rows as in ``acvm bench``'s JSON.

    ``threads`` sets torch's threads per run; by default one per worker process when ``workers > 1``
    (the processes already fill the cores) and torch's own default otherwise.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    from .data import load_sequence
    for s in sequences:  # fail early, naming the folder, before any tracker runs
        load_sequence(s)
    from .registry import make_tracker
    for t in trackers:
        make_tracker(t)
    per_run = threads if threads is not None else (1 if workers > 1 else 0)
    jobs = [(t, s, vot, per_run) for s in sequences for t in trackers]
    from tqdm.auto import tqdm
    bar = tqdm(total=len(jobs), desc="acvm bench", disable=not progress, unit="run")
    rows = []
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing as mp
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            for row in pool.map(_bench_job, jobs):
                rows.append(row)
                bar.set_postfix_str(f"{row['tracker']} on {row['sequence']}: AUC {row['auc']:.3f}")
                bar.update()
    else:
        for job in jobs:
            row = _bench_job(job)
            rows.append(row)
            bar.set_postfix_str(f"{row['tracker']} on {row['sequence']}: AUC {row['auc']:.3f}")
            bar.update()
    bar.close()
    return rows


def _cmd_bench(args) -> int:
    from .evaluation import summarise, plot_success, plot_precision
    trackers = [t.strip() for t in args.trackers.split(",") if t.strip()]
    if not trackers:
        _fail("--trackers needs at least one tracker name (see `acvm trackers`)")
    # a shell glob such as ../shared/sequences/* also matches README.md: skip plain files, say so
    sequences = []
    for s in args.sequences:
        if Path(s).is_file():
            print(f"acvm bench: skipping {s} (a file, not a sequence folder)", file=sys.stderr)
        else:
            sequences.append(s)
    if not sequences:
        _fail("no sequence folders given")
    if args.threads is not None and args.threads < 1:
        _fail(f"--threads must be at least 1, got {args.threads}")
    from .data import expand_sequence_folders
    args.sequences = [str(p) for p in expand_sequence_folders(sequences, args.split,
                                                              require_split=args.split is not None)]
    t0 = time.time()
    rows = bench(args.sequences, trackers, workers=args.workers, vot=args.vot, progress=not args.quiet,
                 threads=args.threads)
    summary = summarise(rows)
    payload = {
        "meta": {"command": "acvm " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "seconds": round(time.time() - t0, 1), "workers": args.workers,
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"},
        "summary": summary,
        "results": rows,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    print(f"{'tracker':20s} {'AUC':>6s} {'prec@20':>8s} {'fps':>8s}  (mean over {len(args.sequences)} sequences)")
    for name, s in summary.items():
        print(f"{name:20s} {s['auc']:6.3f} {s['precision20']:8.3f} {s['fps']:8.1f}")
    print(f"results written to {out}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        succ = {n: np.mean([r["success_curve"] for r in rows if r["tracker"] == n], axis=0) for n in summary}
        prec = {n: np.mean([r["precision_curve"] for r in rows if r["tracker"] == n], axis=0) for n in summary}
        plot_success(succ, axes[0])
        plot_precision(prec, axes[1])
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"plot written to {args.plot}")
    return 0


def _cmd_train(args) -> int:
    from .registry import trainer, weights_file
    try:
        train = trainer(args.name)
    except (ValueError, ImportError) as exc:
        _fail(str(exc))
    out = args.out or str(weights_file(args.name))
    # unset options keep the trainer's defaults, the shipped weights' recipe (seed included)
    extra = {k: v for k, v in (("batch_size", args.batch_size), ("workers", args.workers), ("seed", args.seed))
             if v is not None}
    if extra.get("batch_size", 1) < 1:
        _fail(f"--batch-size must be positive, got {extra['batch_size']}")
    if extra.get("workers", 0) < 0:
        _fail(f"--workers must be zero or more, got {extra['workers']}")
    if args.threads is not None:
        if args.threads < 1:
            _fail(f"--threads must be positive, got {args.threads}")
        import torch
        torch.set_num_threads(args.threads)     # the CPU result depends on it in the last bits (meta records it)
    # under torchrun (WORLD_SIZE > 1) every process trains its share and rank 0 writes the file;
    # one process: both calls do nothing
    from . import distributed
    data = _training_data(args)
    distributed.init(args.device)
    try:
        path = train(steps=args.steps, data=data, out=out, resume=args.resume, device=args.device, **extra)
    finally:
        distributed.cleanup()
    if distributed.is_main():
        print(f"weights written to {path}")
    return 0


def _cmd_weights(args) -> int:
    from .registry import MODELS, weights_file
    from .weights import check_integrity, read_weights, record
    if args.record:
        for f in args.record:
            try:
                print(f"{f}: recorded sha256 {record(f)[:16]}")
            except (OSError, ValueError) as exc:
                _fail(str(exc))
        return 0
    bad = 0
    for name, model in MODELS.items():
        if not model.weights:
            continue
        path = weights_file(name)
        if not path.is_file():
            print(f"{name:11s} {model.weights:14s} missing: make it with `acvm train {name}`")
            continue
        try:
            state = check_integrity(path, name)
            meta = read_weights(path, name)["meta"]
        except ValueError as exc:
            bad += 1
            print(f"{name:11s} {model.weights:14s} {exc}")
            continue
        made = meta.get("command", "?")
        print(f"{name:11s} {model.weights:14s} {state:10s} {meta.get('steps', '?')} steps, seed {meta.get('seed', '?')}: {made}")
    return 1 if bad else 0


def _training_data(args):
    """``--data`` and ``--synthetic-fraction`` as the trainers take them: ``None`` (synthetic only, the
    shipped recipes) or a :class:`acvm.training.TrainingData` (real folders mixed with synthetic)."""
    from .training import TrainingData
    items = list(args.data or [])
    folders = tuple(d for d in items if d != "synthetic")
    fraction = args.synthetic_fraction
    if not folders:
        if fraction is not None and fraction != 1.0:
            _fail("--synthetic-fraction below 1 needs --data folders of real sequences")
        return None
    for d in folders:
        if not Path(d).is_dir():
            _fail(f"--data {d}: no such folder")
    return TrainingData(folders, 0.5 if fraction is None else fraction)


def _cmd_data(args) -> int:
    from . import synth
    kwargs = dict(seed=args.seed, n_frames=args.frames, occlusion=args.occlusion, distractor=args.distractor)
    seq = synth.make_sequence(**kwargs)
    path = synth.write_otb(seq, args.out_dir)
    print(f"synthetic sequence of {len(seq)} frames written to {path} (OTB layout, masks in mask/)")
    return 0


def _cmd_course(args) -> int:
    from . import course
    if args.action == "build":
        written = course.build(args.root)
        print(f"generated {len(written)} student notebooks in {Path(args.root) / 'notebooks'}")
        return 0
    if args.action == "check":
        problems = course.check(args.root)
        for p in problems:
            print(p)
        if problems:
            print("run `acvm course build` to regenerate notebooks/ from solutions/", file=sys.stderr)
            return 1
        print("notebooks/ matches solutions/")
        return 0
    if args.action == "execute":
        for nb in args.notebooks:
            seconds = course.execute(nb)
            print(f"executed {nb} in {seconds:.1f} s")
        return 0
    if args.action == "slides":
        written = course.slides(args.notebooks, args.out, root=args.root)
        for w in written:
            print(f"slides written to {w}")
        return 0
    return 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="acvm", description="Fully-trainable trackers: the course's command line.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("trackers", help="list the tracker names")
    s.set_defaults(fn=_cmd_trackers)

    s = sub.add_parser("track", help="run one tracker on one sequence and write its boxes")
    s.add_argument("name", help="tracker name (see `acvm trackers`)")
    s.add_argument("sequence", help="sequence folder (OTB, VOT or GOT-10k layout)")
    s.add_argument("--out", required=True, help="text file for one x,y,w,h line per frame (0-based)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=_cmd_track)

    s = sub.add_parser("bench", help="one-pass evaluation of trackers on sequences")
    s.add_argument("sequences", nargs="+", help="sequence folders, or folders of sequences (see --split)")
    s.add_argument("--split", default=None,
                   help="read each folder's <split>.txt (e.g. validation: ../shared/training/validation.txt) "
                        "for the sequences to run; without it a folder of sequences means all of them")
    s.add_argument("--trackers", required=True, help="comma-separated tracker names")
    s.add_argument("--json", required=True, help="where to write the results")
    s.add_argument("--plot", help="PNG file for the success and precision plots")
    s.add_argument("--workers", type=int, default=1, help="parallel processes (one run per tracker and sequence)")
    s.add_argument("--vot", action="store_true", help="also run VOT-style supervised evaluation (accuracy, failures)")
    s.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: 1 with --workers > 1, else torch's default)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=_cmd_bench)

    s = sub.add_parser("weights", help="the shipped weights files: their state against data/weights/MANIFEST.json")
    s.add_argument("--record", nargs="+", metavar="FILE", default=None,
                   help="record these files of data/weights/ in the manifest as they are (a file put there by hand)")
    s.set_defaults(fn=_cmd_weights)

    s = sub.add_parser("train", help="train one of the course's networks and write its weights to data/weights/")
    s.add_argument("name", help=f"one of: {', '.join(TRAINERS)}")
    s.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the shipped weights' number)")
    s.add_argument("--data", nargs="+", default=None,
                   help="sequence folders (OTB/VOT/GOT-10k) to train on, or 'synthetic' (default); a folder "
                        "with train.txt (../shared/training) means the sequences it lists")
    s.add_argument("--synthetic-fraction", type=float, default=None,
                   help="share of training pairs from synthetic sequences when --data names real folders "
                        "(default 0.5; recorded in the weights' meta)")
    s.add_argument("--seed", type=int, default=None, help="seed of initialisation and data (default: the shipped weights')")
    s.add_argument("--out", default=None, help="weights file (default data/weights/NAME.pt)")
    s.add_argument("--resume", action="store_true", help="continue from the checkpoint beside --out")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--batch-size", type=int, default=None, help="samples per step (default: the shipped weights' size)")
    s.add_argument("--workers", type=int, default=None,
                   help="processes that make training samples (default: the model's own; 0: in the training process)")
    s.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's); the shipped CPU weights were trained with 1")
    s.set_defaults(fn=_cmd_train)

    s = sub.add_parser("data", help="make data")
    dsub = s.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("synth", help="write a synthetic sequence with exact ground truth in OTB layout")
    d.add_argument("out_dir")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--frames", type=int, default=100)
    d.add_argument("--occlusion", action="store_true")
    d.add_argument("--distractor", action="store_true")
    d.set_defaults(fn=_cmd_data)

    s = sub.add_parser("course", help="build, check, execute or export the notebooks")
    s.add_argument("action", choices=["build", "check", "execute", "slides"])
    s.add_argument("notebooks", nargs="*", help="notebooks (execute, slides)")
    s.add_argument("--out", default="slides", help="output folder for slides")
    s.add_argument("--root", default=None, help="the course folder holding solutions/ and notebooks/")
    s.set_defaults(fn=_cmd_course)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "root", "x") is None:
        args.root = str(_course_root())
    from .data import SequenceError
    try:
        return int(args.fn(args) or 0)
    except SequenceError as exc:
        _fail(str(exc))
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))


def _course_root() -> Path:
    """The folder with solutions/: the current one or above, else the package's checkout."""
    for parent in [Path.cwd(), *Path.cwd().parents]:
        if (parent / "solutions").is_dir():
            return parent
    return Path(__file__).resolve().parent.parent


if __name__ == "__main__":
    raise SystemExit(main())
