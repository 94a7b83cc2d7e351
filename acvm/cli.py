"""The ``acvm`` command (also ``python -m acvm``).

    acvm trackers
    acvm track NAME SEQUENCE_DIR --out FILE
    acvm bench SEQUENCE_DIR... --trackers a,b,... --json FILE [--plot FILE] [--workers N] [--vot] [--split S]
               [--resume] [--timeout-per-frame S] [--timeout-base S]
    acvm train NAME [--steps N] [--data DIR...] [--synthetic-fraction F] [--seed S] [--out FILE] [--resume]
               [--threads N]
    acvm data synth OUT_DIR [--seed S] [--frames N] [--occlusion] [--distractor]
    acvm course build | check | execute NOTEBOOK... | slides [NOTEBOOK...] --out DIR | nbgrader [NOTEBOOK...] --out DIR
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .registry import TRAINERS   # ``acvm train NAME`` -> "module:function" (a view of registry.MODELS)

__all__ = ["main", "TRAINERS", "bench", "BenchLimits", "journal_path", "read_journal"]


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


def _cmd_toolkit_lite_config(args) -> int:
    from .toolkit_lite.trackers import trackers_yaml
    names = [n.strip() for n in args.trackers.split(",") if n.strip()] if args.trackers else None
    try:
        print(trackers_yaml(names), end="")
    except ValueError as exc:
        _fail(str(exc))
    return 0


def _cmd_vot_tracker(args) -> int:
    from .vot import serve
    try:
        import trax  # noqa: F401
    except ImportError:
        _fail("the VOT integration needs vot-trax: pip install -e '.[vot]'")
    serve(args.tracker, log=args.log)
    return 0


def _cmd_vot_workspace(args) -> int:
    from .data import SequenceError
    from .vot import write_workspace
    trackers = [t.strip() for t in args.trackers.split(",") if t.strip()]
    try:
        root = write_workspace(args.directory, trackers, args.sequences, copy=args.copy, frames=args.frames)
    except (ValueError, FileExistsError, SequenceError) as exc:
        _fail(str(exc))
    print(f"VOT workspace in {root}: {len(args.sequences)} sequences, trackers "
          f"{', '.join('acvm-' + t for t in trackers)}\n"
          f"  vot evaluate --workspace {root} {' '.join('acvm-' + t for t in trackers)}\n"
          f"  vot analysis --workspace {root} --format json {' '.join('acvm-' + t for t in trackers)}")
    return 0


def _parse_box(text: str) -> np.ndarray:
    try:
        box = np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError:
        box = np.array([])
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
        _fail(f"--box must be x,y,w,h with w and h > 0 (0-based pixels), got {text!r}")
    return box


def _cmd_track(args) -> int:
    from .data import load_sequence
    from .evaluation import run_ope
    from .registry import make_tracker
    from .video import VideoSequence, VideoWriter, draw_boxes, is_video
    box = _parse_box(args.box) if args.box else None
    if is_video(args.sequence):
        if box is None:
            _fail(f"{args.sequence} is a video: give the target's first box with --box x,y,w,h")
        seq, has_truth = VideoSequence(args.sequence, box), False
        fps = seq.fps
    else:
        seq = load_sequence(args.sequence)
        has_truth, fps = True, 30.0
        if box is not None:                      # start from the given box; the ground truth still scores
            seq.boxes = seq.boxes.copy()
            seq.boxes[0] = box
    tracker = make_tracker(args.name)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    video = VideoWriter(args.video, fps) if args.video else None
    if video is not None:   # frame 0 first: a video is then read once, in order (no seek back to it)
        video.write(draw_boxes(seq[0], seq.boxes[0], seq.boxes[0] if has_truth else None))
    tracked: list[np.ndarray] = []   # the boxes of the frames done so far (frame 0: the first box)

    def keep(i, _tracker, b):
        if not tracked:
            tracked.append(np.asarray(seq.boxes[0], dtype=np.float64))
        tracked.append(np.array(b, dtype=np.float64))
        if video is not None:
            video.write(draw_boxes(seq[i], b, seq.boxes[i] if has_truth else None))

    try:
        result = run_ope(tracker, seq, name=args.name, progress=not args.quiet, callback=keep)
    except Exception as exc:  # noqa: BLE001 - a bad frame or a tracker's error: keep what was tracked, say where
        if not tracked and tracker.initialised:      # init worked, the first update's frame did not
            tracked.append(np.asarray(seq.boxes[0], dtype=np.float64))
        stopped = len(tracked)
        paths = getattr(seq, "frame_paths", None)
        frame = paths[stopped] if paths is not None and stopped < len(paths) else f"frame {stopped} of {args.sequence}"
        if tracked:
            _write_boxes(out, np.stack(tracked), args.format)
            kept = f"the boxes of frames 0 to {stopped - 1} are written to {out}"
        else:
            kept = "no boxes written"
        if video is not None:
            video.close()
            kept += f"; {video.frames} frames written to {video.path}" if video.frames else ""
        print(f"acvm track: {args.name} on {seq.name} stopped at frame {stopped} ({frame}): "
              f"{type(exc).__name__}: {exc}; {kept}", file=sys.stderr)
        return 1
    if video is not None:
        video.close()
    _write_boxes(out, result.boxes, args.format)
    scores = (f"AUC {result.auc:.3f}, precision@20px {result.precision20:.3f}; "
              if np.isfinite(result.groundtruth[1:]).any() else "")
    wrote = f" and the video to {video.path} ({video.frames} frames)" if video is not None else ""
    print(f"{args.name} on {seq.name}: {len(seq)} frames at {result.fps:.1f} frames per second "
          f"({scores}boxes written to {out}{wrote})")
    return 0


#: ``acvm track --format``: how each benchmark's tools read a box file
BOX_FORMATS = {
    "acvm": "0-based x,y,w,h, one line a frame (what acvm's loaders and GOT-10k read)",
    "got10k": "the same 0-based x,y,w,h with 4 decimals (GOT-10k's result files)",
    "otb": "1-based x,y,w,h, as OTB's groundtruth_rect.txt",
    "vot": "VOT's trajectory: '1' on the initialisation frame, then 0-based x,y,w,h",
}


def _write_boxes(out: Path, boxes: np.ndarray, fmt: str = "acvm") -> None:
    """One box line per frame in format ``fmt`` (:data:`BOX_FORMATS`), written through a temporary
    file (never half a file)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if fmt == "otb":
        boxes = boxes + [1.0, 1.0, 0.0, 0.0]
    digits = 2 if fmt == "acvm" else 4
    lines = [",".join(f"{v:.{digits}f}" for v in b) for b in boxes]
    if fmt == "vot" and lines:
        lines[0] = "1"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out)


@dataclass(frozen=True)
class BenchLimits:
    """How long one OpenCV run of ``acvm bench`` may take before it counts as hung (its worker
    process is killed and the run becomes an error row): ``base + per_frame × frames`` seconds,
    twice the frames with ``--vot`` (two passes)."""

    per_frame: float = 2.0     # seconds per frame (OpenCV's slowest tracker, TLD, needs well under 0.1)
    base: float = 30.0         # seconds for the worker's start (imports) and init

    def seconds(self, frames: int, vot: bool = False) -> float:
        return self.base + self.per_frame * frames * (2 if vot else 1)


def _set_threads(threads) -> None:
    if threads:
        try:
            import torch
            torch.set_num_threads(threads)
        except ImportError:  # pragma: no cover
            pass


def _bench_job(job):
    tracker_name, seq_path, vot, threads = job
    _set_threads(threads)
    from .data import load_sequence
    from .evaluation import (normalised_precision, precision_curve, run_ope, run_vot, success_curve,
                             success_rate, vot_robustness)
    from .registry import make_tracker
    seq = load_sequence(seq_path)
    res = run_ope(make_tracker(tracker_name), seq, name=tracker_name)
    row = res.as_dict()
    row["success_curve"] = [round(float(v), 4) for v in success_curve(res.ious[1:])]
    row["precision_curve"] = [round(float(v), 4) for v in precision_curve(res.centre_errors[1:])]
    row["mean_iou"] = round(float(np.nanmean(res.ious[1:])), 4)     # GOT-10k's average overlap (AO)
    row["sr50"] = round(success_rate(res.ious[1:], 0.5), 4)            # GOT-10k's success rates
    row["sr75"] = round(success_rate(res.ious[1:], 0.75), 4)
    row["norm_precision"] = round(normalised_precision(res.boxes[1:], res.groundtruth[1:]), 4)   # TrackingNet
    if vot:
        v = run_vot(lambda: make_tracker(tracker_name), seq, name=tracker_name)
        row["vot_accuracy"] = round(v.accuracy, 4)
        row["vot_failures"] = v.n_failures
        row["vot_robustness"] = round(vot_robustness(v.n_failures, len(seq)), 4)   # S = 100, the course toolkit's
    return row


def _error_row(job, message: str) -> dict:
    where = job[1]
    return {"tracker": str(job[0]), "sequence": Path(where).name if isinstance(where, (str, os.PathLike)) else str(where),
            "error": message}


def _safe_job(job) -> dict:
    """:func:`_bench_job`, with any exception (an unreadable frame, a tracker's error) as an error row."""
    try:
        return _bench_job(job)
    except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the benchmark
        return _error_row(job, f"{type(exc).__name__}: {exc}")


def _job_process(conn, job, target) -> None:
    """A worker process's whole life: one run, its row sent back on ``conn``."""
    conn.send(target(job))
    conn.close()


def _run_in_processes(jobs, slots: int, limit, done, target=None) -> None:
    """Run ``jobs`` (``(index, job)``), each in its own spawned process, ``slots`` at a time.

    ``limit(job)`` is the job's time limit in seconds (``None``: none); a process past it is killed
    and one that dies without a row (a segmentation fault) becomes an error row, so a native hang or
    crash costs one run, never the benchmark. ``done(index, row)`` is called as each run ends.
    ``target(job) -> row`` is what a process runs (default: the benchmark's run, errors as rows); it
    and the jobs must be picklable (module-level functions, ``functools.partial`` of them).
    """
    target = _safe_job if target is None else target
    import multiprocessing as mp
    from multiprocessing.connection import wait
    ctx = mp.get_context("spawn")
    pending = list(jobs)
    running = {}   # conn -> (index, job, process, deadline, seconds)
    try:
        while pending or running:
            while pending and len(running) < slots:
                index, job = pending.pop(0)
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_job_process, args=(child, job, target), daemon=True)
                proc.start()
                child.close()
                seconds = limit(job)
                running[parent] = (index, job, proc, None if seconds is None else time.monotonic() + seconds, seconds)
            for conn in wait(list(running), timeout=0.5):
                index, job, proc, _, _ = running.pop(conn)
                try:
                    row = conn.recv()
                except EOFError:
                    proc.join(5)
                    code = proc.exitcode
                    why = " (a segmentation fault in native code)" if code == -11 else ""
                    row = _error_row(job, f"the worker process died with exit code {code}{why}")
                conn.close()
                proc.join(5)
                if proc.is_alive():      # sent its row but hangs on the way out (native threads)
                    proc.kill()
                    proc.join(5)
                done(index, row)
            now = time.monotonic()
            for conn, (index, job, proc, deadline, seconds) in list(running.items()):
                if deadline is not None and now > deadline:
                    proc.kill()
                    proc.join(5)
                    running.pop(conn)
                    conn.close()
                    done(index, _error_row(job, f"timed out after {seconds:.0f} s (the tracker hung; "
                                                "see --timeout-per-frame and --timeout-base)"))
    finally:
        for conn, (_, _, proc, _, _) in running.items():
            proc.kill()
            proc.join(5)
            conn.close()


def journal_path(json_path) -> Path:
    """The journal beside ``acvm bench``'s JSON: ``<json>.journal.jsonl``, one finished run a line."""
    json_path = Path(json_path)
    return json_path.with_name(json_path.name + ".journal.jsonl")


def _job_key(job) -> list:
    tracker_name, seq_path, vot, _ = job
    return [tracker_name, str(Path(seq_path).resolve()), bool(vot)]


def read_journal(path) -> list[dict]:
    """The entries of a bench journal (``{"key": [tracker, folder, vot], "row": {...}}``); a last line
    cut short by a kill is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and "key" in entry and "row" in entry:
            out.append(entry)
    return out


def bench(sequences: list[str], trackers: list[str], workers: int = 1, vot: bool = False,
          progress: bool = True, threads: int | None = None, journal=None, resume: bool = False,
          limits: BenchLimits = BenchLimits(), on_row=None) -> list[dict]:
    """Run one-pass evaluation of every tracker on every sequence; rows as in ``acvm bench``'s JSON.

    ``threads`` sets torch's threads per run; by default one per worker process when ``workers > 1``
    (the processes already fill the cores) and torch's own default otherwise.

    A run that fails (an unreadable frame, a tracker's exception, a hang past ``limits``, a crash)
    is a row ``{"tracker", "sequence", "error": "..."}`` and the others go on. OpenCV's runs always
    go to a worker process with the time limit of ``limits``; with ``workers > 1`` every run does.
    With ``journal`` (a path) each finished run is appended to it as one JSON line as it ends;
    ``resume`` keeps the journal's successful runs and runs only the rest (error rows run again),
    otherwise the journal is started afresh. ``on_row(rows)`` is called with the rows so far (in
    the order of the jobs) after every run.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    from .data import load_sequence
    lengths = {s: len(load_sequence(s)) for s in sequences}  # fail early, naming the folder, before any tracker runs
    from .registry import make_tracker
    for t in trackers:
        make_tracker(t)
    per_run = threads if threads is not None else (1 if workers > 1 else 0)
    jobs = [(t, s, vot, per_run) for s in sequences for t in trackers]
    results: dict[int, dict] = {}
    journal = Path(journal) if journal is not None else None
    if journal is not None:
        if resume:
            entries = read_journal(journal)
            # rewrite it whole: a line cut short by a kill must not swallow the next one appended
            tmp = journal.with_name(journal.name + ".tmp")
            tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
            os.replace(tmp, journal)
            have = {tuple(e["key"]): e["row"] for e in entries if "error" not in e["row"]}
            for i, job in enumerate(jobs):
                if tuple(_job_key(job)) in have:
                    results[i] = have[tuple(_job_key(job))]
        else:
            journal.unlink(missing_ok=True)
        journal.parent.mkdir(parents=True, exist_ok=True)
    todo = [(i, job) for i, job in enumerate(jobs) if i not in results]
    from tqdm.auto import tqdm
    bar = tqdm(total=len(jobs), initial=len(results), desc="acvm bench", disable=not progress, unit="run")

    def done(index, row):
        results[index] = row
        if journal is not None:
            with open(journal, "a") as f:
                f.write(json.dumps({"key": _job_key(jobs[index]), "row": row}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        note = f"error: {row['error'][:40]}" if "error" in row else f"AUC {row['auc']:.3f}"
        bar.set_postfix_str(f"{row['tracker']} on {row['sequence']}: {note}")
        bar.update()
        if on_row is not None:
            on_row([results[i] for i in sorted(results)])

    def limit(job):
        return limits.seconds(lengths[job[1]], job[2]) if job[0].startswith("opencv-") else None

    try:
        if workers > 1:
            _run_in_processes(todo, workers, limit, done)
        else:
            for index, job in todo:
                if job[0].startswith("opencv-"):
                    _run_in_processes([(index, job)], 1, limit, done)
                else:
                    done(index, _safe_job(job))
    finally:
        bar.close()
    return [results[i] for i in sorted(results)]


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the benchmark is, so that it ends as Ctrl-C does (what finished is kept)."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` through a temporary file and ``os.replace``: the file is whole or the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=False))
    os.replace(tmp, path)


def _plain(summary: dict) -> dict:
    """``summarise``'s numbers with NaN (a tracker whose every run failed) as ``None`` for JSON."""
    return {n: {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in s.items()}
            for n, s in summary.items()}


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
    if args.timeout_per_frame <= 0 or args.timeout_base <= 0:
        _fail(f"--timeout-per-frame and --timeout-base must be positive, got {args.timeout_per_frame} "
              f"and {args.timeout_base}")
    from .data import expand_sequence_folders
    args.sequences = [str(p) for p in expand_sequence_folders(sequences, args.split,
                                                              require_split=args.split is not None)]
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    journal = journal_path(out)
    if args.resume and not journal.is_file():
        print(f"acvm bench: --resume: no journal {journal} yet, starting from the beginning", file=sys.stderr)
    t0 = time.time()
    meta = {"command": "acvm " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "workers": args.workers, "journal": journal.name,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}

    def write(rows, complete: bool):
        # "complete": false until every run has ended, so a file from an interrupted (or still running)
        # benchmark never passes for the result
        payload = {"complete": complete, "meta": {**meta, "seconds": round(time.time() - t0, 1)},
                   "summary": _plain(summarise(rows, warn=False)), "results": rows}
        _write_json(out, payload)

    # replace at once whatever an earlier run left at this path
    write([{**e["row"]} for e in read_journal(journal) if "error" not in e["row"]] if args.resume else [], False)
    import signal
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (a test calling main from a thread)
        previous = None
    rows: list[dict] = []

    def keep(so_far):
        rows[:] = so_far
        write(rows, False)

    try:
        rows = bench(args.sequences, trackers, workers=args.workers, vot=args.vot, progress=not args.quiet,
                     threads=args.threads, journal=journal, resume=args.resume,
                     limits=BenchLimits(args.timeout_per_frame, args.timeout_base), on_row=keep)
    except KeyboardInterrupt as exc:
        write(rows, False)
        why = "terminated" if isinstance(exc, _Terminated) else "interrupted"
        print(f"acvm bench: {why}; the {len(rows)} finished runs are in {out} (\"complete\": false) and "
              f"{journal}; continue with the same command and --resume", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    write(rows, True)
    summary = summarise(rows, warn=False)
    print(f"{'tracker':20s} {'AUC':>6s} {'prec@20':>8s} {'fps':>8s}  (mean over {len(args.sequences)} sequences)")
    for name, s in summary.items():
        failed = f"  ({s['failed']} of {s['failed'] + s['sequences']} runs failed)" if s["failed"] else ""
        if s["sequences"]:
            print(f"{name:20s} {s['auc']:6.3f} {s['precision20']:8.3f} {s['fps']:8.1f}{failed}")
        else:
            print(f"{name:20s} {'-':>6s} {'-':>8s} {'-':>8s}{failed}")
    errors = [r for r in rows if "error" in r]
    for r in errors:
        print(f"failed: {r['tracker']} on {r['sequence']}: {r['error']}")
    print(f"results written to {out}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        good = [r for r in rows if "error" not in r]
        names = [n for n in summary if summary[n]["sequences"]]
        succ = {n: np.mean([r["success_curve"] for r in good if r["tracker"] == n], axis=0) for n in names}
        prec = {n: np.mean([r["precision_curve"] for r in good if r["tracker"] == n], axis=0) for n in names}
        plot_success(succ, axes[0])
        plot_precision(prec, axes[1])
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"plot written to {args.plot}")
    return 1 if errors else 0


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
    if args.data_command == "fetch":
        from .fetch import FetchError, fetch
        try:
            fetch(args.names or None, args.to, args.url)
        except FetchError as exc:
            print(f"acvm data fetch: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.data_command == "where":
        from .data import list_sequences, sequence_places, sequences_dir
        for what, folder in sequence_places():
            state = ("not set" if folder is None and what.startswith("$") else "none found" if folder is None
                     else f"{folder} ({len(list_sequences(folder))} sequences)" if folder.is_dir() else f"{folder} (missing)")
            print(f"{what}: {state}")
        used = sequences_dir()
        if used:
            print(f"-> the course reads {used}")
        elif os.environ.get("ACVM_SEQUENCES"):
            print("-> $ACVM_SEQUENCES names a missing folder, and when it is set nothing else is read: unset it or fix it")
        else:
            print("-> no sequences found: the notebooks and `acvm bench` need one of these")
        return 0 if used else 1
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
        for nb in course.resolve_notebooks(args.notebooks, args.root):
            seconds = course.execute(nb)
            print(f"executed {nb} in {seconds:.1f} s")
        return 0
    if args.action == "slides":
        written = course.slides(args.notebooks, args.out or "slides", root=args.root, lecture=args.lecture)
        for w in written:
            print(f"slides written to {w}")
        return 0
    if args.action == "nbgrader":
        out = Path(args.out or "nbgrader")
        written = course.nbgrader_course(out, args.notebooks or None, root=args.root)
        print(f"nbgrader course with {len(written)} assignments in {out}/source; then, in {out}: "
              f"nbgrader generate_assignment {written[0].stem}, and after collecting the work under "
              f"submitted/<student>/{written[0].stem}/: nbgrader autograde {written[0].stem}")
        return 0
    return 2


def _add_bench(sub) -> None:
    """``acvm bench``: one-pass (and VOT) evaluation of trackers on sequences."""
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
    s.add_argument("--resume", action="store_true",
                   help="keep the finished runs of the journal beside --json (<json>.journal.jsonl) and run the rest")
    s.add_argument("--timeout-per-frame", type=float, default=BenchLimits.per_frame,
                   help="an OpenCV run's time limit grows by this many seconds a frame (default %(default)s)")
    s.add_argument("--timeout-base", type=float, default=BenchLimits.base,
                   help="... plus this many seconds (default %(default)s); past it the run is an error row")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=_cmd_bench)


def _add_train(sub) -> None:
    """``acvm train NAME``: one of the course's networks, written to data/weights/."""
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="acvm", description="Fully-trainable trackers: the course's command line.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("trackers", help="list the tracker names")
    s.set_defaults(fn=_cmd_trackers)

    s = sub.add_parser("track", help="run one tracker on one sequence and write its boxes")
    s.add_argument("name", help="tracker name (see `acvm trackers`)")
    s.add_argument("sequence", help="sequence folder (OTB, VOT or GOT-10k layout) or a video file (.mp4, .avi, ...)")
    s.add_argument("--out", required=True, help="text file for one x,y,w,h line per frame (0-based)")
    s.add_argument("--format", choices=sorted(BOX_FORMATS), default="acvm",
                   help="box file format: " + "; ".join(f"{k}: {v}" for k, v in BOX_FORMATS.items()))
    s.add_argument("--box", help="x,y,w,h of the target in frame 0 (0-based; needed for a video, "
                                 "for a folder it replaces the ground truth's first box)")
    s.add_argument("--video", help="write the frames with the tracker's box (red) and the ground truth (green) "
                                   "to this .mp4")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=_cmd_track)

    _add_bench(sub)

    s = sub.add_parser("weights", help="the shipped weights files: their state against data/weights/MANIFEST.json")
    s.add_argument("--record", nargs="+", metavar="FILE", default=None,
                   help="record these files of data/weights/ in the manifest as they are (a file put there by hand)")
    s.set_defaults(fn=_cmd_weights)

    _add_train(sub)

    s = sub.add_parser("data", help="make data")
    dsub = s.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("synth", help="write a synthetic sequence with exact ground truth in OTB layout")
    d.add_argument("out_dir")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--frames", type=int, default=100)
    d.add_argument("--occlusion", action="store_true")
    d.add_argument("--distractor", action="store_true")
    d.set_defaults(fn=_cmd_data)
    d = dsub.add_parser("where", help="where the course's sequences are looked up, and which folder it reads")
    d.set_defaults(fn=_cmd_data)
    d = dsub.add_parser("fetch", help="download the course's sequences, check every file's SHA-256, unpack them")
    d.add_argument("names", nargs="*", help="sequence names (default: all six)")
    d.add_argument("--to", default=None, help="folder for them (default: the user data folder the course reads)")
    d.add_argument("--url", default=None, help="where <NAME>.tar.gz archives are published (default $ACVM_DATA_URL)")
    d.set_defaults(fn=_cmd_data)

    s = sub.add_parser("vot-tracker", help="run a tracker as a TraX server (what the VOT toolkit starts)")
    s.add_argument("tracker", help="a name from `acvm trackers`")
    s.add_argument("--log", action="store_true", help="TraX protocol log on stderr")
    s.set_defaults(fn=_cmd_vot_tracker)

    s = sub.add_parser("vot", help="the VOT toolkit: write a workspace from local sequences")
    vsub = s.add_subparsers(dest="vot_command", required=True)
    v = vsub.add_parser("workspace", help="a VOT workspace (sequences, trackers.ini, baseline stack), offline")
    v.add_argument("directory", help="the workspace folder (new)")
    v.add_argument("sequences", nargs="+", help="sequence folders (OTB, VOT, GOT-10k layouts)")
    v.add_argument("--trackers", required=True, help="comma-separated tracker names")
    v.add_argument("--copy", action="store_true", help="copy the frames (default: symbolic links)")
    v.add_argument("--frames", type=int, help="only the first N frames of each sequence (a quick trial)")
    v.set_defaults(fn=_cmd_vot_workspace)

    s = sub.add_parser("toolkit-lite-config",
                       help="print trackers.yaml entries that run acvm trackers in the course toolkit (pytracking-toolkit-lite)")
    s.add_argument("--trackers", help="comma-separated tracker names (default: all)")
    s.set_defaults(fn=_cmd_toolkit_lite_config)

    s = sub.add_parser("course", help="build, check, execute or export the notebooks (slides, an nbgrader course)")
    s.add_argument("action", choices=["build", "check", "execute", "slides", "nbgrader"])
    s.add_argument("notebooks", nargs="*",
                   help="solved notebooks, as paths or names (05_siamfc, or 05) (execute, slides, nbgrader; default: all)")
    s.add_argument("--out", default=None, help="output folder (slides: slides/, nbgrader: nbgrader/)")
    s.add_argument("--lecture", action="store_true",
                   help="slides: one deck, lecture.slides.html, of the slides tagged 'lecture' (the 90-minute path)")
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
