"""A transformer tracker in the style of STARK: template and search tokens in one encoder, corners out.

Yan et al., *Learning Spatio-Temporal Transformer for Visual Tracking*, ICCV 2021. The steps of one
frame, each a method or function a notebook can call on its own:

1. **Tokens.** The backbone ``φ`` (:class:`acvm.backbone.Backbone`, stride 8) turns each template
   crop ``z`` (the target with context, 127×127) into an 8×8 feature map and the search crop ``x``
   (255×255, around the last position) into a 24×24 one; a 1×1 convolution (STARK's bottleneck)
   brings both to ``D`` channels, and each cell becomes a token: 64 per template (two templates,
   the first frame's and STARK-ST's dynamic one) and 576 search tokens.
2. **Positions.** Each token gets the 2-D sine encoding of its cell
   (:func:`acvm.attention.sine_position_encoding`) plus a learned embedding saying which crop it
   comes from (our addition: it lets the small encoder tell the sets apart from the first layer).
3. **Encoder.** All tokens are concatenated and go through a small transformer encoder
   (:class:`acvm.attention.Encoder`): every search token can attend to every template token (and
   to the other search tokens), so the target's appearance flows into the search region. The
   corner head reads the encoded search tokens directly (STARK weights them by their similarity
   to the decoder's target query; ours does not).
4. **Corner head.** The encoded search tokens are laid back on their 24×24 grid; two small conv
   towers give the **heat maps** of the top-left and bottom-right corner; the **soft-argmax** (the
   expected position under the softmax of each map) gives the corners in crop pixels, so the box
   is differentiable end to end.

Training (:func:`train`, ``acvm train stark-base``; :func:`fine_tune`, ``acvm train stark``) uses the shared pair sampler
(:class:`acvm.training.PairSampler`, through :class:`TemplatePairs`) on synthetic sequences, with
STARK's loss on the box — ``L = λ_L1·‖b − b*‖₁ + λ_giou·(1 − GIoU(b, b*))`` — plus a cross-entropy
of each heat map against a Gaussian around the true corner (our addition; dense supervision).

STARK-ST's parts (``settings.score_head``, :data:`STARKNet.SCORE_PARTS`): a **decoder**
(:class:`acvm.attention.Decoder`) with one learned **target query** over all encoded tokens, and a
**score head** (a 3-layer MLP on the query's output: the logit that the search region holds the
target). They are trained in a second stage with the rest frozen (:func:`train_score`, ``acvm
train stark-st``: :func:`train_st` on the shipped network), and :class:`STARKSTTracker` replaces
the dynamic template only when the score head says the target is there.

Tracking (:class:`STARKTracker`) adds what a regressor trained for minutes on synthetic data
needs: a search region that follows the target (stretched when the target is more elongated than
the training targets, :meth:`STARKTracker.region`), a motion prior and a local soft-argmax on the
heat maps (:meth:`STARKTracker.localise`), a **confidence** from the heat maps' peak mass that
freezes the box when low, a size that changes by at most 1 % a frame (the network's size
estimates regress to the size it saw most in training), and a dynamic template refreshed from
confident frames only.

**The matching branch (our addition, ``settings.correlation``).** The base network
(:data:`BASE_WEIGHTS`, trained from scratch on synthetic sequences) learnt to box the salient
object near the crop's centre more than to match the template: given another sequence's template
its GIoU on synthetic crops drops only from 0.79 to 0.75, and on OTB's pedestrians its heat maps
miss the target even on training-style crops, so it tracks VOT's ball, car and bag well and loses
the pedestrians within a few frames. Synthetic clutter (:func:`acvm.synth.make_sequence`
``clutter=4``) reproduces the failure. So the shipped network has a second input: SiamFC's
response of the search crop to the first template (:meth:`STARKNet.response`, computed by a fixed
copy of SiamFC's backbone, the ``matcher``), standardised and embedded into every search token by a
1×1 convolution (:attr:`STARKNet.corr_embed`) before the encoder. The embedding starts at zero,
so the branch changes nothing until trained; :func:`fine_tune` then trains everything after the
backbone on real video and cluttered, stretched and shrunk synthetic pairs for 1000 CPU steps
(``acvm train stark --data ../shared/training``). The encoder still decides:
the response is one more feature of each search token, which its attention weighs against the
template tokens. ``benchmarks/stark_bench.py`` runs the base network as the ablation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .attention import Decoder, Encoder, sine_position_encoding
from .backbone import LAYERS, Backbone, FreezableBackbone, output_size, to_tensor
from .boxes import (clip_box, mean_colour, context_size, excess_aspect, crop_and_resize, crop_to_image, cxcywh_to_xywh, image_to_crop,
                    xywh_to_cxcywh)
from .registry import weights_file
from .tracker import Tracker, check_image, check_init
from .training import StretchedSequence, StretchedSource  # shared with IoU-Net's training

__all__ = ["STARKSettings", "STARKNet", "CornerHead", "soft_argmax", "giou_loss", "corner_labels",
           "stark_loss", "StretchedSequence", "TemplatePairs", "train", "load_model", "STARKTracker",
           "cell_centres", "draw_stark_frame", "draw_query_attention", "fine_tune", "score_loss",
           "ScoreSamples", "train_score", "train_st", "STARKSTTracker", "WEIGHTS", "BASE_WEIGHTS",
           "ST_WEIGHTS", "TRAIN_STEPS", "FINE_TUNE_STEPS", "SCORE_STEPS"]

#: where the shipped weights live: the tracker's (``acvm train stark``, :func:`fine_tune`)
WEIGHTS = weights_file("stark")
#: and the base network they are fine-tuned from (``acvm train stark-base``, :func:`train`)
BASE_WEIGHTS = weights_file("stark-base")
#: and STARK-ST's: the tracker's network with the decoder, target query and score head added
#: (``acvm train stark-st``, :func:`train_st`; tracker ``stark-st``, :class:`STARKSTTracker`)
ST_WEIGHTS = weights_file("stark-st")
#: optimiser steps of the shipped base weights (the default of :func:`train`)
TRAIN_STEPS = 3000
#: optimiser steps of the shipped fine-tune (the default of :func:`fine_tune`; the shipped one also
#: read the real training sequences: ``--data ../shared/training --synthetic-fraction 0.5``)
FINE_TUNE_STEPS = 1000
#: optimiser steps of the score head's stage (the default of :func:`train_st`)
SCORE_STEPS = 400
#: the pairs :func:`fine_tune` and :func:`train_score` train on: stretched and shrunk targets, far from
#: the crop's centre, with clutter shapes in the synthetic ones (:func:`train`'s arguments)
FINE_TUNE_PAIRS = dict(aspect=0.5, zoom=1.0, shift=64.0, clutter=4)


@dataclass(frozen=True)
class STARKSettings:
    """The network's and the tracker's settings (STARK's names where it has them)."""

    template_size: int = 127         # side of the template crop z in pixels (8×8 tokens)
    search_size: int = 255           # side of the search crop x in pixels (24×24 tokens)
    context: float = 0.5             # context margin p = context·(w + h) of the template crop
    feature_layer: str = "conv4"     # backbone layer whose cells become tokens (stride 8)
    dim: int = 64                    # D: token dimension after the bottleneck
    heads: int = 4                   # attention heads per encoder layer
    ff_dim: int = 256                # hidden width of the encoder's feed-forward nets
    layers: int = 3                  # encoder layers
    head_channels: int = 64          # channels of the first conv of each corner tower (halved twice)
    templates: int = 2               # 1: the first frame only; 2: plus STARK-ST's dynamic template
    correlation: bool = False        # our addition: SiamFC's response to the first template as a search-token input
    score_head: bool = False         # STARK-ST's decoder with one target query and the score head on its output
    decoder_layers: int = 1          # decoder layers (STARK: 6; one query needs few)
    l1_weight: float = 5.0           # λ_L1 on the corners, normalised by the search size
    giou_weight: float = 2.0         # λ_giou
    heatmap_weight: float = 1.0      # weight of the heat-map cross-entropy (0: STARK's loss alone)
    heatmap_sigma: float = 1.0       # std of the Gaussian corner label, in feature cells
    # tracking
    motion_sigma: float = 0.5        # std of the prior around each last corner, × the last box's size (0: none)
    local_window: int = 4            # soft-argmax within ± this many cells of each map's mode (-1: whole map)
    max_aspect: float = 1.5          # crops are stretched so the target looks at most this elongated (inf: never)
    confidence_threshold: float = 0.15  # below this the box is not updated (the target may be hidden)
    size_lr: float = 0.7             # how far the size moves to the new box's size in one frame
    max_size_change: float = 0.003   # width and height change by at most this fraction a frame (inf: no limit)
    update_interval: int = 10        # frames between dynamic-template updates (STARK-ST: 200 at 30 fps+)
    update_threshold: float = 0.6    # confidence a frame needs to become the dynamic template ("confidence" rule)
    update_rule: str = "auto"        # "score" (STARK-ST's score head), "confidence" (heat-map peak mass),
                                     # "never" (the dynamic template stays the first frame's); "auto": score if the net has the head
    score_threshold: float = 0.5     # the score head's probability a frame needs to become the dynamic template
    min_size: float = 4.0            # smallest target side in pixels the tracker allows


def cell_centres(n: int, layer: str) -> torch.Tensor:
    """Crop-pixel coordinate of the centre of each of ``n`` feature cells along one axis."""
    info = LAYERS[layer]
    return info.receptive_field / 2.0 + info.stride * torch.arange(n, dtype=torch.float32)


# --- the network -------------------------------------------------------------------------------------

def soft_argmax(logits: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The expected position under the softmax of a heat map: a differentiable arg-max.

    Args:
        logits: ``(B, H, W)`` float heat-map logits.
        xs: ``(W,)`` x coordinate of each column; ys: ``(H,)`` y coordinate of each row.
    Returns:
        ``(xy, P)``: ``xy`` ``(B, 2)`` the expected ``(x, y)``, and ``P`` ``(B, H, W)`` the
        probabilities (summing to 1 per map).
    """
    B, H, W = logits.shape
    P = torch.softmax(logits.reshape(B, H * W), dim=1).reshape(B, H, W)
    x = (P.sum(1) * xs).sum(-1)
    y = (P.sum(2) * ys).sum(-1)
    return torch.stack([x, y], dim=-1), P


def _tower(c_in: int, c: int) -> nn.Sequential:
    def block(a, b):
        return [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*block(c_in, c), *block(c, c // 2), *block(c // 2, c // 4), nn.Conv2d(c // 4, 1, 1))


class CornerHead(nn.Module):
    """STARK's corner predictor: two conv towers, one heat map per corner, soft-argmax for each.

    ``forward(f)`` takes the search features ``(B, D, H, W)`` and returns ``(logits, corners)``:
    ``logits`` ``(B, 2, H, W)`` (top-left, bottom-right) and ``corners`` ``(B, 4)`` as
    ``(x1, y1, x2, y2)`` in crop pixels, cell ``(i, j)`` sitting at ``(xs[j], ys[i])``.
    """

    def __init__(self, dim: int, channels: int, xs: torch.Tensor, ys: torch.Tensor):
        super().__init__()
        self.top_left = _tower(dim, channels)
        self.bottom_right = _tower(dim, channels)
        self.register_buffer("xs", xs, persistent=False)
        self.register_buffer("ys", ys, persistent=False)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.cat([self.top_left(f), self.bottom_right(f)], dim=1)
        tl, _ = soft_argmax(logits[:, 0], self.xs, self.ys)
        br, _ = soft_argmax(logits[:, 1], self.xs, self.ys)
        return logits, torch.cat([tl, br], dim=-1)


class STARKNet(FreezableBackbone):
    """Backbone, bottleneck, encoder over template + search tokens, corner head.

    ``forward(z, x)`` with ``z`` ``(B, 3, S_z, S_z)`` (or ``(B, T, 3, S_z, S_z)`` for ``T``
    templates) and ``x`` ``(B, 3, S_x, S_x)`` float32 in [0, 1] returns a dict:

    * ``"logits"``: ``(B, 2, H_x, W_x)`` corner heat-map logits;
    * ``"corners"``: ``(B, 4)`` ``(x1, y1, x2, y2)`` in search-crop pixels;
    * ``"attention"``: the list of every layer's weights ``(B, heads, L, L)``, tokens ordered
      template(s) first, then search, each row-major;
    * ``"response"`` (with ``settings.correlation``): ``(B, 1, H_x, W_x)`` the standardised SiamFC
      response of the search crop to the first template, which :attr:`corr_embed` adds to the
      search tokens before the encoder;
    * ``"score"`` and ``"query_attention"`` (with ``settings.score_head``): ``(B,)`` the score head's
      logit that the search region holds the target, and ``(B, heads, L)`` the last decoder layer's
      attention of the target query over all ``L`` tokens (templates first, then search).
    """

    def __init__(self, settings: STARKSettings = STARKSettings()):
        super().__init__()
        s = self.settings = settings
        self.backbone = Backbone()
        self.bottleneck = nn.Conv2d(LAYERS[s.feature_layer].channels, s.dim, 1)
        self.z_grid = (output_size(s.template_size, s.feature_layer),) * 2
        self.x_grid = (output_size(s.search_size, s.feature_layer),) * 2
        self.register_buffer("pos_z", sine_position_encoding(*self.z_grid, s.dim), persistent=False)
        self.register_buffer("pos_x", sine_position_encoding(*self.x_grid, s.dim), persistent=False)
        # one learned vector per token set: first template, dynamic template, search
        self.type_embed = nn.Parameter(torch.randn(3, s.dim) * 0.02)
        self.encoder = Encoder(s.dim, s.heads, s.ff_dim, s.layers, norm_first=True)
        centres = cell_centres(self.x_grid[0], s.feature_layer)
        self.head = CornerHead(s.dim, s.head_channels, centres, centres)
        if s.correlation:
            # the matching branch: SiamFC's backbone (loaded by train(correlation=True)), never trained
            # here, and a 1×1 convolution embedding its response into the search tokens; zero at the
            # start, so adding the branch to a trained network leaves its output as it was
            self.matcher = Backbone().requires_grad_(False)
            self.corr_embed = nn.Conv2d(1, s.dim, 1)
            nn.init.zeros_(self.corr_embed.weight)
            nn.init.zeros_(self.corr_embed.bias)
        if s.score_head:
            # STARK-ST: one learned target query (DETR's query position; the decoder's input is zero)
            # reads the encoded template and search tokens; a 3-layer MLP on its output says whether
            # the search region holds the target (the score that decides the dynamic template)
            self.query = nn.Parameter(torch.randn(1, s.dim) * 0.02)
            self.decoder = Decoder(s.dim, s.heads, s.ff_dim, s.decoder_layers, norm_first=True)
            self.score_mlp = nn.Sequential(nn.Linear(s.dim, s.dim), nn.ReLU(), nn.Linear(s.dim, s.dim), nn.ReLU(),
                                           nn.Linear(s.dim, 1))

    #: the parts STARK's second training stage trains (:func:`train_score`); the rest stays fixed
    SCORE_PARTS = ("query", "decoder", "score_mlp")
    localisation_frozen = False

    def freeze_localisation(self):
        """Fix everything but the decoder, its query and the score head (STARK's stage 2); returns the network."""
        if not self.settings.score_head:
            raise ValueError("this STARK network has no score head to train (settings.score_head is False)")
        self.localisation_frozen = True
        for name, p in self.named_parameters():
            p.requires_grad_(name.split(".")[0] in self.SCORE_PARTS)
        return self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.settings.correlation:
            self.matcher.eval()          # fixed batch-norm statistics too
        if self.localisation_frozen:     # the corner head's batch norms keep their statistics in stage 2
            for name, child in self.named_children():
                if name not in self.SCORE_PARTS:
                    child.eval()
        return self

    def match_kernel(self, z: torch.Tensor) -> torch.Tensor:
        """The correlation kernel: SiamFC's embedding of ``(B, 3, S_z, S_z)`` first templates, cut to
        its first ``7×7`` cells (an odd size, so that a response cell sits under one search cell;
        their centre lies half a cell, 4 px, above and left of the template's)."""
        with torch.no_grad():
            f = self.matcher(z)
        k = f.shape[-1] - 1 + f.shape[-1] % 2
        return f[:, :, :k, :k]

    def response(self, kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """SiamFC's response map ``φ(z) ⋆ φ(x)`` of ``(B, 3, S_x, S_x)`` search crops on the search
        token grid: ``(B, 1, H_x, W_x)``, the features zero-padded so that every cell has a value,
        each map standardised to mean 0 and standard deviation 1."""
        from .correlation import xcorr
        with torch.no_grad():
            fx = self.matcher(x)
            p = kernel.shape[-1] // 2
            r = xcorr(kernel, nn.functional.pad(fx, (p, p, p, p)))
            return (r - r.mean((2, 3), keepdim=True)) / (r.std((2, 3), keepdim=True) + 1e-6)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> tokens ``(B, h·w, D)`` (row-major), backbone and bottleneck."""
        f = self.bottleneck(self.backbone_features(images, self.settings.feature_layer))
        return f.flatten(2).transpose(1, 2)

    def template_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, S_z, S_z)`` templates -> ``(B, T·h_z·w_z, D)`` tokens with positions added."""
        B, T = z.shape[:2]
        t = self.features(z.flatten(0, 1)).reshape(B, T, -1, self.settings.dim)
        t = t + self.pos_z + self.type_embed[:T, None, :]
        return t.flatten(1, 2)

    def encode(self, z_tokens: torch.Tensor, x: torch.Tensor, kernel: torch.Tensor | None = None) -> dict:
        """Run the encoder and the head on cached template tokens and a search crop batch (and,
        with ``settings.correlation``, the first template's :meth:`match_kernel`)."""
        xt = self.features(x) + self.pos_x + self.type_embed[2]
        out = {}
        if self.settings.correlation:
            if kernel is None:
                raise ValueError("this STARK network has a correlation channel: pass the first template's "
                                 "match_kernel(z) to encode()")
            out["response"] = self.response(kernel, x)
            xt = xt + self.corr_embed(out["response"]).flatten(2).transpose(1, 2)
        tokens, attention = self.encoder(torch.cat([z_tokens, xt], dim=1))
        B, L, D = tokens.shape
        fx = tokens[:, L - xt.shape[1]:].transpose(1, 2).reshape(B, D, *self.x_grid)
        logits, corners = self.head(fx)
        if self.settings.score_head:
            q, weights = self.decoder(tokens.new_zeros(B, 1, D), tokens, self.query[None].expand(B, -1, -1))
            out["score"] = self.score_mlp(q[:, 0])[:, 0]          # logit of "the target is in the search region"
            out["query_attention"] = weights[-1][:, :, 0]         # (B, heads, L): where the query looked
        return {"logits": logits, "corners": corners, "attention": attention, **out}

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> dict:
        if z.dim() == 4:
            z = z[:, None]
        kernel = self.match_kernel(z[:, 0]) if self.settings.correlation else None
        return self.encode(self.template_tokens(z), x, kernel)


# --- the loss ---------------------------------------------------------------------------------------

def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Generalised-IoU loss ``1 − GIoU`` of ``(B, 4)`` ``(x1, y1, x2, y2)`` boxes, averaged; ``(B,)`` before the mean.

    ``GIoU = IoU − |C \\ (A ∪ B)| / |C|`` with ``C`` the smallest box holding both: unlike
    ``1 − IoU`` it still has a gradient when the boxes do not overlap.
    """
    x1, y1 = torch.maximum(pred[:, 0], target[:, 0]), torch.maximum(pred[:, 1], target[:, 1])
    x2, y2 = torch.minimum(pred[:, 2], target[:, 2]), torch.minimum(pred[:, 3], target[:, 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area_p = (pred[:, 2] - pred[:, 0]).clamp(min=0) * (pred[:, 3] - pred[:, 1]).clamp(min=0)
    area_t = (target[:, 2] - target[:, 0]).clamp(min=0) * (target[:, 3] - target[:, 1]).clamp(min=0)
    union = area_p + area_t - inter
    iou = inter / union.clamp(min=1e-6)
    cw = torch.maximum(pred[:, 2], target[:, 2]) - torch.minimum(pred[:, 0], target[:, 0])
    ch = torch.maximum(pred[:, 3], target[:, 3]) - torch.minimum(pred[:, 1], target[:, 1])
    hull = (cw * ch).clamp(min=1e-6)
    return (1.0 - (iou - (hull - union) / hull)).mean()


def corner_labels(corners: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Gaussian heat-map labels around the true corners, each map summing to 1.

    Args:
        corners: ``(B, 4)`` true ``(x1, y1, x2, y2)`` in crop pixels.
        xs, ys: ``(W,)``, ``(H,)`` cell coordinates in crop pixels.
        sigma_px: the Gaussian's standard deviation in crop pixels.
    Returns:
        ``(B, 2, H, W)`` float32.
    """
    gx = torch.exp(-(xs[None, None, :] - corners[:, [0, 2], None]) ** 2 / (2 * sigma_px ** 2))  # (B, 2, W)
    gy = torch.exp(-(ys[None, None, :] - corners[:, [1, 3], None]) ** 2 / (2 * sigma_px ** 2))  # (B, 2, H)
    g = gy[..., :, None] * gx[..., None, :]
    return g / g.sum((-2, -1), keepdim=True).clamp(min=1e-12)


def stark_loss(model: STARKNet, batch: dict) -> torch.Tensor:
    """The loss :func:`acvm.training.fit` calls: ``λ_L1·L1 + λ_giou·(1 − GIoU) + λ_hm·CE(heat maps)``.

    ``batch`` holds ``"z"`` (``(B, 3, S_z, S_z)`` or ``(B, T, 3, S_z, S_z)``), ``"x"`` and
    ``"x_box"`` (``(B, 4)`` xywh in search-crop pixels), as :class:`acvm.training.PairSampler` makes them.
    """
    s = model.settings
    out = model(batch["z"], batch["x"])
    b = batch["x_box"].to(out["corners"].dtype)
    target = torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], dim=1)
    loss = s.l1_weight * (out["corners"] - target).abs().mean() / s.search_size
    loss = loss + s.giou_weight * giou_loss(out["corners"], target)
    if s.heatmap_weight > 0:
        stride = LAYERS[s.feature_layer].stride
        labels = corner_labels(target, model.head.xs, model.head.ys, s.heatmap_sigma * stride)
        logp = torch.log_softmax(out["logits"].flatten(2), dim=-1).reshape_as(labels)
        loss = loss + s.heatmap_weight * -(labels * logp).sum((-2, -1)).mean()
    return loss


class _OneSequence:
    """A source that always hands back the same sequence (to cut several pairs from one target)."""

    def __init__(self, seq):
        self.seq = seq

    def sequence(self, rng):
        return self.seq


class TemplatePairs:
    """Training samples for STARK: :class:`acvm.training.PairSampler`'s ``"z"``, ``"x"``,
    ``"x_box"``, and with ``templates = 2`` a second template (STARK-ST's dynamic template) cut
    from another frame of the same sequence, so ``"z"`` is ``(2, 3, S_z, S_z)``.

    ``reuse`` samples in a row come from one sequence: making a synthetic sequence costs twice
    as much as cutting a pair from it, and a batch still mixes ``batch_size / reuse`` sequences.
    ``aspect > 0`` stretches each sequence by ``h/w × exp(U(−aspect, aspect))`` and ``zoom > 0``
    shrinks it by ``exp(−U(0, zoom))`` (small, low-resolution targets like OTB's pedestrians), both
    through :class:`StretchedSequence`.
    """

    def __init__(self, sources, pair_settings, templates: int = 2, reuse: int = 1, aspect: float = 0.0,
                 zoom: float = 0.0):
        # a shrunk sequence whose target falls below the sampler's smallest size is drawn again
        self.sources = [StretchedSource(s, aspect, zoom, pair_settings.min_size) if aspect > 0 or zoom > 0 else s
                        for s in sources]
        w = np.array([float(getattr(src, "weight", 1.0)) for src in self.sources])
        # each source's share of the pairs (--synthetic-fraction); equal shares draw as they always did
        self.weights = None if np.allclose(w, w[0]) else w / w.sum()
        self.pair_settings = pair_settings
        self.templates = templates
        self.reuse = max(1, int(reuse))
        self._pairs, self._left = None, 0

    def __call__(self, rng: np.random.Generator) -> dict:
        from .training import PairSampler
        if self._left <= 0:
            k = (int(rng.integers(len(self.sources))) if self.weights is None
                 else int(rng.choice(len(self.sources), p=self.weights)))
            seq = self.sources[k].sequence(rng)
            self._pairs, self._left = PairSampler(_OneSequence(seq), self.pair_settings), self.reuse
        self._left -= 1
        out = self._pairs(rng)
        if self.templates > 1:
            out["z"] = np.stack([out["z"]] + [self._pairs(rng)["z"] for _ in range(self.templates - 1)])
        return out


def _sampler(settings: STARKSettings, data, reuse: int = 4, aspect: float = 0.0, zoom: float = 0.0,
             shift: float = 48.0, clutter: int = 0) -> TemplatePairs:
    from .training import PairSettings, make_sources
    return TemplatePairs(make_sources(data, clutter), PairSettings(
        template_size=settings.template_size, search_size=settings.search_size, context=settings.context,
        max_gap=50, scale_jitter=0.25, stretch=0.15, shift=shift), settings.templates, reuse, aspect, zoom)


def train(steps: int | None = None, data=None, seed: int = 0, out=None, resume: bool = False, device=None,
          batch_size: int = 32, lr: float = 6e-4, workers: int | None = None, init: str | None = None,
          settings: STARKSettings = STARKSettings(), aspect: float = 0.0, zoom: float = 0.0, shift: float = 48.0,
          clutter: int = 0, freeze: bool = False, correlation: bool = False, progress: bool = True,
          callback=None) -> Path:
    """``acvm train stark-base``: train the STARK-style network on pairs and write ``{"state_dict", "meta"}``.

    The defaults are the recipe of the shipped base weights :data:`BASE_WEIGHTS` (3000 steps of
    batch 32 on one GPU, about 2.5 minutes; on a 2-core CPU a step takes seconds, so ``--steps`` a
    few hundred only smoke-tests); :func:`fine_tune` makes the tracker's weights from them.
    A CPU recipe, ``train(init="siamfc", freeze=True, batch_size=8, lr=1e-3, steps=1500, aspect=0.5,
    zoom=1.0, shift=64)``, takes about 20 minutes on one thread but is undertrained: mean AUC 0.43 on
    six held-out synthetic sequences against 0.71 for the base weights, 0.39 against 0.42 on the
    six real ones.

    Args:
        steps: optimiser steps (default :data:`TRAIN_STEPS`).
        data: sources for :func:`acvm.training.make_sources` (default synthetic sequences).
        seed: seeds the initialisation and the pair stream.
        out: weights file (default :data:`WEIGHTS`); its checkpoint ``out + ".ckpt"`` is removed at the end.
        resume: continue from that checkpoint.
        device: ``"cpu"``/``"cuda"``/``None`` (cuda when available).
        batch_size, lr: AdamW's batch size and initial rate (decayed geometrically to lr/100).
        workers: DataLoader workers making pairs (default: all cores but one, at least 1 when there are 2).
        init: ``"siamfc"`` starts the backbone from the shipped SiamFC weights when they exist (the
            meta says whether it did); ``None`` starts from random weights; the path of a STARK
            weights file continues training from it (fine-tuning; its settings are kept).
        aspect: stretch every training sequence's aspect ratio by ``exp(U(−aspect, aspect))``
            (:class:`StretchedSequence`; real targets are more elongated than the synthetic ones).
        zoom: shrink every training sequence by ``exp(−U(0, zoom))`` (small, blurry targets).
        shift: the target's centre lies up to this many pixels from the search crop's centre; a
            large shift keeps the network from boxing whatever stands out in the middle.
        clutter: synthetic sequences get up to this many clutter shapes
            (:func:`acvm.synth.make_sequence`): search crops then hold other objects that stand
            out as much as the target, so the network must match the template to pick it.
        freeze: keep the backbone (SiamFC's with ``init="siamfc"``, or that of the weights being
            fine-tuned) fixed and train the rest: a step costs about a third, which is what makes
            CPU training possible.
        correlation: give the network the matching branch (``settings.correlation``): SiamFC's
            backbone, loaded from the shipped ``siamfc.pt`` and kept fixed, whose response is
            embedded into the search tokens. Fine-tuning a network without it adds the branch
            (initialised to change nothing) and keeps every trained weight.
        settings: the network's settings (stored in the meta, read back by :func:`load_model`).
        callback: ``callback(step, loss)`` after every step (passed to :func:`acvm.training.fit`).
    Returns:
        the path written.
    """
    import os
    from .training import default_device, train_and_save
    steps = TRAIN_STEPS if steps is None else int(steps)
    out = Path(out) if out else BASE_WEIGHTS
    if workers is None:
        workers = max(1, (os.cpu_count() or 1) - 1) if (os.cpu_count() or 1) >= 2 else 0
    torch.manual_seed(seed)
    started_from, pretrained = "random", False
    siamfc = weights_file("siamfc")
    if init not in (None, "siamfc") and not resume:
        model, before = load_model(init)
        model.train()
        settings = model.settings
        started_from = (f"fine-tuned from {Path(init).name} "
                        f"({before.get('command', '?')}, {before.get('steps', '?')} steps)")
        pretrained = True
        if correlation and not settings.correlation:
            model = _with_correlation(model)
            settings = model.settings
    else:
        if correlation:
            settings = replace(settings, correlation=True)
        model = STARKNet(settings)
        if init == "siamfc" and siamfc.is_file():
            if not resume:   # on resume the checkpoint holds the same backbone
                from .backbone import trained_backbone
                model.backbone.load_state_dict(trained_backbone(siamfc).state_dict())
            started_from, pretrained = f"backbone from {siamfc.name}", True
    if correlation:
        if not resume:   # on resume the checkpoint holds the same matcher
            from .backbone import trained_backbone
            model.matcher.load_state_dict(trained_backbone(siamfc).state_dict())   # names the file when missing
        started_from += f", correlation channel from {siamfc.name}"
    if freeze and pretrained:   # before the optimiser is made: it must see the same parameters on resume
        model.freeze_backbone()
        started_from += ", frozen"
    sampler = _sampler(settings, data, aspect=aspect, zoom=zoom, shift=shift, clutter=clutter)
    if default_device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True   # TF32 matrix products: plenty for this loss
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return train_and_save(model, stark_loss, sampler, steps=steps, seed=seed, data=data, out=out,
                          batch_size=batch_size, workers=workers, lr=lr, resume=resume, device=device,
                          progress=progress, callback=callback, loss_curve=100, init=started_from, aspect=aspect,
                          zoom=zoom, shift=shift, clutter=clutter,
                          settings={k: getattr(settings, k) for k in settings.__dataclass_fields__})


# --- STARK's second stage: the score head ----------------------------------------------------------------

def score_loss(model: STARKNet, batch: dict) -> torch.Tensor:
    """Binary cross-entropy of the score head's logit against ``batch["label"]`` (1: the search crop
    holds the templates' target, 0: it comes from another sequence), as STARK's stage 2 trains it."""
    out = model(batch["z"], batch["x"])
    return nn.functional.binary_cross_entropy_with_logits(out["score"], batch["label"].to(out["score"].dtype))


class ScoreSamples:
    """Stage-2 samples: :class:`TemplatePairs`' ``z`` and ``x`` with ``"label"`` 1, or, with
    probability ``negatives``, the same templates with the search crop of another draw (another
    sequence) and ``"label"`` 0."""

    def __init__(self, pairs: TemplatePairs, others: TemplatePairs, negatives: float = 0.5):
        self.pairs, self.others, self.negatives = pairs, others, float(negatives)

    def __call__(self, rng: np.random.Generator) -> dict:
        out = dict(self.pairs(rng))
        negative = rng.random() < self.negatives
        if negative:
            out["x"] = self.others(rng)["x"]
        out["label"] = np.float32(0.0 if negative else 1.0)
        return out


def train_score(init: str | Path, steps: int = 400, data=None, seed: int = 0, out=None, resume: bool = False,
                device=None, batch_size: int = 16, lr: float = 1e-3, workers: int = 1, progress: bool = True,
                callback=None) -> Path:
    """STARK-ST's second stage: add the decoder, its target query and the score head to a trained
    STARK network (``init``, a weights file) and train them alone, everything else fixed, on
    :class:`ScoreSamples` (half positives, half search crops of other sequences) from ``data``.

    Returns the path written (default ``out``: ``init``'s name with ``-st`` before ``.pt``).
    """
    from .training import train_and_save
    init = Path(init)
    base, before = load_model(init)
    torch.manual_seed(seed)            # the new parts' initialisation follows the seed
    model = _extended(base, STARKNet.SCORE_PARTS, init, score_head=True).freeze_localisation()
    settings = model.settings
    out = Path(out) if out else init.with_name(init.stem + "-st.pt")
    pairs = _sampler(settings, data, **FINE_TUNE_PAIRS)
    others = _sampler(settings, data, reuse=1, **FINE_TUNE_PAIRS)
    return train_and_save(model, score_loss, ScoreSamples(pairs, others), steps=steps, seed=seed, data=data, out=out,
                          batch_size=batch_size, workers=workers, lr=lr, resume=resume, device=device,
                          progress=progress, callback=callback, loss_curve=50,
                          init=f"score head on {init.name} ({before.get('command', '?')}), the rest frozen",
                          settings={k: getattr(settings, k) for k in settings.__dataclass_fields__})


def train_st(steps: int | None = None, data=None, seed: int = 0, out=None, resume: bool = False, device=None,
             batch_size: int = 16, workers: int = 1, progress: bool = True, callback=None, init=None) -> Path:
    """``acvm train stark-st``: :func:`train_score` on the shipped tracker's network (``init``,
    default :data:`WEIGHTS`), writing :data:`ST_WEIGHTS` (or ``out``); arguments as :func:`train`'s."""
    return train_score(init or WEIGHTS, steps=SCORE_STEPS if steps is None else steps, data=data, seed=seed,
                       out=out or ST_WEIGHTS, resume=resume, device=device, batch_size=batch_size,
                       workers=workers, progress=progress, callback=callback)


def _extended(model: STARKNet, parts: tuple[str, ...], source="the network", **changes) -> STARKNet:
    """The same trained network with new ``parts`` (freshly initialised) that ``changes`` to its
    settings add; every trained weight is kept. Raises ``ValueError`` naming ``source`` when its
    weights do not fit (keys other than the new parts missing, or keys left over)."""
    new = STARKNet(replace(model.settings, **changes))
    result = new.load_state_dict(model.state_dict(), strict=False)
    if result.unexpected_keys or any(k.split(".")[0] not in parts for k in result.missing_keys):
        raise ValueError(f"{source}: not a STARK network that {', '.join(changes)} can extend ({result})")
    return new.train(model.training)


def _with_correlation(model: STARKNet) -> STARKNet:
    """The same trained network with a (zero-initialised) matching branch added."""
    return _extended(model, ("matcher", "corr_embed"), correlation=True)


def fine_tune(steps: int | None = None, data=None, seed: int = 0, out=None, resume: bool = False, device=None,
              batch_size: int = 8, workers: int = 1, progress: bool = True, callback=None) -> Path:
    """``acvm train stark``: the shipped tracker's weights, :data:`WEIGHTS`, from the base ones.

    The base network (:data:`BASE_WEIGHTS`, :func:`train`'s recipe on a GPU) boxes well what it
    has seen, textured blobs, but on OTB's pedestrians its heat maps miss the target: it learnt to
    box the salient object more than to match the template. This second stage (the shipped one:
    ``acvm train stark --data ../shared/training --synthetic-fraction 0.5``, 19 minutes on one
    CPU thread) adds the matching branch (``train(correlation=True)``: SiamFC's response to the
    first template as a search-token input) and trains everything after the backbone on pairs
    that need it: real video, and synthetic pairs with clutter shapes as salient as the target
    (``clutter=4``), stretched and shrunk sequences (``aspect=0.5``, ``zoom=1.0``) and targets far from the crop's centre
    (``shift=64``); the backbone stays as it was. Arguments as :func:`train`'s.
    """
    return train(steps=FINE_TUNE_STEPS if steps is None else steps, data=data, seed=seed, out=out or WEIGHTS,
                 resume=resume, device=device, batch_size=batch_size, lr=3e-4, workers=workers,
                 init=str(BASE_WEIGHTS), **FINE_TUNE_PAIRS, freeze=True,
                 correlation=True, progress=progress, callback=callback)


def load_model(path: str | Path | None = None) -> tuple[STARKNet, dict]:
    """The trained network (eval mode) and its meta from a weights file (default :data:`WEIGHTS`).

    The settings the weights were trained with are read back from the meta. Raises
    ``FileNotFoundError`` naming the file when it is missing.
    """
    from .weights import fit_state, read_weights
    path = Path(path) if path else WEIGHTS
    name = {BASE_WEIGHTS.name: "stark-base", ST_WEIGHTS.name: "stark-st"}.get(path.name, "stark")
    state = read_weights(path, name,
                         "or pass weights='random' for the untrained network")
    meta = dict(state["meta"])
    known = STARKSettings.__dataclass_fields__
    settings = STARKSettings(**{k: v for k, v in meta.get("settings", {}).items() if k in known})
    net = STARKNet(settings)
    fit_state(net, state["state_dict"], path)
    return net.eval(), meta


# --- the tracker ----------------------------------------------------------------------------------------

class STARKTracker(Tracker):
    """STARK-style tracking (registered as ``"stark"``).

    Args:
        weights: a weights file (default the shipped :data:`WEIGHTS`), or ``"random"`` for the
            untrained control (same tracker, random network from ``seed``).
        settings: a :class:`STARKSettings` whose *tracking* fields (``motion_sigma`` ... ``min_size``)
            are used; default the current defaults. Keyword overrides work too, e.g.
            ``STARKTracker(confidence_threshold=0)``. The network's fields always come from the weights.
        net: an already built :class:`STARKNet` (used instead of ``weights``).
        device: where the network runs (default cpu).

    After ``update`` it exposes:
        ``search_crop``: ``(S_x, S_x, 3)`` uint8, the region searched; ``search_box``: that region
        ``(x, y, w, h)`` in the frame (``search_region``: its ``(w, h)``); ``heatmaps``:
        ``(2, H_x, W_x)`` float32 corner probabilities (top-left, bottom-right), ``posterior`` the
        same after the motion prior; ``corners``: ``(4,)`` ``(x1, y1, x2, y2)`` in crop pixels;
        ``attention``: ``(L, L)`` float32, the last encoder layer's weights averaged over heads
        (template tokens first); ``corner_attention``: ``(2, T, h_z, w_z)`` float32, the weights
        from the search token at each predicted corner to each template's tokens;
        ``confidence``: the heat maps' peak mass in [0, 1] (mean over the two corners);
        ``templates``: the template crops in use, ``(T, S_z, S_z, 3)`` uint8; ``response``:
        ``(H_x, W_x)`` float32, the matching branch's standardised SiamFC response on the token
        grid (``None`` for a network without it); ``score``: the score head's probability that the
        search region holds the target and ``query_attention``: ``(L,)`` the target query's attention
        over the tokens, averaged over heads (both ``None`` without the head); ``template_updated``:
        whether this frame became the dynamic template (by ``update_rule``).
    """

    name = "stark"
    #: the weights read when none are given, and what the untrained control's network adds to ``settings``
    default_weights = WEIGHTS
    random_network: dict = {}

    def __init__(self, weights=None, settings: STARKSettings | None = None, net: STARKNet | None = None,
                 seed: int = 0, device: str = "cpu", **overrides):
        super().__init__()
        self.meta = {}
        if net is None:
            if weights == "random":
                torch.manual_seed(seed)
                net = STARKNet(replace(settings or STARKSettings(), **self.random_network))
            else:
                net, self.meta = load_model(self.default_weights if weights is None else weights)
        # the network's fields come from the weights; the tracking ones from the caller or the
        # current defaults (never from the weights' meta, so improving a default needs no retraining)
        tracking = ("motion_sigma", "local_window", "max_aspect", "confidence_threshold", "size_lr",
                    "max_size_change", "update_interval", "update_threshold", "update_rule", "score_threshold",
                    "min_size")
        chosen = settings or STARKSettings()
        self.settings = replace(net.settings, **{**{k: getattr(chosen, k) for k in tracking}, **overrides})
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.stride = LAYERS[self.settings.feature_layer].stride
        self.kernel = None
        rule = self.settings.update_rule
        if rule not in ("auto", "score", "confidence", "never"):
            raise ValueError(f"update_rule must be 'auto', 'score', 'confidence' or 'never', got {rule!r}")
        if rule == "score" and not net.settings.score_head:
            raise ValueError("update_rule='score' needs a network with the score head (train it with "
                             "acvm.stark.train_score); these weights have none")
        self.update_rule = ("score" if net.settings.score_head else "confidence") if rule == "auto" else rule

    # the steps of one frame ----------------------------------------------------------------------------

    def region(self, scale: float = 1.0) -> np.ndarray:
        """``(width, height)`` in frame pixels of the region a crop covers: the template's context
        region (side ``context_size(w, h)``) times ``scale``, stretched so that the target looks at
        most ``max_aspect`` times taller than wide (or wider than tall) in the square crop.

        The training targets' aspect ratios stay within about 1:2; a walking person (1:3) seen
        through a stretched crop looks like one of them, and boxes map back exactly.
        """
        s = self.settings
        w, h = self.size
        side = context_size(w, h, s.context) * scale
        r = excess_aspect(w, h, s.max_aspect)   # region height / width
        return np.array([side / np.sqrt(r), side * np.sqrt(r)])

    def crop_search(self, image: np.ndarray) -> np.ndarray:
        """The search crop around the last centre, ``S_x/S_z`` times the template's region:
        ``(S_x, S_x, 3)`` uint8 (also sets ``search_region`` and ``search_box``)."""
        s = self.settings
        self.search_region = self.region(s.search_size / s.template_size)
        self.search_side = float(np.sqrt(np.prod(self.search_region)))
        self.search_box = cxcywh_to_xywh([*self.centre, *self.search_region])
        return crop_and_resize(image, self.centre, tuple(self.search_region), s.search_size, pad_value=self.pad)

    def crop_template(self, image: np.ndarray) -> np.ndarray:
        """The template crop around the current box: ``(S_z, S_z, 3)`` uint8."""
        s = self.settings
        return crop_and_resize(image, self.centre, tuple(self.region()), s.template_size, pad_value=self.pad)

    @torch.no_grad()
    def predict(self, crop: np.ndarray) -> dict:
        """Run the network on one search crop against the templates: corners, heat maps, attention."""
        out = self.net.encode(self.z_tokens, to_tensor(crop, self.device), self.kernel)
        logits = out["logits"][0]
        P = torch.softmax(logits.flatten(1), dim=1).reshape_as(logits)
        return {"corners": out["corners"][0].cpu().numpy().astype(np.float64),
                "heatmaps": P.cpu().numpy(),
                "score": float(torch.sigmoid(out["score"][0])) if "score" in out else None,
                "query_attention": out["query_attention"][0].mean(0).cpu().numpy() if "query_attention" in out else None,
                "attention": out["attention"][-1][0].mean(0).cpu().numpy(),
                "response": out["response"][0, 0].cpu().numpy() if "response" in out else None}

    def peak_mass(self, heatmaps: np.ndarray) -> float:
        """Confidence: the probability within one cell of each heat map's peak, averaged over the two."""
        masses = []
        for P in heatmaps:
            i, j = np.unravel_index(int(np.argmax(P)), P.shape)
            masses.append(float(P[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].sum()))
        return float(np.mean(masses))

    def localise(self, heatmaps: np.ndarray, last_corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Corners from the heat maps, with a motion prior and a local soft-argmax.

        The soft-argmax of a heat map with two modes (a look-alike, a second plausible corner)
        lands between them, on neither. So each map is first multiplied by a Gaussian around the
        last frame's corner (std ``motion_sigma`` × the last box's size: SiamFC's cosine window in
        probabilistic form), then the expectation is taken within ``local_window`` cells of the
        mode only.

        Args:
            heatmaps: ``(2, H, W)`` corner probabilities (top-left, bottom-right).
            last_corners: ``(4,)`` the last box's ``(x1, y1, x2, y2)`` in this crop's pixels.
        Returns:
            ``(corners (4,) in crop pixels, posterior maps (2, H, W))``.
        """
        s = self.settings
        xs = self.net.head.xs.cpu().numpy().astype(np.float64)
        ys = self.net.head.ys.cpu().numpy().astype(np.float64)
        size = np.sqrt(max(last_corners[2] - last_corners[0], 1.0) * max(last_corners[3] - last_corners[1], 1.0))
        corners, posts = [], []
        for P, (cx, cy) in zip(heatmaps.astype(np.float64), last_corners.reshape(2, 2)):
            if s.motion_sigma > 0:
                sig = s.motion_sigma * size
                P = P * np.exp(-((ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2) / (2 * sig * sig))
            P = P / max(P.sum(), 1e-300)
            posts.append(P)
            if s.local_window >= 0:
                i, j = np.unravel_index(int(np.argmax(P)), P.shape)
                k = s.local_window
                P = np.zeros_like(P) + np.pad(P[max(i - k, 0):i + k + 1, max(j - k, 0):j + k + 1],
                                              ((max(i - k, 0), P.shape[0] - min(i + k + 1, P.shape[0])),
                                               (max(j - k, 0), P.shape[1] - min(j + k + 1, P.shape[1]))))
                P = P / max(P.sum(), 1e-300)
            corners += [float((P.sum(0) * xs).sum()), float((P.sum(1) * ys).sum())]
        return np.array(corners), np.stack(posts)

    def corner_attention_maps(self, corners: np.ndarray, attention: np.ndarray) -> np.ndarray:
        """Attention from the search tokens at the two corners to the template tokens: ``(2, T, h_z, w_z)``."""
        hz, wz = self.net.z_grid
        nz = self.n_templates * hz * wz
        Hx, Wx = self.net.x_grid
        xs = self.net.head.xs.cpu().numpy()
        maps = []
        for x, y in corners.reshape(2, 2):
            i, j = int(np.argmin(np.abs(xs - y))), int(np.argmin(np.abs(xs - x)))
            row = attention[nz + i * Wx + j, :nz]
            maps.append(row.reshape(self.n_templates, hz, wz))
        return np.stack(maps).astype(np.float32)

    def frame_record(self) -> dict:
        """What :func:`draw_stark_frame` draws, for the last frame (copies, safe to keep)."""
        xs = self.net.head.xs.cpu().numpy()
        zc = cell_centres(self.net.z_grid[0], self.settings.feature_layer).numpy()
        half = self.stride / 2.0
        return {"frame": self.frame, "search_crop": self.search_crop.copy(), "heatmaps": self.heatmaps.copy(),
                "corners": self.corners.copy(), "corner_attention": self.corner_attention.copy(),
                "templates": self.templates.copy(), "confidence": self.confidence, "box": self.box.copy(),
                "heat_extent": (xs[0] - half, xs[-1] + half, xs[-1] + half, xs[0] - half),
                "template_extent": (zc[0] - half, zc[-1] + half, zc[-1] + half, zc[0] - half),
                "response": None if self.response is None else self.response.copy(),
                "search_box": np.asarray(self.search_box, dtype=np.float64).copy(),
                "score": self.score, "template_updated": self.template_updated,
                "query_attention": None if self.query_attention is None else self.query_attention.copy()}

    def _set_templates(self, crops: list[np.ndarray]) -> None:
        self.templates = np.stack(crops)
        self.n_templates = len(crops)
        with torch.no_grad():
            z = to_tensor(self.templates, self.device)[None]          # (1, T, 3, S_z, S_z)
            self.z_tokens = self.net.template_tokens(z)

    # the interface ---------------------------------------------------------------------------------------

    def init(self, image: np.ndarray, box) -> None:
        """Cut the template around ``box`` (it also starts as the dynamic template)."""
        image, box, self.centre, self.size = check_init(image, box)
        s = self.settings
        self.pad = mean_colour(image)
        self.image_shape = image.shape
        z = self.crop_template(image)
        self.first_template = z
        self._set_templates([z] * s.templates)
        if self.net.settings.correlation:      # the first template's correlation kernel, kept for the sequence
            with torch.no_grad():
                self.kernel = self.net.match_kernel(to_tensor(self.templates, self.device)[:1])
        self.box = np.asarray(box, dtype=np.float64).copy()
        self.frame = 0
        self.confidence = self.score = self.query_attention = None
        self.template_updated = False
        self.heatmaps = self.attention = self.corner_attention = self.corners = self.response = None

    def update(self, image: np.ndarray) -> np.ndarray:
        """Search around the last position; return the new ``(x, y, w, h)``."""
        image = check_image(image, "image")
        s = self.settings
        self.frame += 1
        self.search_crop = self.crop_search(image)
        out = self.predict(self.search_crop)
        self.heatmaps, self.attention, self.response = out["heatmaps"], out["attention"], out.get("response")
        self.score, self.query_attention = out.get("score"), out.get("query_attention")
        region = tuple(self.search_region)
        last = image_to_crop(self.box, self.centre, region, s.search_size)
        self.corners, self.posterior = self.localise(self.heatmaps, np.r_[last[:2], last[:2] + last[2:]])
        self.corner_attention = self.corner_attention_maps(self.corners, self.attention)
        self.confidence = self.peak_mass(self.heatmaps)

        x1, y1, x2, y2 = self.corners
        crop_box = np.array([x1, y1, max(x2 - x1, 1.0), max(y2 - y1, 1.0)])
        found = crop_to_image(crop_box, self.centre, region, s.search_size)
        if self.confidence >= s.confidence_threshold:
            fc = xywh_to_cxcywh(found)
            self.centre = fc[:2]
            size = (1 - s.size_lr) * self.size + s.size_lr * fc[2:]
            size = np.clip(size, self.size / (1 + s.max_size_change), self.size * (1 + s.max_size_change))
            self.size = np.maximum(size, s.min_size)
        self.box = clip_box(cxcywh_to_xywh([*self.centre, *self.size]), self.image_shape, s.min_size)
        self.centre, self.size = xywh_to_cxcywh(self.box)[:2], xywh_to_cxcywh(self.box)[2:]

        self.template_updated = False
        if s.templates > 1 and self.frame % s.update_interval == 0:
            if self.update_rule == "score":
                update = self.score >= s.score_threshold
            else:
                update = self.update_rule == "confidence" and self.confidence >= s.update_threshold
            if update:
                z = self.crop_template(image)
                self._set_templates([self.first_template, z])
                self.template_updated = True
        return self.box.copy()


class STARKSTTracker(STARKTracker):
    """STARK-ST (registered as ``"stark-st"``): :class:`STARKTracker` on the network with the score
    head (default weights :data:`ST_WEIGHTS`), so that the dynamic template is replaced when the
    score head says the search region holds the target (``update_rule="auto"`` means ``"score"``
    here; ``update_rule="never"`` is the ablation). Arguments as :class:`STARKTracker`'s."""

    name = "stark-st"
    default_weights = ST_WEIGHTS
    random_network = {"score_head": True}


# --- drawing ----------------------------------------------------------------------------------------------

def draw_stark_frame(record: dict, frame: int | None = None):
    """One tracked frame as notebook 11 shows it: the search crop with the predicted box and both
    corner heat maps, and the attention from each predicted corner to the templates.

    Args:
        record: ``{"search_crop", "heatmaps", "corners", "corner_attention", "templates",
            "confidence"}`` as a :class:`STARKTracker` exposes them after ``update`` (values for one
            frame), optionally ``"frame"``.
        frame: shown in the title (default ``record.get("frame")``).
    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from .attention import plot_query_attention
    crop = record["search_crop"]
    S = crop.shape[0]
    H = record["heatmaps"]
    att = record["corner_attention"]                      # (2, T, hz, wz)
    T = att.shape[1]
    fig, axes = plt.subplots(1, 2 + 2 * T, figsize=(2.5 * (2 + 2 * T), 2.9))
    x1, y1, x2, y2 = record["corners"]
    ax = axes[0]
    ax.imshow(crop, extent=(0, S, S, 0))
    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="#D55E00", lw=2))
    ax.plot([x1, x2], [y1, y2], "o", color="cyan", ms=6)
    ax.set_title(f"search region, frame {record.get('frame', frame) if frame is None else frame}\n"
                 f"confidence {record['confidence']:.2f}", fontsize="small")
    ax = axes[1]
    ax.imshow(crop, extent=(0, S, S, 0))
    heat = H.max(0) / (H.max() + 1e-12)
    ax.imshow(heat, extent=record.get("heat_extent", (0, S, S, 0)), cmap="inferno", alpha=0.65)
    ax.set_title("corner heat maps (both)", fontsize="small")
    names = ("top-left", "bottom-right")
    for k in range(2):
        for t in range(T):
            ax = axes[2 + k * T + t]
            w = att[k, t]
            plot_query_attention(record["templates"][t], w, ax=ax, alpha=0.6,
                                 extent=record.get("template_extent"), vmax=float(att[k].max()))
            kind = "first" if t == 0 else "dynamic"
            ax.set_title(f"{names[k]} → {kind} template\n(sum {w.sum():.2f})", fontsize="small")
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


def draw_query_attention(record: dict, frame: int | None = None):
    """Where STARK-ST's target query looked in one frame: its attention (last decoder layer, mean
    over heads) over the search tokens laid on the search crop, and over each template's tokens.

    Args:
        record: a :meth:`STARKTracker.frame_record` of a network with the score head (its
            ``"query_attention"``, ``(T·h_z·w_z + h_x·w_x,)`` with the template tokens first).
        frame: shown in the title (default ``record["frame"]``).
    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from .attention import plot_query_attention
    weights = record.get("query_attention")
    if weights is None:
        raise ValueError("this record has no query attention: the network has no score head (stark-st)")
    templates = record["templates"]
    T = len(templates)
    h_z, w_z = record["corner_attention"].shape[2:]       # the template grid
    n_z = h_z * w_z
    search = weights[T * n_z:].reshape(record["heatmaps"].shape[1:])
    vmax = float(weights.max())
    fig, axes = plt.subplots(1, 1 + T, figsize=(3.2 * (1 + T), 3.3))
    crop = record["search_crop"]
    plot_query_attention(crop, search, ax=axes[0], extent=record["heat_extent"], vmax=vmax)
    frame = record.get("frame") if frame is None else frame
    updated = " → new dynamic template" if record.get("template_updated") else ""
    axes[0].set_title(f"query → search tokens, frame {frame}\nscore {record['score']:.2f}{updated} "
                      f"(sum {search.sum():.2f})", fontsize="small")
    for t in range(T):
        w = weights[t * n_z:(t + 1) * n_z].reshape(h_z, w_z)
        plot_query_attention(templates[t], w, ax=axes[1 + t], extent=record["template_extent"], vmax=vmax)
        kind = "first" if t == 0 else "dynamic"
        axes[1 + t].set_title(f"query → {kind} template (sum {w.sum():.2f})", fontsize="small")
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig
