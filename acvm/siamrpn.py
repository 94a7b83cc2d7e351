"""SiamRPN: a Siamese tracker whose head is a region proposal network modulated by the template.

SiamFC answers only *where* the target is; its box size comes from a pyramid of scales. SiamRPN
(Li et al., CVPR 2018) puts a region proposal network on top of the Siamese features: at each
of the ``17×17`` cells of the response sit ``k`` anchors (:mod:`acvm.rpn`), a classification
branch scores each anchor as target or background (``2k`` channels) and a regression branch
predicts the deltas ``[δx, δy, δw, δh]`` that move it onto the target (``4k`` channels). The
kernels of both branches come from the template, which is what makes the RPN *template
modulated*: the search features are correlated with the template's. We use the depth-wise
correlation of SiamRPN++ (Li et al., CVPR 2019): each branch adjusts the template and search
features with its own 3×3 convolution, correlates them channel by channel
(:func:`acvm.correlation.xcorr_depthwise`) and mixes the channels with 1×1 convolutions.

Tracking takes the proposals of the search crop and re-ranks them (paper, section 4.3): a
penalty on scale and aspect change ``exp(-k (r r' - 1))``, a cosine window on displacement, and
box smoothing that moves the size only a fraction (``lr``) towards the chosen proposal. Our
small head's sizes are biased by a factor it repeats every frame, so the tracker measures that
factor on the first frame, where the box is known, and divides it out (``calibrate``).

Training (``acvm train siamrpn``) uses the shared pair sampler and ``fit`` of
:mod:`acvm.training`: anchors are labelled by their IoU with the target (≥ 0.6 positive,
< 0.3 negative, 64 per pair with at most 16 positives), and the loss is the cross-entropy on
the labelled anchors plus smooth-L1 on the deltas of the positives. Both crops of a pair are
stretched by one random aspect factor, so that templates as thin as a pedestrian occur. The
backbone is the trained SiamFC's, kept fixed, so the CPU minutes all go to the head. The synthetic
sequences carry up to four clutter shapes (other objects near the target), so that the
classification branch learns to tell the target from other objects by the template. (Wider
scale jitter, regression on every anchor near the best one and whole-frame stretching,
``train(scale_jitter=0.7, relative=0.75, stretch_frames=True)``, make the head measure size
better but did not track better on the real sequences.)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import rpn
from .backbone import Backbone, FreezableBackbone, output_size, to_tensor
from .boxes import (AspectView, clip_box, mean_colour, context_size, crop_and_resize, crop_to_image, cxcywh_to_xywh, iou,
                    remove_size_bias, size_bias, xywh_to_cxcywh)
from .correlation import cosine_window, xcorr_depthwise
from .registry import weights_file
from .tracker import Tracker, check_image, check_init

__all__ = ["SiamRPNSettings", "RPNHead", "UpChannelHead", "SiamRPN", "search_anchors", "stretch_crop", "stretch_box",
           "RPNSample", "rpn_loss", "change_penalty", "SiamRPNTracker", "train", "load_model",
           "draw_proposals", "ProposalViewer", "WEIGHTS", "TRAIN_STEPS", "SEED"]

#: where ``acvm train siamrpn`` writes and the tracker reads the weights
WEIGHTS = weights_file("siamrpn")
SIAMFC_WEIGHTS = weights_file("siamfc")
#: optimiser steps, batch size and seed of the shipped weights (the defaults of ``acvm train siamrpn``;
#: seed 1, not 0: the README's "Session 4" says why)
TRAIN_STEPS, BATCH_SIZE, SEED = 4000, 8, 1


@dataclass(frozen=True)
class SiamRPNSettings:
    """SiamRPN's settings, named as in the papers (SiamRPN, SiamRPN++) and pysot."""

    exemplar_size: int = 127                      # side of the template crop z
    instance_size: int = 255                      # side of the search crop x
    context_amount: float = 0.5                   # context margin p = context·(w + h) around the target
    stride: int = 8                               # crop pixels per score-map cell (the backbone's stride)
    ratios: tuple = (0.33, 0.5, 1.0, 2.0, 3.0)    # anchor aspect ratios h / w
    scales: tuple = (8.0,)                        # anchor sizes in units of the stride (8 × 8 = 64 px)
    penalty_k: float = 0.1                        # k in the scale/aspect-change penalty exp(-k (r r' - 1))
    window_influence: float = 0.4                 # weight of the cosine window in the final score
    lr: float = 0.2                               # box smoothing: how far the size moves towards the proposal
    hidden: int = 96                              # channels of the head's adjust and mixing layers
    calibrate: bool = True                        # divide proposal sizes by their error on the first frame
    # the head was trained on targets within about 1:2; a walking person (1:3) is tracked in frames
    # stretched to 1:1.5 (synthetic seeds 10000-10005 stretched to pedestrian shapes: AUC 0.646 -> 0.748)
    max_aspect: float = 1.5                       # track in frames stretched so the first box is at most this elongated

    @property
    def score_size(self) -> int:
        """Side of the score map: the search features minus the template's, both after a 3×3 adjust."""
        return (output_size(self.instance_size) - 2) - (output_size(self.exemplar_size) - 2) + 1

    @property
    def k(self) -> int:
        """Anchors per cell."""
        return len(self.ratios) * len(self.scales)


# --- the network ----------------------------------------------------------------------------------

def _adjust(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _Branch(nn.Module):
    """One template-modulated branch: adjust z and x, correlate depth-wise, mix to ``out`` channels."""

    def __init__(self, c_in: int, hidden: int, out: int):
        super().__init__()
        self.adjust_z = _adjust(c_in, hidden)
        self.adjust_x = _adjust(c_in, hidden)
        self.mix = nn.Sequential(nn.Conv2d(hidden, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                                 nn.ReLU(inplace=True), nn.Conv2d(hidden, out, 1))

    def forward(self, kernel: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
        return self.mix(xcorr_depthwise(kernel, self.adjust_x(fx)))


class RPNHead(nn.Module):
    """The two branches: ``(B,C,8,8)`` template and ``(B,C,24,24)`` search features ->
    ``(B, k, 2, 17, 17)`` class logits (background, target) and ``(B, k, 4, 17, 17)`` deltas."""

    def __init__(self, c_in: int = 128, hidden: int = 96, k: int = 5):
        super().__init__()
        self.k = k
        self.cls = _Branch(c_in, hidden, 2 * k)
        self.reg = _Branch(c_in, hidden, 4 * k)

    def kernels(self, fz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The template's kernels for both branches (computed once per sequence when tracking)."""
        return self.cls.adjust_z(fz), self.reg.adjust_z(fz)

    def forward(self, kernels, fx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls = self.cls(kernels[0], fx)
        reg = self.reg(kernels[1], fx)
        b, _, h, w = cls.shape
        return cls.reshape(b, self.k, 2, h, w), reg.reshape(b, self.k, 4, h, w)


class UpChannelHead(nn.Module):
    """SiamRPN's original head (Li et al. 2018), the lecture's: the template's features become
    the correlation kernels themselves. A 3×3 conv lifts ``φ(z)`` to ``hidden · 2k`` (class) and
    ``hidden · 4k`` (box) channels, cut into ``2k`` and ``4k`` kernels of ``hidden`` channels; each
    is correlated with the whole adjusted ``φ(x)`` (all channels summed), one output map per
    kernel. Same interface and output shapes as :class:`RPNHead`, which replaces this
    "up-channel" correlation by the depth-wise one of SiamRPN++ (one response per channel, mixed
    by 1×1 convolutions): far fewer parameters, and the two branches no longer differ by 2× in
    size. Shown in notebook 06; the shipped tracker uses :class:`RPNHead`.
    """

    def __init__(self, c_in: int = 128, hidden: int = 96, k: int = 5):
        super().__init__()
        self.k, self.hidden = k, hidden
        self.cls_z = nn.Conv2d(c_in, hidden * 2 * k, 3)
        self.reg_z = nn.Conv2d(c_in, hidden * 4 * k, 3)
        self.cls_x = nn.Conv2d(c_in, hidden, 3)
        self.reg_x = nn.Conv2d(c_in, hidden, 3)

    def kernels(self, fz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B,C,8,8)`` -> the ``(B, 2k, hidden, 6, 6)`` and ``(B, 4k, hidden, 6, 6)`` kernels."""
        b = fz.shape[0]
        cz, rz = self.cls_z(fz), self.reg_z(fz)
        return (cz.reshape(b, 2 * self.k, self.hidden, *cz.shape[-2:]),
                rz.reshape(b, 4 * self.k, self.hidden, *rz.shape[-2:]))

    @staticmethod
    def _correlate(kernels: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``(B, n, C, h, w)`` kernels against ``(B, C, H, W)``: ``(B, n, H-h+1, W-w+1)``, one grouped conv."""
        b, n, c, h, w = kernels.shape
        out = F.conv2d(x.reshape(1, b * c, *x.shape[-2:]), kernels.reshape(b * n, c, h, w), groups=b)
        return out.reshape(b, n, *out.shape[-2:])

    def forward(self, kernels, fx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls = self._correlate(kernels[0], self.cls_x(fx))
        reg = self._correlate(kernels[1], self.reg_x(fx))
        b, _, h, w = cls.shape
        return cls.reshape(b, self.k, 2, h, w), reg.reshape(b, self.k, 4, h, w)


class SiamRPN(FreezableBackbone):
    """Backbone ``φ`` shared by both crops plus the :class:`RPNHead`.

    ``model(z, x)`` takes ``(B,3,127,127)`` and ``(B,3,255,255)`` float32 crops in [0, 1] and
    returns ``(cls, reg)``: ``(B,k,2,17,17)`` logits and ``(B,k,4,17,17)`` deltas.
    """

    def __init__(self, settings: SiamRPNSettings = SiamRPNSettings()):
        super().__init__()
        self.settings = settings
        self.backbone = Backbone()
        self.head = RPNHead(self.backbone.out_channels, settings.hidden, settings.k)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``φ`` of a batch of crops, ``(B,3,S,S)`` -> ``(B,128,S',S')``."""
        return self.backbone_features(images)

    def template(self, z: torch.Tensor):
        """``(B,3,127,127)`` -> the two branch kernels, each ``(B, hidden, 6, 6)``."""
        return self.head.kernels(self.features(z))

    def detect(self, kernels, x: torch.Tensor):
        """Search crops ``(B,3,255,255)`` against precomputed kernels -> ``(cls, reg)``."""
        return self.head(kernels, self.features(x))

    def forward(self, z: torch.Tensor, x: torch.Tensor):
        return self.detect(self.template(z), x)


def search_anchors(settings: SiamRPNSettings = SiamRPNSettings()) -> np.ndarray:
    """The ``(k, 17, 17, 4)`` xywh anchors in search-crop pixels, middle cell on the crop's centre."""
    shapes = rpn.anchor_shapes(settings.ratios, settings.scales, settings.stride)
    c = settings.instance_size / 2.0
    return rpn.make_anchors(settings.score_size, settings.stride, shapes, centre=(c, c))


# --- training -------------------------------------------------------------------------------

def stretch_crop(image: np.ndarray, log_ratio: float) -> np.ndarray:
    """Stretch a ``(3, S, S)`` float32 crop about its centre: height × e^(r/2), width × e^(-r/2).

    The area is kept and the aspect ratio ``h / w`` of everything in the crop is multiplied by
    ``e^r``; what comes in from outside is the crop's mean colour. :func:`stretch_box` maps boxes.
    """
    c, size = image.shape[0], image.shape[-1]
    sx, sy = np.exp(-log_ratio / 2.0), np.exp(log_ratio / 2.0)
    centre = size / 2.0 - 0.5                         # OpenCV samples pixel centres at integers
    M = np.array([[sx, 0.0, centre * (1 - sx)], [0.0, sy, centre * (1 - sy)]])
    hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
    fill = tuple(float(v) for v in hwc.reshape(-1, c).mean(0))
    out = cv2.warpAffine(hwc, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)


def stretch_box(box, size: int, log_ratio: float) -> np.ndarray:
    """Where :func:`stretch_crop` moves an xywh ``box`` of an ``S×S`` crop: ``(4,)`` float64."""
    s = np.array([np.exp(-log_ratio / 2.0), np.exp(log_ratio / 2.0)])
    b = np.asarray(box, dtype=np.float64).copy()
    b[:2] = size / 2.0 + (b[:2] - size / 2.0) * s
    b[2:] = b[2:] * s
    return b


class RPNSample:
    """Training example for SiamRPN: a pair from :class:`acvm.training.PairSampler` plus anchor targets.

    ``sample(rng)`` returns the pair's ``"z"``, ``"x"`` crops and ``"x_box"``, and

    * ``"labels"``: ``(k, 17, 17)`` int64 in {-1, 0, 1} (ignored, background, target),
      from :func:`acvm.rpn.label_anchors` then :func:`acvm.rpn.sample_labels`;
    * ``"reg_mask"``: ``(k, 17, 17)`` float32, 1 on every positive anchor (before the sampling:
      each positive teaches the regression, however few the classification keeps);
    * ``"deltas"``: ``(k, 17, 17, 4)`` float32, :func:`acvm.rpn.encode` of the target on every anchor.

    With ``aspect > 0`` both crops are first stretched by the same random aspect factor ``e^r``,
    ``|r| ≤ aspect`` (:func:`stretch_crop`; ``train(stretch_frames=True)`` stretches whole frames
    instead). With ``relative > 0`` ``reg_mask`` marks the anchors whose IoU is at least
    ``min(pos_iou, relative·best)``, ``best`` the highest IoU of any anchor: a target half or twice
    the anchors' size then teaches the regression on many anchors, not one (the labels keep the
    fixed thresholds).

    A plain class (not a closure) so DataLoader workers can pickle it.
    """

    def __init__(self, pairs, settings: SiamRPNSettings = SiamRPNSettings(), pos_iou: float = 0.6,
                 neg_iou: float = 0.3, num_pos: int = 16, num_total: int = 64, aspect: float = 0.0,
                 relative: float = 0.0):
        self.pairs = pairs
        self.anchors = search_anchors(settings)
        self.pos_iou, self.neg_iou, self.num_pos, self.num_total = pos_iou, neg_iou, num_pos, num_total
        self.aspect, self.relative = aspect, relative

    def __call__(self, rng: np.random.Generator) -> dict:
        pair = self.pairs(rng)
        z, x, target = pair["z"], pair["x"], pair["x_box"].astype(np.float64)
        if self.aspect > 0:
            r = rng.uniform(-self.aspect, self.aspect)
            z, x = stretch_crop(z, r), stretch_crop(x, r)
            target = stretch_box(target, x.shape[-1], r)
        labels = rpn.label_anchors(self.anchors, target, self.pos_iou, self.neg_iou)
        reg_mask = (labels == 1).astype(np.float32)
        if self.relative > 0:
            # a target twice the anchors' size overlaps the best anchor by only 0.25: with fixed
            # thresholds only that anchor regresses, so large size corrections are hardly learned.
            # The classification keeps the fixed thresholds, which keep its peak sharp.
            best = float(iou(self.anchors, target).max())
            reg_mask = (rpn.label_anchors(self.anchors, target, min(self.pos_iou, self.relative * best), 0.0) == 1)
            reg_mask = reg_mask.astype(np.float32)
        labels = rpn.sample_labels(labels, self.num_pos, self.num_total, rng)
        deltas = rpn.encode(np.maximum(target, [-1e9, -1e9, 1.0, 1.0]), self.anchors)
        return {"z": z, "x": x, "x_box": target.astype(np.float32), "labels": labels, "reg_mask": reg_mask,
                "deltas": deltas.astype(np.float32)}


def rpn_loss(cls: torch.Tensor, reg: torch.Tensor, labels: torch.Tensor, deltas: torch.Tensor,
             reg_mask: torch.Tensor | None = None, reg_weight: float = 1.2) -> tuple[torch.Tensor, torch.Tensor]:
    """SiamRPN's loss: cross-entropy on labelled anchors and smooth-L1 on the positives' deltas.

    Args:
        cls: ``(B,k,2,H,W)`` logits; reg: ``(B,k,4,H,W)`` predicted deltas.
        labels: ``(B,k,H,W)`` int64 in {-1, 0, 1}; ``-1`` anchors are ignored.
        deltas: ``(B,k,H,W,4)`` target deltas.
        reg_mask: ``(B,k,H,W)``, the anchors whose deltas are learned (default ``labels == 1``).
        reg_weight: λ, the weight of the regression term.
    Returns:
        ``(total, parts)``: the scalar loss and a ``(2,)`` tensor ``[classification, regression]``
        (detached) for logging.
    """
    logits = cls.permute(0, 1, 3, 4, 2).reshape(-1, 2)
    lab = labels.reshape(-1)
    keep = lab >= 0
    l_cls = F.cross_entropy(logits[keep], lab[keep]) if keep.any() else cls.sum() * 0
    pos = (lab == 1) if reg_mask is None else reg_mask.reshape(-1) > 0
    pred = reg.permute(0, 1, 3, 4, 2).reshape(-1, 4)[pos]
    l_reg = F.smooth_l1_loss(pred, deltas.reshape(-1, 4)[pos], beta=1.0 / 9.0) if pos.any() else reg.sum() * 0
    total = l_cls + reg_weight * l_reg
    return total, torch.stack([l_cls.detach(), l_reg.detach()])


def _loss(model: SiamRPN, batch: dict) -> torch.Tensor:
    cls, reg = model(batch["z"], batch["x"])
    return rpn_loss(cls, reg, batch["labels"], batch["deltas"], batch.get("reg_mask"))[0]


def train(steps: int | None = None, data=None, seed: int = SEED, out: str | Path = WEIGHTS, resume: bool = False,
          device=None, batch_size: int = BATCH_SIZE, workers: int = 1, init: str | Path | None = SIAMFC_WEIGHTS,
          freeze: bool = True, lr: float = 3e-3, aspect: float = 0.8, scale_jitter: float = 0.25,
          stretch: float = 0.2, relative: float = 0.0, stretch_frames: bool = False, clutter: int = 4,
          progress: bool = True) -> Path:
    """Train SiamRPN and write ``{"state_dict", "meta"}`` to ``out`` (``acvm train siamrpn``).

    Args:
        steps: optimiser steps (default :data:`TRAIN_STEPS`).
        data: ``None``/``"synthetic"`` or sequence folders (:func:`acvm.training.make_sources`).
        seed: seeds the model's initialisation and the data stream (default :data:`SEED`, the shipped one).
        out: the weights file; the checkpoint ``<out>.ckpt`` beside it (for ``resume``) is
            removed when training finishes.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        init: weights whose ``backbone.*`` entries start the backbone (the trained SiamFC);
            ``None`` or a missing file starts from random weights.
        freeze: with ``init``, keep the backbone fixed and train the head only (about twice the
            steps in the same time; the SiamFC embedding is already a good ``φ``).
        lr: initial learning rate (AdamW, decayed geometrically to ``lr / 100``).
        aspect: largest ``|r|`` of the aspect stretch ``e^r`` applied to both crops (:class:`RPNSample`),
            or with ``stretch_frames`` to whole sequences (:class:`acvm.training.StretchedSource`).
        scale_jitter, stretch: the search crop's scale (log-uniform; ``0.7`` puts the target in x
            at half to twice the anchors' size) and independent width/height jitter
            (:class:`acvm.training.PairSettings`): the sizes and shapes the regression must correct.
        relative: regress on anchors with IoU ≥ ``relative ×`` the best one's (:class:`RPNSample`).
        stretch_frames: stretch whole frames, not crops (no flat-coloured sides).
        clutter: synthetic sequences get up to this many clutter shapes (other objects in the
            search crop that the classification branch must tell from the target). Chosen on the
            proxy sets (``benchmarks/proxy_sets.py``, 30 held-out synthetic sequences): mean AUC
            0.798 against 0.761 with ``clutter=0`` for seed 0, 0.775 against 0.759 for seed 1 (README,
            "Session 4", for the real sequences and seed 2).
    Returns:
        the path written.
    """
    from .training import PairSampler, PairSettings, StretchedSource, make_sources, train_and_save
    from .weights import backbone_state, describe_weights
    steps = TRAIN_STEPS if steps is None else int(steps)
    settings = SiamRPNSettings()
    torch.manual_seed(seed)
    model = SiamRPN(settings)
    init_from = None
    if init is not None and Path(init).is_file():
        backbone, init_meta = backbone_state(init)
        model.backbone.load_state_dict(backbone)
        init_from = describe_weights(Path(init), init_meta)
        if freeze:
            model.freeze_backbone()
    # more scale, aspect and shift jitter than SiamFC: the regression branch must see boxes
    # that differ from the anchors, and targets anywhere in the 17×17 map
    pair_settings = PairSettings(template_size=settings.exemplar_size, search_size=settings.instance_size,
                                 context=settings.context_amount, scale_jitter=scale_jitter, stretch=stretch,
                                 shift=48.0)
    sources = make_sources(data, clutter)
    if stretch_frames and aspect > 0:
        # whole frames stretched, not the crops (whose sides would fill with flat colour)
        sources = [StretchedSource(src, aspect, 0.0, pair_settings.min_size) for src in sources]
    sample = RPNSample(PairSampler(sources, pair_settings), settings, aspect=0.0 if stretch_frames else aspect,
                       relative=relative)
    return train_and_save(model, _loss, sample, steps=steps, seed=seed, data=data, out=out, batch_size=batch_size,
                          workers=workers, lr=lr, resume=resume, device=device, progress=progress,
                          checkpoint_every=250, loss_window=50, model="siamrpn", init=init_from or "random",
                          frozen_backbone=model.frozen, aspect=aspect, scale_jitter=scale_jitter, stretch=stretch,
                          relative=relative, stretch_frames=stretch_frames, clutter=clutter,
                          settings=str(asdict(settings)))


def load_model(path: str | Path | None = None, settings: SiamRPNSettings = SiamRPNSettings()) -> SiamRPN:
    """A :class:`SiamRPN` with the weights in ``path`` (default :data:`WEIGHTS`), in eval mode.

    Raises ``FileNotFoundError`` naming the file when it is missing (``acvm train siamrpn`` makes it).
    """
    from .weights import load_weights
    model = SiamRPN(settings)
    load_weights(path or WEIGHTS, model, "siamrpn")
    return model.eval()


# --- tracking -------------------------------------------------------------------------------

def change_penalty(boxes, previous, k: float) -> np.ndarray:
    """SiamRPN's penalty on scale and aspect change: ``exp(-k (r r' - 1))``.

    ``r = max(s/s', s'/s)`` with ``s = sqrt((w + p)(h + p))``, ``p = (w + h)/2`` the padded size,
    and ``r' = max(a/a', a'/a)`` with ``a = w/h`` the aspect ratio, comparing each proposal with
    the previous box. Both ratios are ≥ 1, so the penalty is 1 for an unchanged box and falls
    the more the proposal changes size or shape.

    Args:
        boxes: ``(..., 4)`` xywh proposals; previous: ``(4,)`` xywh box in the same coordinates.
        k: the penalty's strength (``penalty_k``).
    Returns:
        ``(...)`` float64 in (0, 1].
    """
    b = np.asarray(boxes, dtype=np.float64)
    w, h = np.maximum(b[..., 2], 1e-6), np.maximum(b[..., 3], 1e-6)
    pw, ph = float(previous[2]), float(previous[3])

    def padded(w_, h_):
        p = (w_ + h_) / 2.0
        return np.sqrt((w_ + p) * (h_ + p))

    r_s = padded(w, h) / padded(pw, ph)
    r_a = (w / h) / (pw / ph)
    r_s, r_a = np.maximum(r_s, 1 / r_s), np.maximum(r_a, 1 / r_a)
    return np.exp(-k * (r_s * r_a - 1.0))


class SiamRPNTracker(Tracker):
    """SiamRPN tracking (registered as ``"siamrpn"``).

    Args:
        weights: a weights file (default :data:`WEIGHTS`), or ``"random"`` for the untrained
            control (same tracker, random network from ``seed``).
        settings: a :class:`SiamRPNSettings`; keyword ``overrides`` replace its fields.
        model: an already built :class:`SiamRPN` (used instead of ``weights``).
        device: where the network runs (default cpu: one frame is too small to gain on a GPU).
        decode: ``decode(deltas, anchors) -> boxes`` (default :func:`acvm.rpn.decode`; notebook 06
            runs the tracker on the student's).

    After ``update`` it exposes

    * ``proposals``: ``(k·17·17, 4)`` xywh boxes in image pixels, every anchor after regression;
    * ``scores``: ``(k·17·17,)`` the classification branch's probability that each is the target;
    * ``penalised``: ``(k·17·17,)`` the scores after the change penalty and cosine window
      (the one whose argmax is chosen); ``anchors``: ``(k·17·17, 4)`` the anchors in image pixels;
    * ``confidence``: the chosen proposal's (unpenalised) score;
    * ``size_bias``: ``(2,)`` the width and height factor measured on the first frame
      (:meth:`measure_size_bias`; ones with ``calibrate=False``), divided out of every proposal.
    """

    name = "siamrpn"

    def __init__(self, weights=None, settings: SiamRPNSettings | None = None, model: SiamRPN | None = None,
                 seed: int = 0, device: str = "cpu", decode=None, **overrides):
        super().__init__()
        self.decode = decode or rpn.decode
        settings = replace(settings or SiamRPNSettings(), **overrides)
        self.settings = settings
        self.device = torch.device(device)
        if model is None:
            if weights == "random":
                torch.manual_seed(seed)
                model = SiamRPN(settings)
            else:
                model = load_model(weights, settings)
        self.model = model.to(self.device).eval()
        anchors = search_anchors(settings)
        self._anchors = anchors.reshape(-1, 4)
        window = cosine_window((settings.score_size, settings.score_size))
        self._window = np.broadcast_to(window, anchors.shape[:-1]).reshape(-1)
        self.proposals = self.scores = self.penalised = self.anchors = None
        self.size_bias = np.ones(2)

    def _search_side(self) -> float:
        s = self.settings
        return context_size(self.size[0], self.size[1], s.context_amount) * s.instance_size / s.exemplar_size

    # the steps of one frame, each usable on its own ----------------------------------------------

    def crop_search(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """The search crop x around the last centre: ``(255×255×3 uint8, centre (2,), side in image pixels)``."""
        centre, side = self.centre.copy(), self._search_side()
        x = crop_and_resize(image, centre, side, self.settings.instance_size, pad_value=self.mean_colour)
        return x, centre, side

    @torch.no_grad()
    def propose(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the RPN on a search crop: ``(k·17·17, 4)`` xywh proposals in crop pixels and their
        ``(k·17·17,)`` target probabilities (float64), in the order of :func:`search_anchors`."""
        cls, reg = self.model.detect(self.kernels, to_tensor(x, self.device))
        scores = torch.softmax(cls[0], dim=1)[:, 1].reshape(-1).cpu().numpy().astype(np.float64)
        deltas = reg[0].permute(0, 2, 3, 1).reshape(-1, 4).cpu().numpy().astype(np.float64)
        return self.decode(deltas, self._anchors), scores

    def rerank(self, proposals: np.ndarray, scores: np.ndarray, side: float) -> tuple[np.ndarray, np.ndarray]:
        """Penalise change of size and shape, blend in the cosine window.

        Args:
            proposals: ``(N, 4)`` in crop pixels; scores: ``(N,)``; side: the crop's side in image pixels.
        Returns:
            ``(penalised scores (N,), change penalty (N,))``; the tracker takes the argmax of the first.
        """
        s = self.settings
        previous = self.size * s.instance_size / side          # the last box's size in crop pixels
        penalty = change_penalty(proposals, [0.0, 0.0, previous[0], previous[1]], s.penalty_k)
        penalised = (1 - s.window_influence) * penalty * scores + s.window_influence * self._window
        return penalised, penalty

    @torch.no_grad()
    def measure_size_bias(self, image: np.ndarray) -> np.ndarray:
        """How much wider and taller than the true box the best proposal is on the first frame: ``(2,)``.

        Our CPU-trained regression hardly measures size: its proposals come out near a fixed
        multiple of the tracker's own size, whatever the target's (on OTB Human7 1.5× too wide,
        with the tracker's box right, too big or too small), so box smoothing compounds that
        factor frame after frame and the box runs away. On the first frame the truth is known:
        the factor is measured there (clipped to [0.5, 2]) and :meth:`update` divides it out.
        """
        x, centre, side = self.crop_search(image)
        proposals, scores = self.propose(x)
        best = proposals[int(np.argmax(scores))]
        truth = self.size * self.settings.instance_size / side
        return size_bias(best[2:], truth)

    # the interface ----------------------------------------------------------------------------------

    @torch.no_grad()
    def init(self, image: np.ndarray, box) -> None:
        """Cut the template z around ``box`` and keep both branches' kernels for the whole sequence."""
        image, box, _, _ = check_init(image, box)
        s = self.settings
        # the tracker works in the view; what it returns and exposes is in frame pixels
        self.view = AspectView(box, image.shape, s.max_aspect)
        image = self.view.image(image)
        c = xywh_to_cxcywh(self.view.to_view(box))
        self.centre, self.size = c[:2], c[2:]
        w, h = self.size
        self.mean_colour = mean_colour(image, 1)
        side = context_size(w, h, s.context_amount)
        z = crop_and_resize(image, self.centre, side, s.exemplar_size, pad_value=self.mean_colour)
        self.kernels = self.model.template(to_tensor(z, self.device))
        self.size_bias = self.measure_size_bias(image) if s.calibrate else np.ones(2)
        self.box, self.confidence = box.copy(), None
        self.proposals = self.scores = self.penalised = self.anchors = None

    def update(self, image: np.ndarray) -> np.ndarray:
        """Propose boxes in the search crop, re-rank them, smooth the size; return the new ``(x, y, w, h)``."""
        image = self.view.image(check_image(image))
        s = self.settings
        x, centre, side = self.crop_search(image)
        proposals, scores = self.propose(x)
        proposals = remove_size_bias(proposals, self.size_bias)  # about the centre: the position is not biased
        penalised, penalty = self.rerank(proposals, scores, side)
        best = int(np.argmax(penalised))

        proposals = crop_to_image(proposals, centre, side, s.instance_size)
        ccx, ccy, cw, ch = xywh_to_cxcywh(proposals[best])
        # box smoothing: the centre jumps to the proposal, the size follows at a rate that is
        # smaller the less sure (score) and the more implausible (penalty) the proposal is
        rate = penalty[best] * scores[best] * s.lr
        size = self.size * (1 - rate) + np.array([cw, ch]) * rate
        box = clip_box(cxcywh_to_xywh([ccx, ccy, size[0], size[1]]), image.shape, min_size=4.0)
        bcx, bcy, bw, bh = xywh_to_cxcywh(box)
        self.centre, self.size = np.array([bcx, bcy]), np.array([bw, bh])

        self.proposals, self.scores, self.penalised = self.view.from_view(proposals), scores, penalised
        self.anchors = self.view.from_view(crop_to_image(self._anchors, centre, side, s.instance_size))
        self.box, self.confidence = self.view.from_view(box), float(scores[best])
        return self.box.copy()


# --- drawing (notebook 06) ---------------------------------------------------------------------------

def draw_proposals(ax, image: np.ndarray, proposals, scores, top: int = 10, boxes: dict | None = None,
                   title: str | None = None):
    """Draw the ``top`` highest-scoring proposals on a frame (dashed, thicker = higher score) and named boxes.

    Args:
        proposals: ``(N, 4)`` xywh; scores: ``(N,)``; boxes: ``{label: (4,) box}`` drawn on top
            in the course's colours (the first, usually the ground truth, in green).
    Returns:
        ``ax``.
    """
    from .viz import COLOURS, draw_box
    ax.imshow(image)
    p, s = np.asarray(proposals), np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")[:max(int(top), 0)]
    for rank, i in enumerate(order[::-1]):
        draw_box(ax, p[i], "#E69F00", "top proposals" if rank == len(order) - 1 else None,
                 lw=0.6 + 1.4 * float(s[i]), ls="--")
    for k, (label, b) in enumerate((boxes or {}).items()):
        draw_box(ax, b, COLOURS[k % len(COLOURS)], label)
    ax.legend(loc="upper right", fontsize="small", framealpha=0.7)
    if title:
        ax.set_title(title)
    ax.set_axis_off()
    return ax


class ProposalViewer:
    """A SiamRPN run frame by frame: the top proposals, the chosen box and other trackers' boxes.

    Pass ``viewer.record`` as ``callback`` to :func:`acvm.evaluation.run_ope`; it keeps the
    ``keep`` best proposals of every frame. ``tracks`` maps a label to ``(N, 4)`` boxes per frame
    (add SiamFC's after its run); ``draw(frame, top)`` is the callback the widget calls.
    """

    def __init__(self, sequence, keep: int = 50, figsize=(6.5, 4.8)):
        self.sequence, self.keep, self.figsize = sequence, keep, figsize
        self.proposals: dict[int, np.ndarray] = {}
        self.scores: dict[int, np.ndarray] = {}
        self.tracks: dict[str, np.ndarray] = {}

    def record(self, i: int, tracker: SiamRPNTracker, box) -> None:
        order = np.argsort(-tracker.scores, kind="stable")[:self.keep]
        self.proposals[i] = tracker.proposals[order].copy()
        self.scores[i] = tracker.scores[order].copy()

    def draw(self, frame: int = 1, top: int = 10):
        import matplotlib.pyplot as plt
        if not 0 <= frame < len(self.sequence):
            raise IndexError(f"frame {frame} is out of range for {self.sequence.name!r} ({len(self.sequence)} frames)")
        fig, ax = plt.subplots(figsize=self.figsize)
        boxes = {"ground truth": np.asarray(self.sequence.boxes)[frame]}
        boxes.update({k: v[frame] for k, v in self.tracks.items() if frame < len(v)})
        empty = np.zeros((0, 4))
        draw_proposals(ax, self.sequence[frame], self.proposals.get(frame, empty), self.scores.get(frame, np.zeros(0)),
                       top, boxes, f"{self.sequence.name}, frame {frame}: top {top} proposals")
        fig.tight_layout()
        return fig

    def widget(self, frame: int = 1, top: int = 10):
        import ipywidgets as widgets
        from .viz import interactive_view
        return interactive_view(self.draw, frame=widgets.IntSlider(frame, 0, len(self.sequence) - 1, description="frame"),
                                top=widgets.IntSlider(top, 1, self.keep, description="proposals"))
