"""D3S: a discriminative single-shot segmentation tracker (Lukežič, Matas and Kristan, CVPR 2020).

D3S tracks by segmenting. Around the target's last position it cuts a crop, extracts backbone
features once, and asks two complementary models where the target is:

* **GEM**, the geometrically constrained Euclidean model: a discriminative correlation filter
  (the closed-form DCF of :mod:`acvm.dcf`, trained online on the backbone features) localises the
  target robustly but knows nothing about its shape; the Euclidean distance transform from the
  response's maximum turns that location into a per-pixel spatial likelihood ``L``.
* **GIM**, the geometrically invariant model: every pixel's feature vector is compared (cosine
  similarity) with the foreground and the background vectors stored from the first frame; the
  mean of the top-K similarities gives a foreground map ``F`` and a background map ``B``, and
  their softmax the posterior ``P``. It follows deformation and rotation but confuses look-alikes.

The **refinement pathway** fuses ``[P, F, L]`` and upsamples them, adding backbone features of
finer layers on the way (SharpMask-style), into a mask at the crop's full resolution. The box
reported is the one fitted to the mask (:func:`box_from_mask`), and the mask also moves the
tracker and changes its size.

Only the refinement pathway and GIM's feature projection are trained (:func:`train`, ``acvm
train d3s``) on synthetic sequences whose masks are exact; the backbone is the SiamFC one,
frozen (``data/weights/siamfc.pt``, trained from scratch when absent); the DCF learns online.

Shapes: the crop is ``S×S`` pixels (``S = crop_size``) seen through an input window ``S + 64``
pixels wide, so that the stride-8 backbone cells tile the crop exactly; GIM, GEM and the DCF work
on the ``S/8 × S/8`` grid, the mask on ``S×S``. After ``update`` the tracker exposes ``mask``
(``H×W`` bool, the frame's mask), ``probability``, ``gem``, ``gim`` (``S×S`` float32 maps in the
crop), ``response`` (the DCF's, centred), ``crop`` (the ``S×S×3`` image) and ``crop_box``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage

from .backbone import LAYERS, Backbone, FreezableBackbone, to_tensor
from .boxes import crop_and_resize, crop_to_image, cxcywh_to_xywh, image_to_crop, xywh_to_cxcywh
from .correlation import cosine_window, psr
from .dcf import fft2, filter_response, filter_terms, wrapped_peak
from .registry import weights_file
from .tracker import Tracker, check_image, check_init

__all__ = ["D3SSettings", "distance_likelihood", "gem_likelihood", "top_k_similarity", "gim",
           "align_features", "D3SNet", "box_from_mask", "largest_component", "D3STracker",
           "D3SSampler", "segmentation_loss", "train", "draw_d3s", "d3s_snapshot", "record_d3s", "DEFAULT_WEIGHTS"]

#: where ``acvm train d3s`` writes and the tracker reads the weights
DEFAULT_WEIGHTS = weights_file("d3s")

#: input pixels added on each side of the crop so that the backbone's cells tile it (see align_features)
MARGIN = 32


@dataclass(frozen=True)
class D3SSettings:
    search_factor: float = 3.0        # crop side / sqrt(w·h) of the target (D3S: 4; 3 segments better here)
    crop_size: int = 128              # S, crop side in pixels where the mask is predicted (multiple of 8)
    top_k: int = 3                    # K, GIM averages the K most similar fg (bg) vectors (D3S: 3)
    gem_radius: float = 0.5           # r of GEM's likelihood exp(-d / r), in target sizes sqrt(w·h)
    dcf_sigma: float = 0.25           # σ of the DCF's desired output g, in target sizes
    dcf_lambda: float = 0.1           # λ, relative to the mean spectral energy of the first sample
    dcf_learning_rate: float = 0.02   # η, running average of the DCF numerator and denominator
    mask_threshold: float = 0.4       # a pixel is target when the fused probability exceeds this
    init_refine: bool = True          # segment the first frame once to trim the box into a mask (D3S)
    box_method: str = "bounds"        # box from mask: "bounds" or "minarea" (D3S; inflates round shapes)
    size_rate: float = 0.5            # how far the tracked size moves towards the mask's box in one frame
    max_size_step: float = 1.1        # the tracked size changes by at most this factor per frame (D3S: 1.05)
    max_size_change: float = 1.05     # a mask box whose side ratio to the tracked size exceeds this is
                                      # ignored (D3S: 1.05; validation AUC 0.510 vs 0.464 at 1.2, 3 seeds)
    min_mask_pixels: int = 16         # fewer mask pixels than this: trust the DCF alone
    weights: str | None = None        # file with the trained network (default data/weights/d3s.pt)


# --------------------------------------------------------------------------------------------
# GEM: DCF response -> spatial likelihood
# --------------------------------------------------------------------------------------------

def distance_likelihood(seed: np.ndarray, radius: float) -> np.ndarray:
    """GEM's likelihood ``L = exp(−d / r)`` with ``d`` the Euclidean distance transform of ``seed``.

    Args:
        seed: ``H×W`` bool, the pixels where the target is believed to be (D3S: the response's
            maximum); ``d`` is each pixel's distance in pixels to the nearest seed pixel.
        radius: ``r`` > 0 in pixels; at ``d = r`` the likelihood has fallen to ``1/e``.
    Returns:
        ``H×W`` float32 in (0, 1], exactly 1 on the seed. An empty seed gives all zeros.
    """
    seed = np.asarray(seed, dtype=bool)
    if not seed.any():
        return np.zeros(seed.shape, np.float32)
    d = ndimage.distance_transform_edt(~seed)
    return np.exp(-d / float(radius)).astype(np.float32)


def gem_likelihood(peak_xy, size: int, radius: float) -> np.ndarray:
    """GEM on an ``size×size`` crop: :func:`distance_likelihood` from the pixel holding ``peak_xy``.

    Args:
        peak_xy: ``(x, y)`` of the DCF's maximum in crop pixels (continuous, pixel i spans [i, i+1)).
        size: side of the crop in pixels.
        radius: ``r`` in pixels.
    Returns:
        ``size×size`` float32 likelihood, 1 at the peak's pixel.
    """
    seed = np.zeros((size, size), bool)
    x, y = (int(np.clip(np.floor(v), 0, size - 1)) for v in peak_xy)
    seed[y, x] = True
    return distance_likelihood(seed, radius)


# --------------------------------------------------------------------------------------------
# GIM: top-K cosine similarity to the first frame's foreground and background
# --------------------------------------------------------------------------------------------

def top_k_similarity(f_test: torch.Tensor, f_train: torch.Tensor, select: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the ``k`` largest cosine similarities of every test vector to the selected train vectors.

    Args:
        f_test: ``(B, C, H, W)`` test features.
        f_train: ``(B, C, Ht, Wt)`` train features.
        select: ``(B, Ht, Wt)`` bool (or 0/1), which train vectors take part (foreground, say).
        k: how many of the most similar vectors to average (D3S: 3).
    Returns:
        ``(B, H, W)`` float tensor in [−1, 1]. Unselected vectors count as similarity −1, the
        smallest a cosine can be, so they are only averaged in when fewer than ``k`` are selected.
    """
    b, c, h, w = f_test.shape
    q = F.normalize(f_test.flatten(2), dim=1)                     # (B, C, HW)
    t = F.normalize(f_train.flatten(2), dim=1)                    # (B, C, HtWt)
    sim = torch.einsum("bcn,bcm->bnm", q, t)                      # (B, HW, HtWt)
    keep = select.reshape(b, 1, -1).bool()
    sim = torch.where(keep, sim, torch.full_like(sim, -1.0))
    k = min(int(k), sim.shape[-1])
    return sim.topk(k, dim=-1).values.mean(-1).reshape(b, h, w)


def gim(f_test: torch.Tensor, f_train: torch.Tensor, fg: torch.Tensor, k: int = 3) -> dict[str, torch.Tensor]:
    """GIM's three maps: foreground similarity ``F``, background similarity ``B`` and posterior ``P``.

    Args:
        f_test, f_train: ``(B, C, H, W)`` and ``(B, C, Ht, Wt)`` features.
        fg: ``(B, Ht, Wt)`` bool, the train vectors on the target; the rest are background.
        k: the ``K`` of the top-K average.
    Returns:
        ``{"F": (B, H, W), "B": (B, H, W), "P": (B, H, W)}`` with ``P = e^F / (e^F + e^B)``.
    """
    fg = fg.bool()
    f_map = top_k_similarity(f_test, f_train, fg, k)
    b_map = top_k_similarity(f_test, f_train, ~fg, k)
    p = torch.softmax(torch.stack([f_map, b_map]), dim=0)[0]
    return {"F": f_map, "B": b_map, "P": p}


# --------------------------------------------------------------------------------------------
# The network: frozen backbone, GIM projection and the refinement pathway
# --------------------------------------------------------------------------------------------

def align_features(feature: torch.Tensor, layer: str, cells: int, margin: int = MARGIN) -> torch.Tensor:
    """Cut the ``cells×cells`` window of a backbone map whose cells tile the crop.

    The input window is the crop plus ``margin`` pixels on every side. Cell ``i`` of ``layer``
    (stride ``s``, receptive field ``rf``) is centred on crop pixel ``s·i + rf/2 − margin``; the
    window starting at ``round((margin + s/2 − rf/2) / s)`` puts cell ``j`` within ``s/2`` of the
    centre of crop pixels ``[s·j, s·j + s)``.

    Args:
        feature: ``(B, C, H, W)`` output of ``layer``.
    Returns:
        ``(B, C, cells, cells)``.
    """
    info = LAYERS[layer]
    start = int(round((margin + info.stride / 2 - info.receptive_field / 2) / info.stride))
    out = feature[:, :, start:start + cells, start:start + cells]
    if out.shape[-1] != cells or out.shape[-2] != cells:
        raise ValueError(f"{layer} map {tuple(feature.shape[-2:])} is too small for {cells} cells from {start}")
    return out


def _block(c_in: int, c_out: int, kernel: int = 3, relu: bool = True) -> nn.Sequential:
    parts = [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.BatchNorm2d(c_out)]
    if relu:
        parts.append(nn.ReLU(inplace=True))
    return nn.Sequential(*parts)


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class D3SNet(FreezableBackbone):
    """D3S's segmentation network on our small backbone.

    * ``backbone``: the shared :class:`acvm.backbone.Backbone` (frozen during training);
    * ``project``: conv4 (128 ch) -> ``dim`` channels compared by GIM (D3S: segment0/segment1);
    * ``mixer`` and the refinement pathway: ``[P, F, L]`` at stride 8, then ×2 upsampling three
      times, each time adding the aligned features of conv3 (stride 8), conv2 (stride 4) and
      conv1 (stride 2), down to one logit per crop pixel.
    """

    def __init__(self, dim: int = 32, top_k: int = 3):
        super().__init__()
        self.backbone = Backbone()
        self.top_k = top_k
        self.project = nn.Sequential(_block(LAYERS["conv4"].channels, 64, 1), _block(64, dim, 3, relu=False))
        self.mixer = _block(3, 32)
        self.f8, self.s8, self.post8 = _block(LAYERS["conv3"].channels, 32), _block(32, 32), _block(32, 16)
        self.f4, self.post4 = _block(LAYERS["conv2"].channels, 16), _block(16, 8)
        self.f2 = _block(LAYERS["conv1"].channels, 8)
        self.post2 = nn.Conv2d(8, 1, 3, padding=1)

    def features(self, images: torch.Tensor, crop_size: int) -> dict[str, torch.Tensor]:
        """Backbone maps aligned to the crop grid, and GIM's projection.

        Args:
            images: ``(B, 3, S + 2·MARGIN, S + 2·MARGIN)`` float32 in [0, 1].
            crop_size: ``S``.
        Returns:
            ``{"conv1": (B, 32, S/2, S/2), "conv2": (B, 64, S/4, S/4), "conv3": (B, 96, S/8, S/8),
            "conv4": (B, 128, S/8, S/8), "project": (B, dim, S/8, S/8)}``.
        """
        out, x = {}, images
        for name in LAYERS:
            x = getattr(self.backbone, name)(x)
            if name in ("conv1", "conv2", "conv3", "conv4"):
                out[name] = align_features(x, name, crop_size // LAYERS[name].stride)
        out["project"] = self.project(out["conv4"])
        return out

    def refine(self, feats: dict[str, torch.Tensor], p: torch.Tensor, f: torch.Tensor,
               likelihood: torch.Tensor) -> torch.Tensor:
        """The refinement pathway: ``P``, ``F`` ``(B, S/8, S/8)`` and ``L`` ``(B, S, S)`` -> logits ``(B, S, S)``."""
        cells = p.shape[-1]
        l8 = F.adaptive_avg_pool2d(likelihood[:, None], cells)
        x = self.mixer(torch.cat([p[:, None], f[:, None], l8], 1))
        x = self.post8(_up(self.f8(feats["conv3"]) + self.s8(x)))     # stride 4
        x = self.post4(_up(self.f4(feats["conv2"]) + x))              # stride 2
        return self.post2(_up(self.f2(feats["conv1"]) + x))[:, 0]     # stride 1

    def forward(self, z: torch.Tensor, z_mask: torch.Tensor, x: torch.Tensor, likelihood: torch.Tensor) -> torch.Tensor:
        """Segment the test crops ``x`` given train crops ``z`` and their masks.

        Args:
            z, x: ``(B, 3, S + 64, S + 64)`` train and test input windows, float32 in [0, 1].
            z_mask: ``(B, S, S)`` float, the target in the train crop.
            likelihood: ``(B, S, S)`` GEM's ``L`` on the test crop.
        Returns:
            ``(B, S, S)`` mask logits for the test crop.
        """
        size = likelihood.shape[-1]
        fz, fx = self.features(z, size), self.features(x, size)
        fg = F.adaptive_avg_pool2d(z_mask[:, None].float(), fz["project"].shape[-1])[:, 0] > 0.5
        g = gim(fx["project"], fz["project"], fg, self.top_k)
        return self.refine(fx, g["P"], g["F"], likelihood)


# --------------------------------------------------------------------------------------------
# The box from the mask
# --------------------------------------------------------------------------------------------

def largest_component(mask) -> np.ndarray:
    """The largest 8-connected component of an ``H×W`` mask, ``H×W`` bool (all False if empty)."""
    m = np.asarray(mask, dtype=np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return np.zeros(m.shape, bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def box_from_mask(mask, method: str = "minarea") -> np.ndarray:
    """The box of the largest component of an ``H×W`` mask.

    Args:
        mask: ``H×W`` bool (or 0/1).
        method: ``"bounds"``: the tight axis-aligned box of its pixels; ``"minarea"``: the
            axis-aligned box of its minimum-area (rotated) rectangle, as D3S reports on OTB;
            ``"polygon"``: that rotated rectangle's four corners, VOT-style.
    Returns:
        ``(4,)`` float64 ``(x, y, w, h)`` (``"polygon"``: ``(8,)`` ``x1, y1, ..., x4, y4``); all
        NaN for an empty mask. Pixels are squares (pixel i spans [i, i+1)), so a filled rectangle
        gets exactly its own box from every method.
    """
    if method not in ("bounds", "minarea", "polygon"):
        raise ValueError(f"method must be 'bounds', 'minarea' or 'polygon', got {method!r}")
    comp = largest_component(mask)
    if not comp.any():
        return np.full(8 if method == "polygon" else 4, np.nan)
    if method == "bounds":
        ys, xs = np.nonzero(comp)
        return np.array([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()], np.float64)
    contours, _ = cv2.findContours(comp.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pix = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float32)
    # the four corners of every boundary pixel, so the rectangle covers whole pixels
    corners = (pix[:, None, :] + np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)).reshape(-1, 2)
    poly = cv2.boxPoints(cv2.minAreaRect(corners)).astype(np.float64)
    if method == "polygon":
        return poly.reshape(-1)
    (x0, y0), (x1, y1) = poly.min(0), poly.max(0)
    return np.array([x0, y0, x1 - x0, y1 - y0])


# --------------------------------------------------------------------------------------------
# The tracker
# --------------------------------------------------------------------------------------------

def _load_net(path: str | Path | None, top_k: int) -> tuple[D3SNet, dict]:
    from .weights import fit_state, read_weights
    path = Path(path) if path else DEFAULT_WEIGHTS
    state = read_weights(path, "d3s")
    meta = dict(state["meta"])
    net = D3SNet(dim=int(meta.get("dim", 32)), top_k=top_k)
    fit_state(net, state["state_dict"], path)
    return net.eval(), meta


def _circular_label(cells: int, sigma: float, dy: float, dx: float) -> np.ndarray:
    """The DCF's desired output: a circular Gaussian peaking ``(dy, dx)`` cells from ``(0, 0)``."""
    i = np.arange(cells, dtype=np.float64)
    ddy = (i - dy + cells / 2) % cells - cells / 2
    ddx = (i - dx + cells / 2) % cells - cells / 2
    return np.exp(-(ddy[:, None] ** 2 + ddx[None, :] ** 2) / (2 * sigma ** 2))


class D3STracker(Tracker):
    """D3S: GEM (online DCF + distance transform), GIM (top-K fg/bg similarity) and refinement.

    ``init`` stores the first frame's projected features with a foreground mask (the box,
    trimmed by one pass of the network when ``init_refine``) and trains the DCF. Each
    ``update``: crop around the last position, one backbone pass, DCF response -> GEM's ``L``,
    GIM's ``F`` and ``P``, refinement -> mask, box from the mask, state and DCF update.
    After ``update``: ``mask`` (``H×W`` bool), ``probability``, ``gem``, ``gim`` (GIM's ``P``),
    ``gim_foreground`` (``F``), ``gim_background`` (``B``) (all ``S×S`` float32), ``response``
    (``S/8×S/8``, centred), ``crop`` (``S×S×3`` uint8),
    ``crop_box`` (the crop in frame coordinates, xywh), ``mask_box`` and ``confidence`` (PSR).
    """

    name = "d3s"

    def __init__(self, settings: D3SSettings | None = None, net: D3SNet | None = None, **overrides):
        super().__init__()
        self.settings = replace(settings or D3SSettings(), **overrides)
        self.meta = {}
        if net is None:
            net, self.meta = _load_net(self.settings.weights, self.settings.top_k)
            # the crop geometry the network was trained with, unless the caller chose one
            trained = {k: self.meta[k] for k in ("crop_size", "search_factor")
                       if k in self.meta and settings is None and k not in overrides}
            self.settings = replace(self.settings, **trained)
        s = self.settings
        if s.crop_size % 8:
            raise ValueError(f"crop_size must be a multiple of 8, got {s.crop_size}")
        self.net = net.eval()
        self.cells = s.crop_size // 8
        self.window = cosine_window((self.cells, self.cells)).astype(np.float32)
        for attr in ("mask", "probability", "gem", "gim", "gim_foreground", "gim_background", "response", "crop",
                     "crop_box", "mask_box"):
            setattr(self, attr, None)

    # -- named steps --

    def crop_geometry(self) -> tuple[np.ndarray, float]:
        """Centre ``(cx, cy)`` and side (frame pixels) of the crop around the current state."""
        side = self.settings.search_factor * float(np.sqrt(self.size[0] * self.size[1]))
        return self.centre.copy(), side

    def extract(self, image: np.ndarray) -> tuple[np.ndarray, dict]:
        """The ``S×S`` crop and its network features (the input window adds the margin)."""
        s = self.settings
        centre, side = self.crop_geometry()
        full = s.crop_size + 2 * MARGIN
        window = crop_and_resize(image, centre, side * full / s.crop_size, full)
        with torch.no_grad():
            feats = self.net.features(to_tensor(window), s.crop_size)
        return window[MARGIN:MARGIN + s.crop_size, MARGIN:MARGIN + s.crop_size], feats

    def dcf_sample(self, feats: dict) -> np.ndarray:
        """The DCF's training/test sample: windowed conv4 features, ``cells×cells×128`` float64."""
        f = feats["conv4"][0].permute(1, 2, 0).numpy().astype(np.float64)
        return f * self.window[..., None]

    def localise(self, feats: dict) -> tuple[np.ndarray, float]:
        """GEM's first half: the DCF response (centred) and the peak ``(x, y)`` in crop pixels."""
        response = filter_response(self.A / (self.B + self.lam)[..., None], self.dcf_sample(feats))
        dy, dx = wrapped_peak(response)
        self.response = np.fft.fftshift(response).astype(np.float32)
        half = self.settings.crop_size / 2
        return np.array([half + dx * 8, half + dy * 8]), psr(self.response, exclude=2)

    def segment(self, feats: dict, likelihood: np.ndarray) -> np.ndarray:
        """GIM and the refinement pathway: the ``S×S`` foreground probability (float32)."""
        with torch.no_grad():
            g = gim(feats["project"], self.template, self.template_fg, self.settings.top_k)
            logits = self.net.refine(feats, g["P"], g["F"], torch.from_numpy(likelihood)[None])
        self.gim = _upsample(g["P"][0], self.settings.crop_size)
        self.gim_foreground = _upsample(g["F"][0], self.settings.crop_size)
        self.gim_background = _upsample(g["B"][0], self.settings.crop_size)
        return torch.sigmoid(logits[0]).numpy()

    def learn(self, feats: dict, target_xy) -> None:
        """DCF model update: the current sample, labelled with a peak on the new position."""
        s = self.settings
        half = s.crop_size / 2
        dx, dy = (np.asarray(target_xy) - half) / 8
        g = _circular_label(self.cells, self.sigma, dy, dx)
        a, b = filter_terms(fft2(self.dcf_sample(feats)), fft2(g))
        eta = s.dcf_learning_rate
        self.A = (1 - eta) * self.A + eta * a
        self.B = (1 - eta) * self.B + eta * b

    def _to_frame(self, box_in_crop: np.ndarray) -> np.ndarray:
        centre, side = self.crop_geometry()
        return crop_to_image(box_in_crop, centre, side, self.settings.crop_size)

    def init(self, image, box, mask=None) -> None:
        """Start on ``image`` from ``box``; with ``mask`` (``H×W``, the first frame's target mask, as
        in video object segmentation) GIM's foreground is that mask instead of the trimmed box."""
        image, box, self.centre, self.size = check_init(image, box)
        s = self.settings
        _, feats = self.extract(image)
        centre, side = self.crop_geometry()
        b = image_to_crop(box, centre, side, s.crop_size)
        fg = np.zeros((s.crop_size, s.crop_size), bool)
        x0, y0 = np.floor(b[:2]).astype(int).clip(0, s.crop_size)
        x1, y1 = np.ceil(b[:2] + b[2:]).astype(int).clip(0, s.crop_size)
        fg[y0:y1, x0:x1] = True
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != image.shape[:2]:
                raise ValueError(f"the initial mask is {mask.shape[1]}×{mask.shape[0]} (width×height) but the "
                                 f"image is {image.shape[1]}×{image.shape[0]}")
            crop = _mask_in_crop(mask, centre, side, s.crop_size)
            if crop.sum() >= s.min_mask_pixels:
                fg = crop
        self.template = feats["project"]
        self.template_fg = self._cells(fg)
        self.radius = s.gem_radius * np.sqrt(b[2] * b[3])
        if s.init_refine and mask is None:
            # D3S: segment the first frame with the box as foreground, keep the part inside the box
            prob = self.segment(feats, gem_likelihood(b[:2] + b[2:] / 2, s.crop_size, self.radius))
            trimmed = (prob > s.mask_threshold) & fg
            if trimmed.sum() >= max(s.min_mask_pixels, 0.2 * fg.sum()):
                self.template_fg = self._cells(trimmed)
        self.sigma = s.dcf_sigma * np.sqrt(b[2] * b[3]) / 8
        self.A, self.B = filter_terms(fft2(self.dcf_sample(feats)),
                                      fft2(_circular_label(self.cells, self.sigma, 0.0, 0.0)))
        self.lam = s.dcf_lambda * float(self.B.mean())
        self.box = box.copy()
        self.confidence = None

    def _cells(self, mask: np.ndarray) -> torch.Tensor:
        m = torch.from_numpy(mask.astype(np.float32))[None, None]
        return F.adaptive_avg_pool2d(m, self.cells)[:, 0] > 0.5

    def update(self, image) -> np.ndarray:
        image = check_image(image)
        s = self.settings
        self.crop, feats = self.extract(image)
        centre, side = self.crop_geometry()
        self.crop_box = cxcywh_to_xywh([*centre, side, side])
        peak, self.confidence = self.localise(feats)
        self.gem = gem_likelihood(peak, s.crop_size, self.radius)
        self.probability = self.segment(feats, self.gem)
        mask = largest_component(self.probability > s.mask_threshold)
        self.mask = self._frame_mask(mask, image.shape[:2])
        # the mask moves the tracker and sets the box when its size is plausible; else the DCF rules
        target, report = peak, None
        self.mask_box = None
        if mask.sum() >= s.min_mask_pixels:
            mbox = self._to_frame(box_from_mask(mask, s.box_method))
            self.mask_box = mbox
            ratio = np.sqrt((mbox[2] * mbox[3]) / (self.size[0] * self.size[1]))
            if 1 / s.max_size_change <= ratio <= s.max_size_change:
                target = image_to_crop(mbox, centre, side, s.crop_size)
                target = target[:2] + target[2:] / 2
                # the reported box follows the mask; the tracked size, which sets the next crop,
                # moves slowly, so one bad mask cannot blow the crop up or shrink it away
                step = ((1 - s.size_rate) * self.size + s.size_rate * mbox[2:]) / self.size
                self.size = self.size * np.clip(step, 1 / s.max_size_step, s.max_size_step)
                report = mbox
        new_centre = crop_to_image(np.r_[target, 0.0, 0.0], centre, side, s.crop_size)[:2]
        h_img, w_img = image.shape[:2]
        self.centre = np.clip(new_centre, 0, [w_img, h_img])
        self.size = np.clip(self.size, 4.0, [w_img, h_img])
        self.learn(feats, target)
        self.box = cxcywh_to_xywh([*self.centre, *self.size]) if report is None else report
        return self.box.copy()

    def _frame_mask(self, mask: np.ndarray, shape) -> np.ndarray:
        """The crop's mask pasted into an ``H×W`` frame mask (nearest neighbour)."""
        s = self.settings
        centre, side = self.crop_geometry()
        k = s.crop_size / side
        # frame pixel p lies at (p - centre)·k + S/2 in the crop, the inverse of crop_and_resize
        M = np.array([[k, 0, s.crop_size / 2 - k * centre[0]], [0, k, s.crop_size / 2 - k * centre[1]]])
        M[:, 2] += (M[:, 0] + M[:, 1]) * 0.5 - 0.5
        out = cv2.warpAffine(mask.astype(np.uint8), M, (int(shape[1]), int(shape[0])),
                             flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=0)
        return out.astype(bool)


def _upsample(cells: torch.Tensor, size: int) -> np.ndarray:
    return F.interpolate(cells[None, None].float(), size=(size, size), mode="bilinear",
                         align_corners=False)[0, 0].numpy()


# --------------------------------------------------------------------------------------------
# Training on synthetic sequences with exact masks
# --------------------------------------------------------------------------------------------

class D3SSampler:
    """Training examples for :class:`D3SNet`: a train crop with its mask and a test crop with its mask.

    Both crops come from one sequence, ``Δ ≤ max_gap`` frames apart, each ``search_factor``
    target sizes wide (as the tracker cuts them). The test crop's centre is off the target by up
    to ``shift`` target sizes and its scale by up to ``±scale_jitter`` in log scale (the tracker's
    last position and size are never exact); GEM's ``L`` comes from the true centre moved by
    ``peak_noise`` target sizes (the DCF's error). With probability ``box_mask`` the train mask is
    the target's box, as when the tracker starts from a box. ``pairs_per_sequence`` consecutive
    examples come from one sequence. Returns numpy arrays:
    ``"z"``, ``"x"`` ``(3, S + 64, S + 64)`` float32; ``"z_mask"``, ``"x_mask"``, ``"likelihood"``
    ``(S, S)`` float32.
    """

    def __init__(self, sources=None, settings: D3SSettings = D3SSettings(), max_gap: int = 30,
                 shift: float = 0.5, scale_jitter: float = 0.2, peak_noise: float = 0.1,
                 box_mask: float = 0.3, colour: float = 0.1, pairs_per_sequence: int = 4):
        from .training import make_sources
        sources = make_sources(None) if sources is None else list(sources)
        # real folders: only their sequences with masks (DAVIS) can teach segmentation
        self.sources = [src.with_masks() if hasattr(src, "with_masks") else src for src in sources]
        w = np.array([float(getattr(src, "weight", 1.0)) for src in self.sources])
        self.weights = w / w.sum()
        self.settings, self.max_gap = settings, max_gap
        self.shift, self.scale_jitter, self.peak_noise = shift, scale_jitter, peak_noise
        self.box_mask, self.colour = box_mask, colour
        # making a synthetic sequence costs more than cutting a pair from it, so a few pairs share one
        self.pairs_per_sequence = pairs_per_sequence
        self._seq, self._uses = None, 0

    def _sequence(self, rng: np.random.Generator):
        if self._seq is None or self._uses >= self.pairs_per_sequence:
            # one source draws as before sources had weights, so the synthetic stream is unchanged
            k = 0 if len(self.sources) == 1 else int(rng.choice(len(self.sources), p=self.weights))
            source = self.sources[k]
            self._seq, self._uses = source.sequence(rng), 0
        self._uses += 1
        return self._seq

    def _crop(self, frame, mask, box, offset, scale):
        s = self.settings
        cx, cy, w, h = xywh_to_cxcywh(box)
        side = s.search_factor * np.sqrt(w * h) * scale
        centre = np.array([cx, cy]) + offset * np.sqrt(w * h)
        full = s.crop_size + 2 * MARGIN
        window = crop_and_resize(frame, centre, side * full / s.crop_size, full)
        m = crop_and_resize(mask.astype(np.float32), centre, side, s.crop_size, pad_value=0.0)
        return window, (m > 0.5).astype(np.float32), image_to_crop(box, centre, side, s.crop_size)

    def __call__(self, rng: np.random.Generator) -> dict:
        from .training import colour_jitter
        s = self.settings
        seq = self._sequence(rng)
        n = len(seq)
        for _ in range(20):
            t = int(rng.integers(n))
            u = int(np.clip(t + rng.integers(-self.max_gap, self.max_gap + 1), 0, n - 1))
            zf, zm = seq.frame_and_mask(t)
            xf, xm = seq.frame_and_mask(u)
            if zm.sum() > 30 and xm.sum() > 30:
                break
        z, z_mask, z_box = self._crop(zf, zm, seq.boxes[t], np.zeros(2), 1.0)
        if rng.random() < self.box_mask:
            z_mask = np.zeros_like(z_mask)
            x0, y0 = np.floor(z_box[:2]).astype(int).clip(0, s.crop_size)
            x1, y1 = np.ceil(z_box[:2] + z_box[2:]).astype(int).clip(0, s.crop_size)
            z_mask[y0:y1, x0:x1] = 1.0
        offset = rng.uniform(-self.shift, self.shift, 2)
        scale = np.exp(rng.uniform(-self.scale_jitter, self.scale_jitter))
        x, x_mask, x_box = self._crop(xf, xm, seq.boxes[u], offset, scale)
        size = np.sqrt(x_box[2] * x_box[3])
        peak = x_box[:2] + x_box[2:] / 2 + rng.normal(0, self.peak_noise, 2) * size
        likelihood = gem_likelihood(peak, s.crop_size, s.gem_radius * size)
        z, x = colour_jitter(z, rng, self.colour), colour_jitter(x, rng, self.colour)
        chw = lambda im: np.ascontiguousarray(im.transpose(2, 0, 1), np.float32) / np.float32(255)  # noqa: E731
        return {"z": chw(z), "x": chw(x), "z_mask": z_mask, "x_mask": x_mask, "likelihood": likelihood}


def segmentation_loss(net: D3SNet, batch: dict) -> torch.Tensor:
    """Binary cross-entropy of the predicted test mask against the exact one (a scalar tensor)."""
    logits = net(batch["z"], batch["z_mask"], batch["x"], batch["likelihood"])
    return F.binary_cross_entropy_with_logits(logits, batch["x_mask"])


def train(steps: int | None = None, data=None, seed: int = 0, out: str | Path | None = None,
          resume: bool = False, device: str | None = None, batch_size: int = 8, workers: int = 1,
          lr: float = 3e-3, backbone: str | Path | None = None, progress: bool = True,
          settings: D3SSettings = D3SSettings(), dim: int = 32) -> Path:
    """Train D3S's segmentation network and write ``{"state_dict", "meta"}`` to ``out``.

    The backbone comes from ``backbone`` (default ``data/weights/siamfc.pt``) and stays frozen;
    when that file is missing the backbone trains too, from random weights, and ``meta`` says so.
    ``data`` is what ``acvm train --data`` takes (only sources with masks work: synthetic).
    ``settings`` gives the crop geometry (``crop_size``, ``search_factor``; the tracker must use
    the same, and ``meta`` records them), ``dim`` the channels GIM compares.
    Returns the path written.
    """
    from .backbone import trained_backbone
    from .training import make_sources, train_and_save
    steps = 1500 if steps is None else int(steps)
    out = Path(out) if out else DEFAULT_WEIGHTS
    torch.manual_seed(seed)
    net = D3SNet(dim=dim, top_k=settings.top_k)
    try:
        net.backbone.load_state_dict(trained_backbone(backbone).state_dict())
        import hashlib
        bb_path = Path(backbone) if backbone else weights_file("siamfc")
        source = f"{bb_path.name} (sha256 {hashlib.sha256(bb_path.read_bytes()).hexdigest()[:16]})"
        net.freeze_backbone()
    except FileNotFoundError:
        source = "random (trained with the head)"
    sampler = D3SSampler(make_sources(data), settings)
    return train_and_save(net, segmentation_loss, sampler, steps=steps, seed=seed, data=data, out=out,
                          batch_size=batch_size, workers=workers, lr=lr, resume=resume, device=device,
                          progress=progress, loss_window=50, dim=dim, crop_size=settings.crop_size,
                          search_factor=settings.search_factor, backbone=source, backbone_frozen=net.frozen)


# --------------------------------------------------------------------------------------------
# The notebook's view
# --------------------------------------------------------------------------------------------

def draw_d3s(frames: list[dict], frame: int = 0, figsize=(11, 3)):
    """GEM, GIM, the fused mask and the box for one recorded frame: a matplotlib Figure.

    Args:
        frames: one dict per frame with ``"crop"`` (``S×S×3`` uint8), ``"gem"``, ``"gim"``,
            ``"probability"`` (``S×S`` float) and ``"mask_box"`` (xywh in crop pixels or None),
            as :func:`d3s_snapshot` makes; with a ``"truth"`` (``S×S`` bool, the ground-truth mask
            in the crop) a fifth panel shows it, outlined on the fused mask too.
        frame: which one to draw.
    """
    import matplotlib.pyplot as plt
    from .viz import draw_box
    if not 0 <= frame < len(frames):
        raise IndexError(f"frame {frame} is out of range ({len(frames)} recorded)")
    r = frames[frame]
    truth = r.get("truth")
    fig, axes = plt.subplots(1, 4 if truth is None else 5, figsize=figsize)
    # GIM's posterior stays close to 1/2 (a softmax of two cosines), so its colours are stretched
    panels = [("crop", r["crop"], None, (None, None)), ("GEM: L from the DCF", r["gem"], "magma", (0, 1)),
              ("GIM: P (stretched)", r["gim"], "viridis", (None, None)),
              ("fused mask", r["probability"], "gray", (0, 1))]
    if truth is not None:
        panels.append(("ground truth", truth, "gray", (0, 1)))
    for ax, (title, im, cmap, (lo, hi)) in zip(axes, panels):
        ax.imshow(im, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(title, fontsize="small")
        ax.set_axis_off()
    if r.get("mask_box") is not None:
        draw_box(axes[0], r["mask_box"], "#D55E00", "box from mask")
        draw_box(axes[3], r["mask_box"], "#D55E00")
    if truth is not None and truth.any():
        axes[3].contour(truth, levels=[0.5], colors="#00e676", linewidths=1)
    fig.suptitle(f"frame {r.get('index', frame)}", fontsize="small")
    fig.tight_layout()
    return fig


def _mask_in_crop(mask: np.ndarray, centre, side: float, size: int) -> np.ndarray:
    """A frame's ``H×W`` mask cut to the ``size×size`` crop of ``side`` pixels around ``centre`` (bool)."""
    return crop_and_resize(np.asarray(mask, dtype=np.float32), centre, side, size, pad_value=0.0) > 0.5


def d3s_snapshot(tracker: D3STracker, index: int, truth=None) -> dict:
    """What :func:`draw_d3s` shows of the tracker's last update, as a dict (arrays copied).

    Keys: ``index``, ``crop``, ``gem``, ``gim``, ``probability``, ``mask_box`` (in crop pixels, or
    None), ``box`` (the frame box returned), and with ``truth`` (the frame's ``H×W`` ground-truth
    mask) ``truth``: that mask cut to the same crop (``S×S`` bool). Use it as ``run_ope``'s callback:
    ``run_ope(tracker, seq, callback=lambda i, t, b: frames.append(d3s_snapshot(t, i)))``.
    """
    cb = tracker.crop_box
    centre, size = cb[:2] + cb[2:] / 2, tracker.settings.crop_size
    mb = None
    if tracker.mask_box is not None:
        mb = image_to_crop(tracker.mask_box, centre, cb[2], size)
    out = {"index": int(index), "crop": tracker.crop.copy(), "gem": tracker.gem.copy(), "gim": tracker.gim.copy(),
           "probability": tracker.probability.copy(), "mask_box": mb, "box": tracker.box.copy()}
    if truth is not None:
        truth = np.asarray(truth)
        if truth.shape != tracker.mask.shape:
            raise ValueError(f"d3s_snapshot: truth mask of shape {truth.shape}, frame {index} is {tracker.mask.shape}")
        out["truth"] = _mask_in_crop(truth, centre, cb[2], size)
    return out


def record_d3s(tracker: D3STracker, sequence, n_frames: int | None = None, start: int = 0) -> list[dict]:
    """Run ``tracker`` over ``n_frames`` frames of ``sequence`` from ``start``; one :func:`d3s_snapshot` per update."""
    end = len(sequence) if n_frames is None else min(len(sequence), start + n_frames)
    tracker.init(sequence[start], sequence.boxes[start])
    out = []
    for i in range(start + 1, end):
        tracker.update(sequence[i])
        out.append(d3s_snapshot(tracker, i))
    return out
