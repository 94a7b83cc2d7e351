"""IoU-Net for ATOM: predict the overlap of a box with the target, then climb that prediction.

A *target-conditioned* IoU predictor (Jiang et al. 2018; Danelljan et al., ATOM 2019). From the
reference frame, the target's pooled features become a **modulation vector** ``m``; from the test
frame, every candidate box's pooled features become a vector ``v``; the predicted IoU is a small
network on the channel-wise product ``v ⊙ m``. Pooling is precise RoI pooling
(:func:`acvm.roi.prroi_pool`), so the prediction is differentiable in the box and a box can be
refined by gradient ascent on it (:func:`refine_boxes`: overlap maximisation).

The backbone is the course's SiamFC backbone, frozen (as ATOM freezes its ImageNet ResNet); only
the head is trained, on the project's pair sampler (template crop = reference, search crop =
test) with jittered boxes around the target (:func:`jitter_boxes`) and their true IoU as the
regression target. ``acvm train atom`` (also ``acvm train iounet``) writes ``data/weights/iounet.pt`` holding backbone and
head together, so the tracker always uses the features the head was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import LAYERS, Backbone, FreezableBackbone
from .boxes import cxcywh_to_xywh, iou, mean_colour, xywh_to_cxcywh
from .roi import prroi_pool
from .registry import weights_file

__all__ = ["IoUNetSettings", "IoUHead", "IoUNet", "jitter_boxes", "ProposalSampler", "iounet_loss",
           "train", "load_iounet", "ascent_step", "refine_boxes", "WEIGHTS", "TRAIN_STEPS", "scale_only_iou",
           "iou_heatmaps", "draw_iou_heatmaps", "OverlapMaximisationView", "squeeze_crop"]

WEIGHTS = weights_file("atom")
#: optimiser steps of the shipped weights
TRAIN_STEPS = 1500


@dataclass(frozen=True)
class IoUNetSettings:
    """Architecture and training of the IoU predictor."""

    layer: str = "conv3"                 # backbone layer the head reads (stride 8)
    channels: int = 64                   # channels of the head's own convolutions
    ref_pool: int = 3                    # PrRoIPool bins of the reference box (modulation branch)
    test_pool: int = 6                   # PrRoIPool bins of each candidate box (IoU branch)
    test_context: float = 1.5            # pool a region this many times the candidate box (both sides)
    hidden: int = 128                    # length of the modulation vector m and of v
    proposals: int = 32                  # jittered boxes per training pair (cheap, unlike the pairs)
    sigmas: tuple = (0.05, 0.1, 0.2, 0.3)  # jitter scales of the proposals (position × size, log size)
    min_iou: float = 0.1                 # proposals overlap the target at least this much
    scale_jitter: float = 0.25           # the pair sampler's size jitter of the search crop
    stretch: float = 0.15                # ... and its aspect-ratio jitter
    shift: float = 24.0                  # ... and its target shift in crop pixels
    squeeze: float = 0.5                 # both crops scaled by (e^a, e^−a), a ~ U(±squeeze): elongated targets
    # whole training sequences stretched and shrunk (acvm.training.stretch_sequence, as STARK trains);
    # aspect = zoom = 1 did not remove the real-video size bias (issue 5), so the shipped weights use neither
    aspect: float = 0.0                  # training sequences' h/w × exp(U(±aspect)): pedestrians reach h/w 3
    zoom: float = 0.0                    # ... and their size × exp(−U(0, zoom)): small, blurry real targets
    batch_size: int = 8                  # pairs per optimiser step
    lr: float = 1e-3                     # AdamW's initial learning rate


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True))


class IoUHead(nn.Module):
    """The IoU predictor on backbone features.

    * :meth:`modulation`: reference features ``(B, C, h, w)`` and box ``(B, 4)`` -> ``m`` ``(B, D)``;
    * :meth:`test_features`: test features ``(B, C, H, W)`` -> the head's ``(B, c, H, W)`` (once per frame);
    * :meth:`predict`: those, candidate boxes ``(B, K, 4)`` and ``m`` -> predicted IoU ``(B, K)``.

    Boxes are ``(x, y, w, h)`` in crop pixels; the pooling grid follows the backbone's geometry
    (``LAYERS[layer]``: stride and half the receptive field as the first cell's centre).
    """

    def __init__(self, settings: IoUNetSettings = IoUNetSettings()):
        super().__init__()
        self.settings = settings
        c_in, c = LAYERS[settings.layer].channels, settings.channels
        self.ref_conv = _conv(c_in, c)
        self.ref_fc = nn.Sequential(nn.Linear(c * settings.ref_pool ** 2, settings.hidden), nn.ReLU(inplace=True))
        self.test_conv = nn.Sequential(_conv(c_in, c), _conv(c, c))
        self.test_fc = nn.Sequential(nn.Linear(c * settings.test_pool ** 2, settings.hidden), nn.ReLU(inplace=True))
        self.iou_predictor = nn.Sequential(nn.Linear(settings.hidden, 64), nn.ReLU(inplace=True), nn.Linear(64, 1))

    def _pool(self, feat, boxes, size):
        info = LAYERS[self.settings.layer]
        return prroi_pool(feat, boxes, size, spatial_scale=1.0 / info.stride, origin=info.receptive_field / 2.0)

    def modulation(self, ref_feat: torch.Tensor, ref_box: torch.Tensor) -> torch.Tensor:
        """The modulation vector ``m`` ``(B, D)`` from the reference features and target box ``(B, 4)``."""
        pooled = self._pool(self.ref_conv(ref_feat), ref_box[:, None], self.settings.ref_pool)
        return self.ref_fc(pooled.flatten(2)[:, 0])

    def test_features(self, test_feat: torch.Tensor) -> torch.Tensor:
        """The head's features of the test crop ``(B, c, H, W)``; compute once, pool many boxes."""
        return self.test_conv(test_feat)

    def predict(self, test_head_feat: torch.Tensor, boxes: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        """Predicted IoU ``(B, K)`` of ``boxes`` ``(B, K, 4)``; differentiable in the boxes.

        Each box is pooled with a margin (``test_context`` times its size): our backbone's cells see
        less than a typical target, so without the outer bins the head could not tell whether the
        box ends where the target ends, and it would happily shrink boxes into the target.
        """
        B, K = boxes.shape[:2]
        f = self.settings.test_context
        grown = torch.cat([boxes[..., :2] - boxes[..., 2:] * (f - 1) / 2, boxes[..., 2:] * f], -1)
        pooled = self._pool(test_head_feat, grown, self.settings.test_pool)  # (B, K, c, p, p)
        v = self.test_fc(pooled.reshape(B * K, -1)).reshape(B, K, -1)
        return self.iou_predictor(v * modulation[:, None]).squeeze(-1)


class IoUNet(FreezableBackbone):
    """Frozen backbone + :class:`IoUHead`; ``forward(z, z_box, x, boxes) -> (B, K)`` predicted IoU.

    ``z`` ``(B, 3, 127, 127)`` and ``x`` ``(B, 3, 255, 255)`` are float crops in [0, 1] (as the pair
    sampler makes them), ``z_box`` ``(B, 4)`` and ``boxes`` ``(B, K, 4)`` in their crop pixels.
    """

    def __init__(self, backbone: Backbone | None = None, settings: IoUNetSettings = IoUNetSettings()):
        super().__init__()
        self.settings = settings
        self.backbone = backbone if backbone is not None else Backbone()
        self.head = IoUHead(settings)
        self.freeze_backbone()   # train mode is for the head only

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features at the head's layer, without a graph (the backbone is frozen)."""
        return self.backbone_features(images, self.settings.layer)

    def forward(self, z, z_box, x, boxes):
        m = self.head.modulation(self.features(z), z_box)
        return self.head.predict(self.head.test_features(self.features(x)), boxes, m)


def jitter_boxes(box, n: int, rng: np.random.Generator, sigmas=IoUNetSettings.sigmas,
                 min_iou: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random boxes around ``box`` (xywh) and their IoU with it.

    Each box picks a scale σ from ``sigmas`` and moves the centre by ``N(0, σ)·(w, h)`` and the
    log width and height by ``N(0, σ)``; boxes overlapping less than ``min_iou`` are drawn again
    (up to 20 times, then the last draw is shrunk towards ``box``).
    Returns ``(boxes (n, 4) float64, ious (n,) float64)``.
    """
    cx, cy, w, h = xywh_to_cxcywh(box)
    out = np.zeros((n, 4))
    for i in range(n):
        s = float(sigmas[int(rng.integers(len(sigmas)))])
        for _ in range(20):
            d = rng.normal(0.0, s, size=4)
            cand = cxcywh_to_xywh([cx + d[0] * w, cy + d[1] * h, w * np.exp(d[2]), h * np.exp(d[3])])
            if iou(cand, box) >= min_iou:
                break
            s *= 0.8
        out[i] = cand
    return out, iou(out, np.asarray(box, dtype=np.float64)[None])


def squeeze_crop(crop: np.ndarray, box: np.ndarray, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale a ``(3, S, S)`` float crop by ``e^a`` along x and ``e^−a`` along y about its centre.

    Returns the squeezed crop (same shape, uncovered borders filled with its mean colour) and
    ``box`` (xywh, crop pixels) mapped the same way, as float32.
    """
    import cv2
    S = crop.shape[-1]
    sx, sy = np.exp(a), np.exp(-a)
    c = S / 2.0
    # our pixel i spans [i, i+1); OpenCV's pixel centres sit at integers
    M = np.array([[sx, 0.0, c - sx * c + 0.5 * sx - 0.5], [0.0, sy, c - sy * c + 0.5 * sy - 0.5]])
    img = np.ascontiguousarray(crop.transpose(1, 2, 0))
    fill = tuple(float(v) for v in mean_colour(img, 1))
    out = cv2.warpAffine(img, M, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    b = np.asarray(box, dtype=np.float64)
    moved = np.array([c + (b[0] - c) * sx, c + (b[1] - c) * sy, b[2] * sx, b[3] * sy])
    return np.ascontiguousarray(out.transpose(2, 0, 1)), moved.astype(np.float32)


class ProposalSampler:
    """A training example for IoU-Net: a pair from :class:`acvm.training.PairSampler` plus proposals.

    ``sampler(rng)`` returns the pair's ``"z"``, ``"x"``, ``"z_box"``, ``"x_box"`` and ``"boxes"``
    ``(K, 4)`` float32 (jittered around ``x_box``) with ``"ious"`` ``(K,)`` float32.
    """

    def __init__(self, data=None, settings: IoUNetSettings = IoUNetSettings()):
        from .training import PairSampler, PairSettings, StretchedSource, make_sources
        self.settings = settings
        # whole sequences are stretched and shrunk before cropping (as STARK's training does), so the
        # crops keep the tracker's geometry: context margin from the stretched box, blur of a small target
        pair_settings = PairSettings(scale_jitter=settings.scale_jitter, stretch=settings.stretch, shift=settings.shift)
        sources = [StretchedSource(src, settings.aspect, settings.zoom, pair_settings.min_size)
                   for src in make_sources(data)]
        self.pairs = PairSampler(sources, pair_settings)

    def __call__(self, rng: np.random.Generator) -> dict:
        s = self.settings
        pair = self.pairs(rng)
        if s.squeeze > 0:
            # the synthetic targets have aspect ratios 0.6–1.8; real ones (pedestrians) reach 3
            a = rng.uniform(-s.squeeze, s.squeeze)
            pair["z"], pair["z_box"] = squeeze_crop(pair["z"], pair["z_box"], a)
            pair["x"], pair["x_box"] = squeeze_crop(pair["x"], pair["x_box"], a)
        boxes, ious = jitter_boxes(pair["x_box"], s.proposals, rng, s.sigmas, s.min_iou)
        return {"z": pair["z"], "x": pair["x"], "z_box": pair["z_box"], "x_box": pair["x_box"],
                "boxes": boxes.astype(np.float32), "ious": ious.astype(np.float32)}


def iounet_loss(model: IoUNet, batch: dict) -> torch.Tensor:
    """Mean squared error between predicted and true IoU of the proposals (a scalar tensor)."""
    pred = model(batch["z"], batch["z_box"], batch["x"], batch["boxes"])
    return F.mse_loss(pred, batch["ious"])


def train(steps: int | None = None, data=None, seed: int = 0, out=None, resume: bool = False,
          device=None, backbone: str | Path | None = None, workers: int | None = None,
          batch_size: int | None = None, progress: bool = True, callback=None) -> Path:
    """``acvm train atom`` (or ``iounet``): train the IoU head on a frozen backbone and write ``{"state_dict", "meta"}``.

    Args:
        steps: optimiser steps (default :data:`TRAIN_STEPS`).
        data: sources for :func:`acvm.training.make_sources` (default synthetic sequences).
        seed: seeds the head's initialisation and the pair stream.
        out: the weights file (default :data:`WEIGHTS`); the checkpoint is ``out + ".ckpt"``.
        resume: continue from that checkpoint.
        device: ``"cpu"``/``"cuda"``/``None``.
        backbone: weights file whose ``backbone.*`` entries to use (default the shipped SiamFC).
        workers: DataLoader workers making pairs (default 1 on a machine with 2 cores or more).
        batch_size: pairs per step (default ``IoUNetSettings.batch_size``).
        callback: ``callback(step, loss)`` after every step.
    Returns:
        the path written.
    """
    import os
    from dataclasses import replace
    from .backbone import trained_backbone
    from .training import train_and_save
    from .weights import read_weights
    steps = TRAIN_STEPS if steps is None else int(steps)
    out = Path(out) if out else WEIGHTS
    settings = IoUNetSettings()
    if batch_size is not None:
        settings = replace(settings, batch_size=int(batch_size))
    sampler = ProposalSampler(data, settings)
    if workers is None:
        workers = 1 if (os.cpu_count() or 1) >= 2 else 0
    torch.manual_seed(seed)
    model = IoUNet(trained_backbone(backbone), settings)
    backbone_path = Path(backbone) if backbone else weights_file("siamfc")
    return train_and_save(model, iounet_loss, sampler, steps=steps, seed=seed, data=data, out=out,
                          batch_size=settings.batch_size, workers=workers, lr=settings.lr, resume=resume,
                          device=device, progress=progress, callback=callback, proposals=settings.proposals,
                          squeeze=settings.squeeze, aspect=settings.aspect, zoom=settings.zoom,
                          backbone={"file": str(backbone_path), "meta": read_weights(backbone_path)["meta"]})


def load_iounet(path: str | Path | None = None) -> IoUNet:
    """The trained :class:`IoUNet` (backbone and head) in eval mode; ``FileNotFoundError`` names the
    file when it is missing (make it with ``acvm train atom``)."""
    from .weights import load_weights
    model = IoUNet()
    load_weights(Path(path) if path else WEIGHTS, model, "atom")
    return model.eval()


def ascent_step(boxes: torch.Tensor, grad: torch.Tensor, step_length: float = 1.0,
                min_size: float = 4.0) -> torch.Tensor:
    """One overlap-maximisation step: ``b ← b + step_length · ∂IoU/∂b ⊙ (w, h, w, h)``.

    Args:
        boxes: ``(..., 4)`` xywh boxes; grad: ``∂IoU/∂b`` of the same shape.
    Returns:
        the moved boxes ``(..., 4)``, width and height at least ``min_size``. Scaling the gradient
        by the box size makes a step the same fraction of any box, large or small.
    """
    size = torch.cat([boxes[..., 2:], boxes[..., 2:]], -1)  # (w, h, w, h)
    out = boxes + step_length * grad * size
    return torch.cat([out[..., :2], out[..., 2:].clamp(min=min_size)], -1)


def refine_boxes(head: IoUHead, test_head_feat: torch.Tensor, modulation: torch.Tensor, boxes,
                 steps: int = 5, step_length: float = 1.0, min_size: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Overlap maximisation: gradient ascent on the predicted IoU with respect to the boxes.

    Each step moves a box ``b = (x, y, w, h)`` by ``step_length · ∂IoU/∂b · (w, h, w, h)``:
    scaling by the box size makes the step a fraction of the box, whatever its size (ATOM).

    Args:
        head: a trained :class:`IoUHead`.
        test_head_feat: ``head.test_features(...)`` of one test crop, ``(1, c, H, W)``.
        modulation: ``(1, D)`` from the reference frame.
        boxes: ``(K, 4)`` starting boxes in crop pixels.
        steps: number of ascent steps.
    Returns:
        ``(history, ious)``: the boxes ``(steps + 1, K, 4)`` float64 at every step (the start
        first) and their predicted IoU ``(steps + 1, K)`` float64.
    """
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(1, -1, 4).clone()
    history, scores = [], []
    for k in range(steps + 1):
        b.requires_grad_(True)
        pred = head.predict(test_head_feat, b, modulation)
        history.append(b.detach()[0].double().numpy().copy())
        scores.append(pred.detach()[0].double().numpy().copy())
        if k == steps:
            break
        (grad,) = torch.autograd.grad(pred.sum(), b)
        with torch.no_grad():
            b = ascent_step(b, grad, step_length, min_size)
    return np.stack(history), np.stack(scores)


# --- what notebook 08 shows -----------------------------------------------------------------------

def scale_only_iou(box, gt) -> np.ndarray:
    """The best IoU with ``gt`` that a box of ``box``'s aspect ratio, scaled about ``gt``'s centre, can reach.

    A scale search (SiamFC's pyramid) keeps the first frame's aspect ratio; even with the centre
    exactly right its best scale matches the *area* of ``gt`` (the IoU rises until then and falls
    after), so the best it can do is ``iou(gt, that box)``. For an aspect change by a factor ``ρ``
    this is ``1 / (2√ρ − 1)``: 0.55 for ρ = 2.

    Args:
        box, gt: ``(..., 4)`` xywh boxes (broadcast).
    Returns:
        ``(...)`` float64 IoU.
    """
    box, gt = np.broadcast_arrays(np.asarray(box, dtype=np.float64), np.asarray(gt, dtype=np.float64))
    s = np.sqrt(gt[..., 2] * gt[..., 3] / (box[..., 2] * box[..., 3]))
    c = xywh_to_cxcywh(gt)
    best = cxcywh_to_xywh(np.stack([c[..., 0], c[..., 1], box[..., 2] * s, box[..., 3] * s], -1))
    return iou(best, gt)


@torch.no_grad()
def _predict(head: IoUHead, head_feat, modulation, boxes: np.ndarray) -> np.ndarray:
    b = torch.as_tensor(boxes.reshape(1, -1, 4), dtype=head_feat.dtype)
    return head.predict(head_feat, b, modulation)[0].double().numpy().reshape(boxes.shape[:-1])


def iou_heatmaps(head: IoUHead, head_feat: torch.Tensor, modulation: torch.Tensor, gt, n: int = 21,
                 span: float = 0.6, log_size_span: float = 0.7) -> dict[str, np.ndarray]:
    """Predicted and true IoU of boxes around ``gt`` (crop pixels), on two grids.

    * ``"shift"``: ``gt`` moved by ``(dx·w, dy·h)``, ``dx, dy ∈ [−span, span]``;
    * ``"size"``: ``gt`` resized about its centre to ``(w·e^a, h·e^b)``, ``a, b ∈ [−log_size_span, log_size_span]``.

    Returns ``{"offsets": (n,), "log_sizes": (n,), "shift_pred", "shift_true", "size_pred",
    "size_true"}``, each map ``(n, n)`` float64 with rows along y (or height) and columns along
    x (or width).
    """
    cx, cy, w, h = xywh_to_cxcywh(gt)
    d = np.linspace(-span, span, n)
    a = np.linspace(-log_size_span, log_size_span, n)
    DY, DX = np.meshgrid(d, d, indexing="ij")
    shifted = cxcywh_to_xywh(np.stack([cx + DX * w, cy + DY * h, np.full_like(DX, w), np.full_like(DX, h)], -1))
    B, A = np.meshgrid(a, a, indexing="ij")
    resized = cxcywh_to_xywh(np.stack([np.full_like(A, cx), np.full_like(A, cy), w * np.exp(A), h * np.exp(B)], -1))
    return {"offsets": d, "log_sizes": a,
            "shift_pred": _predict(head, head_feat, modulation, shifted), "shift_true": iou(shifted, gt),
            "size_pred": _predict(head, head_feat, modulation, resized), "size_true": iou(resized, gt)}


def draw_iou_heatmaps(maps: dict[str, np.ndarray]):
    """Four panels: predicted and true IoU over shifts, and over sizes; returns the Figure."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    fig.subplots_adjust(wspace=0.5)
    d, a = maps["offsets"], maps["log_sizes"]
    panels = [("shift_pred", "predicted IoU, shifted", d, "dx / w", "dy / h"),
              ("shift_true", "true IoU, shifted", d, "dx / w", "dy / h"),
              ("size_pred", "predicted IoU, resized", a, "log(w'/w)", "log(h'/h)"),
              ("size_true", "true IoU, resized", a, "log(w'/w)", "log(h'/h)")]
    for ax, (key, title, grid, xl, yl) in zip(axes, panels):
        im = ax.imshow(maps[key], origin="lower", vmin=0, vmax=1, cmap="viridis",
                       extent=(grid[0], grid[-1], grid[0], grid[-1]))
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
    fig.colorbar(im, ax=axes, shrink=0.8)
    return fig


class OverlapMaximisationView:
    """The boxes of :func:`refine_boxes` step by step on the crop they live in (notebook 08's slider).

    Args:
        crop: ``S×S×3`` uint8, the test crop.
        history: ``(T + 1, K, 4)`` boxes in crop pixels; ious: ``(T + 1, K)`` predicted IoU.
        gt: the target's box in crop pixels (for the true IoU), or ``None``.
    ``draw(step)`` shows the boxes at that step (coloured by predicted IoU) and the predicted and
    true IoU of every box against the step.
    """

    def __init__(self, crop: np.ndarray, history: np.ndarray, ious: np.ndarray, gt=None):
        self.crop, self.history, self.ious = crop, np.asarray(history), np.asarray(ious)
        self.gt = None if gt is None else np.asarray(gt, dtype=np.float64)
        self.true = None if gt is None else iou(self.history, self.gt)

    def draw(self, step: int = 0):
        import matplotlib.pyplot as plt
        from matplotlib import cm
        from .viz import draw_box
        T = self.history.shape[0] - 1
        if not 0 <= step <= T:
            raise IndexError(f"step {step} is out of range 0..{T}")
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), gridspec_kw={"width_ratios": [1, 1.3]})
        axes[0].imshow(self.crop)
        if self.gt is not None:
            draw_box(axes[0], self.gt, "#009E73", "ground truth", lw=2.5)
        for b, score in zip(self.history[step], self.ious[step]):
            draw_box(axes[0], b, cm.plasma(float(np.clip(score, 0, 1))), lw=1.3)
        axes[0].set_title(f"step {step}: boxes coloured by predicted IoU")
        axes[0].set_axis_off()
        steps = np.arange(T + 1)
        for k in range(self.history.shape[1]):
            axes[1].plot(steps, self.ious[:, k], "-", color="#0072B2", alpha=0.6, lw=1)
            if self.true is not None:
                axes[1].plot(steps, self.true[:, k], "--", color="#D55E00", alpha=0.6, lw=1)
        axes[1].plot([], [], "-", color="#0072B2", label="predicted IoU")
        if self.true is not None:
            axes[1].plot([], [], "--", color="#D55E00", label="true IoU")
        axes[1].axvline(step, color="grey", lw=0.8)
        axes[1].set_xlabel("gradient-ascent step")
        axes[1].set_ylabel("IoU")
        axes[1].set_ylim(0, 1)
        axes[1].legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        return fig
