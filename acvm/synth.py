"""Synthetic tracking sequences with exact ground truth, made from photographs scikit-image ships.

A target is a textured, non-rectangular shape (an ellipse or a smooth blob) cut from one photograph;
it moves along a smooth random trajectory, grows and shrinks and rotates over another photograph.
Optional difficulties: an occluder that passes over the target, a look-alike distractor (a second
copy of the target's texture with its own trajectory), clutter (other textured shapes, cut from
other photographs, moving behind the target), a slow illumination change, camera shake and a slow
camera pan. Everything follows from the seed, and the ground truth is exact because we drew
the frames: the box is the tight box of the whole (amodal) target shape, the mask is the part of
the target that is visible (the occluder removed).

The sequence behaves like :class:`acvm.data.Sequence`: ``len(seq)``, ``seq[i]`` (an ``H×W×3`` uint8
RGB frame, rendered when asked for), ``seq.boxes`` (``(N, 4)`` float64, 0-based ``x, y, w, h``),
and in addition ``seq.masks`` (``(N, H, W)`` bool) and ``seq.mask(i)``. :func:`write_otb` saves it
in OTB layout for any tool that reads sequence folders.

>>> seq = make_sequence(seed=0, n_frames=20, occlusion=True)
>>> len(seq), seq[0].shape, seq.boxes.shape
(20, (240, 320, 3), (20, 4))
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["PHOTOS", "photo", "SynthSequence", "make_sequence", "validation_sequence", "write_otb", "blob_polygon"]

#: photographs from ``skimage.data`` (all shipped with scikit-image, no download)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "camera", "coins", "brick", "grass", "gravel", "moon", "clock", "cell", "page")


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """One of :data:`PHOTOS` as ``H×W×3`` uint8 RGB (grey photographs repeated to 3 channels); cached."""
    import skimage.data
    if name not in PHOTOS:
        raise ValueError(f"unknown photograph {name!r}; choose one of {', '.join(PHOTOS)}")
    im = np.asarray(getattr(skimage.data, name)())
    if im.ndim == 2:
        im = np.repeat(im[:, :, None], 3, axis=2)
    im = np.ascontiguousarray(im[:, :, :3]).astype(np.uint8)
    im.setflags(write=False)
    return im


@functools.lru_cache(maxsize=None)
def _photo_level(name: str, level: int) -> np.ndarray:
    """Level ``level`` of the photograph's Gaussian pyramid (level 0 is the photograph)."""
    im = photo(name)
    for _ in range(level):
        im = cv2.pyrDown(im)
    return im


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed 600×800×3 float32 field of standard normal noise, made once per process."""
    return np.random.default_rng(0).standard_normal((600, 800, 3), dtype=np.float32)


def blob_polygon(rng: np.random.Generator, n_points: int = 64, wobble: float = 0.12) -> np.ndarray:
    """A smooth closed shape inside the unit square: ``(n_points, 2)`` float64 ``(x, y)`` in [0, 1].

    The radius around the centre is ``1 + Σ_k a_k cos(kφ + φ_k)`` for ``k = 2, 3, 4`` with
    ``a_k ~ U(0, wobble)``, scaled so the shape touches all four sides of the square (so its tight
    box is the square). ``wobble = 0`` gives an ellipse.
    """
    phi = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
    r = np.ones_like(phi)
    for k in (2, 3, 4):
        r += rng.uniform(0.0, wobble) * np.cos(k * phi + rng.uniform(0.0, 2.0 * np.pi))
    x, y = r * np.cos(phi), r * np.sin(phi)
    x = (x - x.min()) / (x.max() - x.min())
    y = (y - y.min()) / (y.max() - y.min())
    return np.stack([x, y], axis=1)


def _smooth_walk(rng, n: int, sigma: float, keep: float, limit: float | None = None) -> np.ndarray:
    """An Ornstein-Uhlenbeck walk ``v_t = keep·v_{t-1} + N(0, σ)`` summed: ``(n,)`` smooth offsets."""
    out = np.zeros(n)
    v, pos = 0.0, 0.0
    for t in range(1, n):
        v = keep * v + rng.normal(0.0, sigma)
        pos += v
        if limit is not None and abs(pos) > limit:
            pos, v = np.sign(pos) * limit, -0.5 * v
        out[t] = pos
    return out


def _trajectory(rng, n: int, lo: np.ndarray, hi: np.ndarray, speed: float) -> np.ndarray:
    """Smooth random 2-D path, ``(n, 2)``, bouncing inside the box ``[lo, hi]``."""
    pos = np.zeros((n, 2))
    pos[0] = rng.uniform(lo, hi)
    v = rng.normal(0.0, speed, 2)
    for t in range(1, n):
        v = 0.9 * v + rng.normal(0.0, 0.35 * speed, 2)
        p = pos[t - 1] + v
        for a in range(2):
            if p[a] < lo[a] or p[a] > hi[a]:
                v[a] = -v[a]
                p[a] = np.clip(p[a], lo[a], hi[a])
        pos[t] = p
    return pos


def _scale_and_angle(rng, n: int, scaling: float, rotation: float) -> tuple[np.ndarray, np.ndarray]:
    """A shape's slow size change (``(n,)`` factors, log within ``±scaling``) and rotation (``(n,)``
    radians, within ``±rotation`` degrees); all ones / zeros, drawing nothing, where they are 0."""
    scale = np.exp(_smooth_walk(rng, n, 0.004, 0.95, limit=scaling) if scaling > 0 else np.zeros(n))
    angle = np.deg2rad(_smooth_walk(rng, n, 0.15, 0.95, limit=rotation)) if rotation > 0 else np.zeros(n)
    return scale, angle


@dataclass
class _Sprite:
    """A textured shape: texture ``th×tw×3`` float32, soft alpha ``th×tw`` float32, outline in texture pixels."""

    texture: np.ndarray
    alpha: np.ndarray
    outline: np.ndarray  # (P, 2) x, y in texture pixel-edge coordinates

    @property
    def size(self) -> tuple[int, int]:
        return self.texture.shape[1], self.texture.shape[0]


def _make_sprite(rng, source: np.ndarray, w: float, h: float, wobble: float, rect: bool = False) -> _Sprite:
    """Cut a ``w×h`` (frame pixels) shape from ``source``; the texture is stored at twice that resolution."""
    tw, th = max(4, int(round(2 * w))), max(4, int(round(2 * h)))
    H, W = source.shape[:2]
    # a random photo scale varies the texture's grain; the region must fit inside the photo
    zoom = max(rng.uniform(0.6, 1.4), tw / W * 1.05, th / H * 1.05)
    sw, sh = tw / zoom, th / zoom  # region of the photo, in photo pixels
    x0, y0 = rng.uniform(0, W - sw), rng.uniform(0, H - sh)
    M = np.array([[zoom, 0.0, -zoom * x0], [0.0, zoom, -zoom * y0]])
    tex = cv2.warpAffine(source, M, (tw, th), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    if rect:
        outline = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    else:
        outline = blob_polygon(rng, wobble=wobble)
    outline = outline * np.array([tw, th])
    alpha = np.zeros((th, tw), np.uint8)
    # fillPoly with 4 fractional bits and anti-aliasing: a soft edge that matches the exact outline
    cv2.fillPoly(alpha, [np.round((outline - 0.5) * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    return _Sprite(tex.astype(np.float32), alpha.astype(np.float32) / 255.0, outline)


def _affine(sprite: _Sprite, centre, size_scale: float, angle: float, base_w: float) -> np.ndarray:
    """2×3 map from texture pixel-edge coordinates to frame pixel-edge coordinates."""
    tw, th = sprite.size
    k = size_scale * base_w / tw  # frame pixels per texture pixel
    c, s = np.cos(angle), np.sin(angle)
    A = k * np.array([[c, -s], [s, c]])
    b = np.asarray(centre, dtype=np.float64) - A @ np.array([tw / 2.0, th / 2.0])
    return np.hstack([A, b[:, None]])


def _to_cv(M: np.ndarray) -> np.ndarray:
    """Edge-coordinate map -> OpenCV's centre-coordinate map (pixel i's centre is i in OpenCV, i + 0.5 here)."""
    A, b = M[:, :2], M[:, 2]
    return np.hstack([A, (b + A @ np.array([0.5, 0.5]) - 0.5)[:, None]])


def _paste(frame: np.ndarray, sprite: _Sprite, M: np.ndarray, tint=None) -> np.ndarray:
    """Alpha-blend ``sprite`` into ``frame`` (float32 ``H×W×3``) under map ``M``; returns the warped alpha."""
    H, W = frame.shape[:2]
    Mc = _to_cv(M)
    # only warp inside the sprite's bounding box: 4-10x cheaper than the whole frame
    corners = (M[:, :2] @ np.array([[0, 0], [sprite.size[0], 0], [0, sprite.size[1]], list(sprite.size)]).T).T + M[:, 2]
    x0, y0 = np.floor(corners.min(0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    alpha_full = np.zeros((H, W), np.float32)
    if x1 <= x0 or y1 <= y0:
        return alpha_full
    Mc = Mc.copy()
    Mc[:, 2] -= [x0, y0]
    size = (x1 - x0, y1 - y0)
    tex = cv2.warpAffine(sprite.texture, Mc, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(sprite.alpha, Mc, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if tint is not None:
        tex = tex * np.asarray(tint, np.float32)
    roi = frame[y0:y1, x0:x1]
    roi += alpha[:, :, None] * (tex - roi)
    alpha_full[y0:y1, x0:x1] = alpha
    return alpha_full


class SynthSequence:
    """A synthetic sequence: frames rendered on demand, exact boxes and masks (see the module docstring).

    Attributes:
        name: ``"synth-<seed>"``.
        boxes: ``(N, 4)`` float64 tight boxes of the whole target, 0-based ``x, y, w, h``.
        distractor_boxes: ``(N, 4)`` boxes of the look-alike, NaN rows when there is none.
        occluder_boxes: ``(N, 4)`` boxes of the occluder, NaN rows when there is none.
        settings: the keyword arguments of :func:`make_sequence` that made it.
    """

    layout = "synthetic"
    path = None

    def __init__(self, seed: int, n_frames: int, size: tuple[int, int], parts: dict, settings: dict):
        self.seed, self.n, self.size = seed, n_frames, size
        self.name = f"synth-{seed}"
        self._p = parts
        self.settings = settings
        self.boxes = parts["boxes"]
        self.distractor_boxes = parts["distractor_boxes"]
        self.occluder_boxes = parts["occluder_boxes"]
        self._masks = None

    def __len__(self) -> int:
        return self.n

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.size[1], self.size[0]

    def _check(self, i: int) -> int:
        if not -self.n <= i < self.n:
            raise IndexError(f"frame {i} is out of range for {self.name} with {self.n} frames")
        return i % self.n

    def _render(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        p = self._p
        W, H = self.size
        shake = p["shake"][i]
        # background: a window of the (larger) background photo that pans and shakes
        ox, oy = p["pan"][i] + shake
        z = p["bg_zoom"]
        M = np.array([[z, 0.0, -ox], [0.0, z, -oy]])
        frame = cv2.warpAffine(p["background"], _to_cv(M), (W, H), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        frame_shift = shake  # objects move in frame coordinates; the camera shake moves them too
        for c in p["clutter"]:
            _paste(frame, c["sprite"], _affine(c["sprite"], c["centre"][i] + frame_shift, c["scale"][i],
                                               c["angle"][i], c["base_w"]))
        if p["distractor"] is not None:
            d = p["distractor"]
            _paste(frame, p["sprite"], _affine(p["sprite"], d["centre"][i] + frame_shift, d["scale"][i],
                                               d["angle"][i], p["base_w"]), tint=d["tint"])
        alpha = _paste(frame, p["sprite"], _affine(p["sprite"], p["centre"][i] + frame_shift, p["scale"][i],
                                                   p["angle"][i], p["base_w"]))
        if p["occluder"] is not None:
            o = p["occluder"]
            occ = _paste(frame, o["sprite"], _affine(o["sprite"], o["centre"][i] + frame_shift, 1.0, o["angle"],
                                                     o["base_w"]))
            alpha = alpha * (1.0 - occ)
        gain = p["gain"][i]
        if gain != 1.0:
            frame *= gain
        if p["noise"] > 0:
            # windows of one big field of noise, a different one each frame: as random to the eye,
            # and far cheaper than drawing fresh noise for every frame
            field, (oy, ox) = p["noise_field"], p["noise_offset"]
            ry, rx = field.shape[0] - H + 1, field.shape[1] - W + 1
            dy, dx = (oy + i * 7919) % ry, (ox + i * 104729) % rx
            frame += p["noise"] * field[dy:dy + H, dx:dx + W]
        return np.clip(frame + 0.5, 0, 255).astype(np.uint8), alpha > 0.5

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.n))]
        return self._render(self._check(int(index)))[0]

    def __iter__(self):
        for i in range(self.n):
            yield self[i]

    def mask(self, i: int) -> np.ndarray:
        """The visible part of the target in frame ``i``: ``H×W`` bool."""
        return self._render(self._check(int(i)))[1]

    @property
    def masks(self) -> np.ndarray:
        """All masks, ``(N, H, W)`` bool (rendered once, then cached)."""
        if self._masks is None:
            self._masks = np.stack([self.mask(i) for i in range(self.n)])
        return self._masks

    def frame_and_mask(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``i`` and its mask from a single render."""
        return self._render(self._check(int(i)))

    def __repr__(self) -> str:
        return f"SynthSequence({self.name!r}, {self.n} frames, {self.size[0]}×{self.size[1]})"


def _camera(rng, n, W, H, shake, pan, bg_name):
    """Camera shake (white, per frame) and a smooth pan over the background photo, zoomed so the
    window stays inside it: ``(shake_xy (n, 2), pan_xy (n, 2), background, bg_zoom)``."""
    shake_xy = rng.normal(0.0, shake, (n, 2)) if shake > 0 else np.zeros((n, 2))
    pan_v = rng.uniform(-pan, pan, 2)
    bg_src = photo(bg_name)
    m = 4 * shake + 2
    travel = pan_v * (n - 1)
    reach = np.abs(travel) + 2 * m
    zoom = max((W + reach[0]) / bg_src.shape[1], (H + reach[1]) / bg_src.shape[0], rng.uniform(0.5, 1.0))
    # shrink through a cached image pyramid, then by the rest (between 1/2 and 1) in the warp
    level = max(0, int(np.floor(np.log2(1.0 / zoom)))) if zoom < 1 else 0
    background = _photo_level(bg_name, level)
    bg_zoom = zoom * 2 ** level
    bh, bw = int(bg_src.shape[0] * zoom), int(bg_src.shape[1] * zoom)
    # the window [start, start + travel] stays inside the photo (reflected borders cover rounding)
    lo_s = m - np.minimum(travel, 0)
    hi_s = np.array([bw - W, bh - H]) - m - np.maximum(travel, 0)
    start = rng.uniform(lo_s, np.maximum(hi_s, lo_s))
    return shake_xy, start + np.arange(n)[:, None] * pan_v, background, bg_zoom


def _tight_boxes(spr, centres, scales, angles, bw0, shake_xy) -> np.ndarray:
    """``(n, 4)`` xywh boxes around a sprite's outline under every frame's map at once."""
    tw, th = spr.size
    k = (scales * bw0 / tw)[:, None, None]
    c, s_ = np.cos(angles)[:, None], np.sin(angles)[:, None]
    q = spr.outline[None] - np.array([tw / 2.0, th / 2.0])
    pts = k * np.stack([c * q[..., 0] - s_ * q[..., 1], s_ * q[..., 0] + c * q[..., 1]], -1)
    pts = pts + (centres + shake_xy)[:, None, :]
    lo_, hi_ = pts.min(1), pts.max(1)
    return np.column_stack([lo_, hi_ - lo_])


def _distractor(rng, n, centre, scale, angle, lo, hi, speed, long_side, tight_boxes, sprite, base_w):
    """A look-alike that starts near the target and wanders: the hard case for appearance models."""
    d_centre = _trajectory(rng, n, lo, hi, speed)
    offset = rng.normal(0, 1, 2)
    d_centre[0] = np.clip(centre[0] + 1.6 * long_side * offset / np.linalg.norm(offset), lo, hi)
    d_centre = np.clip(d_centre[0] + (d_centre - d_centre[0]), lo, hi)
    d_scale = scale[::-1].copy() * rng.uniform(0.85, 1.15)
    d_angle = -angle
    dist = {"centre": d_centre, "scale": d_scale, "angle": d_angle,
            "tint": (1.0 + rng.normal(0, 0.06, 3)).astype(np.float32)}
    return dist, tight_boxes(sprite, d_centre, d_scale, d_angle, base_w)


def _occluder(rng, n, image, centre, base_w, base_h, long_side, shake_xy):
    """A rectangle crossing the target's path, centred on the target at a frame in the middle part."""
    t_mid = int(rng.uniform(0.3, 0.7) * (n - 1))
    ow, oh = rng.uniform(0.7, 1.3) * base_w * 1.2, rng.uniform(0.7, 1.3) * base_h * 1.2
    o_sprite = _make_sprite(rng, image, ow, oh, 0.0, rect=True)
    direction = rng.normal(0, 1, 2)
    direction /= np.linalg.norm(direction)
    duration = max(rng.uniform(0.15, 0.35) * n, 4)
    v = direction * (ow + oh + 2 * long_side) / duration
    o_centre = centre[t_mid] + (np.arange(n) - t_mid)[:, None] * v
    occ = {"sprite": o_sprite, "centre": o_centre, "angle": 0.0, "base_w": ow}
    return occ, np.column_stack([o_centre + shake_xy - [ow / 2, oh / 2], np.full(n, ow), np.full(n, oh)])


def _clutter(crng, count, n, W, H, long_side, wobble, scaling, rotation, others) -> list[dict]:
    """``count`` other shapes, each cut from one of ``others``, wandering over the whole frame."""
    parts = []
    for _ in range(count):
        c_long = long_side * np.exp(crng.uniform(-0.4, 0.4))
        c_aspect = np.exp(crng.uniform(-0.6, 0.6))
        c_w = c_long if c_aspect <= 1 else c_long / c_aspect
        c_sprite = _make_sprite(crng, photo(str(crng.choice(others))), c_w, c_w * c_aspect, wobble)
        c_centre = _trajectory(crng, n, np.zeros(2), np.array([W, H], np.float64), crng.uniform(0.5, 4.0))
        c_scale, c_angle = _scale_and_angle(crng, n, scaling, rotation)
        parts.append({"sprite": c_sprite, "centre": c_centre, "scale": c_scale, "angle": c_angle, "base_w": c_w})
    return parts


def make_sequence(seed: int = 0, n_frames: int = 100, size: tuple[int, int] = (320, 240), *,
                  occlusion: bool = False, distractor: bool = False, illumination: float = 0.25,
                  shake: float = 1.0, pan: float = 0.5, rotation: float = 20.0, scaling: float = 0.3,
                  speed: float | None = None, target_size: float | None = None, shape: str = "blob",
                  noise: float = 2.0, target_photo: str | None = None,
                  background_photo: str | None = None, clutter: int = 0) -> SynthSequence:
    """Make a synthetic sequence (deterministic in ``seed``); frames are rendered when indexed.

    Args:
        seed: everything below that is random follows from it.
        n_frames: number of frames ``N``.
        size: ``(width, height)`` of the frames in pixels.
        occlusion: an occluder (a textured rectangle from a third photograph) crosses the target
            once, in the middle part of the sequence, covering at least half of it.
        distractor: a look-alike (the target's texture and shape, slightly tinted) moves nearby,
            behind the target.
        illumination: amplitude of the slow global brightness change (0 = none; 0.25 = ±25 %).
        shake: standard deviation of the camera shake in pixels (whole frame jumps).
        pan: largest camera pan speed in pixels per frame (the background slides).
        rotation: largest rotation of the target in degrees.
        scaling: largest log-scale change of the target (0.3 = from ×0.74 to ×1.35).
        speed: typical target speed in pixels per frame (default random in [0.5, 4]).
        target_size: the target's longer side as a fraction of the frame's shorter side (default
            random in [0.15, 0.4]).
        shape: ``"blob"`` (a smooth random outline) or ``"ellipse"``.
        noise: standard deviation of the pixel noise (grey levels).
        target_photo, background_photo: names from :data:`PHOTOS` (default: two different random ones).
        clutter: this many other shapes (each cut from a photograph that is neither the target's
            nor the background's, of a size like the target's) wander behind the target. A search
            region then holds several objects that stand out from the background, and only the
            target's appearance tells which one to follow. ``0`` leaves every other draw as it was.
    Returns:
        a :class:`SynthSequence`.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    W, H = int(size[0]), int(size[1])
    if W < 32 or H < 32:
        raise ValueError(f"size must be at least 32×32 pixels, got {size}")
    if shape not in ("blob", "ellipse"):
        raise ValueError(f"shape must be 'blob' or 'ellipse', got {shape!r}")
    if int(clutter) != clutter or clutter < 0:
        raise ValueError(f"clutter must be a whole number of shapes >= 0, got {clutter!r}")
    settings = dict(seed=seed, n_frames=n_frames, size=(W, H), occlusion=occlusion, distractor=distractor,
                    illumination=illumination, shake=shake, pan=pan, rotation=rotation, scaling=scaling,
                    speed=speed, target_size=target_size, shape=shape, noise=noise,
                    target_photo=target_photo, background_photo=background_photo, clutter=int(clutter))
    rng = np.random.default_rng(seed)
    names = list(rng.permutation(PHOTOS))
    tgt_name = target_photo or names[0]
    bg_name = background_photo or next(n for n in names if n != tgt_name)
    occ_name = next(n for n in names if n not in (tgt_name, bg_name))
    n = n_frames

    # the target: its size at scale 1 and aspect ratio h / w
    frac = rng.uniform(0.15, 0.4) if target_size is None else target_size
    aspect = np.exp(rng.uniform(-0.6, 0.6))
    long_side = frac * min(W, H)
    base_w, base_h = (long_side, long_side * aspect) if aspect <= 1 else (long_side / aspect, long_side)
    wobble = 0.12 if shape == "blob" else 0.0
    sprite = _make_sprite(rng, photo(tgt_name), base_w, base_h, wobble)

    speed = rng.uniform(0.5, 4.0) if speed is None else speed
    scale, angle = _scale_and_angle(rng, n, scaling, rotation)
    margin = np.array([base_w, base_h]) * 0.5 * np.exp(scaling)
    lo, hi = np.minimum(margin, [W / 2, H / 2]), np.maximum([W, H] - margin, [W / 2, H / 2])
    centre = _trajectory(rng, n, lo, hi, speed)

    shake_xy, pan_xy, background, bg_zoom = _camera(rng, n, W, H, shake, pan, bg_name)

    phase = rng.uniform(0, 2 * np.pi)
    period = rng.uniform(0.5, 2.0) * n
    gain = 1.0 + illumination * np.sin(2 * np.pi * np.arange(n) / period + phase) if illumination > 0 else np.ones(n)

    def tight_boxes(spr, centres, scales, angles, bw0):
        return _tight_boxes(spr, centres, scales, angles, bw0, shake_xy)

    boxes = tight_boxes(sprite, centre, scale, angle, base_w)
    dist, dist_boxes = (_distractor(rng, n, centre, scale, angle, lo, hi, speed, long_side, tight_boxes, sprite, base_w)
                        if distractor else (None, np.full((n, 4), np.nan)))
    occ, occ_boxes = (_occluder(rng, n, photo(occ_name), centre, base_w, base_h, long_side, shake_xy)
                      if occlusion else (None, np.full((n, 4), np.nan)))
    # clutter draws from its own stream, so a sequence without clutter is the one it always was
    clutter_parts = _clutter(np.random.default_rng([seed, 3]), int(clutter), n, W, H, long_side, wobble, scaling,
                             rotation, [q for q in PHOTOS if q not in (tgt_name, bg_name)])

    noise_field = _noise_bank()
    if noise_field.shape[0] < H or noise_field.shape[1] < W:   # frames larger than the bank
        noise_field = np.random.default_rng([seed, 1]).standard_normal((H + 64, W + 64, 3), dtype=np.float32)
    noise_offset = tuple(int(v) for v in np.random.default_rng([seed, 2]).integers(0, 1 << 20, 2))
    parts = {"noise_field": noise_field, "noise_offset": noise_offset, "bg_zoom": bg_zoom, "background": background, "pan": pan_xy, "shake": shake_xy, "sprite": sprite, "base_w": base_w,
             "centre": centre, "scale": scale, "angle": angle, "gain": gain, "noise": float(noise),
             "distractor": dist, "occluder": occ, "clutter": clutter_parts, "boxes": boxes, "distractor_boxes": dist_boxes,
             "occluder_boxes": occ_boxes}
    return SynthSequence(seed, n, (W, H), parts, settings)


def validation_sequence(k: int, n_frames: int = 100, **kwargs) -> "SynthSequence":
    """The ``k``-th held-out synthetic sequence the benchmarks choose settings on: seed ``10_000 + k``
    (the training streams never draw seeds that low and that fixed), an occluder when ``k % 3 == 1``
    and a look-alike distractor when ``k % 3 == 2``; ``kwargs`` go to :func:`make_sequence`."""
    return make_sequence(seed=10_000 + k, n_frames=n_frames, occlusion=k % 3 == 1, distractor=k % 3 == 2, **kwargs)


def write_otb(seq, out_dir, quality: int = 95) -> Path:
    """Write a sequence in OTB layout and return the folder.

    Writes ``img/0001.jpg ...`` (JPEG quality ``quality``), ``groundtruth_rect.txt`` (1-based
    ``x,y,w,h`` per line, as OTB) and, when the sequence has masks, ``mask/0001.png ...`` (0 or 255).
    ``acvm.data.load_sequence(out_dir)`` reads it back with the same 0-based boxes (to 1e-4 px).
    """
    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    has_masks = hasattr(seq, "frame_and_mask")
    if has_masks:
        (out / "mask").mkdir(exist_ok=True)
    for i in range(len(seq)):
        frame, mask = seq.frame_and_mask(i) if has_masks else (seq[i], None)
        cv2.imwrite(str(out / "img" / f"{i + 1:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if mask is not None:
            cv2.imwrite(str(out / "mask" / f"{i + 1:04d}.png"), mask.astype(np.uint8) * 255)
    boxes = np.asarray(seq.boxes, dtype=np.float64).copy()
    boxes[:, :2] += 1.0
    np.savetxt(out / "groundtruth_rect.txt", boxes, fmt="%.4f", delimiter=",")
    return out
