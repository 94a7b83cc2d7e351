"""One class per acvm tracker, in the interface of the course toolkit ``pytracking-toolkit-lite``.

The toolkit (its ``evaluate_tracker.py`` and ``calculate_measures.py``) builds the class named in
``trackers.yaml`` with no arguments and drives it with ``initialize(img, region)``, ``track(img)``
and ``name()``; frames come from ``cv2.imread``, so they are BGR, and regions are ``[x, y, w, h]``
lists. Each class here wraps the acvm tracker of the same name: it converts the frame to RGB and
builds a fresh acvm tracker at every (re-)initialisation, as ``acvm bench --vot`` does.

Run inside the toolkit, the classes subclass the toolkit's own ``utils.tracker.Tracker``, whose
``evaluate`` runs the reset-based experiment. Get the ``trackers.yaml`` entries with::

    acvm toolkit-lite-config --trackers siamfc,dcf,opencv-csrt
"""
from __future__ import annotations

import numpy as np

from acvm.evaluation import safe_box   # a non-finite box keeps the previous one, as in acvm bench
from acvm.registry import available_trackers, make_tracker

try:  # the toolkit's base class, when this file is loaded by the toolkit's scripts
    from utils.tracker import Tracker as _ToolkitTracker   # type: ignore[import-not-found]
except ImportError:
    _ToolkitTracker = None


class _NotInToolkit:
    """Stands in for the toolkit's base class when the toolkit is not on the path."""

    def evaluate(self, dataset, results_dir):
        raise RuntimeError("evaluate() is the course toolkit's: run this class from its evaluate_tracker.py "
                           "(pytracking-toolkit-lite), with the entry that `acvm toolkit-lite-config` prints")


_Base = _ToolkitTracker if isinstance(_ToolkitTracker, type) else _NotInToolkit


class AcvmTracker(_Base):
    """An acvm tracker as the course toolkit expects it. Subclasses set ``tracker_name``."""

    tracker_name: str = ""

    def __init__(self):
        if not self.tracker_name:
            raise TypeError("AcvmTracker is a base class: use one of its subclasses, e.g. AcvmSiamFC")
        super().__init__()
        self._tracker = None
        self._box = None

    def name(self) -> str:
        """The toolkit's results folder: ``acvm-<tracker>``."""
        return f"acvm-{self.tracker_name}"

    def initialize(self, img, region):
        """Start on the BGR frame ``img`` at ``region`` = ``[x, y, w, h]`` (a fresh acvm tracker)."""
        box = np.asarray(region, dtype=np.float64).reshape(-1)
        if box.shape != (4,):
            raise ValueError(f"{self.name()}: region must be [x, y, w, h], got {list(region)!r}")
        self._tracker = make_tracker(self.tracker_name)
        self._tracker.init(_rgb(img), box)
        self._box = box

    def track(self, img) -> list[float]:
        """The box ``[x, y, w, h]`` on the next BGR frame (the previous one if the tracker returns none)."""
        if self._tracker is None:
            raise RuntimeError(f"{self.name()}: track() before initialize()")
        self._box = safe_box(self._tracker.update(_rgb(img)), self._box)
        return [float(v) for v in self._box]


def _rgb(img) -> np.ndarray:
    if img is None:
        raise ValueError("the toolkit passed no image (cv2.imread could not read a frame)")
    img = np.asarray(img)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, 2::-1])


def class_name(tracker: str) -> str:
    """The class of this module that wraps ``tracker``: ``siamfc`` -> ``AcvmSiamFC``."""
    if tracker.startswith("opencv-"):
        return "AcvmOpenCV" + tracker[len("opencv-"):].upper()
    return "Acvm" + _CLASS_WORDS.get(tracker, tracker.capitalize())


def trackers_yaml(names: list[str] | None = None) -> str:
    """The ``trackers.yaml`` entries of the course toolkit for ``names`` (default: every tracker here).

    Each entry is keyed ``acvm-<name>`` (the toolkit's ``--tracker``), names this file by its
    absolute path and the class, and adds the folder holding the ``acvm`` package to the toolkit's
    Python path. ``ValueError`` names an unknown tracker.
    """
    from pathlib import Path
    names = list(CLASSES) if names is None else list(names)
    unknown = [n for n in names if n not in CLASSES]
    if unknown:
        raise ValueError(f"unknown tracker {', '.join(map(repr, unknown))}; choose from: {', '.join(CLASSES)}")
    here = Path(__file__).resolve()
    quote = lambda p: "'" + str(p).replace("'", "''") + "'"   # YAML single quotes: any path is safe
    lines = ["# acvm trackers for pytracking-toolkit-lite: paste into the workspace's trackers.yaml"]
    for n in names:
        lines += [f"acvm-{n}:", f"  tracker_path: {quote(here)}", f"  class_name: {CLASSES[n]}",
                  "  paths:", f"    - {quote(here.parent.parent.parent)}"]
    return "\n".join(lines) + "\n"


_CLASS_WORDS = {"ncc": "NCC", "mosse": "MOSSE", "dcf": "DCF", "particle": "Particle", "mdnet": "MDNet",
                "siamfc": "SiamFC", "siamrpn": "SiamRPN", "atom": "ATOM", "d3s": "D3S", "stark": "STARK"}

#: tracker name -> class name, for every tracker acvm can build here
CLASSES: dict[str, str] = {}
for _name in available_trackers(include_opencv=True):
    CLASSES[_name] = class_name(_name)
    globals()[CLASSES[_name]] = type(CLASSES[_name], (AcvmTracker,), {
        "tracker_name": _name, "__doc__": f"acvm's ``{_name}`` for the course toolkit.",
        "__module__": __name__})
del _name
