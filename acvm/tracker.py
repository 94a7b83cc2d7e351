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

import functools

import numpy as np

from .boxes import as_boxes, box_in_image, format_box, xywh_to_cxcywh

__all__ = ["Tracker", "check_image", "check_init_box", "check_init"]


class Tracker:
    """Base class: validates inputs, keeps the last box, and defines the interface.

    Every subclass's ``init`` and ``update`` are wrapped once, here (``__init_subclass__``): an
    ``update`` before a successful ``init`` raises
    ``RuntimeError("<name>: call init(image, box) before update(image)")``, whatever the tracker, so
    no tracker meets ``None`` state half-way through its update. An ``init`` that raises does not
    initialise a fresh tracker; one that was initialised keeps its state (every ``init`` checks its
    input before it changes anything) and may go on with ``update``.
    """

    #: name under which the tracker is registered
    name: str = "tracker"

    def __init__(self):
        self.box: np.ndarray | None = None
        self.confidence: float | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "init" in cls.__dict__:
            cls.init = _marks_initialised(cls.__dict__["init"])
        if "update" in cls.__dict__:
            cls.update = _requires_init(cls.__dict__["update"])

    @property
    def initialised(self) -> bool:
        """Whether ``init`` has succeeded, so ``update`` may be called."""
        return getattr(self, "_initialised", False)

    def init(self, image: np.ndarray, box) -> None:
        raise NotImplementedError

    def update(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _marks_initialised(init):
    if getattr(init, "_acvm_wrapped", False):
        return init

    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        out = init(self, *args, **kwargs)
        self._initialised = True
        return out

    wrapped._acvm_wrapped = True
    return wrapped


def _requires_init(update):
    if getattr(update, "_acvm_wrapped", False):
        return update

    @functools.wraps(update)
    def wrapped(self, *args, **kwargs):
        if not self.initialised:
            raise RuntimeError(f"{self.name}: call init(image, box) before update(image)")
        return update(self, *args, **kwargs)

    wrapped._acvm_wrapped = True
    return wrapped


def check_image(image, where: str = "image") -> np.ndarray:
    """Return ``image`` as ``H×W×3`` uint8 RGB; raise a clear error naming ``where`` otherwise.

    Accepted, and how each is turned into 0..255:

    * ``uint8``: as it is;
    * ``uint16`` (16-bit PNG, camera raw): divided by 257, so 65535 becomes 255;
    * floating point: **if its largest value is at most 1.0 the image is taken as 0..1** and
      multiplied by 255, otherwise as 0..255 (values are rounded, then clipped to 0..255; NaN or
      infinity is an error). So an all-black 0..255 float image and a 0..1 one read the same.
      A 0..255 image whose brightest pixel is 1 is read as 0..1 (there is no telling them apart);
    * ``H×W`` grey-scale (repeated into 3 channels), ``H×W×1`` likewise, ``H×W×4`` RGBA (alpha dropped).

    ``bool``, signed integers, complex and object arrays raise ``TypeError`` naming the dtype.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{where} must be a numpy array (H×W×3 uint8 RGB), got {type(image).__name__}")
    dtype = image.dtype
    if not (dtype == np.uint8 or dtype == np.uint16 or np.issubdtype(dtype, np.floating)):
        raise TypeError(f"{where} has dtype {dtype}; use uint8 (0..255), uint16 (0..65535) or float "
                        "(0..1 or 0..255)")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{where} must be H×W×3 RGB, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    if dtype == np.uint8:
        return image
    if dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if not np.isfinite(image).all():
        raise ValueError(f"{where} contains NaN or infinite values")
    scale = 255.0 if float(image.max()) <= 1.0 else 1.0
    return np.clip(np.rint(image.astype(np.float64) * scale), 0, 255).astype(np.uint8)


def check_init_box(box, image_shape, where: str = "initial box") -> np.ndarray:
    """Validate the box given to ``init``: 4 finite numbers, positive size, overlapping the image."""
    b = as_boxes(box, where)
    if b.shape != (4,):
        raise ValueError(f"{where} must be one box (x, y, w, h), got shape {b.shape}")
    if not np.isfinite(b).all():
        raise ValueError(f"{where} {format_box(b)} contains NaN or infinite values")
    if b[2] <= 0 or b[3] <= 0:
        raise ValueError(f"{where} {format_box(b)} is empty: width and height must be positive")
    if not box_in_image(b, image_shape):
        raise ValueError(f"{where} {format_box(b)} lies outside the {image_shape[1]}×{image_shape[0]} image")
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
