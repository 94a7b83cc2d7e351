"""OpenCV's trackers behind the course's interface, for comparison (``opencv-csrt``, ``opencv-kcf``, ...).

OpenCV wants BGR frames and integer boxes for its newer trackers; when it reports a failure
the adapter keeps the previous box (as the benchmark's numbers assume) and sets
``confidence = 0``.

**The guard.** OpenCV's trackers take less than the course's checks accept, and some of them do
not say so: MIL and Boosting loop forever in ``init`` on a box of 4×4 pixels or less, or 1 or 2 px
thin (their random Haar features never fit), TLD crashes the process (segmentation fault) or loops
on images under 100 px,
and most raise a raw ``cv2.error`` on a whole-frame box, a box partly outside the image or a frame
of another size. Measured on OpenCV 5.0 (``tests/test_opencv_guard.py`` re-measures the hangs and the
crash in a subprocess with a time limit), :data:`LIMITS` holds, per kind, what ``init`` needs; the
adapter

* clips the first box to the image (a box partly outside it starts on its visible part);
* refuses with a ``ValueError`` naming the tracker, the box and the image what :data:`LIMITS` says
  OpenCV cannot take (too small a box, too small an image, too little room around the box);
* turns a ``cv2.error`` in ``init`` into a ``ValueError`` with OpenCV's reason, and one in ``update``
  into a failure (the previous box, ``confidence = 0``, the reason in ``last_error``);
* treats a returned box that is not finite, empty or entirely outside the image as a failure;
* raises a ``ValueError`` naming both sizes when a frame's size differs from the first frame's.

What a pre-check cannot foresee (a hang or crash on some other input) the benchmark catches: ``acvm
bench`` runs every OpenCV run in a worker process with a time limit (:mod:`acvm.cli`).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .boxes import box_in_image, clip_to_image, format_box
from .tracker import Tracker, check_image, check_init_box

__all__ = ["OpenCVTracker", "opencv_tracker_names", "OpenCVLimits", "LIMITS", "unguarded_run"]

# name -> (namespace, factory); trackers that need downloaded model files (GOTURN, DaSiamRPN,
# Nano, Vit) are left out because no model can be fetched here.
_FACTORIES = {
    "csrt": ("", "TrackerCSRT_create"),
    "kcf": ("", "TrackerKCF_create"),
    "mil": ("", "TrackerMIL_create"),
    "mosse": ("legacy", "TrackerMOSSE_create"),
    "medianflow": ("legacy", "TrackerMedianFlow_create"),
    "boosting": ("legacy", "TrackerBoosting_create"),
    "tld": ("legacy", "TrackerTLD_create"),
}


@dataclass(frozen=True)
class OpenCVLimits:
    """What one of OpenCV's trackers needs from ``init`` (measured, see the module's docstring)."""

    min_side: int = 1        # smallest box width and height in pixels (after clipping to the image)
    min_area: int = 1        # smallest box area in pixels
    min_image: int = 1       # smallest image width and height in pixels
    room: int = 0            # pixels the box must be able to move inside the image, in x or in y (MIL)


#: kind -> :class:`OpenCVLimits`, measured on OpenCV 5.0 (opencv-contrib-python-headless) with random
#: frames (``unguarded_run`` in a worker with a time limit): below them ``init`` hangs (MIL and Boosting
#: on boxes of 4×4, 3×5, 5×3, 2×N or 1×N pixels; 4×5, 3×6 and 3×40 work: the limit keeps a margin of
#: 2 px² over 3×6), crashes or
#: hangs (TLD on small images: a 1×1 or 16×16 image with a whole-frame box crashes, 24×24 hangs, and
#: random boxes on random 48-100 px images crashed it 5 times in 40, e.g. a 39×15 box in 91×32 or
#: 71×9 in 72×54, with no simple rule of box and image; 30 in 30 on 100-240 px images ran) or raises ``cv2.error`` (CSRT and MOSSE on a 1-px box; MIL when the box cannot
#: move 5 px inside the image, keeping 1 px free at the right and bottom: its negative samples lie
#: 4.5 px or more away; a 60×60 box in the corner of a 64×64 image fails, 59×59 works).
LIMITS: dict[str, OpenCVLimits] = {
    "csrt": OpenCVLimits(min_side=2),
    "kcf": OpenCVLimits(),
    "mil": OpenCVLimits(min_side=3, min_area=20, room=5),
    "mosse": OpenCVLimits(min_side=2),
    "medianflow": OpenCVLimits(),
    "boosting": OpenCVLimits(min_side=3, min_area=20),
    "tld": OpenCVLimits(min_image=100),
}


def _factory(name: str):
    space, attr = _FACTORIES[name]
    module = getattr(cv2, space, None) if space else cv2
    fn = getattr(module, attr, None) if module is not None else None
    if fn is None and not space:  # some builds only have the legacy API
        fn = getattr(getattr(cv2, "legacy", None), attr, None)
    return fn


def opencv_tracker_names() -> list[str]:
    """The OpenCV trackers this installed build provides, e.g. ``['csrt', 'kcf', ...]``."""
    return [n for n in _FACTORIES if _factory(n) is not None]


def _reason(exc: cv2.error) -> str:
    """OpenCV's one-line reason (the last line of its message), without the source path."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text.split(" error: ", 1)[-1]


class OpenCVTracker(Tracker):
    """One of OpenCV's trackers (``kind`` as in :func:`opencv_tracker_names`), guarded (module docstring)."""

    def __init__(self, kind: str):
        super().__init__()
        if kind not in _FACTORIES or _factory(kind) is None:
            raise ValueError(f"OpenCV tracker {kind!r} is not available in this OpenCV build; "
                             f"available: {', '.join(opencv_tracker_names())}")
        self.kind = kind
        self.name = f"opencv-{kind}"
        self.limits = LIMITS.get(kind, OpenCVLimits())
        self._legacy = _FACTORIES[kind][0] == "legacy"
        self._tracker = None
        self._shape: tuple[int, int] | None = None
        #: OpenCV's reason for the last failed ``update`` (``None`` after a successful one)
        self.last_error: str | None = None

    def check(self, image_shape, box) -> np.ndarray:
        """The box ``init`` gives OpenCV (clipped to the image), or a ``ValueError`` saying which of
        :data:`LIMITS` it or the image breaks."""
        H, W = image_shape[:2]
        lim = self.limits
        if min(H, W) < lim.min_image:
            raise ValueError(f"{self.name} needs an image of at least {lim.min_image}×{lim.min_image} pixels "
                             f"(OpenCV's {self.kind.upper()} crashes or hangs on smaller ones), got {W}×{H}")
        clipped = clip_to_image(box, image_shape)
        w, h = int(clipped[2]), int(clipped[3])     # OpenCV truncates to whole pixels
        where = f"the box {format_box(clipped)}" + (" (clipped to the image)" if not np.allclose(clipped, box) else "")
        if min(w, h) < lim.min_side or w * h < lim.min_area:
            need = f"{lim.min_side} pixels a side" + (f" and {lim.min_area} in area" if lim.min_area > lim.min_side ** 2 else "")
            raise ValueError(f"{self.name} needs a box of at least {need} (OpenCV's {self.kind.upper()} "
                             f"cannot start on smaller ones: it hangs or fails); {where} is too small")
        if lim.room:
            x, y = int(clipped[0]), int(clipped[1])
            room_x, room_y = max(x, W - 1 - w - x), max(y, H - 1 - h - y)
            if w > W - 1 or h > H - 1 or (room_x < lim.room and room_y < lim.room):
                raise ValueError(f"{self.name} needs a box at least 1 pixel narrower and shorter than the image that "
                                 f"can move {lim.room} pixels inside it in x or y (room for its negative samples); "
                                 f"{where} in the {W}×{H} image cannot")
        return clipped

    def init(self, image, box) -> None:
        image = check_image(image)
        box = check_init_box(box, image.shape)
        clipped = self.check(image.shape, box)
        tracker = _factory(self.kind)()
        if self._legacy:
            rect = tuple(float(v) for v in clipped)
        else:
            x, y = int(round(clipped[0])), int(round(clipped[1]))
            rect = (x, y, max(1, int(clipped[2])), max(1, int(clipped[3])))
        try:
            tracker.init(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), rect)
        except cv2.error as exc:   # the tracker keeps what it had (nothing, or its previous start)
            raise ValueError(f"{self.name} could not start on the box {format_box(clipped)} in the "
                             f"{image.shape[1]}×{image.shape[0]} image: OpenCV says {_reason(exc)}") from None
        self._tracker = tracker
        self._shape = image.shape[:2]
        self.box = clipped.copy()
        self.confidence = 1.0
        self.last_error = None

    def update(self, image) -> np.ndarray:
        image = check_image(image)
        if image.shape[:2] != self._shape:
            raise ValueError(f"{self.name}: the frame is {image.shape[1]}×{image.shape[0]} but the tracker started "
                             f"on a {self._shape[1]}×{self._shape[0]} one; every frame must have the first frame's size")
        try:
            ok, rect = self._tracker.update(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        except cv2.error as exc:
            ok, rect, self.last_error = False, None, _reason(exc)
        else:
            self.last_error = None if ok else "OpenCV reported a failure"
        box = np.asarray(rect if rect is not None else np.full(4, np.nan), dtype=np.float64).reshape(-1)
        if ok and box.shape == (4,) and np.isfinite(box).all() and box_in_image(box, image.shape):
            self.box = box
            self.confidence = 1.0
        else:
            if ok:
                self.last_error = f"OpenCV returned the box {format_box(box)}, not in the image"
            self.confidence = 0.0
        return self.box.copy()


def unguarded_run(job) -> dict:
    """OpenCV's tracker with no guard, on random frames: what :data:`LIMITS` is measured with.

    ``job`` is ``(kind, (H, W), (x, y, w, h))`` or ``(kind, (H, W), (x, y, w, h), frames)`` (default 2
    updates after ``init``). Returns ``{"tracker", "sequence": "random", "boxes": [...], "ok": [...]}``
    or, for a ``cv2.error``, the same with ``"error"``. It may hang or crash the process (that is what
    it measures): run it only in a worker with a time limit, e.g. ``acvm.cli._run_in_processes([(0,
    job)], 1, lambda job: 10, done, target=unguarded_run)``.
    """
    kind, (H, W), box, *rest = job
    frames = rest[0] if rest else 2
    rng = np.random.default_rng(0)
    legacy = _FACTORIES[kind][0] == "legacy"
    rect = tuple(float(v) for v in box) if legacy else tuple(int(v) for v in box)
    row = {"tracker": f"opencv-{kind}", "sequence": "random", "boxes": [], "ok": []}
    try:
        tracker = _factory(kind)()
        tracker.init(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), rect)
        for _ in range(frames):
            ok, r = tracker.update(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
            row["ok"].append(bool(ok))
            row["boxes"].append([float(v) for v in r])
    except cv2.error as exc:
        row["error"] = f"cv2.error: {_reason(exc)}"
    return row
