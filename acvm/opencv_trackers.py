"""OpenCV's trackers behind the course's interface, for comparison (``opencv-csrt``, ``opencv-kcf``, ...).

OpenCV wants BGR frames and integer boxes for its newer trackers; when it reports a failure
the adapter keeps the previous box (as the benchmark's numbers assume) and sets
``confidence = 0``.
"""
from __future__ import annotations

import cv2
import numpy as np

from .tracker import Tracker, check_image, check_init_box

__all__ = ["OpenCVTracker", "opencv_tracker_names"]

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


class OpenCVTracker(Tracker):
    """One of OpenCV's trackers (``kind`` as in :func:`opencv_tracker_names`)."""

    def __init__(self, kind: str):
        super().__init__()
        if kind not in _FACTORIES or _factory(kind) is None:
            raise ValueError(f"OpenCV tracker {kind!r} is not available in this OpenCV build; "
                             f"available: {', '.join(opencv_tracker_names())}")
        self.kind = kind
        self.name = f"opencv-{kind}"
        self._legacy = _FACTORIES[kind][0] == "legacy"
        self._tracker = None

    def init(self, image, box) -> None:
        image = check_image(image)
        box = check_init_box(box, image.shape)
        self._tracker = _factory(self.kind)()
        rect = tuple(float(v) for v in box) if self._legacy else tuple(int(round(v)) for v in box)
        if not self._legacy:
            rect = (rect[0], rect[1], max(1, rect[2]), max(1, rect[3]))
        self._tracker.init(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), rect)
        self.box = box.copy()
        self.confidence = 1.0

    def update(self, image) -> np.ndarray:
        if self._tracker is None:
            raise RuntimeError(f"{self.name}: call init(image, box) before update(image)")
        image = check_image(image)
        ok, rect = self._tracker.update(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        box = np.asarray(rect, dtype=np.float64)
        if ok and np.isfinite(box).all() and box[2] > 0 and box[3] > 0:
            self.box = box
            self.confidence = 1.0
        else:
            self.confidence = 0.0
        return self.box.copy()
