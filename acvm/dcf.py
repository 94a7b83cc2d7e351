"""Discriminative correlation filters: NCC, MOSSE and a DSST-style multi-channel DCF.

Tracking by correlation (notebook 02). A filter ``h`` correlated with the features ``f`` of a
patch gives the response ``g' = f ⋆ h``; we want it to equal the desired output ``g``, a sharp
Gaussian on the target. In the Fourier domain correlation is an element-wise product, so the
ridge regression ``min_h ‖f ⋆ h − g‖² + λ‖h‖²`` has a closed-form solution per frequency:

    Ĥ* = Ĝ ⊙ F̂* / (F̂ ⊙ F̂* + λ)                                  (MOSSE, one channel)
    Ĥ*_d = Ĝ ⊙ F̂*_d / (Σ_k F̂_k ⊙ F̂*_k + λ)                       (D channels)

(``*`` is the complex conjugate; the multi-channel form is the exact ridge-regression solution
for one training patch, by the Sherman-Morrison identity). Over a sequence, the numerator
``A`` and denominator ``B`` are running averages with learning rate η (MOSSE's model update),
and the response on a new patch ``z`` is ``g' = F⁻¹(Σ_d Ẑ_d ⊙ A_d / (B + λ))``.

Trackers:

* :class:`NCCTracker` (``"ncc"``) - the baseline: normalised cross-correlation of the first
  frame's grey template with a search region, never updated;
* :class:`MOSSETracker` (``"mosse"``) - Bolme et al. 2010 on log grey pixels;
* :class:`DCFTracker` (``"dcf"``) - HOG + colour features, cosine window, padding, sub-pixel
  peak and a 1-D scale filter as in DSST (Danelljan et al. 2014).

After ``update`` every tracker exposes ``response`` (the map it localised with, centred: the
previous position is in the middle) and ``confidence`` (PSR for the filters, the NCC peak for
NCC). :func:`run_response_demo` and :func:`draw_response` are the notebook's interactive viewer.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from .boxes import crop_and_resize, cxcywh_to_xywh, mean_colour
from .correlation import cosine_window, gaussian_label, normalized_cross_correlation, psr, subpixel_peak
from .features import dcf_features
from .tracker import Tracker, check_image, check_init

__all__ = ["NCCSettings", "MOSSESettings", "DCFSettings", "fft2", "filter_terms", "closed_form_filter",
           "filter_response", "wrapped_peak", "mosse_preprocess", "NCCTracker", "MOSSETracker", "DCFTracker",
           "ResponseViewer"]


# --- settings (names as in the papers) -------------------------------------------------------

@dataclass(frozen=True)
class NCCSettings:
    search_factor: float = 2.0      # side of the search region / side of the target
    zero_mean: bool = True          # correlation coefficient (robust to brightness offsets)
    max_template_area: int = 40 * 40  # template resized to at most this many pixels (speed)


@dataclass(frozen=True)
class MOSSESettings:
    padding: float = 1.0            # search window = (1 + padding) × target size
    max_patch_area: int = 64 * 64   # window resized to at most this many pixels (speed)
    sigma: float = 2.0              # σ of the desired output g, in patch pixels (MOSSE: 2)
    lam: float = 1e-2               # λ, regularisation in the denominator
    learning_rate: float = 0.125    # η, running average of numerator A and denominator B
    n_perturbations: int = 8        # random affine warps of the first patch to train on (MOSSE: 8)
    psr_threshold: float = 0.0      # no model update when PSR falls below (occlusion); 0 = always
    seed: int = 0                   # for the initial perturbations


@dataclass(frozen=True)
class DCFSettings:
    padding: float = 2.0            # search window = (1 + padding) × target size (KCF: 1.5)
    cell_size: int = 4              # HOG cell in pixels
    window_area: float = 150.0 ** 2  # window resized to about this many pixels
    output_sigma_factor: float = 1 / 16  # σ of g = sqrt(target area in cells) × this (DSST)
    lam: float = 1e-4               # λ of the translation filter
    # η of the translation filter (KCF/DSST: 0.01-0.025). Chosen on the 14 validation sequences
    # (docs/validation.md): 0.01 0.522, 0.02 0.588, 0.03 0.609, 0.04 0.613, 0.05 0.587, 0.075 0.590,
    # 0.1 0.527 mean AUC; 0.03, the middle of the plateau: their short real videos change appearance
    # faster than the synthetic sequences the old 0.01 was tuned on
    learning_rate: float = 0.03
    colour: bool = True             # add the 5 colour channels to HOG's 31
    n_scales: int = 17              # S, scale samples of the 1-D scale filter (fDSST: 17)
    scale_step: float = 1.03        # a, ratio between neighbouring scale samples
    scale_sigma_factor: float = 1 / 4  # σ of the scale label = sqrt(S) × this (DSST)
    scale_lam: float = 1e-2         # λ of the scale filter
    scale_learning_rate: float = 0.025  # η of the scale filter
    scale_model_area: float = 512.0  # scale samples resized to this many pixels (DSST: 512)
    min_size: float = 4.0           # smallest target side in pixels the scale may shrink to


# --- the filter in closed form ---------------------------------------------------------------

def fft2(x: np.ndarray) -> np.ndarray:
    """2-D FFT over the first two axes: ``H×W`` or ``H×W×D`` real -> complex128 of the same shape."""
    return np.fft.fft2(np.asarray(x, dtype=np.float64), axes=(0, 1))


def filter_terms(F: np.ndarray, G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Numerator ``A = Ĝ ⊙ F̂*`` and denominator ``B = Σ_d F̂_d ⊙ F̂*_d`` of the closed-form filter.

    Args:
        F: ``H×W`` or ``H×W×D`` complex, the FFT of the training features.
        G: ``H×W`` complex, the FFT of the desired output.
    Returns:
        ``A`` with the shape of ``F`` (complex) and ``B`` ``H×W`` (real, float64).
    """
    if F.ndim == 2:
        return G * np.conj(F), (F * np.conj(F)).real
    return G[..., None] * np.conj(F), (F * np.conj(F)).real.sum(axis=2)


def closed_form_filter(f: np.ndarray, g: np.ndarray, lam: float) -> np.ndarray:
    """The correlation filter that maps ``f`` closest to ``g``, in the Fourier domain.

    Solves ``min_h ‖f ⋆ h − g‖² + λ‖h‖²`` (circular correlation) in closed form:
    ``Ĥ*_d = Ĝ ⊙ F̂*_d / (Σ_k F̂_k ⊙ F̂*_k + λ)``; for one channel this is MOSSE's
    ``Ĥ* = Ĝ ⊙ F̂* / (F̂ ⊙ F̂* + λ)``.

    Args:
        f: ``H×W`` or ``H×W×D`` real training patch (features, already windowed).
        g: ``H×W`` real desired output.
        lam: λ > 0.
    Returns:
        ``Ĥ*`` (the conjugate filter), complex128 with the shape of ``f``; apply it with
        :func:`filter_response`.
    """
    f, g = np.asarray(f), np.asarray(g)
    if f.shape[:2] != g.shape:
        raise ValueError(f"closed_form_filter: f {f.shape} and g {g.shape} must have the same height and width")
    A, B = filter_terms(fft2(f), fft2(g))
    return A / ((B + lam)[..., None] if f.ndim == 3 else B + lam)


def filter_response(H_conj: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The filter's response on a patch: ``g' = F⁻¹(Σ_d Ẑ_d ⊙ Ĥ*_d)``.

    Args:
        H_conj: ``H×W`` or ``H×W×D`` complex, from :func:`closed_form_filter`.
        z: real patch (features) of the same shape.
    Returns:
        ``H×W`` float64; a target displaced by ``(dy, dx)`` from the training position peaks
        at ``(dy, dx)`` modulo the size (the peak of an unmoved target is at ``(0, 0)``).
    """
    prod = fft2(z) * H_conj
    if prod.ndim == 3:
        prod = prod.sum(axis=2)
    return np.fft.ifft2(prod).real


def _response_from_terms(A: np.ndarray, B: np.ndarray, Z: np.ndarray, lam: float) -> np.ndarray:
    prod = Z * A
    if prod.ndim == 3:
        prod = prod.sum(axis=2)
    return np.fft.ifft2(prod / (B + lam)).real


def wrapped_peak(response: np.ndarray) -> tuple[float, float]:
    """Displacement ``(dy, dx)`` of a circular response's peak, sub-pixel, in ``[-H/2, H/2)``.

    Args:
        response: ``H×W`` float (peak at ``(0, 0)`` means no motion).
    Returns:
        ``(dy, dx)`` floats in cells (pixels of the response).
    """
    y, x = subpixel_peak(response, circular=True)
    h, w = response.shape
    dy = y - h if y >= h / 2 else y
    dx = x - w if x >= w / 2 else x
    return float(dy), float(dx)


def mosse_preprocess(patch: np.ndarray, window: np.ndarray | None = None) -> np.ndarray:
    """MOSSE's pre-processing of a grey patch: ``log(1 + x)``, zero mean, unit norm, cosine window.

    The log tames strong lighting, normalisation removes brightness and contrast, and the window
    hides the patch border from the FFT's periodic view.

    Args:
        patch: ``H×W`` grey values (uint8 or float, 0-255).
        window: ``H×W`` float (default :func:`cosine_window`).
    Returns:
        ``H×W`` float64.
    """
    x = np.log1p(np.asarray(patch, dtype=np.float64))
    x = x - x.mean()
    x = x / (np.linalg.norm(x) + 1e-5)
    return x * (cosine_window(x.shape) if window is None else window)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _pad_colour(image: np.ndarray) -> np.ndarray:
    # every 8th pixel: a full-frame mean per crop costs more than the whole filter
    return mean_colour(image, 8)


def _window_geometry(size_wh, area: float, multiple: int = 1) -> tuple[float, tuple[int, int]]:
    """Resize factor and ``(w, h)`` in pixels (multiples of ``multiple``) giving about ``area`` pixels."""
    w, h = float(size_wh[0]), float(size_wh[1])
    factor = np.sqrt(area / (w * h))
    out_w = max(multiple * 3, int(round(w * factor / multiple)) * multiple)
    out_h = max(multiple * 3, int(round(h * factor / multiple)) * multiple)
    return float(factor), (out_w, out_h)


def _clamp_centre(centre: np.ndarray, image_shape) -> np.ndarray:
    # a centre outside the frame can never be recovered from; the frame edge can
    return np.array([np.clip(centre[0], 0.0, image_shape[1]), np.clip(centre[1], 0.0, image_shape[0])])


# --- NCC: the baseline that never learns ------------------------------------------------------

class NCCTracker(Tracker):
    """Template matching by normalised cross-correlation on grey pixels; template from frame 1 only.

    Each frame searches a region ``search_factor`` times the target around the previous box and
    moves to the best match. No scale, no model update: it shows what a fixed raw-pixel template
    can and cannot do. Exposes ``response`` (the NCC map over the search region) and
    ``confidence`` (its peak, in [-1, 1]).
    """

    name = "ncc"

    def __init__(self, settings: NCCSettings | None = None, **overrides):
        super().__init__()
        self.settings = replace(settings or NCCSettings(), **overrides)
        self.response: np.ndarray | None = None

    def init(self, image, box) -> None:
        image, box, self.centre, self.size = check_init(image, box)
        s = self.settings
        w, h = self.size
        # work at a reduced resolution when the target is large: same answer, fewer pixels
        self.factor = min(1.0, float(np.sqrt(s.max_template_area / (w * h))))
        self.tsize = (max(3, int(round(w * self.factor))), max(3, int(round(h * self.factor))))
        self.template = _grey(crop_and_resize(image, self.centre, (w, h), self.tsize,
                                              pad_value=_pad_colour(image))).astype(np.float64)
        self.box = box.copy()
        self.confidence = 1.0

    def update(self, image) -> np.ndarray:
        image = check_image(image)
        s = self.settings
        search = self.size * s.search_factor
        out = (int(round(search[0] * self.factor)), int(round(search[1] * self.factor)))
        out = (max(out[0], self.tsize[0] + 1), max(out[1], self.tsize[1] + 1))
        region = _grey(crop_and_resize(image, self.centre, search, out, pad_value=_pad_colour(image))).astype(np.float64)
        self.response = normalized_cross_correlation(region, self.template, zero_mean=s.zero_mean)
        y, x = subpixel_peak(self.response)
        # top-left (x, y) of the best window -> its centre, back in image pixels
        centre_in_region = np.array([x + self.tsize[0] / 2.0, y + self.tsize[1] / 2.0])
        scale = np.array([search[0] / out[0], search[1] / out[1]])
        self.centre = _clamp_centre(self.centre + (centre_in_region - np.array(out) / 2.0) * scale, image.shape)
        self.confidence = float(self.response.max())
        self.box = cxcywh_to_xywh([*self.centre, *self.size])
        return self.box.copy()


# --- MOSSE --------------------------------------------------------------------------------------

def _random_warp(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small random rotation and scaling about the centre (MOSSE's initial training set)."""
    h, w = patch.shape
    angle = rng.uniform(-10.0, 10.0)
    scale = rng.uniform(0.92, 1.08)
    M = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, scale)
    return cv2.warpAffine(patch, M, (w, h), borderMode=cv2.BORDER_REFLECT)


class MOSSETracker(Tracker):
    """MOSSE (Bolme et al., CVPR 2010): a one-channel correlation filter on log grey pixels.

    ``init`` trains on the first patch and ``n_perturbations`` random warps of it; ``update``
    correlates, moves to the (sub-pixel) peak, and updates ``A ← (1-η)A + η Ĝ⊙F̂*`` and
    ``B ← (1-η)B + η F̂⊙F̂*`` on the patch at the new position. The box keeps its initial size.
    Exposes ``response`` (centred), ``psr`` and ``confidence`` (= PSR).
    """

    name = "mosse"

    def __init__(self, settings: MOSSESettings | None = None, **overrides):
        super().__init__()
        self.settings = replace(settings or MOSSESettings(), **overrides)
        self.response: np.ndarray | None = None
        self.psr: float | None = None

    def _patch(self, image: np.ndarray) -> np.ndarray:
        return _grey(crop_and_resize(image, self.centre, self.window_size, self.patch_size,
                                     pad_value=self._pad))

    def init(self, image, box) -> None:
        image, box, self.centre, self.size = check_init(image, box)
        s = self.settings
        self.window_size = tuple(self.size * (1.0 + s.padding))
        area = min(s.max_patch_area, self.window_size[0] * self.window_size[1])
        _, self.patch_size = _window_geometry(self.window_size, area)
        pw, ph = self.patch_size
        self.window = cosine_window((ph, pw))
        self.G = fft2(gaussian_label((ph, pw), s.sigma, circular=True))
        self._pad = _pad_colour(image)
        patch = self._patch(image)
        rng = np.random.default_rng(s.seed)
        A, B = filter_terms(fft2(mosse_preprocess(patch, self.window)), self.G)
        for _ in range(s.n_perturbations):
            a, b = filter_terms(fft2(mosse_preprocess(_random_warp(patch, rng), self.window)), self.G)
            A, B = A + a, B + b
        n = 1 + s.n_perturbations
        self.A, self.B = A / n, B / n
        self.box = box.copy()
        self.confidence = None

    def update(self, image) -> np.ndarray:
        image = check_image(image)
        s = self.settings
        self._pad = _pad_colour(image)
        Z = fft2(mosse_preprocess(self._patch(image), self.window))
        response = _response_from_terms(self.A, self.B, Z, s.lam)
        dy, dx = wrapped_peak(response)
        self.response = np.fft.fftshift(response)
        self.psr = psr(self.response)
        self.confidence = self.psr
        step = np.array(self.window_size) / np.array(self.patch_size)
        self.centre = _clamp_centre(self.centre + np.array([dx, dy]) * step, image.shape)
        if self.psr >= s.psr_threshold:
            F = fft2(mosse_preprocess(self._patch(image), self.window))
            a, b = filter_terms(F, self.G)
            self.A = (1 - s.learning_rate) * self.A + s.learning_rate * a
            self.B = (1 - s.learning_rate) * self.B + s.learning_rate * b
        self.box = cxcywh_to_xywh([*self.centre, *self.size])
        return self.box.copy()


# --- DCF with HOG + colour and a scale filter ---------------------------------------------------

class DCFTracker(Tracker):
    """A multi-channel DCF in the style of DSST: HOG + colour, cosine window, 1-D scale filter.

    Translation: features of a window ``(1 + padding)`` times the target, resized to about
    ``window_area`` pixels, multiplied by the cosine window; the closed-form multi-channel filter
    with running-average numerator and denominator; sub-pixel peak. Scale: ``S`` samples of the
    target at scales ``a^k`` around the current one, each a flattened HOG vector; a 1-D filter
    along the scale axis picks the best (DSST, Danelljan et al., BMVC 2014).
    Exposes ``response`` (centred), ``scale_response`` (``(S,)``), ``psr``, ``scale`` and
    ``confidence`` (= PSR) after every update.
    """

    name = "dcf"

    def __init__(self, settings: DCFSettings | None = None, **overrides):
        super().__init__()
        self.settings = replace(settings or DCFSettings(), **overrides)
        self.response: np.ndarray | None = None
        self.scale_response: np.ndarray | None = None
        self.psr: float | None = None

    # -- named steps, each usable on its own in a notebook --

    def extract(self, image: np.ndarray, centre, scale: float) -> np.ndarray:
        """Windowed features ``Hc×Wc×D`` (float32) of the search window at ``centre`` and ``scale``."""
        window = (self.base_window[0] * scale, self.base_window[1] * scale)
        patch = crop_and_resize(image, centre, window, self.patch_size, pad_value=_pad_colour(image))
        return dcf_features(patch, self.settings.cell_size, self.settings.colour) * self.cos_window[..., None]

    def scale_samples(self, image: np.ndarray, centre, scale: float) -> np.ndarray:
        """``S×D_s`` float64: one flattened HOG vector per scale factor, windowed along the scale axis."""
        s = self.settings
        pad = _pad_colour(image)
        patches = np.stack([crop_and_resize(image, centre, tuple(self.base_size * (scale * f)), self.scale_patch_size,
                                            pad_value=pad) for f in self.scale_factors])
        feats = dcf_features(patches, s.cell_size, colour=False).reshape(len(patches), -1)
        return feats.astype(np.float64) * self.scale_window[:, None]

    def init(self, image, box) -> None:
        image, box, self.centre, self.base_size = check_init(image, box)
        s = self.settings
        w, h = self.base_size
        self.base_window = self.base_size * (1.0 + s.padding)
        self.factor, self.patch_size = _window_geometry(self.base_window, s.window_area, s.cell_size)
        wc, hc = self.patch_size[0] // s.cell_size, self.patch_size[1] // s.cell_size
        self.cos_window = cosine_window((hc, wc)).astype(np.float32)
        target_cells = np.sqrt(w * h) * self.factor / s.cell_size
        self.G = fft2(gaussian_label((hc, wc), target_cells * s.output_sigma_factor, circular=True))
        # scale filter: labels and windows along the scale axis
        n = s.n_scales
        k = np.arange(n) - (n - 1) / 2.0
        self.scale_factors = s.scale_step ** k
        self.scale_window = np.hanning(n + 2)[1:-1] if n > 1 else np.ones(1)
        # the label peaks on the middle sample (no change of scale); the response is read the same way
        self.Gs = np.fft.fft(gaussian_label((1, n), max(np.sqrt(n) * s.scale_sigma_factor, 1e-3),
                                            centre=(0.0, (n - 1) / 2.0))[0])
        _, self.scale_patch_size = _window_geometry(self.base_size, s.scale_model_area, s.cell_size)
        h_img, w_img = image.shape[:2]
        self.min_scale = max(s.min_size / min(w, h), 1e-3)
        self.max_scale = max(min(w_img / w, h_img / h), self.min_scale)
        self.scale = 1.0
        self.A, self.B = filter_terms(fft2(self.extract(image, self.centre, 1.0)), self.G)
        self.As, self.Bs = self._scale_terms(self.scale_samples(image, self.centre, 1.0))
        self.box = box.copy()
        self.confidence = None

    def _scale_terms(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Fs = np.fft.fft(xs, axis=0)
        return self.Gs[:, None] * np.conj(Fs), (Fs * np.conj(Fs)).real.sum(axis=1)

    def localise(self, image: np.ndarray) -> np.ndarray:
        """Translation step: correlate at the current centre and return the new centre ``(cx, cy)``."""
        s = self.settings
        Z = fft2(self.extract(image, self.centre, self.scale))
        response = _response_from_terms(self.A, self.B, Z, s.lam)
        dy, dx = wrapped_peak(response)
        self.response = np.fft.fftshift(response)
        self.psr = psr(self.response, exclude=max(2, int(round(0.1 * min(response.shape)))))
        step = s.cell_size * self.scale / self.factor
        return self.centre + np.array([dx, dy]) * step

    def estimate_scale(self, image: np.ndarray) -> float:
        """Scale step: correlate the scale samples with the 1-D scale filter; return the new scale."""
        s = self.settings
        if s.n_scales < 2:
            return self.scale
        Zs = np.fft.fft(self.scale_samples(image, self.centre, self.scale), axis=0)
        resp = np.fft.ifft((Zs * self.As).sum(axis=1) / (self.Bs + s.scale_lam)).real
        self.scale_response = resp
        best = int(np.argmax(resp))
        # parabolic refinement between the neighbouring scale samples, in log-scale
        k = float(best)
        if 0 < best < len(resp) - 1:
            l, c, r = resp[best - 1], resp[best], resp[best + 1]
            d = l - 2 * c + r
            if d < 0:
                k += float(np.clip(0.5 * (l - r) / d, -0.5, 0.5))
        new = self.scale * s.scale_step ** (k - (s.n_scales - 1) / 2.0)
        return float(np.clip(new, self.min_scale, self.max_scale))

    def learn(self, image: np.ndarray) -> None:
        """Model update: blend the filter terms of the patch at the new position and scale."""
        s = self.settings
        a, b = filter_terms(fft2(self.extract(image, self.centre, self.scale)), self.G)
        eta = s.learning_rate
        self.A = (1 - eta) * self.A + eta * a
        self.B = (1 - eta) * self.B + eta * b
        if s.n_scales > 1:
            a_s, b_s = self._scale_terms(self.scale_samples(image, self.centre, self.scale))
            eta = s.scale_learning_rate
            self.As = (1 - eta) * self.As + eta * a_s
            self.Bs = (1 - eta) * self.Bs + eta * b_s

    def update(self, image) -> np.ndarray:
        image = check_image(image)
        self.centre = _clamp_centre(self.localise(image), image.shape)
        self.scale = self.estimate_scale(image)
        self.learn(image)
        self.confidence = self.psr
        self.box = cxcywh_to_xywh([*self.centre, *(self.base_size * self.scale)])
        return self.box.copy()


# --- the notebook's interactive response viewer -------------------------------------------------

class ResponseViewer:
    """MOSSE run over the first frames of a sequence for any ``(σ, λ, η)``, drawn frame by frame.

    The view's callback is :meth:`draw`; each parameter triple is run once over all frames and
    cached, so moving the frame slider only redraws.

    Args:
        frames: a sequence of ``H×W×3`` uint8 frames (a :class:`acvm.data.Sequence` or a list).
        boxes: ``(N, 4)`` ground truth; frame 0 initialises the tracker.
        n_frames: how many frames to keep (default all).
    """

    def __init__(self, frames, boxes, n_frames: int | None = None, name: str = ""):
        n = len(frames) if n_frames is None else min(n_frames, len(frames))
        self.frames = [frames[i] for i in range(n)]
        self.groundtruth = np.asarray(boxes, dtype=np.float64)[:n]
        self.name = name or getattr(frames, "name", "")
        self._runs: dict[tuple, dict] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def run(self, sigma: float = 2.0, lam: float = 1e-2, learning_rate: float = 0.125) -> dict:
        """MOSSE over all frames: ``{"boxes": (n, 4), "responses": list of (h, w), "psr": (n,)}``."""
        key = (round(float(sigma), 6), float(lam), round(float(learning_rate), 6))
        if key not in self._runs:
            t = MOSSETracker(sigma=key[0], lam=key[1], learning_rate=key[2])
            t.init(self.frames[0], self.groundtruth[0])
            # frame 0 shows the response of the freshly trained filter on its own patch
            z = fft2(mosse_preprocess(t._patch(self.frames[0]), t.window))
            first = np.fft.fftshift(_response_from_terms(t.A, t.B, z, t.settings.lam))
            boxes, responses, psrs = [self.groundtruth[0].copy()], [first], [psr(first)]
            for frame in self.frames[1:]:
                boxes.append(t.update(frame))
                responses.append(t.response)
                psrs.append(t.psr)
            self._runs[key] = {"boxes": np.array(boxes), "responses": responses, "psr": np.array(psrs),
                               "window": np.array(t.window_size)}
        return self._runs[key]

    def draw(self, frame: int = 0, sigma: float = 2.0, lam: float = 1e-2, learning_rate: float = 0.125,
             figsize=(10, 4)):
        """Frame ``frame`` with the ground truth, MOSSE's box and its search window; beside it the
        response map ``g'`` (centred on the previous position) with its PSR. Returns the Figure."""
        import matplotlib.pyplot as plt
        from .viz import draw_box
        if not 0 <= frame < len(self):
            raise IndexError(f"frame {frame} is out of range (the viewer holds {len(self)} frames)")
        r = self.run(sigma, lam, learning_rate)
        fig, (ax, ax_r) = plt.subplots(1, 2, figsize=figsize, gridspec_kw={"width_ratios": [1.5, 1]})
        ax.imshow(self.frames[frame])
        draw_box(ax, self.groundtruth[frame], "#009E73", "ground truth")
        box = r["boxes"][frame]
        draw_box(ax, box, "#D55E00", "MOSSE")
        prev = r["boxes"][max(frame - 1, 0)]
        cx, cy = prev[0] + prev[2] / 2, prev[1] + prev[3] / 2
        wx, wy = r["window"]
        draw_box(ax, [cx - wx / 2, cy - wy / 2, wx, wy], "#E69F00", "search window", lw=1, ls="--")
        ax.legend(loc="upper right", fontsize="small", framealpha=0.7)
        ax.set_title(f"{self.name} frame {frame}")
        ax.set_axis_off()
        resp = r["responses"][frame]
        im = ax_r.imshow(resp, cmap="inferno")
        ax_r.plot([resp.shape[1] // 2], [resp.shape[0] // 2], "c+", ms=10, label="previous position")
        py, px = np.unravel_index(int(np.argmax(resp)), resp.shape)
        ax_r.plot([px], [py], "wx", ms=8, label="peak")
        ax_r.legend(loc="lower right", fontsize="x-small")
        ax_r.set_title(f"response g', PSR {r['psr'][frame]:.1f}\nσ={sigma:g}, λ={lam:g}, η={learning_rate:g}")
        ax_r.set_axis_off()
        fig.colorbar(im, ax=ax_r, fraction=0.046, pad=0.02)
        fig.tight_layout()
        return fig

    def widget(self):
        """Sliders for frame, σ, log10 λ and η around :meth:`draw` (ipywidgets)."""
        import ipywidgets as widgets
        from .viz import interactive_view
        controls = dict(
            frame=widgets.IntSlider(0, 0, len(self) - 1, description="frame"),
            sigma=widgets.FloatSlider(2.0, min=0.5, max=8.0, step=0.5, description="σ of g"),
            lam=widgets.FloatLogSlider(1e-2, base=10, min=-5, max=1, step=1, description="λ"),
            learning_rate=widgets.FloatSlider(0.125, min=0.0, max=1.0, step=0.025, description="η"),
        )
        return interactive_view(lambda **v: self.draw(**v), **controls)
