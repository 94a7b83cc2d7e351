"""The tracker interface: the base class and the input checks every tracker shares.

Every tracker of the course has two methods (DESIGN.md):

* ``init(image, box)`` with ``image`` an ``H×W×3`` uint8 RGB array and ``box`` ``(x, y, w, h)``;
* ``update(image) -> box`` returning the new ``(x, y, w, h)`` as a float64 array of shape ``(4,)``.

After ``update`` a tracker exposes what it wants to show as attributes (``response``,
``particles``, ``attention``, ``mask`` ...) and, where it has one, ``confidence`` (a float, higher
is surer; ``None`` where the tracker has no such notion). Trackers never print.

Trackers register by name in :mod:`acvm.registry` (``make_tracker(name)`` builds one); this
module imports none of them, so every tracker, OpenCV's adapter included, can import it.
"""
from __future__ import annotations

import numpy as np

from .boxes import as_boxes, box_in_image, xywh_to_cxcywh

__all__ = ["Tracker", "check_image", "check_init_box", "check_init"]


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
