"""ATOM (Danelljan et al., CVPR 2019): an online DCF layer says *where*, IoU-Net says *how big*.

The tracker reads like the paper's figure:

1. **crop** a search region around the previous position (:func:`search_region`,
   :func:`warp_crop`) and **extract** backbone features (:func:`extract_features`);
2. the **DCF layer** ``f(x; w) = σ(w ⋆ P x)``, a 1×1 compression ``P`` followed by one
   convolution filter ``w`` and a leaky activation ``σ``, gives a response whose peak is the
   new position (:func:`localise`); evaluated on ``scale_num`` search crops of neighbouring
   sizes, its best (penalised) peak also gives the size change. It is trained online by least squares,
   ``L(w) = Σ_j γ_j ‖f(x_j; w) − y_j‖² + Σ_k λ_k ‖w_k‖²`` (notebook 07): in the first frame
   on augmented copies of the target (:func:`augmented_crops`), filter and projection together
   by Gauss–Newton with CG; later, every few frames, a few CG iterations on a memory of
   samples whose weights γ_j decay with age (:class:`SampleMemory`);
3. **IoU-Net** (:mod:`acvm.iounet`) predicts the overlap of candidate boxes with the target,
   conditioned on the first frame, and the box is refined by gradient ascent on that prediction
   (overlap maximisation, :func:`acvm.iounet.refine_boxes`).

The backbone is the course's own (:mod:`acvm.backbone`), shipped inside ``data/weights/iounet.pt``
together with the IoU-Net head that was trained on top of it. Search crops are cut like the
Siamese training pairs: a square of side ``context_size(w, h) · search_size / template_size`` so
the backbone sees the target at the scale it was trained at.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from .backbone import LAYERS, Backbone, to_tensor, trained_backbone
from .boxes import (AspectView, clip_box, mean_colour, context_size, crop_to_image, cxcywh_to_xywh, image_to_crop, remove_size_bias, size_bias,
                    xywh_to_cxcywh)
from .correlation import gaussian_label, subpixel_peak
from .optim import DCFProblem, gauss_newton_cg, leaky_response
from .registry import weights_file
from .tracker import Tracker, check_image, check_init_box

__all__ = [
    "ATOMSettings", "ATOMTracker", "search_region", "warp_crop", "augmented_crops",
    "extract_features", "feature_coords", "crop_coords", "make_labels", "SampleMemory",
    "first_frame_samples", "localise", "load_backbone", "normalise_features", "apply_filter",
    "train_first_filter", "crop_features", "response_extent", "fit_compression", "compress",
    "template_modulation", "search_view", "run_with_snapshots",
]


@dataclass(frozen=True)
class ATOMSettings:
    """ATOM's settings, named as in the paper and in pytracking's ``atom/default``."""

    # search region and features
    context: float = 0.5                # p = context·(w + h): margin around the target (SiamFC's crop)
    template_size: int = 127            # side of the reference crop for IoU-Net's modulation vector
    search_size: int = 255              # side of the search crop in pixels
    feature_layer: str = "conv4"        # backbone layer that the DCF layer reads
    # the DCF layer f(x; w) = σ(w ⋆ P x)
    compressed_dim: int = 32            # D: output channels of the 1×1 projection P
    filter_size: int = 5                # side of the filter w in feature cells
    sigma_factor: float = 0.25          # σ of the Gaussian label y relative to the target size
    filter_reg: float = 0.1             # λ_k: regularisation of the filter w
    projection_reg: float = 1e-4        # λ_P: regularisation of the projection P
    response_slope: float = 0.05        # slope of the leaky activation σ below zero (0: linear layer)
    init_gn_iter: int = 6               # Gauss–Newton iterations in the first frame
    init_cg_iter: int = 10              # CG iterations per Gauss–Newton iteration in the first frame
    cg_iter: int = 5                    # CG iterations in each later update
    train_skipping: int = 10            # update the filter every n-th frame
    learning_rate: float = 0.05         # η: weight of a new sample; older weights decay by (1 − η)
    memory_size: int = 50               # samples the memory holds
    init_min_weight: float = 0.25       # share of the total weight the first-frame samples keep
    # peak of the response below this: target lost, no update, no move (docs/decisions.md, ATOM)
    target_not_found: float = 0.25
    # data augmentation in the first frame
    aug_shifts: tuple = ((0.5, 0.5), (-0.5, 0.5), (0.5, -0.5), (-0.5, -0.5))  # × target size
    aug_angles: tuple = (10.0, -10.0, 30.0, -30.0)  # rotations in degrees
    aug_blur: tuple = (1.0, 2.0)        # Gaussian blur σ in crop pixels
    aug_flip: bool = True               # add the mirrored crop
    # scale search of the DCF layer: it carries the size, IoU-Net nudges it (docs/decisions.md, ATOM)
    scale_num: int = 3                  # search crops at scale_step^k around the current size
    scale_step: float = 1.04            # ratio between neighbouring scales
    scale_penalty: float = 0.97         # peak multiplier of the scales that change the size
    scale_lr: float = 0.6               # damping: the size moves this far towards the chosen scale
    # IoU-Net refinement (overlap maximisation)
    use_iounet: bool = True             # refine the box with IoU-Net (else keep the size)
    num_init_random_boxes: int = 9      # random boxes besides the DCF's own
    box_jitter_pos: float = 0.1         # position jitter of the random boxes, × target size
    box_jitter_sz: float = 0.5          # log-size jitter of the random boxes
    box_refinement_iter: int = 5        # gradient-ascent steps on the predicted IoU
    box_refinement_step_length: float = 1.0  # step length (the gradient is scaled by the box size)
    iounet_k: int = 3                   # average the k best boxes for the final estimate
    # ATOM takes the refined box as it is; ours keeps the DCF's peak and damps the size (docs/decisions.md)
    refine_position: bool = False       # take the refined box's centre (ATOM: True) or keep the DCF's peak
    size_update_rate: float = 0.1       # new size = old^(1−rate) · refined^rate (ATOM: 1, no damping)
    # the same for the aspect ratio h/w alone (None: size_update_rate; docs/decisions.md)
    aspect_update_rate: float | None = 0.03
    min_predicted_iou: float = 0.0      # keep the old box when IoU-Net's best predicted IoU is below this
    # first-frame size calibration as SiamRPN's; off for ATOM (docs/decisions.md)
    calibrate: bool = False             # measure IoU-Net's size bias on the first frame (:meth:`measure_size_bias`)
    calibration_runs: int = 4           # refinements (each from the truth and fresh random boxes) averaged
    max_scale_change: float = 1.1       # clamp the size change per frame to this factor
    # elongated targets are tracked in frames stretched to at most this aspect (docs/decisions.md)
    max_aspect: float = 2.0             # track in frames stretched so the first box is at most this elongated
    min_size: float = 5.0               # the box is never smaller than this (pixels)


# --- geometry ----------------------------------------------------------------------------------

def search_region(box, settings: ATOMSettings = ATOMSettings()) -> tuple[np.ndarray, float]:
    """Centre ``(cx, cy)`` and side (pixels) of the square search region around an xywh ``box``.

    The side is SiamFC's context square scaled by ``search_size / template_size``, so that the
    target fills the crop as it did in the training pairs.
    """
    cx, cy, w, h = xywh_to_cxcywh(box)
    side = context_size(w, h, settings.context) * settings.search_size / settings.template_size
    return np.array([cx, cy]), float(side)


def warp_crop(image: np.ndarray, centre, side: float, out_size: int, angle: float = 0.0,
              flip: bool = False, pad_value=None) -> np.ndarray:
    """Cut a square of ``side`` pixels centred on ``centre``, rotated by ``angle`` degrees and
    optionally mirrored, resized to ``out_size``: an ``out×out×3`` array of ``image.dtype``.

    With ``angle=0, flip=False`` it equals :func:`acvm.boxes.crop_and_resize`. The map is
    ``q = s · R(angle) · F · (p − centre) + out/2`` (``F`` mirrors x), so the centre stays at
    the crop's centre whatever the rotation.
    """
    s = out_size / side
    a = np.deg2rad(angle)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * s
    if flip:
        R = R @ np.diag([-1.0, 1.0])
    t = out_size / 2.0 - R @ np.asarray(centre, dtype=np.float64)
    M = np.hstack([R, t[:, None]])
    # our pixel i spans [i, i+1) while OpenCV puts pixel centres at integers
    M[:, 2] += (M[:, 0] + M[:, 1]) * 0.5 - 0.5
    if pad_value is None:
        pad_value = mean_colour(image)
    border = tuple(float(v) for v in np.atleast_1d(pad_value)) + (0.0,)
    return cv2.warpAffine(image, M, (out_size, out_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border[:4])


def augmented_crops(image: np.ndarray, box, settings: ATOMSettings = ATOMSettings()) -> tuple[np.ndarray, np.ndarray]:
    """The first frame's training crops: the plain crop, then shifted, mirrored, rotated and blurred ones.

    Args:
        image: ``H×W×3`` uint8 RGB.
        box: the target ``(x, y, w, h)``.
    Returns:
        ``crops`` ``(K, S, S, 3)`` uint8 and ``centres`` ``(K, 2)`` float64, the target's centre
        ``(cx, cy)`` in each crop's pixels (``S = settings.search_size``).
    """
    centre, side = search_region(box, settings)
    S = settings.search_size
    size = np.asarray(box, dtype=np.float64)[2:]
    mid = np.array([S / 2.0, S / 2.0])
    crops, centres = [warp_crop(image, centre, side, S)], [mid]
    for dx, dy in settings.aug_shifts:
        shift = np.array([dx, dy]) * size  # moving the crop moves the target the other way
        crops.append(warp_crop(image, centre + shift, side, S))
        centres.append(mid - shift * S / side)
    if settings.aug_flip:
        crops.append(warp_crop(image, centre, side, S, flip=True))
        centres.append(mid)
    for angle in settings.aug_angles:
        crops.append(warp_crop(image, centre, side, S, angle=angle))
        centres.append(mid)
    for sigma in settings.aug_blur:
        crops.append(cv2.GaussianBlur(crops[0], (0, 0), sigma))
        centres.append(mid)
    return np.stack(crops), np.stack(centres)


def feature_coords(points, layer: str) -> np.ndarray:
    """Crop pixels ``(..., 2)`` -> feature-cell coordinates at ``layer`` (cell ``i`` at ``i``).

    The backbone has no padding: cell ``i`` sees pixels ``[s·i, s·i + rf)``, so its centre is at
    ``s·i + rf/2``.
    """
    info = LAYERS[layer]
    return (np.asarray(points, dtype=np.float64) - info.receptive_field / 2.0) / info.stride


def crop_coords(cells, layer: str) -> np.ndarray:
    """Inverse of :func:`feature_coords`: feature-cell coordinates ``(..., 2)`` -> crop pixels."""
    info = LAYERS[layer]
    return np.asarray(cells, dtype=np.float64) * info.stride + info.receptive_field / 2.0


def make_labels(centres, target_size, shape, layer: str, settings: ATOMSettings = ATOMSettings()) -> np.ndarray:
    """Gaussian labels ``y_j`` ``(K, H, W)`` float64 peaking at each target centre (crop pixels ``(K, 2)``).

    ``σ = sigma_factor · sqrt(w h)`` of the target in feature cells.
    """
    centres = feature_coords(np.atleast_2d(centres), layer)
    w, h = target_size
    sigma = settings.sigma_factor * np.sqrt(w * h) / LAYERS[layer].stride
    return np.stack([gaussian_label(shape, sigma, centre=(cy, cx)) for cx, cy in centres])


@torch.no_grad()
def extract_features(backbone: Backbone, crops: np.ndarray, layers=("conv3", "conv4")) -> dict[str, torch.Tensor]:
    """Backbone features of uint8 crops ``(K, S, S, 3)`` (or one ``S×S×3``) at several layers in one pass.

    Returns ``{layer: (K, C_L, H_L, W_L) float32 tensor}``.
    """
    x = to_tensor(crops, next(backbone.parameters()).device)
    out, wanted = {}, set(layers)
    for name in LAYERS:
        x = getattr(backbone, name)(x)
        if name in wanted:
            out[name] = x
            if len(out) == len(wanted):
                break
    return out


def load_backbone(path: str | Path | None = None) -> Backbone:
    """The course backbone in eval mode: from ``iounet.pt`` (the one IoU-Net was trained on), else
    from ``siamfc.pt``. Raises ``FileNotFoundError`` when neither exists."""
    candidates = [Path(path)] if path else [weights_file("atom"), weights_file("siamfc")]
    for p in candidates:
        if p.is_file():
            return trained_backbone(p)
    raise FileNotFoundError(f"no backbone weights in {', '.join(map(str, candidates))}; "
                            "make them with `acvm train siamfc` and `acvm train atom`")


def crop_features(backbone: Backbone, image: np.ndarray, centre, side: float,
                  settings: ATOMSettings = ATOMSettings()) -> tuple[np.ndarray, torch.Tensor]:
    """Cut the search crop (``side`` pixels around ``centre``) and return it with its normalised
    features at ``settings.feature_layer``: ``(S×S×3 uint8, (1, C, H, W) float32)``."""
    crop = warp_crop(image, centre, side, settings.search_size)
    x = extract_features(backbone, crop, (settings.feature_layer,))[settings.feature_layer]
    return crop, normalise_features(x)


def response_extent(shape, layer: str, search_box=None, search_size: int = ATOMSettings.search_size
                    ) -> tuple[float, float, float, float]:
    """``imshow`` extent ``(left, right, bottom, top)`` of a map with one value per feature cell
    (``shape = (H, W)``), so that it lies on top of ``imshow(crop)`` where it came from, or on top
    of ``imshow(frame)`` when ``search_box`` (the crop's square in the frame, xywh) is given.

    ``imshow`` puts pixel ``i``'s centre at ``i``, half a pixel left of our convention, hence the shift.
    """
    corners = crop_coords(np.array([[-0.5, -0.5], [shape[1] - 0.5, shape[0] - 0.5]]), layer)
    if search_box is not None:
        x, y, w, h = np.asarray(search_box, dtype=np.float64)
        corners = corners * [w / search_size, h / search_size] + [x, y]
    (x0, y0), (x1, y1) = corners - 0.5
    return float(x0), float(x1), float(y1), float(y0)


def fit_compression(x: torch.Tensor, D: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed (not learned) compression for the notebooks: the first ``D`` principal directions
    ``P`` ``(D, C)`` of ``x`` ``(N, C, H, W)`` and per-channel scales ``(D,)`` that give every
    compressed channel unit mean square on ``x``. Apply it with :func:`compress`."""
    from .optim import pca_projection
    P = pca_projection(x, D)
    scale = torch.einsum("dc,nchw->ndhw", P, x).pow(2).mean((0, 2, 3)).sqrt()
    return P, scale


def compress(x: torch.Tensor, P: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, D, H, W)``: project on ``P`` and divide each channel by ``scale``."""
    return torch.einsum("dc,nchw->ndhw", P.to(x.dtype), x) / scale.to(x.dtype)[None, :, None, None]


def template_modulation(model, image: np.ndarray, box, settings: ATOMSettings = ATOMSettings()) -> torch.Tensor:
    """IoU-Net's modulation vector ``m`` ``(1, D)`` from the reference frame: the template crop is cut
    as in the training pairs (the target centred, SiamFC's context, ``template_size`` pixels)."""
    from .boxes import crop_and_resize
    box = np.asarray(box, dtype=np.float64)
    cz = xywh_to_cxcywh(box)[:2]
    side_z = context_size(box[2], box[3], settings.context)
    z = crop_and_resize(image, cz, side_z, settings.template_size)
    z_box = image_to_crop(box, cz, side_z, settings.template_size)
    layer = model.head.settings.layer
    with torch.no_grad():
        fz = extract_features(model.backbone, z, (layer,))[layer]
        return model.head.modulation(fz, torch.as_tensor(z_box, dtype=torch.float32)[None])


def search_view(model, image: np.ndarray, box, settings: ATOMSettings = ATOMSettings()) -> dict:
    """Everything one frame gives around ``box``: ``{"crop", "centre", "side", "features", "head"}``.

    ``features`` maps each layer the tracker reads to ``(1, C, H, W)`` backbone features of the
    search crop (one backbone pass); ``head`` is IoU-Net's ``test_features`` of it, ready for
    :func:`acvm.iounet.refine_boxes`. Boxes in this crop: :func:`acvm.boxes.image_to_crop` with
    ``(centre, side, settings.search_size)``.
    """
    centre, side = search_region(box, settings)
    crop = warp_crop(image, centre, side, settings.search_size)
    layer = model.head.settings.layer
    feats = extract_features(model.backbone, crop, tuple({settings.feature_layer, layer}))
    with torch.no_grad():
        head = model.head.test_features(feats[layer])
    return {"crop": crop, "centre": centre, "side": side, "features": feats, "head": head}


# --- the online DCF layer -------------------------------------------------------------------------

def first_frame_samples(backbone: Backbone, image: np.ndarray, box, settings: ATOMSettings = ATOMSettings()):
    """Features and labels of the augmented first-frame crops: ``(x, y, crops, centres)``.

    ``x`` is ``(K, C, H, W)`` float32 (the DCF layer's input), ``y`` ``(K, H, W)`` float32, ``crops``
    ``(K, S, S, 3)`` uint8 and ``centres`` ``(K, 2)`` the target centres in crop pixels.
    """
    crops, centres = augmented_crops(image, box, settings)
    x = extract_features(backbone, crops, (settings.feature_layer,))[settings.feature_layer]
    _, side = search_region(box, settings)
    size = np.asarray(box, dtype=np.float64)[2:] * settings.search_size / side
    y = make_labels(centres, size, x.shape[-2:], settings.feature_layer, settings)
    return x, torch.as_tensor(y, dtype=x.dtype), crops, centres


class SampleMemory:
    """The DCF's training set: up to ``capacity`` samples ``x_j`` with labels ``y_j`` and weights γ_j.

    After ``t`` additions the first frame's samples share ``(1 − η)^t`` and a later sample added
    ``a`` additions ago weighs ``η (1 − η)^a`` (each new sample takes a share ``η`` and every
    older weight shrinks by ``1 − η``, ATOM's rule), then the weights are normalised. The first
    frame's samples, the only sure ground truth, keep at least ``init_min_weight`` of the total.
    When the memory is full the oldest later sample is replaced.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, capacity: int, learning_rate: float,
                 init_min_weight: float):
        n0 = x.shape[0]
        if capacity <= n0:
            raise ValueError(f"memory_size ({capacity}) must exceed the {n0} first-frame samples")
        self.x = torch.zeros((capacity, *x.shape[1:]), dtype=x.dtype)
        self.y = torch.zeros((capacity, *y.shape[1:]), dtype=y.dtype)
        self.added = torch.zeros(capacity, dtype=torch.int64)  # when each later sample came in
        self.x[:n0], self.y[:n0] = x, y
        self.n_init, self.size, self.t = n0, n0, 0
        self.learning_rate, self.init_min_weight = learning_rate, init_min_weight

    @property
    def gamma(self) -> torch.Tensor:
        """Normalised weights γ_j ``(size,)`` float64 (summing to 1), in memory order."""
        eta = self.learning_rate
        age = (self.t - 1 - self.added[self.n_init: self.size]).double()
        later = eta * (1.0 - eta) ** age
        init = (1.0 - eta) ** self.t
        rest = float(later.sum())
        if rest > 0 and init / (init + rest) < self.init_min_weight:
            init, later = self.init_min_weight, later * (1.0 - self.init_min_weight) / rest
        g = torch.cat([torch.full((self.n_init,), init / self.n_init, dtype=torch.float64), later])
        return g / g.sum()

    def add(self, x: torch.Tensor, y: torch.Tensor) -> int:
        """Insert one sample ``x`` ``(C, H, W)`` with label ``y`` ``(H, W)``; returns its slot."""
        if self.size < self.x.shape[0]:
            slot = self.size
            self.size += 1
        else:
            slot = self.n_init + int(torch.argmin(self.added[self.n_init:]))
        self.x[slot], self.y[slot], self.added[slot] = x, y, self.t
        self.t += 1
        return slot

    def problem(self, settings: ATOMSettings) -> DCFProblem:
        """The linear-in-``w`` least-squares problem over the stored (already projected) samples."""
        n = self.size
        act = _activation(settings)
        return DCFProblem(self.x[:n], self.y[:n], settings.filter_size, gamma=self.gamma.to(self.x.dtype),
                          lam=settings.filter_reg, activation=act)


def _activation(settings: ATOMSettings):
    if settings.response_slope <= 0:
        return None
    slope = settings.response_slope
    return lambda s: leaky_response(s, slope)


def localise(response: np.ndarray, layer: str) -> tuple[np.ndarray, float]:
    """Peak of a DCF response ``(H, W)``: the target centre in crop pixels ``(cx, cy)`` and the peak value."""
    py, px = subpixel_peak(response)
    return crop_coords(np.array([px, py]), layer), float(response.max())


def normalise_features(x: torch.Tensor) -> torch.Tensor:
    """Scale each sample ``(K, C, H, W)`` to unit mean square, so λ means the same on every frame."""
    return x / x.pow(2).mean((1, 2, 3), keepdim=True).clamp(min=1e-12).sqrt()


def apply_filter(x: torch.Tensor, filt: torch.Tensor, settings: ATOMSettings = ATOMSettings()) -> torch.Tensor:
    """The DCF layer's output ``σ(w ⋆ x)``: projected features ``(K, D, H, W)`` and filter
    ``(1, D, k, k)`` -> ``(K, H, W)``."""
    k = filt.shape[-1]
    s = torch.nn.functional.conv2d(x, filt, padding=k // 2)[:, 0]
    return s if settings.response_slope <= 0 else leaky_response(s, settings.response_slope)


def train_first_filter(x: torch.Tensor, y: torch.Tensor, settings: ATOMSettings = ATOMSettings()):
    """Learn the projection ``P`` and filter ``w`` jointly on the first frame by Gauss–Newton CG.

    Args:
        x: ``(K, C, H, W)`` normalised features of the augmented crops; y: ``(K, H, W)`` labels.
    Returns:
        ``(filter (1, D, k, k), projection (D, C), result)`` with the solver's
        :class:`acvm.optim.OptimResult` (loss against backprop calls).
    """
    D = settings.compressed_dim if settings.compressed_dim > 0 else None
    problem = DCFProblem(x, y, settings.filter_size, lam=settings.filter_reg, activation=_activation(settings),
                         compressed_dim=D, lam_projection=settings.projection_reg)
    result = gauss_newton_cg(problem, settings.init_gn_iter, settings.init_cg_iter, backtrack=True)
    P = problem.projection(result.w)
    if P is None:
        P = torch.eye(x.shape[1], dtype=x.dtype)
    return problem.filter(result.w).detach(), P.detach(), result


class ATOMTracker(Tracker):
    """ATOM (registered as ``"atom"``): online DCF layer for the position, IoU-Net for the box.

    Args:
        settings: an :class:`ATOMSettings` (or keyword overrides of its fields).
        weights: the IoU-Net file (default ``data/weights/iounet.pt``, backbone included), or
            ``"random"`` for the untrained control: random backbone, no IoU-Net refinement.
        model: an already loaded :class:`acvm.iounet.IoUNet` (used instead of ``weights``).
        seed: seeds the random proposals (and the random control's weights).

    After ``update`` it exposes:
        ``response``: ``(H, W)`` float64, the DCF layer's output on the search crop's features;
        ``search_box``: the searched square ``(x, y, w, h)`` in the frame;
        ``proposals``: ``(K, 4)`` the boxes that overlap maximisation started from (frame pixels);
        ``refined``: ``(K, 4)`` where they ended; ``proposal_history``: ``(steps + 1, K, 4)``;
        ``proposal_ious``: ``(steps + 1, K)`` their predicted IoU at every step;
        ``confidence``: the response's peak value (1 is a perfect match of the label);
        ``size_bias``: ``(2,)`` IoU-Net's width and height factor measured on the first frame
        (:meth:`measure_size_bias`; ones unless ``calibrate``), divided out of every refined box.
    """

    name = "atom"

    def __init__(self, settings: ATOMSettings | None = None, weights: str | Path | None = None,
                 model=None, seed: int = 0, **overrides):
        super().__init__()
        from .iounet import IoUNet, load_iounet
        self.settings = replace(settings or ATOMSettings(), **overrides)
        self.seed = seed
        if model is None:
            if str(weights) == "random":
                torch.manual_seed(seed)
                model = IoUNet().eval()
                self.settings = replace(self.settings, use_iounet=False)
            else:
                model = load_iounet(weights)
        self.model = model.eval()
        self.backbone = model.backbone
        self.head = model.head
        self.response = self.scale_peaks = None
        self.proposals = self.refined = self.proposal_history = self.proposal_ious = None
        # the frame's box before and after IoU-Net (frame pixels; refined_box None when it did not run):
        # benchmarks/iounet_refinement.py measures what the refinement adds
        self.search_box = self.dcf_box = self.refined_box = None
        self.size_bias = np.ones(2)
        s = self.settings
        # the scale pyramid and its penalties depend on the settings only
        self.scale_factors = s.scale_step ** (np.arange(s.scale_num) - (s.scale_num - 1) / 2.0)
        self.scale_penalties = np.where(np.isclose(self.scale_factors, 1.0), 1.0, s.scale_penalty)

    # -- the steps -----------------------------------------------------------------------------
    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("dc,nchw->ndhw", self.projection, normalise_features(x))

    def _label(self, centre_crop, size_crop, shape) -> torch.Tensor:
        y = make_labels(np.asarray(centre_crop)[None], size_crop, shape, self.settings.feature_layer, self.settings)
        return torch.as_tensor(y[0], dtype=torch.float32)

    def init(self, image, box) -> None:
        image = check_image(image)
        box = check_init_box(box, image.shape)
        s = self.settings
        # every later step works in the view; what update returns and exposes is in frame pixels
        self.view = AspectView(box, image.shape, s.max_aspect)
        image, box = self.view.image(image), self.view.to_view(box)
        self.rng = np.random.default_rng(self.seed)
        self.frame = 0
        self.box = box.copy()
        # the DCF layer: projection and filter from augmented copies of the first frame
        x, y, _, _ = first_frame_samples(self.backbone, image, box, s)
        self.filter, self.projection, self.init_result = train_first_filter(normalise_features(x), y, s)
        self.memory = SampleMemory(self._project(x), y, s.memory_size, s.learning_rate, s.init_min_weight)
        # IoU-Net's modulation vector from a template crop cut as in the training pairs
        self.modulation = template_modulation(self.model, image, box, s)
        self.size_bias = self.measure_size_bias(image, box) if s.calibrate and s.use_iounet else np.ones(2)
        self.response = None

    def measure_size_bias(self, image: np.ndarray, box) -> np.ndarray:
        """How much wider and taller than the true ``box`` the refined box comes out on the first
        frame, where the truth is known: ``(2,)`` float64, clipped to [0.5, 2].

        The refinement of :meth:`update` is run ``calibration_runs`` times from the true box and
        random boxes around it (geometric mean of the results); :meth:`update` divides the factor
        out of every later refined box (:func:`remove_size_bias`).
        """
        s = self.settings
        view = search_view(self.model, image, box, s)
        truth = image_to_crop(box, view["centre"], view["side"], s.search_size)
        sizes = [self.refine(view["head"], truth)[0][2:] for _ in range(s.calibration_runs)]
        return size_bias(np.exp(np.mean(np.log(sizes), 0)), truth[2:])

    def refine(self, head_feat: torch.Tensor, box_crop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """IoU-Net step: start from ``box_crop`` and random boxes around it, climb the predicted IoU,
        average the ``iounet_k`` best. ``head_feat`` is IoU-Net's ``test_features`` of the crop.
        Returns (final box, history (T+1, K, 4), ious (T+1, K)), all in crop pixels."""
        s = self.settings
        cx, cy, w, h = xywh_to_cxcywh(box_crop)
        n = s.num_init_random_boxes
        d = self.rng.normal(size=(n, 4))
        rand = cxcywh_to_xywh(np.stack([cx + d[:, 0] * s.box_jitter_pos * w, cy + d[:, 1] * s.box_jitter_pos * h,
                                        w * np.exp(d[:, 2] * s.box_jitter_sz / 2),
                                        h * np.exp(d[:, 3] * s.box_jitter_sz / 2)], 1))
        start = np.vstack([box_crop[None], rand])
        from .iounet import refine_boxes
        history, ious = refine_boxes(self.head, head_feat, self.modulation, start, s.box_refinement_iter,
                                     s.box_refinement_step_length)
        best = np.argsort(-ious[-1])[: s.iounet_k]
        return history[-1][best].mean(0), history, ious

    def update(self, image) -> np.ndarray:
        image = self.view.image(check_image(image, "image"))
        s = self.settings
        self.frame += 1
        view, x_proj, factor, self.response = self._scale_search(image)
        centre, side = view["centre"], view["side"]
        self.search_box = self.view.from_view(cxcywh_to_xywh([centre[0], centre[1], side, side]))
        pos_crop, peak = localise(self.response, s.feature_layer)
        self.confidence = peak
        scale = s.search_size / side
        found = peak >= s.target_not_found
        if not found:
            pos_crop = np.array([s.search_size / 2.0, s.search_size / 2.0])  # stay where we were
            factor = 1.0
        size_crop = self.box[2:] * ((1.0 - s.scale_lr) + s.scale_lr * factor) * scale
        box_crop = cxcywh_to_xywh([pos_crop[0], pos_crop[1], size_crop[0], size_crop[1]])
        to_image = lambda b: self.view.from_view(crop_to_image(b, centre, side, s.search_size))  # noqa: E731
        self.dcf_box, self.refined_box = to_image(box_crop), None
        if s.use_iounet and found:
            refined, history, ious = self.refine(view["head"], box_crop)
            refined = remove_size_bias(refined, self.size_bias)
            self.proposal_history, self.proposal_ious = to_image(history), ious
            self.proposals, self.refined = self.proposal_history[0], self.proposal_history[-1]
            self.refined_box = to_image(refined)
            if ious[-1].max() >= s.min_predicted_iou:  # an unsure IoU-Net (occlusion) keeps the old box
                box_crop = self._limit(refined, box_crop)
        new_box = crop_to_image(box_crop, centre, side, s.search_size)
        new_box = clip_box(new_box, image.shape, s.min_size)
        self.box = new_box
        if found:
            c_crop = xywh_to_cxcywh(box_crop)
            self.memory.add(x_proj[0], self._label(c_crop[:2], c_crop[2:], x_proj.shape[-2:]))
            if self.frame % s.train_skipping == 0:
                self._train()
        return self.view.from_view(new_box)

    def _scale_search(self, image: np.ndarray) -> tuple[dict, torch.Tensor, float, np.ndarray]:
        """The DCF layer on search crops at ``scale_step^k`` times the current size (one backbone
        pass): returns the chosen scale's view (as :func:`search_view`), its projected features
        ``(1, D, H, W)``, its scale factor and its response ``(H, W)`` float64. The other scales'
        peaks are damped by ``scale_penalty`` so that the size changes only on clear evidence."""
        s = self.settings
        if s.scale_num <= 1:
            view = search_view(self.model, image, self.box, s)
            x_proj = self._project(view["features"][s.feature_layer])
            with torch.no_grad():
                response = apply_filter(x_proj, self.filter, s)[0].double().numpy()
            return view, x_proj, 1.0, response
        factors, penalties = self.scale_factors, self.scale_penalties
        centre, side = search_region(self.box, s)
        crops = np.stack([warp_crop(image, centre, side * f, s.search_size) for f in factors])
        layer = self.head.settings.layer
        feats = extract_features(self.backbone, crops, tuple({s.feature_layer, layer}))
        x_proj = self._project(feats[s.feature_layer])
        with torch.no_grad():
            responses = apply_filter(x_proj, self.filter, s).double().numpy()
        peaks = responses.max((1, 2))
        k = int(np.argmax(peaks * penalties))
        self.scale_peaks = peaks
        view = {"crop": crops[k], "centre": centre, "side": float(side * factors[k]),
                "features": {name: f[k: k + 1] for name, f in feats.items()}}
        with torch.no_grad():
            view["head"] = self.head.test_features(view["features"][layer]) if s.use_iounet else None
        return view, x_proj[k: k + 1], float(factors[k]), responses[k]

    def _limit(self, refined: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """Combine IoU-Net's box with the DCF's (``previous``: its peak and the old size)."""
        s = self.settings
        r = xywh_to_cxcywh(refined)
        p = xywh_to_cxcywh(previous)
        if not s.refine_position:
            r[:2] = p[:2]
        rate = s.size_update_rate
        a_rate = rate if s.aspect_update_rate is None else s.aspect_update_rate
        # geometric interpolation of scale sqrt(wh) and aspect h/w; with equal rates the same as of w and h
        scale = np.sqrt(p[2] * p[3]) ** (1.0 - rate) * np.sqrt(r[2] * r[3]) ** rate
        aspect = (p[3] / p[2]) ** (1.0 - a_rate) * (r[3] / r[2]) ** a_rate
        r[2:] = scale / np.sqrt(aspect), scale * np.sqrt(aspect)
        # a size that jumps by more than max_scale_change in one frame is more likely an IoU-Net error
        r[2:] = np.clip(r[2:], p[2:] / s.max_scale_change, p[2:] * s.max_scale_change)
        return cxcywh_to_xywh(r)

    def _train(self) -> None:
        """Model update: a few CG iterations (one Gauss–Newton step) on the weighted memory, warm-started."""
        problem = self.memory.problem(self.settings)
        result = gauss_newton_cg(problem, 1, self.settings.cg_iter, w0=self.filter.reshape(-1))
        self.filter = problem.filter(result.w).detach()


def run_with_snapshots(tracker: ATOMTracker, sequence, frames=(), name: str = "atom"):
    """One-pass evaluation that also keeps what the tracker exposed at ``frames``.

    Returns ``(result, snapshots)``: the :class:`acvm.evaluation.OPEResult` and
    ``{frame: {"search_box", "response", "proposals", "refined", "confidence"}}`` (copies).
    """
    from .evaluation import run_ope
    wanted, snapshots = set(frames), {}

    def keep(i, t, box):
        if i in wanted:
            snapshots[i] = {k: (None if getattr(t, k) is None else np.array(getattr(t, k), copy=True))
                            for k in ("search_box", "response", "proposals", "refined")}
            snapshots[i]["confidence"] = t.confidence

    return run_ope(tracker, sequence, name=name, callback=keep), snapshots
