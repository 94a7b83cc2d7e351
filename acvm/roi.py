"""Precise RoI pooling: the average of a feature map over a box, differentiable in the box.

IoU-Net (and ATOM after it) refines a box by gradient ascent on a predicted IoU, which needs the
gradient of the pooled box features with respect to the box coordinates. Max pooling (RoIPool)
and RoIAlign's fixed sample points give a gradient that is zero or jumps; *precise* RoI pooling
(PrRoIPool, Jiang et al. 2018) instead integrates the bilinearly interpolated feature map over
each bin, which is smooth in the bin's edges.

Bilinear interpolation is a sum of cells times triangle kernels, ``F(x, y) = Σ_ij F_ij k(x − x_i)
k(y − y_j)`` with ``k(t) = max(0, 1 − |t|)``, so the integral over a bin ``[x₁, x₂] × [y₁, y₂]``
factorises into one weight per column and one per row:

    ∫∫ F = Σ_ij F_ij (T(x₂ − x_i) − T(x₁ − x_i)) (T(y₂ − y_j) − T(y₁ − y_j)),

where ``T`` is the antiderivative of ``k`` (a piecewise quadratic). Pooling is then two small
matrix products, written here in plain torch (no CUDA extension), and autograd differentiates it
with respect to the features and the box alike.

Coordinates: boxes are ``(x, y, w, h)`` in image pixels (the project's convention). A feature map
with stride ``s`` (``spatial_scale = 1/s``) has cell ``i`` covering pixels ``[s·i, s·(i+1))`` by
default, so its value sits at the cell centre ``s·(i + ½)``; ``origin`` moves that grid for
networks without padding. Outside the outermost centres the interpolant
falls linearly to zero half a cell beyond the border, as in the original PrRoIPool.
"""
from __future__ import annotations

import torch

__all__ = ["triangle_integral", "bin_weights", "prroi_pool"]


def triangle_integral(t: torch.Tensor) -> torch.Tensor:
    """``T(t) = ∫_{-∞}^t max(0, 1 − |s|) ds``: 0 below −1, 1 above 1, quadratic in between."""
    t = t.clamp(-1.0, 1.0)
    return torch.where(t < 0, 0.5 * (t + 1.0) ** 2, 1.0 - 0.5 * (1.0 - t) ** 2)


def bin_weights(start: torch.Tensor, end: torch.Tensor, bins: int, size: int) -> torch.Tensor:
    """Weights of each feature cell in the average over each bin, along one axis.

    Args:
        start, end: ``(...)`` float tensors, the box edges in feature units (``end > start``).
        bins: number of bins the box is split into.
        size: number of feature cells along the axis.
    Returns:
        ``(..., bins, size)`` tensor; row ``p`` holds ``∫_{bin p} k(t − i − ½) dt / |bin p|``.
    """
    frac = torch.arange(bins + 1, dtype=start.dtype, device=start.device) / bins
    edges = start[..., None] + (end - start)[..., None] * frac  # (..., bins + 1)
    centres = torch.arange(size, dtype=start.dtype, device=start.device) + 0.5
    T = triangle_integral(edges[..., None] - centres)  # (..., bins + 1, size)
    width = ((end - start) / bins)[..., None, None]
    return (T[..., 1:, :] - T[..., :-1, :]) / width


def prroi_pool(features: torch.Tensor, boxes: torch.Tensor, output_size, spatial_scale: float = 1.0,
               origin: float | None = None, min_size: float = 1e-3) -> torch.Tensor:
    """Precise RoI pooling of ``boxes`` from ``features``.

    Args:
        features: ``(B, C, H, W)`` float tensor.
        boxes: ``(B, K, 4)`` float tensor of ``(x, y, w, h)`` boxes in image pixels, ``K`` per
            image (may require grad).
        output_size: ``(oh, ow)`` bins, or one int.
        spatial_scale: feature cells per image pixel (``1 / stride``).
        origin: image position (pixels, both axes) of the centre of feature cell ``(0, 0)``;
            default ``½ / spatial_scale``. A CNN without padding has it at half its receptive
            field (``acvm.backbone.LAYERS[layer].receptive_field / 2``).
        min_size: boxes are at least this wide and high in feature units (avoids 0/0).
    Returns:
        ``(B, K, C, oh, ow)`` tensor: the mean of the interpolated features over each bin.

    >>> f = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> prroi_pool(f, torch.tensor([[[1., 1., 2., 2.]]]), 1)[0, 0, 0]  # linear inside: the centre value
    tensor([[7.5000]])
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, H, W), got shape {tuple(features.shape)}")
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != features.shape[0]:
        raise ValueError(f"boxes must be (B, K, 4) with B={features.shape[0]}, got shape {tuple(boxes.shape)}")
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    H, W = features.shape[-2:]
    if origin is None:
        origin = 0.5 / spatial_scale
    b = boxes.to(features.dtype) * spatial_scale
    # feature units in which cell i's centre is at i + ½
    shift = 0.5 - origin * spatial_scale
    x1, y1 = b[..., 0] + shift, b[..., 1] + shift
    x2 = x1 + b[..., 2].clamp(min=min_size)
    y2 = y1 + b[..., 3].clamp(min=min_size)
    wx = bin_weights(x1, x2, ow, W)  # (B, K, ow, W)
    wy = bin_weights(y1, y2, oh, H)  # (B, K, oh, H)
    # contract the columns first (the smaller intermediate), then the rows
    cols = torch.einsum("bchw,bkqw->bkchq", features, wx)
    return torch.einsum("bkph,bkchq->bkcpq", wy, cols)
