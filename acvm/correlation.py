"""Correlation: the operation every tracker of the course is built on.

Tracking by correlation slides a template ``h`` over an image (or feature map) ``f`` and scores
every position by the inner product; the response ``g' = f ⋆ h`` peaks where the two agree.
This module holds that operation once, in the forms the course needs:

* numpy, in the spatial domain (:func:`correlate_spatial`) and through the FFT
  (:func:`correlate_fft`, :func:`circular_correlate`), for single images ``H×W`` and
  multi-channel ones ``H×W×C`` (channels are summed, as in OpenCV's ``matchTemplate``);
* normalised cross-correlation (:func:`normalized_cross_correlation`);
* torch, batched, for the Siamese trackers: :func:`xcorr` (one response per pair, the
  grouped-convolution trick) and :func:`xcorr_depthwise` (one response per channel);
* what a correlation filter needs around it: the desired output ``g``
  (:func:`gaussian_label`), the cosine window (:func:`cosine_window`), the peak-to-sidelobe
  ratio (:func:`psr`) and a sub-pixel peak (:func:`subpixel_peak`).

Conventions: "valid" correlation of an ``H×W`` image with an ``h×w`` template gives
``(H-h+1)×(W-w+1)``; entry ``(u, v)`` scores the template placed with its top-left pixel on
image pixel ``(u, v)``, so ``g'[u, v] = Σ_ij f[u+i, v+j] h[i, j]`` (no flip: correlation, not
convolution).
"""
from __future__ import annotations

import numpy as np
import scipy.fft

__all__ = [
    "correlate_spatial", "correlate_fft", "circular_correlate", "normalized_cross_correlation",
    "xcorr", "xcorr_depthwise", "xcorr_loop",
    "gaussian_label", "cosine_window", "psr", "subpixel_peak",
]


# --- numpy: valid cross-correlation ---------------------------------------------------------

def _as_float_pair(image, template, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as floating ``H×W×C`` (a 2-D input gets C=1), float32 only if both are float32."""
    f, h = np.asarray(image), np.asarray(template)
    if f.ndim not in (2, 3) or h.ndim != f.ndim:
        raise ValueError(f"{who}: image and template must both be H×W or both H×W×C, "
                         f"got shapes {f.shape} and {h.shape}")
    if f.ndim == 3 and f.shape[2] != h.shape[2]:
        raise ValueError(f"{who}: image has {f.shape[2]} channels but template has {h.shape[2]}")
    if h.shape[0] > f.shape[0] or h.shape[1] > f.shape[1] or h.shape[0] < 1 or h.shape[1] < 1:
        raise ValueError(f"{who}: template {h.shape[:2]} must be non-empty and fit inside the image {f.shape[:2]}")
    dtype = np.float32 if (f.dtype == np.float32 and h.dtype == np.float32) else np.float64
    f, h = f.astype(dtype, copy=False), h.astype(dtype, copy=False)
    if f.ndim == 2:
        f, h = f[:, :, None], h[:, :, None]
    return f, h


def correlate_spatial(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Valid cross-correlation in the spatial domain, ``g'[u, v] = Σ_ijc f[u+i, v+j, c] h[i, j, c]``.

    Args:
        image: ``f``, ``H×W`` or ``H×W×C``, any real dtype.
        template: ``h``, ``h×w`` or ``h×w×C`` (same number of dimensions and channels).
    Returns:
        ``(H-h+1)×(W-w+1)`` array, float32 when both inputs are float32, else float64.
        Equals ``cv2.matchTemplate(f, h, cv2.TM_CCORR)``.

    Implemented as shift-and-add: one vectorised multiply-add of the whole output per template
    pixel, so the cost is ``h·w`` passes over the output (the ``O(H W h w)`` of the definition).
    """
    f, h = _as_float_pair(image, template, "correlate_spatial")
    th, tw = h.shape[:2]
    oh, ow = f.shape[0] - th + 1, f.shape[1] - tw + 1
    out = np.zeros((oh, ow), dtype=f.dtype)
    for i in range(th):
        for j in range(tw):
            # every output position sees image pixel (u+i, v+j) weighted by h[i, j]
            out += f[i:i + oh, j:j + ow, :] @ h[i, j, :]
    return out


def correlate_fft(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Valid cross-correlation through the FFT: the same numbers as :func:`correlate_spatial`.

    Correlation becomes an element-wise product in the Fourier domain,
    ``F(f ⋆ h) = F(f) ⊙ conj(F(h))``. The product is circular; padding the template with zeros
    to the image size leaves the valid positions ``u ≤ H-h`` untouched by the wrap-around, so
    the valid part of the circular result is exact. Cost ``O(H W log(H W))``, independent of
    the template size.

    Args, Returns: as :func:`correlate_spatial` (shape ``(H-h+1)×(W-w+1)``, float64 or float32).
    """
    f, h = _as_float_pair(image, template, "correlate_fft")
    th, tw = h.shape[:2]
    oh, ow = f.shape[0] - th + 1, f.shape[1] - tw + 1
    # a fast FFT length at least the image size: extra zeros only add more wrap-free room
    shape = (scipy.fft.next_fast_len(f.shape[0], real=True), scipy.fft.next_fast_len(f.shape[1], real=True))
    F = scipy.fft.rfft2(f, s=shape, axes=(0, 1))
    H = scipy.fft.rfft2(h, s=shape, axes=(0, 1))
    g = scipy.fft.irfft2((F * np.conj(H)).sum(axis=2), s=shape)
    return np.ascontiguousarray(g[:oh, :ow]).astype(f.dtype, copy=False)


def circular_correlate(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Circular cross-correlation of two same-size arrays, the correlation a DCF computes.

    ``g'[u, v] = Σ_ijc f[(u+i) mod H, (v+j) mod W, c] h[i, j, c]``, i.e.
    ``F^{-1}(Σ_c F(f_c) ⊙ conj(F(h_c)))``. A template centred on the target, correlated with an
    image patch centred on it, peaks at ``(0, 0)`` (and at ``(dy, dx)`` mod size after the
    target moves by ``(dy, dx)``).

    Args:
        image, template: ``H×W`` or ``H×W×C`` of equal shape.
    Returns:
        ``H×W`` float64 (float32 when both inputs are float32).
    """
    f, h = np.asarray(image), np.asarray(template)
    if f.shape != h.shape:
        raise ValueError(f"circular_correlate: image {f.shape} and template {h.shape} must have the same shape")
    f, h = _as_float_pair(f, h, "circular_correlate")
    F = scipy.fft.fft2(f, axes=(0, 1))
    H = scipy.fft.fft2(h, axes=(0, 1))
    return np.real(scipy.fft.ifft2((F * np.conj(H)).sum(axis=2))).astype(f.dtype, copy=False)


def _window_sums(x: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Sum of ``x`` (``H×W``) over every ``th×tw`` window, ``(H-th+1)×(W-tw+1)``, via an integral image."""
    s = np.zeros((x.shape[0] + 1, x.shape[1] + 1), dtype=np.float64)
    s[1:, 1:] = x.cumsum(0).cumsum(1)
    return s[th:, tw:] - s[:-th, tw:] - s[th:, :-tw] + s[:-th, :-tw]


def normalized_cross_correlation(image: np.ndarray, template: np.ndarray, zero_mean: bool = False,
                                 eps: float = 1e-12) -> np.ndarray:
    """Normalised cross-correlation: the cosine between the template and each image window.

    ``NCC[u, v] = Σ f_w h / sqrt(Σ f_w² · Σ h²)`` with ``f_w`` the window at ``(u, v)``; with
    ``zero_mean`` both are first made zero-mean (per channel, as OpenCV), which is the
    correlation coefficient. Values lie in ``[-1, 1]``; invariant to scaling the image
    brightness (and, with ``zero_mean``, to adding an offset). Windows of zero energy give 0.

    Args:
        image: ``H×W`` or ``H×W×C``; template: ``h×w`` or ``h×w×C``.
    Returns:
        ``(H-h+1)×(W-w+1)`` float64. Equals ``cv2.matchTemplate`` with ``TM_CCORR_NORMED``
        (``zero_mean=False``) or ``TM_CCOEFF_NORMED`` (``zero_mean=True``).
    """
    f, h = _as_float_pair(image, template, "normalized_cross_correlation")
    f, h = f.astype(np.float64), h.astype(np.float64)
    th, tw = h.shape[:2]
    n = th * tw
    if zero_mean:
        h = h - h.mean(axis=(0, 1))
    num = correlate_fft(f, h)  # a zero-mean h already ignores the window's mean in the numerator
    energy = sum(_window_sums(f[:, :, c] ** 2, th, tw) for c in range(f.shape[2]))
    if zero_mean:
        energy = energy - sum(_window_sums(f[:, :, c], th, tw) ** 2 for c in range(f.shape[2])) / n
    denom = np.sqrt(np.clip(energy, 0, None) * float((h ** 2).sum()))
    return np.where(denom > eps * max(1.0, float(denom.max(initial=0.0))), num / np.maximum(denom, eps), 0.0)


# --- torch: batched correlation for Siamese trackers ----------------------------------------

def xcorr(z, x):
    """Cross-correlate each template with its own search region: ``(B,C,h,w), (B,C,H,W) -> (B,1,H',W')``.

    ``H' = H-h+1, W' = W-w+1``; ``out[b, 0] = Σ_c x[b, c] ⋆ z[b, c]`` (SiamFC's head without the
    scale and bias). The grouped-convolution trick: fold the batch into channels,
    ``x -> (1, B·C, H, W)``, and use the B templates as the weight ``(B, C, h, w)`` with
    ``groups=B``, so one ``conv2d`` call correlates every pair (``conv2d`` is a correlation:
    it does not flip the kernel). Differentiable in both arguments; any float dtype and device.
    """
    import torch.nn.functional as F
    _check_xcorr_shapes(z, x, "xcorr")
    b, c, hh, ww = x.shape
    out = F.conv2d(x.reshape(1, b * c, hh, ww), z, groups=b)
    return out.reshape(b, 1, out.shape[-2], out.shape[-1])


def xcorr_depthwise(z, x):
    """Channel-by-channel cross-correlation: ``(B,C,h,w), (B,C,H,W) -> (B,C,H',W')``.

    ``out[b, c] = x[b, c] ⋆ z[b, c]``: SiamRPN++'s depth-wise correlation, which keeps one
    response per channel for a head to combine. One ``conv2d`` with ``groups=B·C``.
    """
    import torch.nn.functional as F
    _check_xcorr_shapes(z, x, "xcorr_depthwise")
    b, c, hh, ww = x.shape
    out = F.conv2d(x.reshape(1, b * c, hh, ww), z.reshape(b * c, 1, z.shape[2], z.shape[3]), groups=b * c)
    return out.reshape(b, c, out.shape[-2], out.shape[-1])


def xcorr_loop(z, x):
    """The obvious version of :func:`xcorr`, one ``conv2d`` per batch element (for tests and teaching)."""
    import torch
    import torch.nn.functional as F
    _check_xcorr_shapes(z, x, "xcorr_loop")
    return torch.cat([F.conv2d(x[i:i + 1], z[i:i + 1]) for i in range(x.shape[0])], dim=0)


def _check_xcorr_shapes(z, x, who: str) -> None:
    if z.dim() != 4 or x.dim() != 4:
        raise ValueError(f"{who}: z and x must be (B, C, h, w) and (B, C, H, W), got {tuple(z.shape)} and {tuple(x.shape)}")
    if z.shape[:2] != x.shape[:2]:
        raise ValueError(f"{who}: z {tuple(z.shape)} and x {tuple(x.shape)} must agree in batch and channels")
    if z.shape[2] > x.shape[2] or z.shape[3] > x.shape[3]:
        raise ValueError(f"{who}: the template z {tuple(z.shape[2:])} is larger than the search region x {tuple(x.shape[2:])}")


# --- what a correlation filter needs around the correlation ---------------------------------

def gaussian_label(shape, sigma: float, centre=None, circular: bool = False) -> np.ndarray:
    """The desired correlation output ``g``: a Gaussian peak of height 1 on the target.

    Args:
        shape: ``(H, W)`` of the output.
        sigma: standard deviation in pixels (> 0).
        centre: ``(cy, cx)`` of the peak in pixel indices (may be fractional); default the
            centre pixel ``(H // 2, W // 2)``.
        circular: put the peak at ``(0, 0)`` and measure distances around the torus
            (``min(d, H - d)``), the label a DCF needs because the FFT treats the patch as
            periodic; this equals ``np.fft.ifftshift`` of the centred label.
    Returns:
        ``H×W`` float64, ``g = exp(-((y-cy)² + (x-cx)²) / (2σ²))``, maximum 1.
    """
    hgt, wid = int(shape[0]), int(shape[1])
    if sigma <= 0 or not np.isfinite(sigma):
        raise ValueError(f"gaussian_label: sigma must be a positive number, got {sigma}")
    ys, xs = np.arange(hgt, dtype=np.float64), np.arange(wid, dtype=np.float64)
    if circular:
        dy = np.minimum(ys, hgt - ys)
        dx = np.minimum(xs, wid - xs)
    else:
        cy, cx = (hgt // 2, wid // 2) if centre is None else centre
        dy, dx = ys - cy, xs - cx
    return np.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2.0 * sigma ** 2))


def cosine_window(shape) -> np.ndarray:
    """The cosine (Hann) window ``(H, W)`` float64: the outer product of two Hann windows.

    Multiplying a patch by it fades the borders to zero, so the FFT's implied periodic
    repetition of the patch has no seams (which would otherwise dominate the filter).
    """
    hgt, wid = int(shape[0]), int(shape[1])
    return np.outer(np.hanning(hgt), np.hanning(wid))


def psr(response: np.ndarray, exclude: int = 5) -> float:
    """Peak-to-sidelobe ratio ``(g_max - μ_s) / σ_s`` of a response map (MOSSE's confidence).

    The sidelobe is everything outside a ``(2·exclude+1)²`` square around the peak. MOSSE
    reports 20-60 for a confident track and below ~7 for occlusion or loss.

    Args:
        response: ``H×W`` float array.
    Returns:
        a float; 0.0 when the sidelobe is empty or flat.
    """
    r = np.asarray(response, dtype=np.float64)
    py, px = np.unravel_index(int(np.argmax(r)), r.shape)
    mask = np.ones(r.shape, dtype=bool)
    mask[max(0, py - exclude):py + exclude + 1, max(0, px - exclude):px + exclude + 1] = False
    side = r[mask]
    if side.size < 2:
        return 0.0
    std = float(side.std())
    return float((r[py, px] - side.mean()) / std) if std > 1e-12 else 0.0


def subpixel_peak(response: np.ndarray, circular: bool = False) -> tuple[float, float]:
    """Location ``(y, x)`` of the maximum, refined by a 1-D parabola through it and its neighbours.

    Args:
        response: ``H×W`` float array.
        circular: neighbours wrap around the border (for FFT responses); otherwise a peak on the
            border is not refined along that axis.
    Returns:
        ``(y, x)`` floats in pixel indices; each refinement is within half a pixel of the integer peak.
    """
    r = np.asarray(response, dtype=np.float64)
    py, px = np.unravel_index(int(np.argmax(r)), r.shape)
    out = []
    for axis, p in ((0, py), (1, px)):
        n = r.shape[axis]
        if not circular and (p == 0 or p == n - 1) or n < 3:
            out.append(float(p))
            continue
        idx = [py, px]
        idx[axis] = (p - 1) % n
        left = r[tuple(idx)]
        idx[axis] = (p + 1) % n
        right = r[tuple(idx)]
        centre = r[py, px]
        denom = left - 2.0 * centre + right
        # the vertex of the parabola through (-1, left), (0, centre), (1, right)
        delta = 0.5 * (left - right) / denom if denom < 0 else 0.0
        out.append(float(p + np.clip(delta, -0.5, 0.5)))
    return out[0], out[1]
