"""Hand-crafted features for correlation filters: HOG and colour, on a dense grid of cells.

A DCF on raw pixels locks on to brightness; on histograms of oriented gradients it locks on to
shape, and a few colour channels tell apart objects of the same shape. Both come out as
``Hc×Wc×D`` maps with one feature vector per ``cell_size×cell_size`` cell, so a correlation
filter treats the ``D`` channels exactly as the colour channels of an image.

* :func:`cell_histograms` - gradient-orientation histograms per cell (the raw HOG counts);
* :func:`hog` - Felzenszwalb et al.'s 31-channel variant ("FHOG", used by KCF, DSST, CSRT):
  18 contrast-sensitive and 9 contrast-insensitive orientation channels, each normalised by its
  four 2×2-cell neighbourhoods and truncated at 0.2, plus 4 texture-energy channels;
* :func:`colour_features` - per-cell grey level, Lab chroma and normalised-RGB chromaticity;
* :func:`dcf_features` - both stacked, the input of :class:`acvm.dcf.DCFTracker`.

Everything is vectorised numpy and takes a batch ``(N, H, W[, 3])`` as well as one image, so a
scale filter can extract features of all its scales in one call.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

__all__ = ["image_gradients", "cell_histograms", "hog", "colour_features", "dcf_features",
           "HOG_CHANNELS", "COLOUR_CHANNELS"]

#: channels of :func:`hog` with the default 9 orientations: 18 signed + 9 unsigned + 4 texture
HOG_CHANNELS = 31
#: channels of :func:`colour_features`: grey, Lab a*, Lab b*, normalised r, normalised g
COLOUR_CHANNELS = 5
#: FHOG's truncation of normalised histogram values
_TRUNCATE = 0.2


def _as_batch(images: np.ndarray, who: str) -> tuple[np.ndarray, bool]:
    """``(N, H, W, C)`` float32 view of one image or a batch; the flag says whether it was a batch.

    ``H×W`` is grey, ``H×W×3`` one colour image, ``N×H×W×3`` a colour batch.
    """
    x = np.asarray(images)
    if x.ndim == 2:
        x, batch = x[None, :, :, None], False
    elif x.ndim == 3 and x.shape[2] == 3:
        x, batch = x[None], False
    elif x.ndim == 3:
        x, batch = x[..., None], True
    elif x.ndim == 4:
        batch = True
    else:
        raise ValueError(f"{who}: expected H×W, H×W×3, N×H×W or N×H×W×3, got shape {x.shape}")
    return x.astype(np.float32, copy=False), batch


def image_gradients(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient magnitude and signed orientation per pixel, from the strongest colour channel.

    Central differences ``[-1, 0, 1]`` (Dalal & Triggs found no smoothing works best), one-sided
    at the border. In colour images each pixel takes the channel with the largest gradient.

    Args:
        images: ``H×W``, ``H×W×3``, ``N×H×W`` or ``N×H×W×3``, any real dtype.
    Returns:
        ``(magnitude, angle)``, each ``(N, H, W)`` float32 (``N = 1`` for one image); the angle
        is in ``[0, 2π)``, 0 pointing along +x, increasing towards +y (image rows grow downwards).
    """
    x, _ = _as_batch(images, "image_gradients")
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    dx = p[:, 1:-1, 2:] - p[:, 1:-1, :-2]
    dy = p[:, 2:, 1:-1] - p[:, :-2, 1:-1]
    mag2 = dx * dx + dy * dy
    if x.shape[3] > 1:
        best = mag2.argmax(axis=3)[..., None]
        dx = np.take_along_axis(dx, best, 3)
        dy = np.take_along_axis(dy, best, 3)
        mag2 = np.take_along_axis(mag2, best, 3)
    angle = np.arctan2(dy[..., 0], dx[..., 0])
    angle = np.where(angle < 0, angle + np.float32(2 * np.pi), angle).astype(np.float32)
    return np.sqrt(mag2[..., 0]), angle


@lru_cache(maxsize=64)
def _cell_index(h: int, w: int, cell_size: int) -> np.ndarray:
    """Index of the cell each pixel of an ``h×w`` image (cropped to whole cells) falls in, flattened."""
    hc, wc = h // cell_size, w // cell_size
    rows = np.arange(hc * cell_size) // cell_size
    cols = np.arange(wc * cell_size) // cell_size
    return (rows[:, None] * wc + cols[None, :]).ravel()


def cell_histograms(images: np.ndarray, cell_size: int = 4, n_bins: int = 18) -> np.ndarray:
    """Histograms of signed gradient orientation per cell, votes weighted by gradient magnitude.

    The full circle is cut into ``n_bins`` bins centred at ``k·2π/n_bins``; a pixel splits its
    vote linearly between the two nearest bin centres. Pixels past the last whole cell (when
    the size is not a multiple of ``cell_size``) are dropped.

    Args:
        images: ``H×W``, ``H×W×3``, ``N×H×W`` or ``N×H×W×3``.
    Returns:
        ``(Hc, Wc, n_bins)`` float32 for one image, ``(N, Hc, Wc, n_bins)`` for a batch, with
        ``Hc = H // cell_size``, ``Wc = W // cell_size``.
    """
    _, batch = _as_batch(images, "cell_histograms")
    mag, angle = image_gradients(images)
    n, h, w = mag.shape
    hc, wc = h // cell_size, w // cell_size
    if hc < 1 or wc < 1:
        raise ValueError(f"cell_histograms: image {h}×{w} is smaller than one {cell_size}×{cell_size} cell")
    mag = mag[:, :hc * cell_size, :wc * cell_size].reshape(n, -1)
    t = angle[:, :hc * cell_size, :wc * cell_size].reshape(n, -1) * np.float32(n_bins / (2 * np.pi))
    b0 = np.floor(t)
    frac = t - b0
    b0 = b0.astype(np.int64) % n_bins
    b1 = (b0 + 1) % n_bins
    cells = _cell_index(h, w, cell_size)[None, :] + (np.arange(n) * hc * wc)[:, None]
    # one bincount over (cell, bin) pairs does all the voting at once
    idx = np.concatenate([(cells * n_bins + b0).ravel(), (cells * n_bins + b1).ravel()])
    votes = np.concatenate([(mag * (1 - frac)).ravel(), (mag * frac).ravel()])
    hist = np.bincount(idx, weights=votes, minlength=n * hc * wc * n_bins)
    hist = hist.reshape(n, hc, wc, n_bins).astype(np.float32)
    return hist if batch else hist[0]


def hog(images: np.ndarray, cell_size: int = 4, n_orients: int = 9) -> np.ndarray:
    """Felzenszwalb's HOG ("FHOG"): ``2·n_orients + n_orients + 4`` channels per cell (31 by default).

    From the signed histograms ``C`` (``2·n_orients`` bins) and the unsigned ones
    ``U = C[:n] + C[n:]``: every cell is normalised by the gradient energy of each of the four
    2×2-cell blocks it belongs to, ``N_k = sqrt(Σ_block ‖U‖² + ε)``; the four normalised and
    truncated copies ``min(C / N_k, 0.2)`` are summed (signed and unsigned channels), and their
    sums over orientations give the 4 texture channels. Borders replicate the edge cells.

    Args:
        images: ``H×W``, ``H×W×3``, ``N×H×W`` or ``N×H×W×3``, any real dtype (scale does not
            matter much: the normalisation removes it).
    Returns:
        ``(Hc, Wc, 31)`` float32 (or ``(N, Hc, Wc, 31)`` for a batch), ``Hc = H // cell_size``.
    """
    _, batch = _as_batch(images, "hog")
    signed = cell_histograms(images, cell_size, 2 * n_orients)
    if not batch:
        signed = signed[None]
    unsigned = signed[..., :n_orients] + signed[..., n_orients:]
    energy = np.pad((unsigned ** 2).sum(-1), ((0, 0), (1, 1), (1, 1)), mode="edge")
    # block energies: the 2×2 block whose top-left cell is (i, j) in the padded grid
    block = energy[:, :-1, :-1] + energy[:, 1:, :-1] + energy[:, :-1, 1:] + energy[:, 1:, 1:]
    inv = 1.0 / np.sqrt(block + np.float32(1e-4))
    hc, wc = signed.shape[1:3]
    # the four blocks containing cell (i, j) start at padded (i, j), (i+1, j), (i, j+1), (i+1, j+1)
    norms = [inv[:, dy:dy + hc, dx:dx + wc, None] for dy in (0, 1) for dx in (0, 1)]
    out_signed = np.zeros_like(signed)
    out_unsigned = np.zeros_like(unsigned)
    texture = []
    for nk in norms:
        s = np.minimum(signed * nk, _TRUNCATE)
        out_signed += s
        out_unsigned += np.minimum(unsigned * nk, _TRUNCATE)
        texture.append(s.sum(-1))
    # Felzenszwalb's constants: 0.5 averages the four normalisations into one vote, 0.2357
    # (= 1/sqrt(18)) makes the texture channels comparable to one orientation channel
    feats = np.concatenate([0.5 * out_signed, 0.5 * out_unsigned,
                            0.2357 * np.stack(texture, -1)], axis=-1).astype(np.float32)
    return feats if batch else feats[0]


def colour_features(images: np.ndarray, cell_size: int = 4) -> np.ndarray:
    """Per-cell colour: grey, Lab a* and b*, and normalised-RGB r and g, each roughly in [-0.5, 0.5].

    Colour names (the usual 11-channel DCF colour feature) need a learned lookup table that is
    not available offline; these five channels are its simplest stand-in: brightness plus two
    illumination-tolerant chroma pairs.

    Args:
        images: ``H×W×3`` or ``N×H×W×3`` uint8 RGB (values 0-255; float arrays in that range work).
    Returns:
        ``(Hc, Wc, 5)`` float32 (``(N, Hc, Wc, 5)`` for a batch), averages over each cell.
    """
    x = np.asarray(images)
    batch = x.ndim == 4
    if x.shape[-1] != 3 or x.ndim not in (3, 4):
        raise ValueError(f"colour_features: expected H×W×3 or N×H×W×3 RGB, got shape {x.shape}")
    x = (x if batch else x[None]).astype(np.float32) / np.float32(255.0)
    n, h, w, _ = x.shape
    hc, wc = h // cell_size, w // cell_size
    if hc < 1 or wc < 1:
        raise ValueError(f"colour_features: image {h}×{w} is smaller than one {cell_size}×{cell_size} cell")
    # cell averages first: the channels below are smooth functions, so this loses little
    x = x[:, :hc * cell_size, :wc * cell_size].reshape(n, hc, cell_size, wc, cell_size, 3).mean((2, 4))
    lab = cv2.cvtColor(x.reshape(-1, 1, 3), cv2.COLOR_RGB2Lab).reshape(n, hc, wc, 3)
    total = x.sum(-1, keepdims=True) + np.float32(1e-3)
    out = np.concatenate([x.mean(-1, keepdims=True) - 0.5,
                          lab[..., 1:] / np.float32(128.0),
                          x[..., :2] / total - np.float32(1 / 3)], axis=-1).astype(np.float32)
    return out if batch else out[0]


def dcf_features(images: np.ndarray, cell_size: int = 4, colour: bool = True) -> np.ndarray:
    """HOG (31) and, with ``colour``, colour (5) channels stacked: ``(Hc, Wc, 36)`` float32.

    Args:
        images: ``H×W×3`` or ``N×H×W×3`` uint8 RGB.
    Returns:
        ``(Hc, Wc, D)`` or ``(N, Hc, Wc, D)`` float32, ``D = 36`` (31 without colour).
    """
    f = hog(images, cell_size)
    if not colour:
        return f
    return np.concatenate([f, colour_features(images, cell_size)], axis=-1)
