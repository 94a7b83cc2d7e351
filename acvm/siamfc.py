"""SiamFC: a fully-convolutional Siamese network that finds the exemplar in the search region.

Bertinetto et al., *Fully-Convolutional Siamese Networks for Object Tracking*, ECCV-W 2016.
One embedding ``φ`` (:class:`acvm.backbone.Backbone`) is applied to the exemplar ``z`` (the
target with context, 127×127) and to the search region ``x`` (255×255); the cross-correlation
layer scores every position of ``x``:

    f(z, x) = φ(z) ⋆ φ(x) · s + b          (a 17×17 score map)

Training (offline, on pairs of frames Δ apart) labels the score map +1 within ``R`` cells of
the target and -1 elsewhere and minimises the **balanced logistic loss** (positives and
negatives each carry half the weight). Tracking keeps ``φ(z)`` of the first frame, searches a
**scale pyramid** around the last position, penalises scale changes, blends a **cosine window**
into the upsampled score map (large displacements are unlikely) and damps the size update.

What a notebook can call on its own: :func:`response_labels`, :func:`balanced_logistic_loss`,
:class:`SiamFCNet`, :func:`siamfc_loss`, :func:`train`, and :class:`SiamFCTracker`'s steps
(``crop_pyramid``, ``score``, ``localise``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import Backbone, output_size, to_tensor
from .boxes import context_size, crop_and_resize, cxcywh_to_xywh, mean_colour, xywh_to_cxcywh
from .correlation import cosine_window, xcorr
from .registry import weights_file
from .tracker import Tracker, check_image, check_init

__all__ = ["SiamFCSettings", "SiamFCNet", "response_labels", "balanced_logistic_loss", "siamfc_loss",
           "target_cells", "train", "SiamFCTracker", "ScoreMapViewer", "WEIGHTS", "TRAIN_STEPS"]

#: where the shipped weights live
WEIGHTS = weights_file("siamfc")
#: optimiser steps of the shipped weights (the default of ``acvm train siamfc``)
TRAIN_STEPS = 3000


@dataclass(frozen=True)
class SiamFCSettings:
    """SiamFC's settings, named as in the paper and its reference code."""

    exemplar_size: int = 127        # side of the exemplar crop z in pixels
    instance_size: int = 255        # side of the search crop x in pixels
    context: float = 0.5            # context margin p = context·(w + h) around the target
    total_stride: int = 8           # pixels of x per score-map cell
    radius: float = 2.0             # R: score-map cells within R of the target are positives (16 px)
    response_scale: float = 1e-3    # s: fixed scale of the correlation (keeps the logits near 1)
    scale_num: int = 3              # scales of the search pyramid
    scale_step: float = 1.02        # ratio between neighbouring scales (the paper's 1.0375; docs/validation.md)
    scale_penalty: float = 0.97     # score multiplier for the scales that change the size
    scale_lr: float = 0.6           # damping: the size moves this far towards the chosen scale
    response_up: int = 16           # upsampling of the 17×17 score map (bicubic) before the peak
    window_influence: float = 0.25  # weight of the cosine window blended into the response
    min_size: float = 4.0           # smallest target side in pixels the tracker allows
    template_lr: float = 0.01       # η: φ(z) ← (1−η)·φ(z) + η·φ(z_t) after confident frames; 0: the paper's fixed exemplar
    template_confidence: float = 0.5  # the template is updated only when the confidence is at least this


# --- the network ----------------------------------------------------------------------------------

class SiamFCNet(nn.Module):
    """``f(z, x) = s·φ(z) ⋆ φ(x) + b``: ``(B,3,127,127), (B,3,255,255) -> (B,1,17,17)`` float32 logits.

    Inputs are images in [0, 1] (:func:`acvm.backbone.to_tensor`). ``s`` is fixed
    (``response_scale``), ``b`` is learned.
    """

    def __init__(self, settings: SiamFCSettings = SiamFCSettings()):
        super().__init__()
        self.settings = settings
        self.backbone = Backbone()
        self.bias = nn.Parameter(torch.zeros(1))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``φ``: ``(B, 3, H, W)`` -> ``(B, 128, H', W')``."""
        return self.backbone(images)

    def head(self, fz: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
        """The cross-correlation layer on embeddings: ``(B,C,h,w), (B,C,H,W) -> (B,1,H-h+1,W-w+1)``."""
        return xcorr(fz, fx) * self.settings.response_scale + self.bias

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(z), self.embed(x))


# --- labels and loss ---------------------------------------------------------------------------------

def target_cells(x_box, score_size: int, instance_size: int = 255, total_stride: int = 8) -> np.ndarray:
    """Where the target's centre falls on the score map: ``(B, 4)`` or ``(4,)`` boxes in search-crop
    pixels -> ``(B, 2)`` or ``(2,)`` float64 ``(row, col)`` in cells.

    Cell ``(i, j)`` looks at crop pixel ``S_x/2 + (j - (n-1)/2)·stride`` (the middle cell at the
    crop's centre), so a target centred in the crop is at ``((n-1)/2, (n-1)/2)``.
    """
    c = xywh_to_cxcywh(np.asarray(x_box, dtype=np.float64))[..., :2]
    cells = (c - instance_size / 2.0) / total_stride + (score_size - 1) / 2.0
    return cells[..., ::-1].copy()


def response_labels(shape, centre=None, radius: float = 2.0) -> np.ndarray:
    """SiamFC's labels: 1 on score-map cells within ``radius`` cells of ``centre``, 0 elsewhere.

    Args:
        shape: ``(H, W)`` of the score map (17×17 for SiamFC).
        centre: ``(row, col)`` of the target in cells (fractional allowed; default the middle
            ``((H-1)/2, (W-1)/2)``), or an ``(B, 2)`` array for a batch.
        radius: ``R`` in cells; a cell is positive when its distance to ``centre`` is ``≤ R``.
    Returns:
        ``H×W`` float32 (or ``B×H×W`` for a batch of centres) of 0 and 1.
    """
    h, w = int(shape[0]), int(shape[1])
    c = np.array([(h - 1) / 2.0, (w - 1) / 2.0]) if centre is None else np.asarray(centre, dtype=np.float64)
    rows, cols = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    cc = np.atleast_2d(c)
    d2 = (rows[None, :, None] - cc[:, 0, None, None]) ** 2 + (cols[None, None, :] - cc[:, 1, None, None]) ** 2
    out = (d2 <= radius ** 2 + 1e-9).astype(np.float32)
    return out[0] if c.ndim == 1 else out


def balanced_logistic_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SiamFC's balanced logistic loss, averaged over the batch.

    With ``y = +1`` on positives and ``-1`` on negatives, each score-map cell costs
    ``ℓ(y, v) = log(1 + exp(-y·v))``. Positives share half of the total weight and negatives the
    other half, so the few positives (about 13 of 289 cells) are not drowned out:

        L = Σ_pos 0.5/n_pos · ℓ(+1, v) + Σ_neg 0.5/n_neg · ℓ(-1, v)      (per map, then the mean)

    Args:
        scores: ``(B, 1, H, W)`` (or ``(B, H, W)``) float logits ``v``.
        labels: the same shape, 1 for positives and 0 for negatives (each map needs at least one of each).
    Returns:
        a scalar tensor.
    """
    v = scores.reshape(scores.shape[0], -1)
    pos = labels.reshape(labels.shape[0], -1).to(v.dtype)
    neg = 1.0 - pos
    n_pos = pos.sum(1, keepdim=True).clamp(min=1.0)
    n_neg = neg.sum(1, keepdim=True).clamp(min=1.0)
    weights = 0.5 * pos / n_pos + 0.5 * neg / n_neg
    # softplus(-y v) = log(1 + exp(-y v)), computed without overflow
    cost = F.softplus(-(2.0 * pos - 1.0) * v)
    return (weights * cost).sum(1).mean()


def siamfc_loss(model: SiamFCNet, batch: dict) -> torch.Tensor:
    """The loss :func:`acvm.training.fit` calls: labels from the target's position in each search crop."""
    scores = model(batch["z"], batch["x"])
    s = model.settings
    cells = target_cells(batch["x_box"].cpu().numpy(), scores.shape[-1], s.instance_size, s.total_stride)
    labels = torch.from_numpy(response_labels(scores.shape[-2:], cells, s.radius)).to(scores.device)
    return balanced_logistic_loss(scores, labels[:, None])


# --- training -----------------------------------------------------------------------------------------

def train(steps: int | None = None, data=None, seed: int = 0, out=None, resume: bool = False,
          device=None, batch_size: int = 8, lr: float = 3e-3, workers: int | None = None,
          progress: bool = True, pair_settings: dict | None = None, init=None) -> Path:
    """``acvm train siamfc``: train SiamFC on pairs and write ``{"state_dict", "meta"}`` to ``out``.

    Args:
        steps: optimiser steps (default :data:`TRAIN_STEPS`, the shipped weights' number).
        data: sources for :func:`acvm.training.make_sources` (default synthetic sequences).
        seed: seeds the network's initialisation and the pair stream.
        out: weights file (default :data:`WEIGHTS`); the checkpoint is ``out + ".ckpt"`` and is
            removed when training finishes.
        resume: continue from that checkpoint.
        device: ``"cpu"``/``"cuda"``/``None`` (cuda when available).
        batch_size, lr: the optimiser's batch size and initial learning rate (AdamW, decayed
            geometrically to lr/100).
        workers: DataLoader worker processes making pairs (default: none on 2 cores, where a
            worker only competes with the network for the same cores; up to 4 on more).
        pair_settings: overrides of :class:`acvm.training.PairSettings` fields (augmentation, Δ),
            recorded in the meta.
        init: a SiamFC weights file to start from (fine-tuning) instead of random weights.
    Returns:
        the path written.
    """
    from .training import PairSampler, PairSettings, make_sources, train_and_save
    steps = TRAIN_STEPS if steps is None else int(steps)
    out = Path(out) if out else WEIGHTS
    settings = SiamFCSettings()
    sampler = PairSampler(make_sources(data), PairSettings(template_size=settings.exemplar_size,
                                                           search_size=settings.instance_size,
                                                           context=settings.context, **(pair_settings or {})))
    if workers is None:
        workers = max(0, min(4, (os.cpu_count() or 1) - 2))
    torch.manual_seed(seed)
    model = SiamFCNet(settings)
    extra = {"pair_settings": {k: float(v) for k, v in pair_settings.items()}} if pair_settings else {}
    if init is not None:
        from .weights import describe_weights, load_weights
        extra["init"] = describe_weights(init, load_weights(init, model, "siamfc"))
    # the loss curve as means over blocks of 10 steps, so a notebook can plot how the weights came about
    return train_and_save(model, siamfc_loss, sampler, steps=steps, seed=seed, data=data, out=out,
                          batch_size=batch_size, workers=workers, lr=lr, resume=resume, device=device,
                          progress=progress, loss_curve=max(1, steps // 10), **extra)


# --- the tracker --------------------------------------------------------------------------------------

class SiamFCTracker(Tracker):
    """SiamFC tracking (registered as ``"siamfc"``).

    Args:
        weights: a weights file (default the shipped :data:`WEIGHTS`), or ``"random"`` for the
            untrained control (same tracker, random embedding from ``seed``).
        settings: a :class:`SiamFCSettings` (or keyword overrides of its fields).
        net: an already built :class:`SiamFCNet` (used instead of ``weights``).
        device: where the network runs (default cpu: one frame is too small to gain on a GPU).

    After ``update`` it exposes:
        ``score_maps``: ``(S, 17, 17)`` float32, the raw score map of each scale;
        ``scales``: ``(S,)`` the scale factors searched;
        ``best_scale``: index of the chosen scale;
        ``response``: ``(272, 272)`` float64, the chosen scale's upsampled, normalised, windowed map;
        ``peak``: ``(row, col)`` of its maximum; ``search_box``: the searched region ``(x, y, w, h)``
        (of the middle scale) in the frame; ``confidence``: sigmoid of the chosen map's largest score.
    """

    name = "siamfc"

    def __init__(self, weights=None, settings: SiamFCSettings | None = None, net: SiamFCNet | None = None,
                 seed: int = 0, device: str = "cpu", **overrides):
        super().__init__()
        self.settings = replace(settings or SiamFCSettings(), **overrides)
        self.device = torch.device(device)
        self.meta: dict = {}
        if net is None:
            torch.manual_seed(seed)
            net = SiamFCNet(self.settings)
            if weights != "random":
                from .weights import load_weights
                self.meta = load_weights(Path(weights) if weights else WEIGHTS, net, "siamfc",
                                         missing_hint="or pass weights='random' for the untrained network")
        self.net = net.to(self.device).eval()
        s = self.settings
        self.score_size = output_size(s.instance_size) - output_size(s.exemplar_size) + 1
        up = self.score_size * s.response_up
        self.window = cosine_window((up, up))
        self.window /= self.window.sum()
        self.scales = s.scale_step ** (np.arange(s.scale_num) - (s.scale_num - 1) / 2.0)
        penalties = np.full(s.scale_num, s.scale_penalty)
        penalties[(s.scale_num - 1) // 2] = 1.0
        self.penalties = penalties

    # the steps of one frame, each usable on its own ----------------------------------------------

    def crop_pyramid(self, image: np.ndarray) -> np.ndarray:
        """Search crops at every scale around the last centre: ``(S, 255, 255, 3)`` uint8."""
        s = self.settings
        return np.stack([crop_and_resize(image, self.centre, self.x_side * k, s.instance_size, pad_value=self.pad)
                         for k in self.scales])

    @torch.no_grad()
    def score(self, crops: np.ndarray) -> np.ndarray:
        """Score maps of the search crops against the exemplar: ``(S, 255, 255, 3)`` -> ``(S, 17, 17)`` float32."""
        fx = self.net.embed(to_tensor(crops, self.device))
        out = self.net.head(self.kernel.expand(len(crops), -1, -1, -1), fx)
        return out[:, 0].cpu().numpy()

    def localise(self, score_maps: np.ndarray) -> tuple[int, np.ndarray, tuple[float, float]]:
        """Pick the scale and the peak: upsample, penalise other scales, blend the cosine window.

        Returns ``(best scale index, windowed response (272×272), (row, col) of its peak)``.
        """
        s = self.settings
        up = self.score_size * s.response_up
        maps = np.stack([cv2.resize(m.astype(np.float64), (up, up), interpolation=cv2.INTER_CUBIC)
                         for m in score_maps])
        best = int(np.argmax(maps.reshape(len(maps), -1).max(1) * self.penalties))
        r = maps[best] - maps[best].min()
        r /= r.sum() + 1e-12
        r = (1.0 - s.window_influence) * r + s.window_influence * self.window
        peak = np.unravel_index(int(np.argmax(r)), r.shape)
        return best, r, (float(peak[0]), float(peak[1]))

    # the interface ----------------------------------------------------------------------------------

    @torch.no_grad()
    def init(self, image: np.ndarray, box) -> None:
        """Cut the exemplar z around ``box`` and keep its embedding φ(z) for the whole sequence."""
        image, box, self.centre, self.size = check_init(image, box)
        s = self.settings
        w, h = self.size
        self.pad = mean_colour(image)
        self.z_side = context_size(w, h, s.context)
        self.x_side = self.z_side * s.instance_size / s.exemplar_size
        self.exemplar = crop_and_resize(image, self.centre, self.z_side, s.exemplar_size, pad_value=self.pad)
        self.kernel = self.net.embed(to_tensor(self.exemplar, self.device))
        self.image_size = np.array([image.shape[1], image.shape[0]], dtype=np.float64)
        self.box = np.asarray(box, dtype=np.float64).copy()
        self.score_maps = None
        self.response = None
        self.confidence = None

    def update(self, image: np.ndarray) -> np.ndarray:
        """Search the scale pyramid around the last centre; return the new ``(x, y, w, h)``."""
        image = check_image(image, "image")
        s = self.settings
        self.search_box = cxcywh_to_xywh([*self.centre, self.x_side, self.x_side])
        self.score_maps = self.score(self.crop_pyramid(image))
        best, self.response, self.peak = self.localise(self.score_maps)
        self.best_scale = best
        self.confidence = float(1.0 / (1.0 + np.exp(-float(self.score_maps[best].max()))))

        # response pixel -> score-map cells -> crop pixels -> frame pixels
        up = self.response.shape[0]
        disp = (np.array(self.peak[::-1]) - (up - 1) / 2.0) / s.response_up * s.total_stride
        disp *= self.x_side * self.scales[best] / s.instance_size
        self.centre = np.clip(self.centre + disp, 0.0, self.image_size)

        factor = (1.0 - s.scale_lr) + s.scale_lr * self.scales[best]
        self.size = np.maximum(self.size * factor, s.min_size)
        self.size = np.minimum(self.size, self.image_size)
        self.z_side = context_size(*self.size, s.context)
        self.x_side = self.z_side * s.instance_size / s.exemplar_size
        self.box = cxcywh_to_xywh([*self.centre, *self.size])
        if s.template_lr > 0 and self.confidence >= s.template_confidence:
            self.update_template(image)
        return self.box.copy()

    @torch.no_grad()
    def update_template(self, image: np.ndarray) -> None:
        """Blend the embedding of the exemplar cut at the new box into φ(z) at rate η (``template_lr``)."""
        s = self.settings
        z = crop_and_resize(image, self.centre, self.z_side, s.exemplar_size, pad_value=self.pad)
        self.kernel = (1.0 - s.template_lr) * self.kernel + s.template_lr * self.net.embed(to_tensor(z, self.device))


# --- the interactive view ------------------------------------------------------------------------------

class ScoreMapViewer:
    """A SiamFC run over a sequence, with the score map of every scale kept for every frame.

    ``draw(frame)`` is the view's callback (tests call it directly); ``widget()`` adds a frame slider.

    Args:
        tracker: a :class:`SiamFCTracker` (it is re-initialised on frame 0).
        sequence: anything with ``len``, ``[i]`` and ``.boxes`` (ground truth, frame 0 initialises).
        n_frames: how many frames to run (default all).
    """

    def __init__(self, tracker: SiamFCTracker, sequence, n_frames: int | None = None):
        n = len(sequence) if n_frames is None else min(n_frames, len(sequence))
        self.name = getattr(sequence, "name", "")
        self.frames = [sequence[i] for i in range(n)]
        self.groundtruth = np.asarray(sequence.boxes, dtype=np.float64)[:n]
        self.scales = tracker.scales
        tracker.init(self.frames[0], self.groundtruth[0])
        self.boxes = [self.groundtruth[0].copy()]
        self.search_boxes, self.score_maps, self.best, self.peaks = [None], [None], [None], [None]
        for frame in self.frames[1:]:
            self.boxes.append(tracker.update(frame))
            self.search_boxes.append(tracker.search_box)
            self.score_maps.append(tracker.score_maps.copy())
            self.best.append(tracker.best_scale)
            # the peak in score-map cells (the upsampling maps pixel p to cell (p + 0.5)/up - 0.5)
            up = tracker.settings.response_up
            self.peaks.append(tuple((np.array(tracker.peak) + 0.5) / up - 0.5))
        self.boxes = np.array(self.boxes)

    def __len__(self) -> int:
        return len(self.frames)

    def draw(self, frame: int = 1, figsize=(13, 3.6)):
        """Frame ``frame`` with the ground truth, SiamFC's box and the searched region, and the raw
        score maps of the scales, the chosen one framed with its peak marked. Returns the Figure."""
        import matplotlib.pyplot as plt
        from .viz import draw_box
        if not 1 <= frame < len(self):
            raise IndexError(f"frame {frame} is out of range: the viewer shows frames 1..{len(self) - 1}")
        maps = self.score_maps[frame]
        fig, axes = plt.subplots(1, 1 + len(maps), figsize=figsize,
                                 gridspec_kw={"width_ratios": [1.6] + [1] * len(maps)})
        ax = axes[0]
        ax.imshow(self.frames[frame])
        draw_box(ax, self.groundtruth[frame], "#009E73", "ground truth")
        draw_box(ax, self.boxes[frame], "#D55E00", "SiamFC")
        draw_box(ax, self.search_boxes[frame], "#E69F00", "search region", lw=1, ls="--")
        ax.legend(loc="upper right", fontsize="small", framealpha=0.7)
        ax.set_title(f"{self.name} frame {frame}")
        ax.set_axis_off()
        lo, hi = float(np.min(maps)), float(np.max(maps))
        for k, (a, m) in enumerate(zip(axes[1:], maps)):
            a.imshow(m, cmap="inferno", vmin=lo, vmax=hi)
            chosen = k == self.best[frame]
            a.set_title(f"scale {self.scales[k]:.4f}" + ("  (chosen)" if chosen else "") + f"\nmax {m.max():.2f}",
                        fontsize="small")
            if chosen:
                py, px = self.peaks[frame]
                a.plot(px, py, "c+", ms=14, mew=2)
                for side in a.spines.values():
                    side.set_edgecolor("#56B4E9")
                    side.set_linewidth(3)
            a.set_xticks([])
            a.set_yticks([])
        fig.tight_layout()
        return fig

    def widget(self):
        """A frame slider over :meth:`draw` (ipywidgets)."""
        import ipywidgets as widgets
        from .viz import interactive_view
        return interactive_view(self.draw, frame=widgets.IntSlider(1, 1, len(self) - 1, description="frame"))
