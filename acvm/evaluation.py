"""Evaluation: OTB one-pass evaluation (success and precision) and VOT-style supervised runs.

* **Success** (OTB): the fraction of frames whose IoU with the ground truth exceeds a threshold,
  for 21 thresholds 0, 0.05, ..., 1; its area under the curve (AUC) is the mean over thresholds.
* **Precision** (OTB): the fraction of frames whose centre error is at most 20 px.
* **VOT supervised**: re-initialise the tracker 5 frames after each failure (IoU = 0); accuracy
  is the mean IoU over tracked frames, leaving out the first 10 frames of each (re-)initialisation
  (the initialisation frame and the 9 after it, as the VOT toolkit's ``burnin``);
  robustness is the number of failures.

Frames with no ground truth (NaN rows) are skipped by every measure. Speed is measured around
``update`` only, never around frame reading or ``init``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .boxes import centre_error, iou
from .tracker import Tracker

__all__ = ["SUCCESS_THRESHOLDS", "success_curve", "auc", "precision_curve", "precision",
           "OPEResult", "run_ope", "safe_box", "VOTResult", "run_vot", "plot_success", "plot_precision",
           "summarise", "call_times", "InMemory", "success_rate", "normalised_precision", "vot_robustness",
           "NORM_PRECISION_THRESHOLDS"]


class InMemory:
    """A sequence with its frames decoded (or rendered) once, so that every tracker and setting that
    runs on it sees identical input quickly. ``name`` replaces the sequence's; ``n_frames`` keeps the
    first frames only."""

    def __init__(self, seq, name: str | None = None, n_frames: int | None = None):
        n = len(seq) if n_frames is None else min(int(n_frames), len(seq))
        self.name = name or getattr(seq, "name", "sequence")
        self.boxes = np.asarray(seq.boxes)[:n]
        self.frames = [seq[i] for i in range(n)]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.frames[i]


def call_times(fn, repeats: int, warmup: int = 0) -> np.ndarray:
    """Wall-clock seconds of ``repeats`` calls of ``fn()`` after ``warmup`` untimed ones (caches,
    allocator, thread pool): a float64 array ``(repeats,)`` in call order, for the speed benchmarks."""
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for k in range(repeats):
        t0 = time.perf_counter()
        fn()
        out[k] = time.perf_counter() - t0
    return out

#: OTB's 21 overlap thresholds 0, 0.05, ..., 1
SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)
#: centre-error thresholds 0..50 px for the precision plot
PRECISION_THRESHOLDS = np.arange(0, 51)


def _valid(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v[np.isfinite(v)]


def success_curve(ious, thresholds=SUCCESS_THRESHOLDS) -> np.ndarray:
    """Fraction of frames with IoU strictly above each threshold (``(T,)`` float64).

    As in the OTB toolkit a frame counts at threshold t when ``IoU > t``, so the value at t=1 is
    always 0 and at t=0 it is the fraction of frames with any overlap.
    """
    v = _valid(ious)
    if v.size == 0:
        return np.zeros(len(thresholds))
    return (v[None, :] > np.asarray(thresholds)[:, None]).mean(axis=1)


def auc(ious, thresholds=SUCCESS_THRESHOLDS) -> float:
    """OTB success AUC: the mean of :func:`success_curve` over the 21 thresholds."""
    return float(success_curve(ious, thresholds).mean())


def precision_curve(errors, thresholds=PRECISION_THRESHOLDS) -> np.ndarray:
    """Fraction of frames with centre error at most each threshold in pixels."""
    v = _valid(errors)
    if v.size == 0:
        return np.zeros(len(thresholds))
    return (v[None, :] <= np.asarray(thresholds)[:, None]).mean(axis=1)


def precision(errors, threshold: float = 20.0) -> float:
    """Fraction of frames whose centre error is at most ``threshold`` pixels (OTB uses 20)."""
    return float(precision_curve(errors, [threshold])[0])


def success_rate(ious, threshold: float = 0.5) -> float:
    """GOT-10k's SR: the fraction of frames whose IoU exceeds ``threshold`` (0.5 and 0.75)."""
    return float(success_curve(ious, [threshold])[0])


#: normalised centre-error thresholds of TrackingNet's normalised precision (0 to 0.5)
NORM_PRECISION_THRESHOLDS = np.linspace(0.0, 0.5, 51)


def normalised_precision(boxes, groundtruth, thresholds=NORM_PRECISION_THRESHOLDS) -> float:
    """TrackingNet's normalised precision: the mean over ``thresholds`` of the fraction of frames whose
    centre error, divided by the ground truth's width and height per axis, is at most the threshold.
    Frames without ground truth (NaN, or an empty box) are skipped."""
    b, g = np.asarray(boxes, dtype=np.float64), np.asarray(groundtruth, dtype=np.float64)
    ok = np.isfinite(g).all(1) & (g[:, 2] > 0) & (g[:, 3] > 0)
    if not ok.any():
        return 0.0
    b, g = b[ok], g[ok]
    d = ((b[:, :2] + b[:, 2:] / 2) - (g[:, :2] + g[:, 2:] / 2)) / g[:, 2:]
    return float(precision_curve(np.hypot(d[:, 0], d[:, 1]), thresholds).mean())


def vot_robustness(failures: int, frames: int, sensitivity: float = 100.0) -> float:
    """VOT's robustness as the course toolkit reports it: ``exp(-S · F / M)``, the probability of
    tracking ``S`` frames without failing, for ``F`` failures in ``M`` frames."""
    if frames <= 0:
        raise ValueError(f"frames must be positive, got {frames}")
    return float(np.exp(-sensitivity * failures / frames))


@dataclass
class OPEResult:
    """What one-pass evaluation of one tracker on one sequence gives."""

    tracker: str
    sequence: str
    boxes: np.ndarray            # (N, 4) predicted boxes, frame 0 is the initial box
    groundtruth: np.ndarray      # (N, 4)
    times: np.ndarray            # (N-1,) seconds per update
    extras: dict = field(default_factory=dict)

    @property
    def ious(self) -> np.ndarray:
        out = iou(self.boxes, self.groundtruth)
        out[~np.isfinite(self.groundtruth).all(1)] = np.nan
        return out

    @property
    def centre_errors(self) -> np.ndarray:
        out = centre_error(self.boxes, self.groundtruth)
        out[~np.isfinite(self.groundtruth).all(1)] = np.nan
        return out

    @property
    def auc(self) -> float:
        return auc(self.ious[1:])

    @property
    def precision20(self) -> float:
        return precision(self.centre_errors[1:], 20.0)

    @property
    def fps(self) -> float:
        total = float(np.sum(self.times))
        return len(self.times) / total if total > 0 else float("inf")

    def as_dict(self) -> dict:
        """The fields ``acvm bench`` writes: tracker, sequence, auc, precision20, fps, frames."""
        return {"tracker": self.tracker, "sequence": self.sequence, "auc": round(self.auc, 4),
                "precision20": round(self.precision20, 4), "fps": round(self.fps, 2),
                "frames": int(len(self.boxes))}


def safe_box(box, previous) -> np.ndarray:
    """The tracker's answer as a ``(4,)`` float64 box, or ``previous`` (copied) when the answer is
    not four finite numbers: what every evaluation (``run_ope``, ``run_vot``, the VOT, got10k and
    course-toolkit adapters) counts as the output of a tracker that returned nonsense."""
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.isfinite(b).all():
        return previous.copy()
    return b


def run_ope(tracker: Tracker, sequence, name: str | None = None, start: int = 0,
            end: int | None = None, progress: bool = False, callback=None) -> OPEResult:
    """One-pass evaluation: ``init`` on frame ``start`` with the ground truth, ``update`` on the rest.

    A tracker returning a non-finite box keeps its previous one (counted as its output). With
    ``callback(i, tracker, box)`` a caller can record what the tracker exposes after each update.
    """
    end = len(sequence) if end is None else end
    gt = np.asarray(sequence.boxes[start:end], dtype=np.float64)
    boxes = np.zeros_like(gt)
    tracker.init(sequence[start], gt[0])
    boxes[0] = gt[0]
    times = np.zeros(max(0, end - start - 1))
    frames = range(start + 1, end)
    if progress:
        from tqdm.auto import tqdm
        frames = tqdm(frames, desc=f"{name or getattr(tracker, 'name', 'tracker')} on {sequence.name}", leave=False)
    for k, i in enumerate(frames, start=1):
        image = sequence[i]
        t0 = time.perf_counter()
        box = tracker.update(image)
        times[k - 1] = time.perf_counter() - t0
        boxes[k] = safe_box(box, boxes[k - 1])
        if callback is not None:
            callback(i, tracker, boxes[k])
    return OPEResult(name or getattr(tracker, "name", type(tracker).__name__), sequence.name, boxes, gt, times)


@dataclass
class VOTResult:
    """VOT-style supervised run: accuracy (mean IoU after burn-in) and failures."""

    tracker: str
    sequence: str
    boxes: np.ndarray        # (N, 4); NaN where the tracker was not running
    overlaps: np.ndarray     # (N,) IoU per frame, NaN where not counted
    failures: list[int]      # frame indices of failures

    @property
    def accuracy(self) -> float:
        v = _valid(self.overlaps)
        return float(v.mean()) if v.size else 0.0

    @property
    def n_failures(self) -> int:
        return len(self.failures)


def run_vot(tracker_factory, sequence, name: str = "tracker", skip: int = 5, burn_in: int = 10) -> VOTResult:
    """Supervised evaluation: on failure (IoU = 0) re-initialise ``skip`` frames later.

    ``tracker_factory()`` makes a fresh tracker for each (re-)initialisation. The ``burn_in``
    frames that start at an initialisation (that frame included, as in the VOT toolkit) are
    excluded from accuracy; ``burn_in=0`` scores every tracked frame (the course toolkit's rule).
    """
    n = len(sequence)
    gt = np.asarray(sequence.boxes, dtype=np.float64)
    boxes = np.full((n, 4), np.nan)
    overlaps = np.full(n, np.nan)
    failures: list[int] = []
    i = 0
    while i < n:
        if not np.isfinite(gt[i]).all():
            i += 1
            continue
        tracker = tracker_factory()
        tracker.init(sequence[i], gt[i])
        boxes[i] = gt[i]
        init_frame = i
        i += 1
        while i < n:
            box = safe_box(tracker.update(sequence[i]), boxes[i - 1])
            boxes[i] = box
            if np.isfinite(gt[i]).all():
                o = float(iou(box, gt[i]))
                if o <= 0.0:
                    failures.append(i)
                    i += skip
                    break
                if i - init_frame >= burn_in:
                    overlaps[i] = o
            i += 1
    return VOTResult(name, sequence.name, boxes, overlaps, failures)


def summarise(results: list[dict], warn: bool = True) -> dict[str, dict[str, float]]:
    """Mean ``auc``, ``precision20`` and ``fps`` per tracker over a list of ``as_dict()`` rows.

    Rows with an ``"error"`` (a run of ``acvm bench`` that failed) are left out of the means and
    counted in ``"failed"``; ``"sequences"`` counts the rows averaged. A tracker whose every run
    failed has NaN means. With ``warn`` a ``UserWarning`` names the runs left out.
    """
    out: dict[str, dict[str, float]] = {}
    failed = [r for r in results if "error" in r]
    if failed and warn:
        import warnings
        shown = "; ".join(f"{r['tracker']} on {r['sequence']}: {r['error']}" for r in failed[:3])
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        warnings.warn(f"summarise: {len(failed)} failed runs left out of the means ({shown}{more})", stacklevel=2)
    for name in dict.fromkeys(r["tracker"] for r in results):
        rows = [r for r in results if r["tracker"] == name and "error" not in r]
        out[name] = {k: float(np.mean([r[k] for r in rows])) if rows else float("nan")
                     for k in ("auc", "precision20", "fps")}
        out[name]["sequences"] = len(rows)
        out[name]["failed"] = sum(1 for r in failed if r["tracker"] == name)
    return out


def plot_success(curves: dict[str, np.ndarray], ax=None, title: str = "Success plot (OPE)"):
    """Draw success curves ``{label: (21,) curve}``; the legend gives each AUC. Returns the axes.

    Each tracker keeps its colour and line style of every other figure (:func:`acvm.viz.tracker_style`).
    """
    import matplotlib.pyplot as plt
    from .viz import tracker_style
    ax = ax or plt.gca()
    for label, c in sorted(curves.items(), key=lambda kv: -np.mean(kv[1])):
        ax.plot(SUCCESS_THRESHOLDS, c, label=f"{label} [{np.mean(c):.3f}]", **tracker_style(label))
    ax.set(xlabel="overlap threshold", ylabel="success rate", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower left")
    return ax


def plot_precision(curves: dict[str, np.ndarray], ax=None, title: str = "Precision plot (OPE)"):
    """Draw precision curves ``{label: (51,) curve}`` over 0..50 px; the legend gives precision at 20 px."""
    import matplotlib.pyplot as plt
    from .viz import tracker_style
    ax = ax or plt.gca()
    for label, c in sorted(curves.items(), key=lambda kv: -kv[1][20]):
        ax.plot(PRECISION_THRESHOLDS, c, label=f"{label} [{c[20]:.3f}]", **tracker_style(label))
    ax.set(xlabel="location error threshold (px)", ylabel="precision", xlim=(0, 50), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return ax


# --- Masks: DAVIS region similarity J and contour accuracy F ---------------------------------
#
# DAVIS (Perazzi et al., CVPR 2016) scores a predicted mask M against the ground truth G by
# J = |M ∩ G| / |M ∪ G| (region) and by F, the F-measure of boundary pixels matched within a
# small distance (contour). Both are 1 for a perfect mask and 0 for a disjoint one.

from scipy import ndimage  # noqa: E402 - kept with the mask measures that need it

__all__ += ["as_mask", "region_similarity", "mask_boundary", "boundary_tolerance_px",
            "boundary_precision_recall", "contour_accuracy", "mask_scores"]

#: DAVIS's boundary tolerance: 0.8% of the image diagonal, rounded up to whole pixels
DAVIS_BOUNDARY_TOLERANCE = 0.008


def as_mask(mask, name: str = "mask") -> np.ndarray:
    """Return ``mask`` as an ``H×W`` bool array (non-zero is foreground), or raise naming ``name``."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"{name} must be a 2-D H×W array, got shape {m.shape}")
    return m.astype(bool)


def _same_shape(mask, gt) -> tuple[np.ndarray, np.ndarray]:
    m, g = as_mask(mask, "mask"), as_mask(gt, "gt")
    if m.shape != g.shape:
        raise ValueError(f"mask {m.shape} and gt {g.shape} must have the same shape")
    return m, g


def region_similarity(mask, gt) -> float:
    """DAVIS region similarity J: the IoU of two ``H×W`` masks (bool or 0/1), a float in [0, 1].

    Two empty masks agree perfectly, so J = 1 (the DAVIS convention; a frame where the target is
    absent and the tracker says so is a success).

    >>> region_similarity([[1, 1, 0]], [[0, 1, 1]])
    0.3333333333333333
    """
    m, g = _same_shape(mask, gt)
    union = np.count_nonzero(m | g)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(m & g) / union)


def mask_boundary(mask) -> np.ndarray:
    """Boundary pixels of an ``H×W`` mask: the foreground minus its erosion, ``H×W`` bool.

    The erosion uses the 4-neighbour cross, so a pixel is on the boundary when one of its four
    neighbours is background; outside the image counts as background, so a mask touching the
    border is closed there.
    """
    m = as_mask(mask)
    cross = ndimage.generate_binary_structure(2, 1)
    return m & ~ndimage.binary_erosion(m, structure=cross, border_value=0)


def boundary_tolerance_px(shape, tolerance: float = DAVIS_BOUNDARY_TOLERANCE) -> int:
    """DAVIS's match distance in pixels: ``ceil(tolerance × image diagonal)`` for an ``(H, W)`` shape."""
    return int(np.ceil(tolerance * np.hypot(shape[0], shape[1])))


def boundary_precision_recall(mask, gt, tolerance: float = DAVIS_BOUNDARY_TOLERANCE,
                              tolerance_px: float | None = None) -> tuple[float, float]:
    """Boundary precision and recall of ``mask`` against ``gt`` (``H×W``), as two floats.

    A boundary pixel of one mask is matched when a boundary pixel of the other lies within
    ``tolerance_px`` (Euclidean), by default ``ceil(tolerance × diagonal)`` as in DAVIS.
    Precision is the matched fraction of the predicted boundary, recall that of the ground
    truth's. An empty boundary has nothing wrong in it: its precision (or recall) is 1.
    """
    m, g = _same_shape(mask, gt)
    r = boundary_tolerance_px(m.shape, tolerance) if tolerance_px is None else float(tolerance_px)
    bm, bg = mask_boundary(m), mask_boundary(g)
    nm, ng = np.count_nonzero(bm), np.count_nonzero(bg)
    if nm == 0 or ng == 0:
        # nothing to match against: an empty boundary is perfect, the other one all wrong
        return (1.0 if nm == 0 else 0.0), (1.0 if ng == 0 else 0.0)
    # distance from every pixel to the nearest boundary pixel of the other mask
    to_g = ndimage.distance_transform_edt(~bg)
    to_m = ndimage.distance_transform_edt(~bm)
    return (float(np.count_nonzero(bm & (to_g <= r)) / nm),
            float(np.count_nonzero(bg & (to_m <= r)) / ng))


def contour_accuracy(mask, gt, tolerance: float = DAVIS_BOUNDARY_TOLERANCE,
                     tolerance_px: float | None = None) -> float:
    """DAVIS contour accuracy F: ``2PR / (P + R)`` of :func:`boundary_precision_recall`, in [0, 1].

    Two empty masks give F = 1, one empty mask F = 0.
    """
    p, r = boundary_precision_recall(mask, gt, tolerance, tolerance_px)
    return 2.0 * p * r / (p + r) if p + r > 0 else 0.0


def mask_scores(masks, gts, tolerance: float = DAVIS_BOUNDARY_TOLERANCE) -> dict[str, float]:
    """Mean J, mean F and their average J&F over a sequence of mask pairs, plus J's recall.

    Args:
        masks, gts: sequences (or ``(N, H, W)`` arrays) of predicted and ground-truth masks.
    Returns:
        ``{"J": mean J, "F": mean F, "J&F": (J + F) / 2, "J_recall": fraction of frames with
        J > 0.5}``, floats.
    """
    masks, gts = list(masks), list(gts)
    if len(masks) != len(gts) or not masks:
        raise ValueError(f"need as many masks as ground-truth masks (>0), got {len(masks)} and {len(gts)}")
    j = np.array([region_similarity(m, g) for m, g in zip(masks, gts)])
    f = np.array([contour_accuracy(m, g, tolerance) for m, g in zip(masks, gts)])
    return {"J": float(j.mean()), "F": float(f.mean()), "J&F": float((j.mean() + f.mean()) / 2),
            "J_recall": float((j > 0.5).mean())}


def load_bench(path) -> list[dict]:
    """Rows of an ``acvm bench --json`` file (raises a clear error when the file is missing).

    Rows of failed runs (with ``"error"``) are returned too: :func:`summarise` and
    :func:`per_sequence_winners` leave them out. A file marked ``"complete": false`` (an interrupted
    benchmark) is read with a warning saying so."""
    import json
    from pathlib import Path
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark results {path} do not exist; make them with `acvm bench ... --json {path}`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"benchmark results {path} are not valid JSON ({exc}); make them again with "
                         f"`acvm bench ... --json {path}`") from None
    if isinstance(data, dict) and data.get("complete") is False:
        import warnings
        warnings.warn(f"{path} is incomplete (its benchmark was interrupted or is still running): "
                      f"{len(data.get('results', []))} runs; finish it with `acvm bench ... --resume`", stacklevel=2)
    return data["results"] if isinstance(data, dict) else data


def per_sequence_winners(rows: list[dict], key: str = "auc") -> dict[str, str]:
    """``{sequence: tracker}`` with the highest ``key`` on each sequence (ties: the first listed)."""
    best: dict[str, dict] = {}
    for r in (r for r in rows if "error" not in r):   # failed runs have no numbers
        if r["sequence"] not in best or r[key] > best[r["sequence"]][key]:
            best[r["sequence"]] = r
    return {s: r["tracker"] for s, r in sorted(best.items())}
