"""MDNet: a CNN classifier of candidate boxes, pre-trained on many domains, fine-tuned online.

Nam and Han, *Learning Multi-Domain Convolutional Neural Networks for Visual Tracking*, CVPR 2016.
Tracking by classification: draw candidate boxes around the last position, score each with a
small network ``f`` (target vs background), and take the best. The network has

* shared convolutional layers (conv1–conv3 of :class:`acvm.backbone.Backbone`) and two shared
  fully-connected layers fc4, fc5, learned off-line;
* one binary classification layer fc6 *per training sequence* (a *domain*): what is the target
  in one sequence is background in another, so each sequence gets its own last layer, and the
  shared layers are pushed to learn what is common to all (multi-domain learning).

On a new sequence the fc6 branches are thrown away and a fresh fc6 is fine-tuned together with
fc4–fc5 on samples of the first frame; a bounding-box regressor (ridge regression from features
to box deltas) is fitted on the first frame too. Every frame then:

1. draws ``n`` candidates, Gaussian in position and scale around the last box;
2. scores them, ``f⁺(x) - f⁻(x)`` (positive if the network prefers "target");
3. takes the mean of the top 5 candidates; their mean score below 0 means *target lost*;
4. when not lost: refines the box with the regressor and stores positive and negative samples
   of this frame (long-term memory of positives, short-term memory of negatives);
5. updates fc4–fc6 every ``long_interval`` frames from the long-term memory, and right away from
   the short-term memory when the target is lost, always with **hard negative mining**: of many
   stored negatives, train on those the network currently scores *highest*.

What makes it run in real time on a CPU here (the RT-MDNet idea): the convolutional features are
computed once per frame on a crop around the last position, and every candidate is read from
that map by RoI pooling (:func:`acvm.roi.prroi_pool`); the memories store pooled features, so
online fine-tuning never touches the convolutional layers.

Pre-training (``acvm train mdnet``) uses fixed synthetic sequences as domains (or real sequence
folders with ``--data``), starts the backbone from the trained SiamFC weights when they exist,
and writes the shared layers only (no fc6 branches) to ``data/weights/mdnet.pt``.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import rpn
from .backbone import LAYERS, Backbone, to_tensor
from .boxes import (as_boxes, mean_colour, clip_box, crop_and_resize, cxcywh_to_xywh, image_to_crop, iou,
                    xywh_to_cxcywh)
from .registry import weights_file
from .roi import prroi_pool
from .tracker import Tracker, check_image, check_init_box

__all__ = ["MDNetSettings", "MDNet", "MultiDomainMDNet", "gaussian_samples", "uniform_samples",
           "samples_in_iou_range", "mine_hard_negatives", "domain_logits", "BoxRegressor", "fine_tune", "MDNetSample",
           "MDNetTracker", "train", "load_model", "draw_candidates", "CandidateViewer", "WEIGHTS", "TRAIN_STEPS"]

#: where ``acvm train mdnet`` writes and the tracker reads the shared layers
WEIGHTS = weights_file("mdnet")
SIAMFC_WEIGHTS = weights_file("siamfc")
#: optimiser steps of the shipped weights (the default of ``acvm train mdnet``)
TRAIN_STEPS = 4000


@dataclass(frozen=True)
class MDNetSettings:
    """MDNet's settings, named after the paper and its reference code (py-MDNet)."""

    layer: str = "conv3"                 # last shared convolutional layer (MDNet: conv3)
    roi_size: int = 3                    # RoI pooling bins per side (3×3 as MDNet's conv3 output)
    fc_size: int = 128                   # width of fc4 and fc5 (MDNet: 512, on 5× wider input)
    target_size: float = 48.0            # sqrt(w·h) of the target in the feature crop, pixels
    crop_factor: float = 4.5             # side of the feature crop in units of sqrt(w·h) of the target
    n_samples: int = 192                 # candidates per frame
    trans: float = 0.6                   # candidate spread in position, in units of mean(w, h)
    scale: float = 1.05                  # candidate scale spread: sizes × scale^U, |U| ≤ 1
    trans_growth: float = 1.1            # while lost the spread grows by this factor per frame ...
    trans_limit: float = 1.5             # ... up to this
    top_k: int = 5                       # the estimate is the mean of the best top_k candidates
    score_threshold: float = 0.0         # mean top-k score below this: target lost
    n_pos_init: int = 200                # positives on the first frame
    n_neg_init: int = 1000               # negatives on the first frame
    n_pos_update: int = 50               # positives stored per confident frame
    n_neg_update: int = 200              # negatives stored per confident frame
    pos_iou: float = 0.7                 # positives overlap the target at least this much
    pos_trans: float = 0.1               # positives: Gaussian spread in position (× mean(w, h))
    pos_scale: float = 1.3               # positives: scale spread
    neg_iou_init: float = 0.5            # first-frame negatives overlap less than this
    neg_iou: float = 0.3                 # later negatives overlap less than this
    neg_trans_init: float = 1.5          # first-frame negatives: uniform spread in position
    neg_trans: float = 2.0               # later negatives: uniform spread in position
    neg_scale: float = 1.3               # negatives: scale spread
    init_iterations: int = 50            # fine-tuning steps on the first frame
    update_iterations: int = 15          # fine-tuning steps per online update
    batch_pos: int = 32                  # positives per fine-tuning step
    batch_neg: int = 96                  # hard negatives per fine-tuning step
    batch_test: int = 512                # negatives scored to mine the hard ones from (MDNet: 1024)
    lr_init: float = 5e-4                # SGD rate of fc4-fc5 on the first frame (fc6: × lr_mult)
    lr_update: float = 1e-3              # SGD rate of fc4-fc5 for online updates (fc6: × lr_mult)
    lr_mult: float = 10.0                # fc6 learns this much faster (it starts from scratch)
    long_interval: int = 10              # long-term update every this many frames
    n_frames_long: int = 100             # frames of positives kept in the long-term memory
    n_frames_short: int = 20             # frames of negatives (and short-term positives) kept
    online_update: bool = True           # False: fine-tune on the first frame only (notebook 04 compares)
    bbreg: bool = True                   # refine the box with the first-frame regressor
    n_bbreg: int = 500                   # samples for the box regressor ...
    bbreg_iou: float = 0.6               # ... overlapping the target at least this much
    bbreg_trans: float = 0.3             # ... spread uniformly in position
    bbreg_scale: float = 1.6             # ... and scale
    bbreg_lambda: float = 1000.0         # ridge penalty of the box regressor
    n_hard_shown: int = 16               # hard negatives exposed after update (for drawing)
    seed: int = 0                        # candidate sampling and fc6 initialisation


# --- the network ----------------------------------------------------------------------------------

class MDNet(nn.Module):
    """The shared layers: conv1–conv3 (``backbone``), RoI pooling, fc4, fc5.

    ``conv_features(x)``: ``(B,3,H,W)`` crops in [0, 1] -> ``(B,C,H',W')`` (``C = 96`` at conv3);
    ``pool(features, boxes)``: boxes ``(B,K,4)`` xywh in crop pixels -> ``(B·K, C·3·3)``;
    ``forward(pooled)``: ``(N, C·3·3)`` -> ``(N, fc_size)`` fc5 activations.
    """

    def __init__(self, settings: MDNetSettings = MDNetSettings()):
        super().__init__()
        self.settings = settings
        self.backbone = Backbone()
        c = LAYERS[settings.layer].channels
        self.fc4 = nn.Sequential(nn.Linear(c * settings.roi_size ** 2, settings.fc_size), nn.ReLU(inplace=True))
        self.fc5 = nn.Sequential(nn.Dropout(0.5), nn.Linear(settings.fc_size, settings.fc_size), nn.ReLU(inplace=True))

    @property
    def in_features(self) -> int:
        """Length of a pooled feature vector, ``C · roi_size²``."""
        return self.fc4[0].in_features

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x, self.settings.layer)

    def pool(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        info = LAYERS[self.settings.layer]
        pooled = prroi_pool(features, boxes, self.settings.roi_size, 1.0 / info.stride,
                            origin=info.receptive_field / 2.0)
        return pooled.reshape(-1, self.in_features)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc5(self.fc4(pooled))


def domain_logits(h: torch.Tensor, fc6_weight: torch.Tensor, fc6_bias: torch.Tensor, domain: torch.Tensor
                  ) -> torch.Tensor:
    """Score every feature vector with the fc6 branch of its own domain (notebook 04's exercise).

    Args:
        h: ``(N, F)`` fc5 features; fc6_weight: ``(D, 2, F)`` and fc6_bias: ``(D, 2)``, one
            two-class layer per training domain; domain: ``(N,)`` int64, each row's domain.
    Returns:
        ``(N, 2)`` logits (background, target): row ``n`` is ``W[domain[n]] h[n] + b[domain[n]]``.
    """
    return torch.einsum("nf,ncf->nc", h, fc6_weight[domain]) + fc6_bias[domain]


class MultiDomainMDNet(nn.Module):
    """The shared :class:`MDNet` plus ``D`` fc6 branches, one per training domain (pre-training only).

    ``forward(x, boxes, domain)``: crops ``(B,3,S,S)``, boxes ``(B,K,4)`` in crop pixels and
    ``domain`` ``(B,)`` int64 -> ``(B·K, 2)`` logits, each box scored by the branch of its crop's
    domain. Mixing domains in one batch is equivalent to MDNet's one-domain-per-step schedule in
    what is learned (each branch only ever sees its own sequence) and keeps batches simple.
    """

    def __init__(self, n_domains: int, settings: MDNetSettings = MDNetSettings(), freeze_bn: bool = False):
        super().__init__()
        self.shared = MDNet(settings)
        self.fc6_weight = nn.Parameter(torch.randn(n_domains, 2, settings.fc_size) * 0.01)
        self.fc6_bias = nn.Parameter(torch.zeros(n_domains, 2))
        self.drop = nn.Dropout(0.5)
        self.freeze_bn = freeze_bn

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_bn:
            # a backbone that starts from trained weights keeps its batch statistics: batches of
            # a few crops would give noisy ones
            for m in self.shared.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor, boxes: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.shared(self.shared.pool(self.shared.conv_features(x), boxes)))
        return domain_logits(h, self.fc6_weight, self.fc6_bias, domain.repeat_interleave(boxes.shape[1]))


def load_model(path: str | Path | None = None, settings: MDNetSettings = MDNetSettings()) -> MDNet:
    """The shared layers with the weights in ``path`` (default :data:`WEIGHTS`), in eval mode.

    Raises ``FileNotFoundError`` naming the file when it is missing (``acvm train mdnet`` makes it).
    """
    from .weights import load_weights
    model = MDNet(settings)
    load_weights(path or WEIGHTS, model, "mdnet")
    return model.eval()


# --- samples --------------------------------------------------------------------------------------

def _spread(box, n: int, offsets: np.ndarray, scale_exp: np.ndarray, trans: float, scale: float) -> np.ndarray:
    cx, cy, w, h = xywh_to_cxcywh(as_boxes(box, "box"))
    r = (w + h) / 2.0
    out = np.empty((n, 4))
    out[:, 0] = cx + trans * r * offsets[:, 0]
    out[:, 1] = cy + trans * r * offsets[:, 1]
    out[:, 2] = w * scale ** scale_exp
    out[:, 3] = h * scale ** scale_exp
    return cxcywh_to_xywh(out)


def gaussian_samples(box, n: int, trans: float, scale: float, rng) -> np.ndarray:
    """MDNet's candidates: ``n`` boxes around ``box`` with Gaussian offsets in position and scale.

    Centre offsets are ``trans · mean(w, h) · u`` and sizes ``(w, h) · scale^v``, with
    ``u, v = clip(N(0, ½), -1, 1)``: most candidates lie close, none farther than ``trans``
    target sizes; width and height scale together (the aspect ratio is kept).

    Args:
        box: ``(4,)`` xywh; rng: ``numpy.random.Generator``.
    Returns:
        ``(n, 4)`` float64 xywh boxes.
    """
    u = np.clip(0.5 * rng.standard_normal((n, 2)), -1, 1)
    v = np.clip(0.5 * rng.standard_normal(n), -1, 1)
    return _spread(box, n, u, v, trans, scale)


def uniform_samples(box, n: int, trans: float, scale: float, rng) -> np.ndarray:
    """Like :func:`gaussian_samples` with ``u, v ~ U(-1, 1)``: boxes spread evenly (for negatives)."""
    return _spread(box, n, rng.uniform(-1, 1, (n, 2)), rng.uniform(-1, 1, n), trans, scale)


def samples_in_iou_range(sampler, box, n: int, trans: float, scale: float, rng, low: float = 0.0,
                         high: float = 1.0, tries: int = 20) -> np.ndarray:
    """Up to ``n`` boxes from ``sampler`` (:func:`gaussian_samples` or :func:`uniform_samples`)
    whose IoU with ``box`` lies in ``[low, high]``: MDNet's positives (IoU ≥ 0.7) and negatives.

    Returns ``(m, 4)`` float64 with ``m ≤ n`` (fewer only when ``tries`` rounds found too few).
    """
    found = []
    count = 0
    for _ in range(tries):
        cand = sampler(box, 2 * n, trans, scale, rng)
        o = iou(cand, box)
        cand = cand[(o >= low) & (o <= high)]
        found.append(cand)
        count += len(cand)
        if count >= n:
            break
    return np.concatenate(found)[:n]


def mine_hard_negatives(scores, num: int) -> np.ndarray:
    """Hard negative mining: the indices of the ``num`` negatives the classifier likes best.

    Negatives the network already rejects teach it nothing; those it scores *highest* (most
    target-like: distractors, parts of the target's surroundings) are the ones worth a step.

    Args:
        scores: ``(N,)`` the network's target score of each negative sample.
        num: how many to keep (all ``N`` if ``num ≥ N``).
    Returns:
        ``(min(num, N),)`` int64 indices, highest score first (ties: lower index first).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-s, kind="stable")
    return order[:max(int(num), 0)].astype(np.int64)


class BoxRegressor:
    """MDNet's bounding-box regression: ridge regression from a box's features to the deltas
    ``[δx, δy, δw, δh]`` (:func:`acvm.rpn.encode`) that move it onto the target.

    ``fit(features (N, F), boxes (N, 4), target (4,))`` solves
    ``min_W ‖X W - Y‖² + λ‖W‖²`` with centred features (the bias is not penalised);
    ``predict(features, boxes)`` returns the corrected ``(N, 4)`` boxes.
    """

    def __init__(self, lam: float = 1000.0):
        self.lam = lam
        self.W = self.mean = self.bias = None

    def fit(self, features, boxes, target) -> "BoxRegressor":
        X = torch.as_tensor(np.asarray(features), dtype=torch.float64)
        Y = torch.as_tensor(rpn.encode(as_boxes(target, "target"), as_boxes(boxes, "boxes")))
        mean, bias = X.mean(0), Y.mean(0)
        Xc = X - mean
        # the normal equations are symmetric positive definite: solve them by Cholesky (in torch,
        # which keeps to its own thread setting; a multi-threaded BLAS stalls on a busy machine)
        L = torch.linalg.cholesky(Xc.T @ Xc + self.lam * torch.eye(X.shape[1], dtype=torch.float64))
        self.W = torch.cholesky_solve(Xc.T @ (Y - bias), L).numpy()
        self.mean, self.bias = mean.numpy(), bias.numpy()
        return self

    def predict(self, features, boxes) -> np.ndarray:
        if self.W is None:
            raise RuntimeError("BoxRegressor.predict before fit")
        deltas = (np.asarray(features, dtype=np.float64) - self.mean) @ self.W + self.bias
        return rpn.decode(deltas, as_boxes(boxes, "boxes"))


# --- online fine-tuning -------------------------------------------------------------------------

def _classifier_scores(head: nn.Module, features: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    with torch.no_grad():
        out = torch.cat([head(features[i:i + chunk]) for i in range(0, len(features), chunk)])
    return out[:, 1] - out[:, 0]


def fine_tune(head: nn.Module, pos: torch.Tensor, neg: torch.Tensor, iterations: int, lr: float,
              rng: np.random.Generator, settings: MDNetSettings = MDNetSettings(),
              mine=mine_hard_negatives) -> list[np.ndarray]:
    """Fine-tune ``head`` (fc4, fc5, fc6) on pooled features with hard negative mining.

    Each of the ``iterations`` SGD steps takes ``batch_pos`` positives (cycling through a
    shuffled ``pos``) and, of ``batch_test`` random negatives, the ``batch_neg`` hardest
    (:func:`mine_hard_negatives`), and takes an SGD step (momentum 0.9, weight decay 5e-4) on
    the two-class cross-entropy. fc6 learns ``lr_mult`` times faster than fc4–fc5.

    Args:
        head: ``nn.Sequential(fc4, fc5, fc6)`` mapping ``(N, F)`` pooled features to ``(N, 2)`` logits.
        pos, neg: ``(P, F)`` and ``(M, F)`` float32 pooled features.
        mine: ``mine(scores, num) -> indices``, the hard negative mining (notebook 04 passes the
            student's own).
    Returns:
        the indices into ``neg`` of the hard negatives of every step.
    """
    s = settings
    # plain SGD with momentum, written out: torch.optim's first step imports the compiler stack,
    # seconds that a tracker's first frame should not pay
    rates = [(p, lr) for p in list(head[0].parameters()) + list(head[1].parameters())]
    rates += [(p, lr * s.lr_mult) for p in head[2].parameters()]
    velocity = [torch.zeros_like(p) for p, _ in rates]
    head.eval()  # no dropout online: the runs stay repeatable from the tracker's own seed
    pos_order = rng.permutation(len(pos))
    p_at = 0
    mined = []
    for _ in range(iterations):
        if p_at + s.batch_pos > len(pos_order):
            pos_order, p_at = np.concatenate([pos_order[p_at:], rng.permutation(len(pos))]), 0
        pb = pos_order[p_at:p_at + s.batch_pos]
        p_at += s.batch_pos
        pool_idx = rng.choice(len(neg), size=min(s.batch_test, len(neg)), replace=False)
        hard = pool_idx[mine(_classifier_scores(head, neg[pool_idx]).numpy(), s.batch_neg)]
        mined.append(hard)
        x = torch.cat([pos[pb], neg[hard]])
        y = torch.cat([torch.ones(len(pb), dtype=torch.long), torch.zeros(len(hard), dtype=torch.long)])
        loss = F.cross_entropy(head(x), y)
        grads = torch.autograd.grad(loss, [p for p, _ in rates])
        with torch.no_grad():
            for (p, rate), v, g in zip(rates, velocity, grads):
                v.mul_(0.9).add_(g + 5e-4 * p)      # momentum 0.9, weight decay 5e-4 (MDNet's)
                p.sub_(rate * v)
    return mined


# --- the tracker ------------------------------------------------------------------------------------

class MDNetTracker(Tracker):
    """MDNet tracking (registered as ``"mdnet"``).

    Args:
        weights: a weights file of the shared layers (default :data:`WEIGHTS`), or ``"random"``
            for the untrained control (random shared layers from ``settings.seed``).
        settings: an :class:`MDNetSettings`; keyword ``overrides`` replace its fields
            (``MDNetTracker(online_update=False)``).
        model: an already built :class:`MDNet` (used instead of ``weights``).
        mine: the hard negative mining, ``mine(scores, num) -> indices`` (default
            :func:`mine_hard_negatives`; notebook 04 runs the tracker on the student's).

    After ``update`` it exposes

    * ``candidates``: ``(n_samples, 4)`` xywh boxes in image pixels drawn this frame;
    * ``scores``: ``(n_samples,)`` their scores ``f⁺ - f⁻`` (> 0: the network says "target");
    * ``top``: indices of the ``top_k`` best candidates (their mean is the estimate);
    * ``hard_negatives``: ``(m, 4)`` this frame's negative samples the network scores highest,
      the ones hard negative mining would train on first (empty when the target was lost);
    * ``lost``: True when the top-k mean score was below ``score_threshold``;
    * ``updated``: ``"long"``, ``"short"`` or ``None``, the online update done this frame;
    * ``confidence``: the mean score of the top-k candidates.
    """

    name = "mdnet"

    def __init__(self, weights=None, settings: MDNetSettings | None = None, model: MDNet | None = None,
                 mine=None, **overrides):
        super().__init__()
        self.settings = replace(settings or MDNetSettings(), **overrides)
        self.mine = mine or mine_hard_negatives
        if model is None:
            if weights == "random":
                torch.manual_seed(self.settings.seed)
                model = MDNet(self.settings)
            else:
                model = load_model(weights, self.settings)
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.candidates = self.scores = self.top = None
        self.hard_negatives = np.zeros((0, 4))
        self.lost, self.updated = False, None

    # the steps of one frame, each callable on its own ------------------------------------------

    def crop_features(self, image: np.ndarray, box) -> tuple[torch.Tensor, tuple]:
        """Conv features of the square crop around ``box``: ``((1, C, H', W'), crop geometry)``.

        The crop has side ``crop_factor · sqrt(w·h)`` image pixels, resized so the target's
        ``sqrt(w·h)`` becomes ``target_size`` pixels; the geometry ``(centre, side, out)`` maps
        boxes into it with :func:`acvm.boxes.image_to_crop`.
        """
        s = self.settings
        cx, cy, w, h = xywh_to_cxcywh(box)
        side = s.crop_factor * np.sqrt(w * h)
        out = int(round(s.crop_factor * s.target_size))
        crop = crop_and_resize(image, (cx, cy), side, out, pad_value=self._mean_colour)
        with torch.no_grad():
            feats = self.model.conv_features(to_tensor(crop))
        return feats, ((cx, cy), side, out)

    def pool(self, features: torch.Tensor, geometry, boxes) -> torch.Tensor:
        """Pooled features ``(N, F)`` float32 of image-coordinate boxes ``(N, 4)``."""
        crop_boxes = image_to_crop(boxes, *geometry)
        with torch.no_grad():
            return self.model.pool(features, torch.as_tensor(crop_boxes[None], dtype=torch.float32))

    def score(self, pooled: torch.Tensor) -> np.ndarray:
        """``f⁺(x) - f⁻(x)`` of each pooled feature vector: ``(N, F)`` -> ``(N,)`` float64."""
        return _classifier_scores(self.head, pooled).numpy().astype(np.float64)

    # ------------------------------------------------------------------------------------------------

    def init(self, image: np.ndarray, box) -> None:
        """A fresh fc6, fine-tuned with fc4–fc5 on samples around ``box``; the box regressor; the memories."""
        image = check_image(image)
        box = check_init_box(box, image.shape)
        s = self.settings
        self.rng = np.random.default_rng(s.seed)
        self._mean_colour = mean_colour(image, 1)
        g = torch.Generator().manual_seed(s.seed)
        fc6 = nn.Linear(s.fc_size, 2)
        with torch.no_grad():
            fc6.weight.copy_(torch.randn(fc6.weight.shape, generator=g) * 0.01)
            fc6.bias.zero_()
        self.head = nn.Sequential(copy.deepcopy(self.model.fc4), copy.deepcopy(self.model.fc5), fc6)
        for p in self.head.parameters():
            p.requires_grad_(True)

        feats, geo = self.crop_features(image, box)
        pos = samples_in_iou_range(gaussian_samples, box, s.n_pos_init, s.pos_trans, s.pos_scale, self.rng,
                                   s.pos_iou, 1.0)
        neg = samples_in_iou_range(uniform_samples, box, s.n_neg_init, s.neg_trans_init, s.neg_scale, self.rng,
                                   0.0, s.neg_iou_init)
        pos_f, neg_f = self.pool(feats, geo, pos), self.pool(feats, geo, neg)
        fine_tune(self.head, pos_f, neg_f, s.init_iterations, s.lr_init, self.rng, s, self.mine)

        if s.bbreg:
            reg_boxes = samples_in_iou_range(uniform_samples, box, s.n_bbreg, s.bbreg_trans, s.bbreg_scale, self.rng,
                                             s.bbreg_iou, 1.0)
            self.regressor = BoxRegressor(s.bbreg_lambda).fit(self.pool(feats, geo, reg_boxes).numpy(), reg_boxes, box)

        self.pos_memory = [pos_f[:s.n_pos_update]]   # one entry per confident frame
        self.neg_memory = [neg_f[:s.n_neg_update]]
        self.trans = s.trans
        self.frame = 0
        self._search_box = box.copy()
        self.box, self.confidence = box.copy(), None

    def update(self, image: np.ndarray) -> np.ndarray:
        """Score candidates around the last box, average the best, store samples, update online."""
        image = check_image(image)
        s = self.settings
        self.frame += 1
        feats, geo = self.crop_features(image, self._search_box)
        cand = gaussian_samples(self._search_box, s.n_samples, self.trans, s.scale, self.rng)
        cand = clip_box(cand, image.shape, 4.0)
        pooled = self.pool(feats, geo, cand)
        scores = self.score(pooled)
        top = np.argsort(-scores, kind="stable")[:s.top_k]
        estimate = cand[top].mean(0)
        confidence = float(scores[top].mean())
        lost = confidence < s.score_threshold

        if lost:
            # look farther next frame: the target may have moved more than the usual spread
            self.trans = min(self.trans * s.trans_growth, s.trans_limit)
            box = estimate
        else:
            self.trans = s.trans
            box = self.regressor.predict(pooled[top].numpy(), cand[top]).mean(0) if s.bbreg else estimate
        box = clip_box(box, image.shape, min_size=4.0)

        hard = np.zeros((0, 4))
        self.updated = None
        if not lost:
            pos = samples_in_iou_range(gaussian_samples, box, s.n_pos_update, s.pos_trans, s.pos_scale, self.rng,
                                       s.pos_iou, 1.0)
            neg = samples_in_iou_range(uniform_samples, box, s.n_neg_update, s.neg_trans, s.neg_scale, self.rng,
                                       0.0, s.neg_iou)
            neg_f = self.pool(feats, geo, neg)
            hard = neg[self.mine(self.score(neg_f), s.n_hard_shown)]
            if s.online_update:
                self.pos_memory = (self.pos_memory + [self.pool(feats, geo, pos)])[-s.n_frames_long:]
                self.neg_memory = (self.neg_memory + [neg_f])[-s.n_frames_short:]
        if s.online_update:
            if lost:
                # short-term update: from the memories, which hold confident frames only
                self._fine_tune(self.pos_memory[-s.n_frames_short:])
                self.updated = "short"
            elif self.frame % s.long_interval == 0:
                self._fine_tune(self.pos_memory)
                self.updated = "long"

        self._search_box = clip_box(estimate, image.shape, min_size=4.0)
        self.candidates, self.scores, self.top, self.hard_negatives = cand, scores, top, hard
        self.lost, self.confidence = lost, confidence
        self.box = box
        return box.copy()

    def _fine_tune(self, pos_memory) -> None:
        s = self.settings
        fine_tune(self.head, torch.cat(pos_memory), torch.cat(self.neg_memory), s.update_iterations,
                  s.lr_update, self.rng, s, self.mine)


# --- pre-training ----------------------------------------------------------------------------------

def synthetic_domain(d: int, n_frames: int = 80):
    """The ``d``-th fixed synthetic pre-training sequence (frames rendered when read)."""
    from .synth import make_sequence
    return make_sequence(seed=1000 + d, n_frames=n_frames, occlusion=d % 3 == 1, distractor=d % 2 == 1)


class MDNetSample:
    """One pre-training example per call: a crop of one frame of one domain with labelled boxes.

    ``sample(rng)`` picks a domain ``d`` (a sequence), a frame, and cuts the tracker's crop around
    the target (centre and size jittered as the last estimate would be), then draws ``n_pos``
    positives (IoU ≥ 0.7) and ``n_neg`` negatives (IoU ≤ 0.5) and returns

    * ``"x"``: ``(3, S, S)`` float32 crop in [0, 1];
    * ``"boxes"``: ``(n_pos + n_neg, 4)`` float32 xywh in crop pixels, positives first;
    * ``"labels"``: ``(n_pos + n_neg,)`` int64, 1 for positives, 0 for negatives;
    * ``"domain"``: ``()`` int64, ``d``.

    ``domains`` is a list of sequences, or an int ``D`` for ``D`` fixed synthetic sequences
    (``acvm.synth.make_sequence(seed=1000 + d)``), made on first use in each worker process.
    """

    def __init__(self, domains, settings: MDNetSettings = MDNetSettings(), n_pos: int = 8, n_neg: int = 24,
                 n_frames: int = 80):
        self.settings, self.n_pos, self.n_neg, self.n_frames = settings, n_pos, n_neg, n_frames
        self._domains = domains
        self._cache: dict[int, object] = {}

    def __len__(self) -> int:
        return self._domains if isinstance(self._domains, int) else len(self._domains)

    def domain(self, d: int):
        if not isinstance(self._domains, int):
            return self._domains[d]
        if d not in self._cache:
            self._cache[d] = synthetic_domain(d, self.n_frames)
        return self._cache[d]

    def __call__(self, rng: np.random.Generator) -> dict:
        s = self.settings
        d = int(rng.integers(len(self)))
        seq = self.domain(d)
        boxes = np.asarray(seq.boxes, dtype=np.float64)
        ok = np.flatnonzero(np.isfinite(boxes).all(1) & (boxes[:, 2] >= 4) & (boxes[:, 3] >= 4))
        t = int(rng.choice(ok))
        box = boxes[t]
        cx, cy, w, h = xywh_to_cxcywh(box)
        r = (w + h) / 2
        centre = (cx + 0.3 * r * rng.uniform(-1, 1), cy + 0.3 * r * rng.uniform(-1, 1))
        side = s.crop_factor * np.sqrt(w * h) * np.exp(rng.uniform(-0.15, 0.15))
        out = int(round(s.crop_factor * s.target_size))
        crop = crop_and_resize(seq[t], centre, side, out)
        pos = samples_in_iou_range(gaussian_samples, box, self.n_pos, 0.1, 1.2, rng, 0.7, 1.0)
        neg = samples_in_iou_range(uniform_samples, box, self.n_neg, 1.0, 1.3, rng, 0.0, 0.5)
        pos = np.concatenate([pos, np.repeat(box[None], self.n_pos - len(pos), 0)])
        neg = np.concatenate([neg, uniform_samples(box, self.n_neg - len(neg), 2.5, 1.3, rng)])
        all_boxes = image_to_crop(np.concatenate([pos, neg]), centre, side, out)
        labels = np.r_[np.ones(self.n_pos, np.int64), np.zeros(self.n_neg, np.int64)]
        chw = np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
        return {"x": chw, "boxes": all_boxes.astype(np.float32), "labels": labels, "domain": np.int64(d)}


def _loss(model: MultiDomainMDNet, batch: dict) -> torch.Tensor:
    logits = model(batch["x"], batch["boxes"], batch["domain"])
    return F.cross_entropy(logits, batch["labels"].reshape(-1))


def train(steps: int | None = None, data=None, seed: int = 0, out: str | Path = WEIGHTS, resume: bool = False,
          device=None, batch_size: int = 4, workers: int = 1, n_domains: int = 48,
          init: str | Path | None = SIAMFC_WEIGHTS, progress: bool = True) -> Path:
    """Multi-domain pre-training; writes the shared layers (no fc6 branches) to ``out``.

    Args:
        out: the weights file; the checkpoint ``<out>.ckpt`` beside it (for ``resume``) is
            removed when training finishes.
        steps: optimiser steps (default :data:`TRAIN_STEPS`); each sees ``batch_size`` frames
            with 8 positive and 24 negative boxes each (MDNet's 32 + 96 at ``batch_size=4``).
        data: ``None``/``"synthetic"`` (``n_domains`` fixed synthetic sequences) or sequence
            folders, each of which becomes one domain.
        init: weights whose ``backbone.*`` entries start the convolutional layers (the trained
            SiamFC); ``None`` or a missing file starts from random weights.
    Returns:
        the path written.
    """
    from .training import FolderSource, TrainingData, train_and_save
    from .weights import backbone_state, describe_weights
    steps = TRAIN_STEPS if steps is None else int(steps)
    settings = MDNetSettings()
    if isinstance(data, TrainingData):
        # one domain per real training sequence, plus synthetic domains in the stated share
        f = data.synthetic_fraction
        if f < 1:
            real = FolderSource(data.folders, split=data.split).sequences
            domains = real + [synthetic_domain(d) for d in range(round(f / (1 - f) * len(real)))]
        else:
            domains = n_domains
    else:
        synthetic = data is None or list(np.atleast_1d(data)) == ["synthetic"]
        domains = n_domains if synthetic else FolderSource(list(np.atleast_1d(data))).sequences
    torch.manual_seed(seed)
    n = domains if isinstance(domains, int) else len(domains)
    init_from = init is not None and Path(init).is_file()
    model = MultiDomainMDNet(n, settings, freeze_bn=init_from)
    if init_from:
        backbone, init_meta = backbone_state(init)
        model.shared.backbone.load_state_dict(backbone)
        init_from = describe_weights(Path(init), init_meta)
    # conv1-conv2 stay as SiamFC learned them (MDNet also keeps its first layers nearly fixed);
    # conv3, fc4, fc5 and the branches learn
    if init_from:
        for name in ("conv1", "conv2"):
            for p in getattr(model.shared.backbone, name).parameters():
                p.requires_grad_(False)
    sample = MDNetSample(domains, settings)
    return train_and_save(model, _loss, sample, steps=steps, seed=seed, data=data, out=out, batch_size=batch_size,
                          workers=workers, lr=1e-3, resume=resume, device=device, progress=progress,
                          checkpoint_every=250, loss_window=50, save=model.shared, model="mdnet", domains=n,
                          init=init_from or "random", settings=str(asdict(settings)))


# --- drawing (notebook 04) ---------------------------------------------------------------------------

def draw_candidates(ax, image: np.ndarray, candidates, scores, box=None, hard_negatives=None,
                    gt=None, max_shown: int = 64):
    """Draw candidates coloured by score (red: target-like, blue: background), the estimate and
    hard negatives on one frame; returns ``ax``.

    Args:
        candidates: ``(N, 4)`` xywh; scores: ``(N,)``; box: the estimate ``(4,)``;
        hard_negatives: ``(M, 4)``; gt: the ground truth ``(4,)``; max_shown: the lowest- and
        highest-scoring candidates shown (``max_shown // 2`` each) so the frame stays readable.
    """
    import matplotlib.pyplot as plt
    from .viz import draw_box
    ax.imshow(image)
    cand, sc = np.asarray(candidates), np.asarray(scores, dtype=np.float64)
    order = np.argsort(sc)
    shown = np.unique(np.r_[order[:max_shown // 2], order[-(max_shown // 2):]]) if len(sc) > max_shown else order
    lim = max(float(np.abs(sc).max(initial=0.0)), 1e-6)
    cmap = plt.get_cmap("coolwarm")
    for i in shown[np.argsort(sc[shown])]:
        draw_box(ax, cand[i], cmap(0.5 + 0.5 * sc[i] / lim), lw=0.8)
    for k, hn in enumerate(np.asarray(hard_negatives if hard_negatives is not None else np.zeros((0, 4)))):
        draw_box(ax, hn, "#E69F00", "hard negatives" if k == 0 else None, lw=1.5, ls="--")
    if gt is not None:
        draw_box(ax, gt, "#009E73", "ground truth")
    if box is not None:
        draw_box(ax, box, "#ffffff", "MDNet", lw=2.5)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(-lim, lim))
    ax.figure.colorbar(sm, ax=ax, fraction=0.035, label="score f⁺ − f⁻")
    if box is not None or gt is not None or hard_negatives is not None and len(hard_negatives):
        ax.legend(loc="upper right", fontsize="small", framealpha=0.7)
    ax.set_axis_off()
    return ax


class CandidateViewer:
    """An MDNet run frame by frame: candidates coloured by score, hard negatives, the estimate.

    Pass ``viewer.record`` as ``callback`` to :func:`acvm.evaluation.run_ope`; ``draw(frame)`` is
    the widget's callback (frames before the first update show the ground truth only).
    """

    def __init__(self, sequence, figsize=(6.5, 4.8)):
        self.sequence, self.figsize = sequence, figsize
        self.frames: dict[int, dict] = {}

    def record(self, i: int, tracker: MDNetTracker, box) -> None:
        self.frames[i] = {"candidates": tracker.candidates.copy(), "scores": tracker.scores.copy(),
                          "hard": tracker.hard_negatives.copy(), "box": np.asarray(box).copy(),
                          "lost": tracker.lost, "updated": tracker.updated}

    def draw(self, frame: int = 1):
        import matplotlib.pyplot as plt
        if not 0 <= frame < len(self.sequence):
            raise IndexError(f"frame {frame} is out of range for {self.sequence.name!r} ({len(self.sequence)} frames)")
        fig, ax = plt.subplots(figsize=self.figsize)
        rec = self.frames.get(frame)
        gt = np.asarray(self.sequence.boxes)[frame]
        if rec is None:
            draw_candidates(ax, self.sequence[frame], np.zeros((0, 4)), np.zeros(0), gt=gt)
            ax.set_title(f"{self.sequence.name}, frame {frame}")
        else:
            draw_candidates(ax, self.sequence[frame], rec["candidates"], rec["scores"], rec["box"], rec["hard"], gt)
            state = "lost" if rec["lost"] else "tracking"
            update = f", {rec['updated']}-term update" if rec["updated"] else ""
            ax.set_title(f"{self.sequence.name}, frame {frame}: {state}{update}")
        fig.tight_layout()
        return fig

    def widget(self, frame: int = 1):
        import ipywidgets as widgets
        from .viz import interactive_view
        return interactive_view(self.draw, frame=widgets.IntSlider(frame, 0, len(self.sequence) - 1, description="frame"))
