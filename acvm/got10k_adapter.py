"""acvm's trackers in the got10k toolkit (``pip install got10k``, or the extra ``got10k``).

got10k's experiments (``ExperimentOTB``, ``ExperimentGOT10k``, ...) run any subclass of its
``got10k.trackers.Tracker``: ``init(image, box)`` and ``update(image)`` on PIL images, boxes as
``[x, y, w, h]``. :func:`got10k_tracker` wraps a registered acvm tracker in one::

    from got10k.experiments import ExperimentOTB
    from acvm.got10k_adapter import got10k_tracker
    ExperimentOTB("data/OTB", version=2015).run(got10k_tracker("siamfc"))

got10k reads frames with PIL, acvm with OpenCV: the two JPEG decoders can differ by a grey level
here and there, so a tracker's boxes may differ slightly from ``acvm bench``'s on the same frames.
"""
from __future__ import annotations

import numpy as np

from .evaluation import safe_box   # a non-finite box keeps the previous one, as in acvm bench
from .registry import make_tracker


def got10k_tracker(name: str, **settings):
    """A ``got10k.trackers.Tracker`` that runs acvm's ``name`` (a fresh acvm tracker at every ``init``)."""
    from got10k.trackers import Tracker

    make_tracker(name, **settings)                     # an unknown name or setting fails here

    class AcvmGot10kTracker(Tracker):
        def __init__(self):
            # every course tracker is seeded, so one run a sequence is enough (got10k repeats others)
            super().__init__(name=f"acvm-{name}", is_deterministic=True)
            self._tracker, self._box = None, None

        def init(self, image, box):
            self._tracker = make_tracker(name, **settings)
            self._box = np.asarray(box, dtype=np.float64)
            self._tracker.init(_rgb(image), self._box)

        def update(self, image):
            self._box = safe_box(self._tracker.update(_rgb(image)), self._box)
            return self._box.copy()

    AcvmGot10kTracker.__qualname__ = AcvmGot10kTracker.__name__ = f"AcvmGot10k_{name.replace('-', '_')}"
    return AcvmGot10kTracker()


def _rgb(image) -> np.ndarray:
    if hasattr(image, "convert"):                      # a PIL image, as got10k's track() passes
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3], dtype=np.uint8)
