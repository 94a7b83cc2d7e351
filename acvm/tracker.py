"""The tracker interface and the registry behind ``acvm trackers``.

Every tracker of the course has two methods (DESIGN.md):

* ``init(image, box)`` with ``image`` an ``H×W×3`` uint8 RGB array and ``box`` ``(x, y, w, h)``;
* ``update(image) -> box`` returning the new ``(x, y, w, h)`` as a float64 array of shape ``(4,)``.

After ``update`` a tracker exposes what it wants to show as attributes (``response``,
``particles``, ``attention``, ``mask`` ...) and, where it has one, ``confidence`` (a float, higher
is surer; ``None`` where the tracker has no such notion). Trackers never print.

Trackers register by name in :data:`TRACKERS`, as ``"module:Class"`` strings so that listing
them imports nothing heavy. ``make_tracker(name)`` builds one.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Callable

import numpy as np

from .boxes import as_boxes, box_in_image, xywh_to_cxcywh

__all__ = ["Tracker", "TRACKERS", "make_tracker", "available_trackers", "check_image", "check_init_box", "check_init",
           "parse_settings"]


class Tracker:
    """Base class: validates inputs, keeps the last box, and defines the interface."""

    #: name under which the tracker is registered
    name: str = "tracker"

    def __init__(self):
        self.box: np.ndarray | None = None
        self.confidence: float | None = None

    def init(self, image: np.ndarray, box) -> None:
        raise NotImplementedError

    def update(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def check_image(image, where: str = "image") -> np.ndarray:
    """Return ``image`` as ``H×W×3`` uint8, converting grey-scale; raise a clear error otherwise."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{where} must be a numpy array (H×W×3 uint8 RGB), got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{where} must be H×W×3 RGB, got shape {image.shape}")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            raise ValueError(f"{where} contains NaN or infinite values")
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


def check_init_box(box, image_shape, where: str = "initial box") -> np.ndarray:
    """Validate the box given to ``init``: 4 finite numbers, positive size, overlapping the image."""
    b = as_boxes(box, where)
    if b.shape != (4,):
        raise ValueError(f"{where} must be one box (x, y, w, h), got shape {b.shape}")
    if not np.isfinite(b).all():
        raise ValueError(f"{where} {tuple(b)} contains NaN or infinite values")
    if b[2] <= 0 or b[3] <= 0:
        raise ValueError(f"{where} {tuple(b)} is empty: width and height must be positive")
    if not box_in_image(b, image_shape):
        raise ValueError(f"{where} {tuple(b)} lies outside the {image_shape[1]}×{image_shape[0]} image")
    return b


def check_init(image, box) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What every ``init`` starts with: the checked image and box, and the box's centre and size.

    Returns ``(image, box, centre, size)``: the image as ``H×W×3`` uint8 (:func:`check_image`), the
    box as float64 ``(4,)`` (:func:`check_init_box`), and float64 ``(2,)`` arrays ``[cx, cy]`` and
    ``[w, h]``.
    """
    image = check_image(image)
    box = check_init_box(box, image.shape)
    cx, cy, w, h = xywh_to_cxcywh(box)
    return image, box, np.array([cx, cy]), np.array([w, h])


#: name -> "module:Class" (or a callable); the order is the lecture's
TRACKERS: dict[str, str | Callable] = {
    "ncc": "acvm.dcf:NCCTracker",
    "mosse": "acvm.dcf:MOSSETracker",
    "dcf": "acvm.dcf:DCFTracker",
    "particle": "acvm.particle:ParticleTracker",
    "mdnet": "acvm.mdnet:MDNetTracker",
    "siamfc": "acvm.siamfc:SiamFCTracker",
    "siamrpn": "acvm.siamrpn:SiamRPNTracker",
    "atom": "acvm.atom:ATOMTracker",
    "d3s": "acvm.d3s:D3STracker",
    "stark": "acvm.stark:STARKTracker",
}


def _resolve(name: str):
    target = TRACKERS[name]
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def available_trackers(include_opencv: bool = True) -> list[str]:
    """Names that ``make_tracker`` accepts here: the course's trackers whose module exists, then
    ``opencv-<name>`` for every tracker the installed OpenCV build has."""
    names = []
    for name, target in TRACKERS.items():
        if callable(target) or importlib.util.find_spec(target.partition(":")[0]) is not None:
            names.append(name)
    if include_opencv:
        from .opencv_trackers import opencv_tracker_names
        names += [f"opencv-{n}" for n in opencv_tracker_names()]
    return names


def make_tracker(name: str, **settings) -> Tracker:
    """Build the tracker registered as ``name`` (keyword arguments go to its constructor)."""
    if name.startswith("opencv-"):
        from .opencv_trackers import OpenCVTracker
        return OpenCVTracker(name[len("opencv-"):])
    if name not in TRACKERS:
        raise ValueError(f"unknown tracker {name!r}; choose one of: {', '.join(available_trackers())}")
    return _resolve(name)(**settings)


def parse_settings(items) -> dict:
    """``["name=value", ...]`` (a benchmark's ``--set`` options) -> ``{name: value}`` for :func:`make_tracker`.

    Values are Python literals (``0.25``, ``True``, ``(1, 2)``, ``None``); anything else is kept as
    text (a file name). An item without ``=`` raises ``ValueError`` naming it.
    """
    import ast
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        name, value = (part.strip() for part in item.split("=", 1))
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out
