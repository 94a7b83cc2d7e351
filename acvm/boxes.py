"""Boxes and crops: the geometry every tracker shares.

Conventions (see DESIGN.md): a box is ``(x, y, w, h)`` in 0-based pixel coordinates, where
(0, 0) is the top-left corner of the top-left pixel, so a box covering pixel columns 0..9 has
``x=0, w=10``. Arrays of boxes have shape ``(..., 4)`` and float64 dtype.
"""
from __future__ import annotations

import numpy as np
import cv2

__all__ = [
    "as_boxes", "xywh_to_xyxy", "xyxy_to_xywh", "xywh_to_cxcywh", "cxcywh_to_xywh",
    "polygon_to_xywh", "xywh_to_polygon", "iou", "centre_error", "context_size",
    "crop_and_resize", "mean_colour", "crop_to_image", "image_to_crop", "clip_box", "clip_to_image", "box_in_image", "format_box", "size_bias",
    "remove_size_bias", "excess_aspect", "FrameZoom", "AspectView",
]


def as_boxes(boxes, name: str = "box") -> np.ndarray:
    """Return ``boxes`` as a float64 array of shape ``(..., 4)``, or raise a ValueError naming ``name``."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.shape[-1:] != (4,):
        raise ValueError(f"{name} must have 4 numbers (x, y, w, h) in its last axis, got shape {arr.shape}")
    return arr


def xywh_to_xyxy(boxes) -> np.ndarray:
    """``(..., 4)`` ``(x, y, w, h)`` -> ``(x1, y1, x2, y2)`` with ``x2 = x + w`` (exclusive corner)."""
    b = as_boxes(boxes)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:]], axis=-1)


def xyxy_to_xywh(boxes) -> np.ndarray:
    """``(..., 4)`` ``(x1, y1, x2, y2)`` -> ``(x, y, w, h)``."""
    b = as_boxes(boxes)
    return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def xywh_to_cxcywh(boxes) -> np.ndarray:
    """``(..., 4)`` ``(x, y, w, h)`` -> centre and size ``(cx, cy, w, h)``."""
    b = as_boxes(boxes)
    return np.concatenate([b[..., :2] + b[..., 2:] / 2.0, b[..., 2:]], axis=-1)


def cxcywh_to_xywh(boxes) -> np.ndarray:
    """``(..., 4)`` centre and size ``(cx, cy, w, h)`` -> ``(x, y, w, h)``."""
    b = as_boxes(boxes)
    return np.concatenate([b[..., :2] - b[..., 2:] / 2.0, b[..., 2:]], axis=-1)


def polygon_to_xywh(polygons) -> np.ndarray:
    """VOT polygons ``(..., 8)`` ``(x1, y1, ..., x4, y4)`` -> their min/max axis-aligned box ``(..., 4)``.

    Rows with 4 numbers are taken as boxes already and returned unchanged.
    """
    p = np.asarray(polygons, dtype=np.float64)
    if p.shape[-1] == 4:
        return p.copy()
    if p.shape[-1] % 2 or p.shape[-1] < 6:
        raise ValueError(f"a polygon needs an even number (>= 6) of coordinates, got {p.shape[-1]}")
    xs, ys = p[..., 0::2], p[..., 1::2]
    x1, y1 = xs.min(-1), ys.min(-1)
    return np.stack([x1, y1, xs.max(-1) - x1, ys.max(-1) - y1], axis=-1)


def xywh_to_polygon(boxes) -> np.ndarray:
    """``(..., 4)`` boxes -> ``(..., 8)`` polygons, corners clockwise from top-left."""
    x1, y1, x2, y2 = np.moveaxis(xywh_to_xyxy(boxes), -1, 0)
    return np.stack([x1, y1, x2, y1, x2, y2, x1, y2], axis=-1)


def iou(a, b) -> np.ndarray:
    """Intersection over union of boxes ``a`` and ``b`` (``(..., 4)`` xywh, broadcast).

    Boxes with zero or negative area give IoU 0 (never NaN).

    >>> float(iou([0, 0, 10, 10], [5, 0, 10, 10]))
    0.3333333333333333
    """
    a, b = as_boxes(a, "a"), as_boxes(b, "b")
    aw, ah = np.clip(a[..., 2], 0, None), np.clip(a[..., 3], 0, None)
    bw, bh = np.clip(b[..., 2], 0, None), np.clip(b[..., 3], 0, None)
    iw = np.clip(np.minimum(a[..., 0] + aw, b[..., 0] + bw) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 1] + ah, b[..., 1] + bh) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


def centre_error(a, b) -> np.ndarray:
    """Euclidean distance in pixels between the centres of boxes ``a`` and ``b`` (``(..., 4)``)."""
    ca, cb = xywh_to_cxcywh(a)[..., :2], xywh_to_cxcywh(b)[..., :2]
    return np.sqrt(((ca - cb) ** 2).sum(-1))


def clip_box(box, image_shape, min_size: float = 1.0) -> np.ndarray:
    """Clip xywh boxes ``(..., 4)`` so that their centres lie in the image and their sizes within
    [min_size, image size]; float64 ``(..., 4)``."""
    h_img, w_img = image_shape[:2]
    c = np.array(xywh_to_cxcywh(box), dtype=np.float64)
    c[..., 2] = np.clip(c[..., 2], min_size, w_img)
    c[..., 3] = np.clip(c[..., 3], min_size, h_img)
    c[..., 0] = np.clip(c[..., 0], 0, w_img)
    c[..., 1] = np.clip(c[..., 1], 0, h_img)
    return cxcywh_to_xywh(c)


def clip_to_image(box, image_shape) -> np.ndarray:
    """The part of ``box`` (``x, y, w, h``) inside an image of ``image_shape``, float64 ``(4,)`` (where
    :func:`clip_box` keeps the size and moves the centre, this cuts the box at the image border)."""
    x, y, w, h = (float(v) for v in box)
    H, W = image_shape[:2]
    x0, y0, x1, y1 = max(0.0, x), max(0.0, y), min(float(W), x + w), min(float(H), y + h)
    return np.array([x0, y0, x1 - x0, y1 - y0])


def format_box(box, digits: int = 2) -> str:
    """A box (or any few numbers) for a message: ``"(10.5, 20, 30, 40)"``, plain numbers rounded to
    ``digits`` decimals, never numpy's ``np.float64(...)`` reprs."""
    values = np.asarray(box, dtype=np.float64).reshape(-1)

    def plain(v: float) -> str:
        if not np.isfinite(v):
            return str(v)
        text = f"{v:.{digits}f}".rstrip("0").rstrip(".") if digits > 0 else f"{v:.0f}"
        return "0" if text in ("-0", "") else text

    return "(" + ", ".join(plain(float(v)) for v in values) + ")"


def box_in_image(box, image_shape) -> bool:
    """True when the box has positive area and overlaps the image."""
    x, y, w, h = as_boxes(box)
    H, W = image_shape[:2]
    return bool(w > 0 and h > 0 and x < W and y < H and x + w > 0 and y + h > 0)


def context_size(w: float, h: float, context: float = 0.5) -> float:
    """Side of SiamFC's square context region: ``sqrt((w + p)(h + p))`` with ``p = context (w + h)``."""
    p = context * (w + h)
    return float(np.sqrt((w + p) * (h + p)))


def mean_colour(image: np.ndarray, step: int = 4) -> np.ndarray:
    """The mean colour ``(C,)`` float64 of every ``step``-th pixel in both directions, the padding
    colour of crops that leave the image (a full-frame mean per crop can cost more than the tracker)."""
    return image[::step, ::step].reshape(-1, image.shape[2] if image.ndim == 3 else 1).mean(0)


def crop_and_resize(image: np.ndarray, centre, size, out_size, pad_value=None,
                    interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Cut the region of side ``size`` (or ``(w, h)``) centred on ``centre=(cx, cy)`` and resize it.

    Parts outside the image are filled with ``pad_value`` (default: the image's mean colour),
    the padding SiamFC uses so that the border carries no artificial edge.

    Args:
        image: ``H×W×C`` (or ``H×W``) array, any dtype OpenCV can warp (uint8, float32).
        centre: ``(cx, cy)`` in pixel coordinates.
        size: side of the square region, or ``(w, h)``, in image pixels (> 0).
        out_size: side of the output, or ``(out_w, out_h)``.
    Returns:
        ``out_h×out_w×C`` array of ``image.dtype``.

    The mapping is affine: image point ``p`` goes to ``(p - centre) * out/size + out/2``;
    :func:`crop_to_image` and :func:`image_to_crop` apply it to boxes.
    """
    sw, sh = (size, size) if np.isscalar(size) else size
    ow, oh = (out_size, out_size) if np.isscalar(out_size) else out_size
    if not (np.isfinite([sw, sh, centre[0], centre[1]]).all() and sw > 0 and sh > 0):
        raise ValueError(f"crop_and_resize: need a finite centre and a positive size, got centre={format_box(centre)}, size={format_box(size)}")
    sx, sy = ow / sw, oh / sh
    M = np.array([[sx, 0.0, ow / 2.0 - sx * centre[0]], [0.0, sy, oh / 2.0 - sy * centre[1]]])
    if pad_value is None:
        pad_value = image.reshape(-1, image.shape[2]).mean(0) if image.ndim == 3 else float(image.mean())
    border = tuple(float(v) for v in np.atleast_1d(pad_value))
    border = border + (0.0,) * (4 - len(border))
    # OpenCV samples pixel centres at integer coordinates; our pixel i spans [i, i+1),
    # so shift by half a pixel on both sides of the map.
    M[:, 2] += (M[:, 0] + M[:, 1]) * 0.5 - 0.5
    return cv2.warpAffine(image, M, (int(ow), int(oh)), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def image_to_crop(boxes, centre, size, out_size) -> np.ndarray:
    """Map xywh boxes from image coordinates to the coordinates of a crop made by :func:`crop_and_resize`."""
    sw, sh = (size, size) if np.isscalar(size) else size
    ow, oh = (out_size, out_size) if np.isscalar(out_size) else out_size
    b = as_boxes(boxes).copy()
    s = np.array([ow / sw, oh / sh])
    b[..., :2] = (b[..., :2] - np.asarray(centre, dtype=np.float64)) * s + np.array([ow, oh]) / 2.0
    b[..., 2:] = b[..., 2:] * s
    return b


def crop_to_image(boxes, centre, size, out_size) -> np.ndarray:
    """Inverse of :func:`image_to_crop`: crop coordinates back to image coordinates."""
    sw, sh = (size, size) if np.isscalar(size) else size
    ow, oh = (out_size, out_size) if np.isscalar(out_size) else out_size
    b = as_boxes(boxes).copy()
    s = np.array([sw / ow, sh / oh])
    b[..., :2] = (b[..., :2] - np.array([ow, oh]) / 2.0) * s + np.asarray(centre, dtype=np.float64)
    b[..., 2:] = b[..., 2:] * s
    return b


def size_bias(estimate, truth, limits=(0.5, 2.0)) -> np.ndarray:
    """The factor ``(2,)`` float64 by which an estimated size ``(w, h)`` is wider and taller than the
    true size ``(w, h)``, clipped to ``limits`` (a factor beyond them is a failed measurement)."""
    ratio = np.asarray(estimate, dtype=np.float64) / np.asarray(truth, dtype=np.float64)
    return np.clip(ratio, *limits)


def remove_size_bias(boxes, bias) -> np.ndarray:
    """Divide the width and height of xywh ``boxes`` ``(..., 4)`` by ``bias`` ``(2,)`` about their
    centres (the position is not biased): ``(..., 4)`` float64."""
    c = xywh_to_cxcywh(np.asarray(boxes, dtype=np.float64))
    c[..., 2:] = c[..., 2:] / np.asarray(bias, dtype=np.float64)
    return cxcywh_to_xywh(c)


def excess_aspect(w: float, h: float, max_aspect: float) -> float:
    """How much more elongated than ``max_aspect`` a ``w×h`` box is: ``r = (h/w) / clip(h/w, 1/m, m)``.

    ``r > 1``: taller than ``m`` allows; ``r < 1``: wider; ``r = 1``: within bounds (or ``m = inf``).
    Stretching the view by ``(√r, 1/√r)`` (same area) brings the box's aspect ratio into ``[1/m, m]``.
    """
    a = h / w
    return float(a / np.clip(a, 1.0 / max_aspect, max_aspect))


class FrameZoom:
    """Frames resized by ``(fx, fy)`` and boxes alike: the zoom a tracker or a training stream looks
    through. The frame size is rounded to whole pixels and the box factors ``f`` are the exact ones
    after rounding, so frames and boxes stay consistent.

    Args:
        image_shape: ``(H, W, ...)`` of the frames.
        fx, fy: the horizontal and vertical zoom.
    """

    def __init__(self, image_shape, fx: float, fy: float):
        H, W = image_shape[:2]
        self.out_size = (max(1, int(round(W * fx))), max(1, int(round(H * fy))))
        self.identity = self.out_size == (W, H)
        self.f = np.array([self.out_size[0] / W, self.out_size[1] / H] * 2)

    def image(self, image: np.ndarray) -> np.ndarray:
        """The frame as the zoom sees it (``H'×W'×C``, same dtype); the frame itself when the zoom is 1."""
        return image if self.identity else cv2.resize(image, self.out_size, interpolation=cv2.INTER_LINEAR)

    def to_view(self, boxes) -> np.ndarray:
        """xywh boxes ``(..., 4)`` from frame to zoomed coordinates."""
        return as_boxes(boxes) * self.f

    def from_view(self, boxes) -> np.ndarray:
        """xywh boxes ``(..., 4)`` from zoomed to frame coordinates."""
        return as_boxes(boxes) / self.f


class AspectView(FrameZoom):
    """Frames and boxes seen through a fixed anisotropic zoom that makes a box at most ``max_aspect``
    times taller than wide (or wider than tall), its area kept.

    Networks trained on targets of aspect ratio within about 1:2 (the synthetic ones) see a walking
    person (1:3) as one of those; every box maps back exactly. With ``box``'s aspect within bounds
    the view is the identity and :meth:`image` returns the frame itself.

    Args:
        box: ``(4,)`` xywh, usually the first frame's box.
        image_shape: ``(H, W, ...)`` of the frames.
        max_aspect: ``m >= 1``; ``inf`` never stretches.
    """

    def __init__(self, box, image_shape, max_aspect: float):
        b = as_boxes(box)
        r = excess_aspect(b[2], b[3], max_aspect)
        super().__init__(image_shape, np.sqrt(r), 1.0 / np.sqrt(r))
