"""The training pipeline every learned tracker shares: data sources, the pair sampler, batches, ``fit``.

A learned tracker plugs three things into it (DEVELOPING.md, "Training pipeline"):

1. a **sample function** ``sample(rng) -> dict[str, np.ndarray]`` that makes one training example
   from a ``numpy.random.Generator``. :class:`PairSampler` is the one the Siamese trackers use:
   a template crop and a search crop of the same target, ``Δ ≤ max_gap`` frames apart, with
   scale, stretch, shift and colour jitter, cut with :func:`acvm.boxes.crop_and_resize`;
2. a **model** (any ``torch.nn.Module``);
3. a **loss** ``loss_fn(model, batch) -> scalar tensor``, where ``batch`` holds the sample
   function's arrays stacked into tensors (``batch["x"]`` is ``(B, 3, S, S)`` and so on).

:func:`batches` turns the sample function into an endless stream of batches, generated in
``DataLoader`` worker processes when ``workers > 0`` (the prototype spent 46 % of its training
time making data in the main process); :func:`fit` runs the optimiser with a progress bar,
checkpoints every ``checkpoint_every`` steps, resumes from a checkpoint, and returns the loss
history; :func:`train_and_save` is the rest of every trainer (checkpoint beside the weights file,
meta, save). The files themselves are :mod:`acvm.weights`'s (``{"state_dict": ..., "meta": {...}}``,
read with ``torch.load(weights_only=True)``).

Data sources (what ``acvm train NAME --data ...`` takes): ``"synthetic"`` (sequences made on the
fly by :mod:`acvm.synth`, the default) and folders of real sequences in OTB, VOT or GOT-10k
layout (a folder holding sequence folders counts as all of them); see :func:`make_sources`.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from .boxes import context_size, crop_and_resize, image_to_crop, mean_colour, xywh_to_cxcywh
from .weights import describe_weights, load_weights, save_weights, training_meta  # noqa: F401  (re-exported)

__all__ = [
    "SyntheticSource", "FolderSource", "TrainingData", "make_sources", "PairSettings", "PairSampler",
    "colour_jitter", "batches", "collate", "FitResult", "fit", "default_device", "seed_everything",
    "train_and_save", "save_weights", "load_weights", "training_meta", "describe_weights", "StretchedSequence", "StretchedSource", "stretch_sequence",
    "PROXY_SETS", "proxy_sequence",
]


# --- data sources ------------------------------------------------------------------------------

class SyntheticSource:
    """Synthetic sequences made on the fly (:func:`acvm.synth.make_sequence`), a fresh one per draw.

    Frames are rendered only when indexed, so drawing a sequence and reading two of its frames
    costs two renders. ``kwargs`` go to ``make_sequence`` (``size``, ``occlusion``, ...); by
    default occlusion and distractors appear at random in half of the sequences, and with
    ``max_clutter > 0`` each sequence has between 0 and that many clutter shapes.
    """

    name = "synthetic"

    def __init__(self, n_frames: int = 100, max_clutter: int = 0, **kwargs):
        self.n_frames = n_frames
        self.max_clutter = int(max_clutter)
        self.kwargs = kwargs

    def sequence(self, rng: np.random.Generator):
        """A new synthetic sequence (``len``, ``[i]`` -> frame, ``.boxes``, ``.masks``)."""
        from .synth import make_sequence
        kw = dict(self.kwargs)
        kw.setdefault("occlusion", bool(rng.random() < 0.5))
        kw.setdefault("distractor", bool(rng.random() < 0.5))
        if self.max_clutter > 0:   # drawn only then: the streams of the shipped weights stay as they were
            kw.setdefault("clutter", int(rng.integers(self.max_clutter + 1)))
        return make_sequence(seed=int(rng.integers(2 ** 31)), n_frames=self.n_frames, **kw)

    def __repr__(self) -> str:
        return f"synthetic(clutter<={self.max_clutter})" if self.max_clutter else "synthetic"


class FolderSource:
    """Real sequences from folders (OTB, VOT or GOT-10k layout), loaded once, frames read on demand.

    ``paths`` go through :func:`acvm.data.expand_sequence_folders`: a folder with ``<split>.txt``
    (``../shared/training``) means the sequences it lists, any other folder of sequences all of
    them. Decoded frames are kept in one :class:`acvm.data.FrameCache` of ``cache_bytes`` (default
    ``$ACVM_FRAME_CACHE_MB`` or 4096 MB), so a frame drawn again costs no JPEG decoding. Frames whose
    ground truth is missing (NaN rows) are never drawn.
    """

    def __init__(self, paths: Iterable[str | os.PathLike], split: str = "train", cache_bytes: int | None = None):
        from .data import FrameCache, expand_sequence_folders, load_sequence
        paths = list(paths)
        if cache_bytes is None:
            cache_bytes = int(float(os.environ.get("ACVM_FRAME_CACHE_MB", 4096)) * 2 ** 20)
        self.cache = FrameCache(cache_bytes)
        self.sequences = [load_sequence(q) for q in expand_sequence_folders(paths, split)]
        if not self.sequences:
            raise ValueError(f"no sequences found in {paths}")
        for seq in self.sequences:
            seq.frame_cache = self.cache
        self.name = ",".join(s.name for s in self.sequences)

    def sequence(self, rng: np.random.Generator):
        """One of the loaded sequences, chosen with probability proportional to its length."""
        lengths = np.array([len(s) for s in self.sequences], dtype=np.float64)
        return self.sequences[int(rng.choice(len(self.sequences), p=lengths / lengths.sum()))]

    def with_masks(self) -> "FolderSource":
        """The same source restricted to the sequences that have masks (DAVIS), sharing the cache.

        Raises ``ValueError`` naming the folders when none of them has a ``masks/`` folder.
        """
        kept = [s for s in self.sequences if s.masks is not None]
        if not kept:
            where = sorted({str(s.path.parent) if s.path else s.name for s in self.sequences})
            raise ValueError(f"none of the {len(self.sequences)} sequences in {', '.join(where)} has a masks/ "
                             "folder; mask training needs DAVIS-style sequences or a synthetic source")
        out = copy.copy(self)
        out.sequences = kept
        out.name = ",".join(s.name for s in kept)
        return out

    def __repr__(self) -> str:
        return f"folders({len(self.sequences)} sequences)"


@dataclass(frozen=True)
class TrainingData:
    """What ``acvm train NAME --data FOLDER... --synthetic-fraction F`` asks for.

    ``folders`` hold real sequences (a folder with ``train.txt``, such as ``../shared/training``, means
    the sequences that file lists); each training pair comes from a synthetic sequence with
    probability ``synthetic_fraction`` and from a real one otherwise. Iterating over it gives the
    strings the weights' meta records as ``data`` (folders with the SHA-256 of their split file and
    the fraction), so every trainer passes it on unchanged to :func:`make_sources` and
    :func:`training_meta`.
    """

    folders: tuple[str, ...] = ()
    synthetic_fraction: float = 0.5
    split: str = "train"

    def __post_init__(self):
        if not 0.0 <= self.synthetic_fraction <= 1.0:
            raise ValueError(f"--synthetic-fraction must lie in [0, 1], got {self.synthetic_fraction}")
        if not self.folders and self.synthetic_fraction < 1.0:
            raise ValueError("a synthetic fraction below 1 needs --data folders of real sequences")

    def __iter__(self):
        from .data import is_sequence_dir, split_file_digest, split_sequences
        f = self.synthetic_fraction
        if f > 0:
            yield f"synthetic (fraction {f:g})"
        if f < 1:
            for d in self.folders:
                p = Path(d)
                if (p / f"{self.split}.txt").is_file() and not is_sequence_dir(p):
                    n = len(split_sequences(p, self.split))
                    yield (f"{d} ({self.split}.txt sha256 {split_file_digest(p, self.split)}, {n} sequences, "
                           f"fraction {1 - f:g})")
                else:
                    yield f"{d} (fraction {1 - f:g})"


def make_sources(data, clutter: int = 0) -> list:
    """Turn ``--data`` into sources, each with a ``weight`` (its share of the training pairs).

    * ``None`` or ``"synthetic"``: one :class:`SyntheticSource` (up to ``clutter`` clutter shapes);
    * a :class:`TrainingData`: a synthetic source of weight ``synthetic_fraction`` and one
      :class:`FolderSource` of the rest (either left out when its weight is 0);
    * a list of ``"synthetic"`` and folders: one source for each kind, equal weights.
    """
    if isinstance(data, TrainingData):
        sources = []
        if data.synthetic_fraction > 0:
            sources.append(SyntheticSource(max_clutter=clutter))
            sources[-1].weight = data.synthetic_fraction
        if data.synthetic_fraction < 1:
            sources.append(FolderSource(data.folders, split=data.split))
            sources[-1].weight = 1.0 - data.synthetic_fraction
        return sources
    if data is None:
        return [SyntheticSource(max_clutter=clutter)]
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    sources, folders = [], []
    for d in items:
        if str(d) == "synthetic":
            sources.append(SyntheticSource(max_clutter=clutter))
        else:
            folders.append(d)
    if folders:
        sources.append(FolderSource(folders))
    return sources or [SyntheticSource(max_clutter=clutter)]


# --- elongated and small targets -------------------------------------------------------------------

class StretchedSequence:
    """A sequence seen through an anisotropic zoom: frames resized by ``(fx, fy)``, boxes alike.

    The synthetic targets' aspect ratios (h/w from 0.55 to 1.8) are narrower than real ones (a
    walking person is 3 times taller than wide); stretching whole frames widens the range without
    touching the generator.
    """

    def __init__(self, seq, fx: float, fy: float):
        from .boxes import FrameZoom
        self.seq = seq
        # both course sequence types know their (h, w) without rendering or decoding a frame
        self.zoom = FrameZoom(getattr(seq, "frame_size", None) or seq[0].shape[:2], fx, fy)
        self.out_size, self.f = self.zoom.out_size, self.zoom.f
        self.boxes = self.zoom.to_view(seq.boxes)
        self.name = f"{getattr(seq, 'name', 'sequence')}_stretched"

    def __len__(self) -> int:
        return len(self.seq)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.zoom.image(self.seq[i])


_PROXY_MAKERS = {"plain": {}, "tall": {}, "clutter": {"clutter": 4}, "shake": {"shake": 6.0},
                 "small": {"target_size": 0.1}}      # make_sequence keywords; "tall" is stretched after

#: The held-out synthetic sets that the trackers' settings are chosen on (``benchmarks/proxy_sets.py``),
#: never the six real sequences. Each holds :func:`acvm.synth.validation_sequence` ``k = 0..5`` (seeds
#: 10000+k, an occluder when ``k % 3 == 1``, a look-alike when ``k % 3 == 2``), made harder in one way
#: that the real sequences are hard:
#:
#: * ``plain``: as generated (targets 0.15-0.4 of the frame, aspect ratios 0.55-1.8);
#: * ``tall``: frames stretched 0.8 × 2.0, so targets are as elongated as pedestrians (OTB Crossing, Human7);
#: * ``clutter``: four other objects wander near the target (only its appearance tells it apart);
#: * ``shake``: camera shake of 6 px: the centre moves 0.15-0.3 target sizes per frame (median; 95th
#:   percentile 0.33-0.63), as in OTB Human7 (0.22, 0.57) and Surfer (0.16, 0.44);
#: * ``small``: targets of about 20 px (OTB Surfer's face: 35 px in 480×360, Crossing: 26 px).
PROXY_SETS = tuple(_PROXY_MAKERS)


def proxy_sequence(name: str, k: int, n_frames: int = 100):
    """The ``k``-th sequence of the proxy set ``name`` (one of :data:`PROXY_SETS`)."""
    from .synth import validation_sequence
    if name not in _PROXY_MAKERS:
        raise ValueError(f"unknown proxy set {name!r}; the sets are {', '.join(PROXY_SETS)}")
    seq = validation_sequence(k, n_frames=n_frames, **_PROXY_MAKERS[name])
    return StretchedSequence(seq, 0.8, 2.0) if name == "tall" else seq


def stretch_sequence(seq, rng: np.random.Generator, aspect: float = 0.0, zoom: float = 0.0):
    """``seq`` with its aspect ratio (h/w) changed by ``exp(U(−aspect, aspect))`` and its size by
    ``exp(−U(0, zoom))`` (small, low-resolution targets like OTB's pedestrians), as a
    :class:`StretchedSequence`; ``seq`` itself when both are 0 (no random numbers drawn then)."""
    if aspect <= 0 and zoom <= 0:
        return seq
    a = rng.uniform(-aspect, aspect)
    z = np.exp(-rng.uniform(0.0, zoom))
    return StretchedSequence(seq, z * np.exp(-a / 2), z * np.exp(a / 2))


class StretchedSource:
    """A source whose every sequence goes through :func:`stretch_sequence` (``.sequence(rng)``).

    A draw that leaves no box with both sides at least ``min_size`` pixels (a small target
    shrunk further) is drawn again, up to 10 times, then the sequence comes unstretched.
    """

    def __init__(self, source, aspect: float = 0.0, zoom: float = 0.0, min_size: float = 8.0):
        self.source, self.aspect, self.zoom, self.min_size = source, aspect, zoom, min_size
        self.name = getattr(source, "name", "source")
        self.weight = getattr(source, "weight", 1.0)   # the wrapped source's share of the pairs

    def sequence(self, rng: np.random.Generator):
        """A sequence of the wrapped source, stretched and shrunk at random."""
        seq = self.source.sequence(rng)
        for _ in range(10):
            out = stretch_sequence(seq, rng, self.aspect, self.zoom)
            b = np.asarray(out.boxes, dtype=np.float64)
            if np.any(np.isfinite(b).all(1) & (b[:, 2] >= self.min_size) & (b[:, 3] >= self.min_size)):
                return out
        return seq

    def __repr__(self) -> str:
        return f"{self.source!r} (aspect ±{self.aspect}, zoom {self.zoom})"


# --- the pair sampler ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairSettings:
    """How :class:`PairSampler` cuts a training pair (SiamFC's choices by default)."""

    template_size: int = 127     # side of the exemplar crop z in pixels
    search_size: int = 255       # side of the search crop x in pixels
    context: float = 0.5         # context margin p = context·(w + h) around the target
    max_gap: int = 50            # Δ: largest frame distance between template and search frame
    scale_jitter: float = 0.05   # search crop side × exp(U(-s, s)): the target's size varies
    stretch: float = 0.05        # extra independent jitter of width and height (aspect change)
    shift: float = 16.0          # target centre moved up to this many crop pixels from x's centre
    colour: float = 0.1          # strength of the per-channel gain and brightness jitter
    grey: float = 0.05           # probability of turning both crops grey-scale
    min_size: float = 8.0        # frames whose target is smaller than this (w or h, pixels) are skipped


def colour_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random per-channel gain and a brightness offset: ``H×W×3`` uint8 -> ``H×W×3`` uint8.

    ``out = image · (1 + N(0, s)) + N(0, 40 s)``, clipped to [0, 255]; ``strength = 0`` returns
    the image unchanged.
    """
    if strength <= 0:
        return image
    gain = 1.0 + rng.normal(0.0, strength, size=3)
    offset = rng.normal(0.0, 40.0 * strength)
    return np.clip(image.astype(np.float32) * gain.astype(np.float32) + np.float32(offset), 0, 255).astype(np.uint8)


class PairSampler:
    """Make Siamese training pairs from a list of sources: ``sampler(rng) -> dict`` of arrays.

    One call draws a source, a sequence, a template frame ``t`` and a search frame ``u`` with
    ``|u - t| ≤ max_gap``, and returns

    * ``"z"``: the template crop, ``(3, S_z, S_z)`` float32 in [0, 1] (CHW, ready for the backbone);
    * ``"x"``: the search crop, ``(3, S_x, S_x)`` float32 in [0, 1];
    * ``"z_box"``, ``"x_box"``: the target's ``(x, y, w, h)`` in crop pixels, ``(4,)`` float32;
    * ``"x_mask"``: the target's mask in the search crop, ``(S_x, S_x)`` float32 in {0, 1},
      only when the source has masks (synthetic) and ``masks=True``;
    * ``"gap"``: ``Δ = u - t`` as a ``()`` int64.

    The template is cut SiamFC-style around the target with context, side
    ``context_size(w, h)`` scaled to ``S_z``; the search crop uses the same scale factor times
    ``S_x / S_z`` (so the target has the same size in both, up to the jitter) and is shifted so
    the target is up to ``shift`` pixels from its centre.

    Args:
        sources: objects with ``.sequence(rng)`` (:class:`SyntheticSource`, :class:`FolderSource`).
        settings: a :class:`PairSettings`.
        weights: probability of each source (default: each source's ``weight`` attribute, else equal).
        masks: return ``"x_mask"`` (every source must then have masks).
    """

    def __init__(self, sources, settings: PairSettings = PairSettings(), weights=None, masks: bool = False):
        self.sources = list(sources) if isinstance(sources, (list, tuple)) else [sources]
        self.settings = settings
        w = (np.array([float(getattr(src, "weight", 1.0)) for src in self.sources]) if weights is None
             else np.asarray(weights, dtype=np.float64))
        self.weights = w / w.sum()
        self.masks = masks

    def _frames(self, seq, rng: np.random.Generator) -> tuple[int, int]:
        s = self.settings
        boxes = np.asarray(seq.boxes, dtype=np.float64)
        ok = np.isfinite(boxes).all(1) & (boxes[:, 2] >= s.min_size) & (boxes[:, 3] >= s.min_size)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            raise ValueError(f"sequence {getattr(seq, 'name', '?')} has no usable boxes")
        for _ in range(20):
            t = int(rng.choice(idx))
            near = idx[np.abs(idx - t) <= s.max_gap]
            u = int(rng.choice(near))
            if u != t or near.size == 1:
                return t, u
        return t, u

    def __call__(self, rng: np.random.Generator) -> dict:
        s = self.settings
        source = self.sources[int(rng.choice(len(self.sources), p=self.weights))]
        seq = source.sequence(rng)
        t, u = self._frames(seq, rng)
        grey = rng.random() < s.grey

        # template: target centred, context included, no jitter (the tracker crops it this way)
        bz = np.asarray(seq.boxes[t], dtype=np.float64)
        cz = xywh_to_cxcywh(bz)[:2]
        side_z = context_size(bz[2], bz[3], s.context)
        frame_t = seq[t]
        z = crop_and_resize(frame_t, cz, side_z, s.template_size, pad_value=mean_colour(frame_t))
        z_box = image_to_crop(bz, cz, side_z, s.template_size)

        # search: same scale as the template's (times S_x/S_z) with jitter, target off-centre
        bx = np.asarray(seq.boxes[u], dtype=np.float64)
        side_x = context_size(bx[2], bx[3], s.context) * s.search_size / s.template_size
        scale = np.exp(rng.uniform(-s.scale_jitter, s.scale_jitter))
        stretch = np.exp(rng.uniform(-s.stretch, s.stretch, size=2))
        size_x = side_x * scale * stretch                       # (w, h) of the crop in frame pixels
        shift = rng.uniform(-s.shift, s.shift, size=2) * size_x / s.search_size
        cx = xywh_to_cxcywh(bx)[:2] - shift
        mask = None
        if self.masks and hasattr(seq, "frame_and_mask"):
            frame_u, mask = seq.frame_and_mask(u)
        else:
            frame_u = seq[u]
        x = crop_and_resize(frame_u, cx, (size_x[0], size_x[1]), s.search_size, pad_value=mean_colour(frame_u))
        x_box = image_to_crop(bx, cx, (size_x[0], size_x[1]), s.search_size)

        z, x = colour_jitter(z, rng, s.colour), colour_jitter(x, rng, s.colour)
        if grey:
            z, x = (np.repeat(im.mean(2, keepdims=True), 3, 2).astype(np.uint8) for im in (z, x))
        out = {"z": _chw(z), "x": _chw(x), "z_box": z_box.astype(np.float32),
               "x_box": x_box.astype(np.float32), "gap": np.int64(u - t)}
        if self.masks:
            if mask is None:
                raise ValueError(f"source {source!r} has no masks; use a synthetic source for mask training")
            m = crop_and_resize(mask.astype(np.float32), cx, (size_x[0], size_x[1]), s.search_size, pad_value=0.0)
            out["x_mask"] = (m > 0.5).astype(np.float32)
        return out


def _chw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


# --- batches -----------------------------------------------------------------------------------------

def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack a list of sample dicts into one dict of tensors (leading batch axis ``B``)."""
    return {k: torch.from_numpy(np.stack([np.asarray(s[k]) for s in samples])) for k in samples[0]}


class _Stream(torch.utils.data.IterableDataset):
    """Endless batches from ``sample``; each worker draws from its own seeded generator."""

    def __init__(self, sample: Callable, batch_size: int, seed: int, start: int):
        super().__init__()
        self.sample, self.batch_size, self.seed, self.start = sample, batch_size, seed, start
        from .distributed import world
        self.rank, self.world_size = world()    # read here, in the trainer's process, not in its workers

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        # seeded by (seed, start step, worker) so a resumed run does not replay the same pairs;
        # under torchrun the rank too, so that every process draws different ones (one process:
        # the very seed list of the shipped weights)
        key = [self.seed, self.start, worker] + ([self.rank] if self.world_size > 1 else [])
        rng = np.random.default_rng(key)
        while True:
            yield collate([self.sample(rng) for _ in range(self.batch_size)])


def batches(sample: Callable[[np.random.Generator], dict], batch_size: int = 8, seed: int = 0,
            workers: int = 0, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """An endless, seeded stream of batches made by ``sample``.

    Args:
        sample: ``sample(rng) -> dict[str, np.ndarray]`` (e.g. a :class:`PairSampler`).
        batch_size: samples per batch ``B`` (per process under torchrun).
        seed: the stream is a function of ``(seed, start, workers)`` only (and of the rank under
            torchrun, ``WORLD_SIZE > 1``: each process draws different samples).
        workers: ``0`` makes the data in this process; ``n > 0`` in ``n`` DataLoader worker
            processes while the model trains (the batches then arrive in worker order).
        start: the step the stream starts at (a resumed run passes its step, so that it sees new data).
    Yields:
        dicts of tensors with a leading batch axis: ``batch[k].shape == (B, *sample(rng)[k].shape)``.
    """
    stream = _Stream(sample, batch_size, seed, start)
    if workers <= 0:
        yield from stream
        return
    # spawn, not fork: a child forked after OpenCV's thread pool has run can deadlock in its first cv2 call
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                         prefetch_factor=2, persistent_workers=False,
                                         worker_init_fn=_worker_init, multiprocessing_context="spawn")
    yield from loader


def _worker_init(_worker_id: int) -> None:
    # data workers make numpy arrays; one torch thread each keeps them off the trainer's cores
    torch.set_num_threads(1)
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass


# --- the training loop -------------------------------------------------------------------------------

def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else ``cuda`` when available, else ``cpu``."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and numpy's global generator."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    losses: np.ndarray        # (steps,) float64, the loss of every step from step 0 (resumed runs included)
    steps: int                # the optimiser steps done in total
    seconds: float            # wall-clock training time, resumed runs added up
    device: str               # where it ran


def _to_device(batch, device):
    if isinstance(batch, dict):
        return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch.to(device) if torch.is_tensor(batch) else batch


def _resume(ckpt: Path, model, opt, dev, seed: int) -> tuple[int, list[float], float]:
    """Load ``ckpt`` into ``model`` and ``opt``: ``(step, losses so far, seconds so far)``; reseeds
    torch from the step, so a resumed run continues as the uninterrupted one would."""
    state = torch.load(ckpt, map_location=dev, weights_only=True)
    model.load_state_dict(state["state_dict"])
    opt.load_state_dict(state["optimizer"])
    start = int(state["step"])
    torch.manual_seed(seed + start)
    return start, [float(v) for v in state["losses"][:start]], float(state["seconds"])


def _save_checkpoint(ckpt: Path, model, opt, step: int, losses: list[float], seconds: float) -> None:
    """Write fit's checkpoint whole or not at all (a temporary file, then ``os.replace``)."""
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    torch.save({"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "losses": torch.tensor(losses, dtype=torch.float64), "seconds": seconds}, tmp)
    os.replace(tmp, ckpt)  # never leave a half-written checkpoint behind


def fit(model: torch.nn.Module, loss_fn: Callable, batches: Iterable | Callable[[int], Iterable], steps: int, *,
        lr: float = 1e-3, lr_end: float | None = None, weight_decay: float = 1e-4,
        optimizer: Callable | None = None, clip_grad: float | None = 10.0, seed: int = 0,
        device: str | torch.device | None = None, checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 500, resume: bool = False, progress: bool = True,
        callback: Callable | None = None) -> FitResult:
    """Train ``model`` for ``steps`` optimiser steps: the loop every learned tracker reuses.

    Args:
        model: any ``nn.Module``; moved to ``device`` and left in train mode.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``; ``batch`` is on ``device``.
        batches: an iterable of batches (dicts of tensors), or ``f(start_step) -> iterable`` (so a
            resumed run can ask for a fresh stream, e.g. ``lambda s: batches(sampler, start=s)``).
        steps: total optimiser steps (a resumed run does the remaining ones).
        lr, lr_end: learning rate, decayed geometrically from ``lr`` to ``lr_end`` (default
            ``lr / 100``) over the ``steps``; the rate is a function of the step, so resuming
            continues the schedule exactly.
        weight_decay: AdamW's decoupled weight decay.
        optimizer: ``optimizer(params) -> torch.optim.Optimizer`` (default AdamW).
        clip_grad: clip the gradient norm to this (``None``: no clipping).
        seed: seeds torch before the model's first step (the data stream has its own seed).
        device: ``"cpu"``, ``"cuda"`` or ``None`` for :func:`default_device`.
        checkpoint: file for ``{"state_dict", "optimizer", "step", "losses", "seconds"}``, written
            every ``checkpoint_every`` steps and at the end.
        resume: continue from ``checkpoint`` when it exists.
        progress: show a tqdm bar with the running loss.
        callback: ``callback(step, loss)`` after every step (e.g. for a live plot).
    Returns:
        a :class:`FitResult` with the loss of every step.

    Under ``torchrun`` (``WORLD_SIZE > 1``, :mod:`acvm.distributed`) every process runs ``fit`` on
    its own batches (``batches`` is per process: a step averages ``batch_size × WORLD_SIZE``
    samples), the gradients are averaged by DistributedDataParallel, the losses recorded are the
    means over the processes, and only rank 0 shows the bar and writes the checkpoint; every rank
    resumes from the same checkpoint. With one process none of this happens.
    """
    from . import distributed
    rank, world_size = distributed.world()
    dev = default_device(device)
    distributed.init(dev)       # before the model moves: on CUDA it picks this process's GPU
    seed_everything(seed)
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer(params) if optimizer else torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    lr_end = lr / 100.0 if lr_end is None else lr_end
    ckpt = Path(checkpoint) if checkpoint else None
    start, losses, seconds_before = (_resume(ckpt, model, opt, dev, seed) if resume and ckpt is not None
                                     and ckpt.is_file() else (0, [], 0.0))
    stream = iter(batches(start) if callable(batches) else batches)
    # Distributed, the forward and backward go through `net`, a DDP wrapper of `model` (the same
    # parameters, so the optimiser, the checkpoint and the caller keep using `model`); it answers
    # for the model's attributes too (acvm.distributed._DDP), so every loss_fn(model, batch) works
    # unchanged. find_unused_parameters only when a dry run on the first batch finds a trainable
    # parameter without gradient (MDNet's conv4). One process: `net` is `model`, nothing else runs.
    net, first = model, None
    if world_size > 1:
        first = _to_device(next(stream), dev)
        net = distributed.wrap(model, dev, distributed.has_unused_parameters(model, loss_fn, first))
        torch.manual_seed(seed + start + 1_000_003 * rank)    # own dropout masks in every process

    def save(step: int, seconds: float) -> None:
        if ckpt is not None and distributed.is_main():
            _save_checkpoint(ckpt, model, opt, step, losses, seconds)

    from tqdm.auto import tqdm
    bar = tqdm(total=steps, initial=start, desc="training", disable=not progress or rank != 0, unit="step",
               leave=False)
    t0 = time.perf_counter()
    for step in range(start, steps):
        rate = lr * (lr_end / lr) ** (step / max(steps - 1, 1))
        for group in opt.param_groups:
            group["lr"] = rate
        batch, first = (_to_device(next(stream), dev) if first is None else first), None
        loss = loss_fn(net, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        opt.step()
        # distributed: the mean over the processes, so all of them stop together on a bad loss
        value = distributed.mean(loss.detach()) if world_size > 1 else float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss became {value} at step {step}; lower the learning rate")
        losses.append(value)
        if callback is not None:
            callback(step, value)
        bar.update()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{rate:.1e}")
        if ckpt is not None and (step + 1) % checkpoint_every == 0:
            save(step + 1, seconds_before + time.perf_counter() - t0)
    bar.close()
    seconds = seconds_before + time.perf_counter() - t0
    save(steps, seconds)
    return FitResult(np.asarray(losses, dtype=np.float64), steps, seconds, str(dev))


# --- the trainers' skeleton --------------------------------------------------------------------------

def train_and_save(model: torch.nn.Module, loss_fn: Callable, sample: Callable, /, *, steps: int, seed: int, data,
                   out: str | os.PathLike, batch_size: int, workers: int, lr: float, resume: bool = False,
                   device=None, progress: bool = True, callback: Callable | None = None,
                   checkpoint_every: int = 500, loss_window: int = 100, loss_curve: int = 0,
                   save: torch.nn.Module | None = None, **meta) -> Path:
    """What every ``acvm train NAME`` does once its trainer has made the model and the sample function.

    Runs :func:`fit` on :func:`batches` of ``sample`` (seeded with ``seed``), with the checkpoint
    ``<out>.ckpt`` beside ``out`` (``resume`` continues from it), writes ``{"state_dict", "meta"}``
    to ``out`` (:func:`acvm.weights.save_weights`; ``save``: the part of ``model`` to write, default
    all of it, moved to the CPU) and removes the checkpoint. The meta is
    :func:`acvm.weights.training_meta`'s with ``batch_size``, ``lr``, ``workers``, ``device``,
    ``final_loss`` (the mean of the last ``loss_window`` steps), ``loss_curve`` (with
    ``loss_curve = k``: the loss as means over ``k`` blocks, so a notebook can plot how the weights
    came about) and the trainer's own entries ``meta``. Returns the path written.

    A trainer keeps only what is its own: defaults, sampler, frozen parts, loss.
    """
    out = Path(out)
    checkpoint = out.with_name(out.name + ".ckpt")
    result = fit(model, loss_fn, lambda start: batches(sample, batch_size, seed, workers, start), steps, lr=lr,
                 seed=seed, device=device, checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                 progress=progress, callback=callback)
    extra = {"batch_size": batch_size, "lr": lr, "workers": workers, **meta, "device": result.device,
             "final_loss": round(float(np.mean(result.losses[-loss_window:])), 5)}
    if loss_curve and len(result.losses):
        bins = np.array_split(result.losses, min(loss_curve, len(result.losses)))
        extra["loss_curve"] = [round(float(b.mean()), 4) for b in bins]
    path = save_weights(out, (model if save is None else save).cpu(), training_meta(steps, seed, data, result.seconds, **extra))
    checkpoint.unlink(missing_ok=True)
    return path
