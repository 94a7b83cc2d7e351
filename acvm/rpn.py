"""Region proposals: anchors, the box-delta code, and anchor labels.

A region proposal network (Faster R-CNN, SiamRPN) does not regress a box from nothing: at every
cell of its score map sit ``k`` reference boxes, the *anchors* (``k`` shapes = aspect ratios ×
scales). For each anchor the network predicts whether it covers the target (classification)
and how to move and stretch it onto the target (regression), as four numbers

    δx = (x_t - x_a) / w_a,   δy = (y_t - y_a) / h_a,   δw = ln(w_t / w_a),   δh = ln(h_t / h_a)

with ``(x, y)`` the box centres, ``a`` the anchor and ``t`` the target. Dividing by the anchor's
size makes the offsets scale-free; the logarithm makes growing and shrinking symmetric and keeps
the decoded size positive.

Everything here is numpy and works on boxes in the project's ``(x, y, w, h)`` convention; the
centre form is used only inside :func:`encode` and :func:`decode`.
"""
from __future__ import annotations

import numpy as np

from .boxes import as_boxes, cxcywh_to_xywh, iou, xywh_to_cxcywh

__all__ = ["anchor_shapes", "make_anchors", "encode", "decode", "label_anchors", "sample_labels"]


def anchor_shapes(ratios=(0.33, 0.5, 1.0, 2.0, 3.0), scales=(8.0,), stride: float = 8.0) -> np.ndarray:
    """The ``k = len(ratios) * len(scales)`` anchor shapes at one score-map cell.

    An anchor of scale ``s`` has the area of a square of side ``stride * s``; its aspect ratio
    ``r`` is height over width, so ``w = stride * s / sqrt(r)`` and ``h = stride * s * sqrt(r)``.

    Args:
        ratios: aspect ratios ``h / w`` (> 0).
        scales: sizes in units of ``stride`` (> 0).
        stride: the score map's step in crop pixels.
    Returns:
        ``(k, 2)`` float64 array of ``(w, h)``, ratio-major (all scales of the first ratio first).

    >>> anchor_shapes(ratios=(1.0, 4.0), scales=(2.0,), stride=8)
    array([[16., 16.],
           [ 8., 32.]])
    """
    r = np.asarray(ratios, dtype=np.float64)
    s = np.asarray(scales, dtype=np.float64)
    if r.ndim != 1 or s.ndim != 1 or r.size == 0 or s.size == 0 or (r <= 0).any() or (s <= 0).any():
        raise ValueError(f"ratios and scales must be non-empty lists of positive numbers, got {ratios}, {scales}")
    side = stride * s[None, :]                       # (1, S)
    w = side / np.sqrt(r)[:, None]                   # (R, S)
    h = side * np.sqrt(r)[:, None]
    return np.stack([w.ravel(), h.ravel()], axis=-1)


def make_anchors(score_size, stride: float, shapes, centre=(0.0, 0.0)) -> np.ndarray:
    """Place every anchor shape at every cell of a score map.

    Cell ``(i, j)`` (row, column) of an ``H×W`` score map looks at the point
    ``centre + ((j - (W-1)/2) * stride, (i - (H-1)/2) * stride)``: the middle cell sits on
    ``centre``, which for a tracker is the middle of the search crop.

    Args:
        score_size: ``S`` or ``(H, W)``, the score map's size in cells.
        stride: distance in crop pixels between neighbouring cells.
        shapes: ``(k, 2)`` anchor ``(w, h)`` from :func:`anchor_shapes`.
        centre: ``(cx, cy)`` of the middle cell in crop (or image) coordinates.
    Returns:
        ``(k, H, W, 4)`` float64 anchors as ``(x, y, w, h)`` boxes, in the layout of the
        network's ``k``-channel classification output.
    """
    H, W = (score_size, score_size) if np.isscalar(score_size) else score_size
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    xs = centre[0] + (np.arange(W) - (W - 1) / 2.0) * stride
    ys = centre[1] + (np.arange(H) - (H - 1) / 2.0) * stride
    cx = np.broadcast_to(xs[None, None, :], (len(shapes), H, W))
    cy = np.broadcast_to(ys[None, :, None], (len(shapes), H, W))
    w = np.broadcast_to(shapes[:, 0, None, None], (len(shapes), H, W))
    h = np.broadcast_to(shapes[:, 1, None, None], (len(shapes), H, W))
    return cxcywh_to_xywh(np.stack([cx, cy, w, h], axis=-1))


def encode(boxes, anchors) -> np.ndarray:
    """The deltas ``[δx, δy, δw, δh]`` that move ``anchors`` onto ``boxes`` (both ``(..., 4)`` xywh, broadcast).

    Returns:
        ``(..., 4)`` float64; ``decode(encode(b, a), a) == b`` up to rounding.

    >>> encode([10, 0, 20, 10], [0, 0, 10, 10])
    array([1.5       , 0.        , 0.69314718, 0.        ])
    """
    b = xywh_to_cxcywh(as_boxes(boxes, "boxes"))
    a = xywh_to_cxcywh(as_boxes(anchors, "anchors"))
    if (b[..., 2:] <= 0).any() or (a[..., 2:] <= 0).any():
        raise ValueError("encode needs boxes and anchors with positive width and height")
    return np.concatenate([(b[..., :2] - a[..., :2]) / a[..., 2:], np.log(b[..., 2:] / a[..., 2:])], axis=-1)


def decode(deltas, anchors) -> np.ndarray:
    """Apply deltas ``[δx, δy, δw, δh]`` (``(..., 4)``) to ``anchors`` (``(..., 4)`` xywh, broadcast).

    ``x_t = x_a + δx w_a``, ``y_t = y_a + δy h_a``, ``w_t = w_a exp(δw)``, ``h_t = h_a exp(δh)``
    on the centres; the result is turned back into ``(x, y, w, h)``.

    Returns:
        ``(..., 4)`` float64 boxes.
    """
    d = as_boxes(deltas, "deltas")
    a = xywh_to_cxcywh(as_boxes(anchors, "anchors"))
    centre = a[..., :2] + d[..., :2] * a[..., 2:]
    size = a[..., 2:] * np.exp(d[..., 2:])
    return cxcywh_to_xywh(np.concatenate([centre, size], axis=-1))


def label_anchors(anchors, target, pos_iou: float = 0.6, neg_iou: float = 0.3) -> np.ndarray:
    """Label each anchor by its IoU with the target box.

    ``1`` (positive) when IoU ≥ ``pos_iou``, ``0`` (negative) when IoU < ``neg_iou``, ``-1``
    (ignored by the loss) in between. The best-overlapping anchor is always positive as long as
    its IoU is above zero, so that a target no anchor fits well still teaches something.

    Args:
        anchors: ``(..., 4)`` xywh anchors (e.g. ``(k, H, W, 4)``).
        target: ``(4,)`` xywh target box in the same coordinates.
    Returns:
        ``anchors.shape[:-1]`` int64 array of labels in {-1, 0, 1}.
    """
    overlap = iou(anchors, as_boxes(target, "target"))
    labels = np.full(overlap.shape, -1, dtype=np.int64)
    labels[overlap < neg_iou] = 0
    labels[overlap >= pos_iou] = 1
    best = np.unravel_index(np.argmax(overlap), overlap.shape)
    if overlap[best] > 0:
        labels[best] = 1
    return labels


def sample_labels(labels, num_pos: int = 16, num_total: int = 64, rng=None) -> np.ndarray:
    """Keep at most ``num_pos`` positives and fill up to ``num_total`` with negatives.

    The others become ``-1`` (ignored), so that the far more numerous easy negatives do not
    swamp the loss (SiamRPN: 64 anchors per pair, at most 16 positive).

    Args:
        labels: int array in {-1, 0, 1} from :func:`label_anchors`, any shape.
        rng: ``numpy.random.Generator`` (or a seed) choosing which ones to keep.
    Returns:
        int64 array of the same shape with at most ``num_total`` non-negative entries.
    """
    rng = np.random.default_rng(rng)
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(labels.shape, -1, dtype=np.int64)
    flat = out.reshape(-1)
    pos = np.flatnonzero(labels.reshape(-1) == 1)
    neg = np.flatnonzero(labels.reshape(-1) == 0)
    pos = rng.choice(pos, size=min(len(pos), num_pos), replace=False) if len(pos) else pos
    neg = rng.choice(neg, size=min(len(neg), num_total - len(pos)), replace=False) if len(neg) else neg
    flat[pos] = 1
    flat[neg] = 0
    return out
