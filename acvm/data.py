"""Tracking sequences: OTB, VOT and GOT-10k folders, loaded lazily, with clear errors.

Layouts found automatically (DESIGN.md):

* **OTB**: ``img/*.jpg`` + ``groundtruth_rect.txt`` with 1-based ``x,y,w,h`` (shifted to 0-based);
* **VOT**: frames in ``color/``, ``img/`` or the folder itself + ``groundtruth.txt`` with 8-value
  polygons (their min/max box) or 4-value boxes (already 0-based);
* **GOT-10k**: frames at the folder root + ``groundtruth.txt`` with 0-based ``x,y,w,h``;
* **LaSOT**: ``img/`` + ``groundtruth.txt`` (``x,y,w,h``, read as given, as pytracking reads it)
  beside ``full_occlusion.txt`` / ``out_of_view.txt``;
* **TrackingNet**: a chunk's ``frames/NAME/0.jpg...`` with the boxes in ``anno/NAME.txt``
  (0-based ``x,y,w,h``): pass the ``frames/NAME`` folder.

Separators may be commas, tabs or spaces. Frames are read when indexed, so a sequence of a
thousand frames opens instantly. A ``masks/`` folder beside the frames (DAVIS: ``0001.png``... with
0/255, numbered as the frames; or ``mask/`` as :func:`acvm.synth.write_otb` writes) gives per-frame target masks, also read when indexed.

A folder of sequences may carry split files (``train.txt``, ``validation.txt``: one sequence
folder name a line); :func:`split_sequences` and :func:`expand_sequence_folders` read them, so
training reads only ``train.txt`` and settings are chosen on ``validation.txt``.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .boxes import box_in_image, format_box, polygon_to_xywh

__all__ = ["Sequence", "SequenceError", "load_sequence", "read_groundtruth", "read_frame", "read_mask",
           "sequences_dir", "course_sequence", "list_sequences", "IMAGE_SUFFIXES", "LazyMasks", "FrameCache",
           "split_sequences", "expand_sequence_folders", "is_sequence_dir", "split_file_digest"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
_GT_NAMES = ("groundtruth_rect.txt", "groundtruth.txt", "groundtruth_rect.1.txt")


class SequenceError(ValueError):
    """A sequence folder, frame or ground-truth file that cannot be used; the message names it."""


def read_frame(path: str | os.PathLike) -> np.ndarray:
    """Read one frame as ``H×W×3`` uint8 RGB (grey-scale frames are repeated into 3 channels).

    Raises :class:`SequenceError` naming the file when it is missing, empty or not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise SequenceError(f"frame {path} does not exist")
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise SequenceError(f"frame {path} is empty (0 bytes)")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SequenceError(f"frame {path} is not a readable image (corrupt or unsupported format)")
    if image.dtype == np.uint16:  # 16-bit PNG: the same scale in every frame (not stretched per frame)
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:  # 32-bit float TIFF and the like
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read one target mask (a PNG, target > 127) as an ``H×W`` bool array; errors name the file."""
    return read_frame(path)[:, :, 0] > 127


class LazyMasks:
    """Per-frame masks read from files when indexed: ``masks[i]`` is ``H×W`` bool, ``len(masks)`` frames."""

    def __init__(self, paths: list[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return read_mask(self.paths[index])

    def __repr__(self) -> str:
        return f"LazyMasks({len(self)} files in {self.paths[0].parent if self.paths else '-'})"


class FrameCache:
    """Decoded frames kept in memory, least recently used dropped first, at most ``max_bytes`` in all.

    Training reads the same few thousand frames again and again; decoding a JPEG costs about as much
    as a training step's data, so :class:`acvm.training.FolderSource` gives its sequences one cache.
    Keys are frame paths; each process (DataLoader workers included) has its own.
    """

    def __init__(self, max_bytes: int = 4 << 30):
        self.max_bytes, self.bytes = int(max_bytes), 0
        self._frames: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def get(self, path: Path) -> np.ndarray:
        """The frame at ``path`` (read with :func:`read_frame` on a miss). Do not modify it in place."""
        frame = self._frames.get(path)
        if frame is not None:
            self._frames.move_to_end(path)
            self.hits += 1
            return frame
        self.misses += 1
        frame = read_frame(path)
        frame.setflags(write=False)   # a shared frame: a caller that writes to it gets an error, not a corrupt cache
        if frame.nbytes <= self.max_bytes:
            self._frames[path] = frame
            self.bytes += frame.nbytes
            while self.bytes > self.max_bytes:
                _, old = self._frames.popitem(last=False)
                self.bytes -= old.nbytes
        return frame

    def __len__(self) -> int:
        return len(self._frames)


def _parse_numbers(line: str, path: Path, lineno: int) -> list[float]:
    parts = [p for p in re.split(r"[,\s;]+", line.strip()) if p]
    try:
        return [float(p) for p in parts]
    except ValueError:
        bad = next(p for p in parts if not _is_number(p))
        raise SequenceError(f"{path}, line {lineno}: {bad!r} is not a number") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_groundtruth(path: str | os.PathLike, one_based: bool = False,
                     allow_missing: bool = False) -> np.ndarray:
    """Read a ground-truth file into ``(N, 4)`` float64 0-based ``(x, y, w, h)`` boxes.

    Rows may hold 4 numbers (a box) or 8 (a VOT polygon, turned into its min/max box). With
    ``one_based`` (OTB files) 1 is subtracted from x and y. Rows of NaN (VOT's "target absent")
    are kept as NaN only when ``allow_missing``; otherwise they are an error, as are rows with the
    wrong count, text in a number field, and boxes of zero or negative area.
    """
    path = Path(path)
    if not path.is_file():
        raise SequenceError(f"ground truth {path} does not exist")
    rows = []
    # utf-8-sig: a byte-order mark at the start (Windows editors write one) is not part of the first number
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        nums = _parse_numbers(line, path, lineno)
        if len(nums) not in (4, 8) and not (len(nums) >= 6 and len(nums) % 2 == 0):
            raise SequenceError(f"{path}, line {lineno}: expected 4 numbers (x,y,w,h) or a polygon, got {len(nums)}")
        box = polygon_to_xywh(np.array(nums)) if len(nums) != 4 else np.array(nums)
        if not np.isfinite(box).all():
            if not allow_missing:
                raise SequenceError(f"{path}, line {lineno}: the box contains NaN or infinity")
        elif box[2] <= 0 or box[3] <= 0:
            if not allow_missing:
                raise SequenceError(f"{path}, line {lineno}: the box {format_box(box)} has zero or negative area")
            box = np.full(4, np.nan)
        rows.append(box)
    if not rows:
        raise SequenceError(f"ground truth {path} holds no boxes")
    boxes = np.stack(rows).astype(np.float64)
    if one_based:
        boxes[:, :2] -= 1.0
    return boxes


def _frames_in(folder: Path) -> list[Path]:
    # hidden files are never frames: macOS's ._0001.jpg resource forks, .DS_Store, editors' backups
    files = [p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    # natural sort, so frame 10 follows frame 9 even without zero padding
    return sorted(files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])


@dataclass
class Sequence:
    """A tracking sequence: frame paths and 0-based ``(N, 4)`` boxes; ``seq[i]`` reads frame ``i``.

    ``boxes`` may contain NaN rows where the target is absent (VOT/GOT-10k); ``masks`` is a
    :class:`LazyMasks` (``masks[i]`` is ``H×W`` bool) for folders with a ``masks/`` folder (DAVIS), an
    ``(N, H, W)`` bool array where a caller sets one, and ``None`` otherwise. ``frame_cache``, when
    set to a :class:`FrameCache`, keeps decoded frames in memory (training does).
    """

    name: str
    frame_paths: list[Path]
    boxes: np.ndarray
    layout: str = "otb"
    path: Path | None = None
    masks: np.ndarray | LazyMasks | None = None
    frame_cache: FrameCache | None = field(default=None, repr=False, compare=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.frame_paths)

    def __getitem__(self, index: int) -> np.ndarray:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"frame {index} is out of range for sequence {self.name!r} with {n} frames")
        index %= n
        frame = self._read(index)
        size = self._cache.get("size")
        if size is None:
            size = self._cache["size"] = tuple(frame.shape[:2] if index == 0 else self._read(0).shape[:2])
        if tuple(frame.shape[:2]) != size:
            raise SequenceError(f"frame {self.frame_paths[index]} is {frame.shape[1]}×{frame.shape[0]} but the first "
                                f"frame {self.frame_paths[0].name} of {self.name} is {size[1]}×{size[0]}; every frame "
                                "of a sequence must have the same size")
        return frame

    def _read(self, index: int) -> np.ndarray:
        if self.frame_cache is not None:
            return self.frame_cache.get(self.frame_paths[index])
        return read_frame(self.frame_paths[index])

    def frame_and_mask(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Frame ``index`` and its ``H×W`` bool mask (``None`` when the sequence has no masks)."""
        frame = self[index]
        if self.masks is None:
            return frame, None
        mask = np.asarray(self.masks[index % len(self)], dtype=bool)
        if mask.shape != frame.shape[:2]:
            where = getattr(self.masks, "paths", None)
            raise SequenceError(f"the mask of frame {index} of {self.name}"
                                f"{f' ({where[index]})' if where else ''} is {mask.shape[1]}×{mask.shape[0]}, "
                                f"the frame {frame.shape[1]}×{frame.shape[0]}")
        return frame, mask

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(height, width)`` of the first frame."""
        if "size" not in self._cache:
            self._cache["size"] = tuple(self._read(0).shape[:2])
        return self._cache["size"]

    def __repr__(self) -> str:
        return f"Sequence({self.name!r}, {len(self)} frames, layout={self.layout!r})"


def load_sequence(path: str | os.PathLike, name: str | None = None) -> Sequence:
    """Load a sequence folder in OTB, VOT or GOT-10k layout (found automatically).

    Raises :class:`SequenceError` with the folder or file named when: the folder does not exist,
    holds no frames, has no ground-truth file, or the number of boxes does not match the number
    of frames (the message names the first surplus frame files), or the first box lies outside the
    first frame (naming the file and line). The first frame is read here; the others are checked when
    read (see :func:`read_frame`), each against the first frame's size. Hidden files (``._0001.jpg``,
    ``.DS_Store``) are not frames; a UTF-8 byte-order mark in the ground truth is accepted; GOT-10k's
    ``absence.label`` turns the boxes of absent frames into NaN rows.
    """
    folder = Path(path)
    if not folder.exists():
        raise SequenceError(f"sequence folder {folder} does not exist")
    if not folder.is_dir():
        raise SequenceError(f"{folder} is not a folder (a sequence is a folder of frames and a ground-truth file)")
    gt_path = next((folder / n for n in _GT_NAMES if (folder / n).is_file()), None)
    # TrackingNet keeps a chunk's frames in frames/NAME/ and the boxes in anno/NAME.txt beside them
    trackingnet = folder.parent.name == "frames" and (folder.parent.parent / "anno" / f"{folder.name}.txt").is_file()
    if gt_path is None and trackingnet:
        gt_path = folder.parent.parent / "anno" / f"{folder.name}.txt"
    if gt_path is None:
        raise SequenceError(f"sequence folder {folder} has no ground truth ({' or '.join(_GT_NAMES[:2])})")
    frame_dir = next((folder / d for d in ("img", "color") if (folder / d).is_dir()), folder)
    frames = _frames_in(frame_dir)
    if not frames:
        raise SequenceError(f"sequence folder {folder} has no frames (looked in {frame_dir} for {', '.join(IMAGE_SUFFIXES)})")
    if gt_path.name.startswith("groundtruth_rect"):
        layout, one_based, allow_missing = "otb", True, False
    else:
        allow_missing = True
        layout = "got10k" if (folder / "absence.label").exists() or (folder / "meta_info.ini").exists() else "vot"
        if (folder / "full_occlusion.txt").is_file() or (folder / "out_of_view.txt").is_file():
            layout = "lasot"          # img/ + groundtruth.txt, x,y,w,h read as given (as pytracking does)
        elif trackingnet and gt_path.parent.name == "anno":
            layout = "trackingnet"
        one_based = False
    boxes = read_groundtruth(gt_path, one_based=one_based, allow_missing=allow_missing)
    if len(boxes) != len(frames):
        raise SequenceError(_count_mismatch(gt_path, boxes, frame_dir, frames))
    if layout == "got10k" and (folder / "absence.label").is_file():
        boxes = _apply_absence(folder / "absence.label", boxes)
    first_line = _first_box_line(gt_path)
    if not np.isfinite(boxes[0]).all():
        raise SequenceError(f"{gt_path}, line {first_line}: the first box must be a valid box to start tracking")
    first = read_frame(frames[0])
    if not box_in_image(boxes[0], first.shape):
        raise SequenceError(f"{gt_path}, line {first_line}: the first box {format_box(boxes[0])} lies outside the "
                            f"{first.shape[1]}×{first.shape[0]} frame {frames[0].name}")
    masks = None
    mask_dir = next((folder / d for d in ("masks", "mask") if (folder / d).is_dir()), None)
    if mask_dir is not None:    # masks/ as DAVIS folders here, mask/ as acvm.synth.write_otb writes them
        mask_paths = _frames_in(mask_dir)
        if len(mask_paths) != len(frames):
            raise SequenceError(f"{mask_dir} has {len(mask_paths)} masks but {frame_dir} has "
                                f"{len(frames)} frames; they must match one to one")
        masks = LazyMasks(mask_paths)
    seq = Sequence(name or folder.name, frames, boxes, layout, folder, masks)
    seq._cache["size"] = tuple(first.shape[:2])
    return seq


def _count_mismatch(gt_path: Path, boxes: np.ndarray, frame_dir: Path, frames: list[Path]) -> str:
    """The message for a frame/box count mismatch, naming what is in surplus."""
    message = (f"{gt_path} has {len(boxes)} boxes but {frame_dir} has {len(frames)} frames; "
               "they must match one to one")
    if len(frames) > len(boxes):
        extra = frames[len(boxes):]
        shown = ", ".join(p.name for p in extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        return message + f" (frames without a box: {shown})"
    return message + f" (boxes {len(frames) + 1} to {len(boxes)} have no frame)"


def _first_box_line(gt_path: Path) -> int:
    """The line number of the first box in a ground-truth file (blank lines are skipped)."""
    text = gt_path.read_bytes().decode("utf-8-sig", errors="replace")
    return next((k for k, line in enumerate(text.splitlines(), 1) if line.strip()), 1)


def _apply_absence(label_path: Path, boxes: np.ndarray) -> np.ndarray:
    """GOT-10k's ``absence.label`` (one 0/1 a line, 1: the target is absent): absent frames' boxes
    become NaN rows, which every measure of :mod:`acvm.evaluation` skips."""
    text = label_path.read_bytes().decode("utf-8-sig", errors="replace")
    flags = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        value = line.strip()
        if value not in ("0", "1"):
            raise SequenceError(f"{label_path}, line {lineno}: expected 0 (present) or 1 (absent), got {value!r}")
        flags.append(value == "1")
    if len(flags) != len(boxes):
        raise SequenceError(f"{label_path} has {len(flags)} lines but the ground truth has {len(boxes)} boxes; "
                            "they must match one to one")
    boxes = boxes.copy()
    boxes[np.asarray(flags, dtype=bool)] = np.nan
    return boxes


def is_sequence_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one sequence folder (it holds a ground-truth file)."""
    return any((Path(path) / n).is_file() for n in _GT_NAMES)


def split_sequences(root: str | os.PathLike, split: str) -> list[Path]:
    """The sequence folders that ``root/<split>.txt`` lists (one folder name a line, ``#`` comments).

    Raises :class:`SequenceError` naming the file when it is missing or names a folder that is not
    a sequence under ``root``.
    """
    root = Path(root)
    listing = root / f"{split}.txt"
    if not listing.is_file():
        have = sorted(p.stem for p in root.glob("*.txt") if p.stem not in ("README", "SHA256SUMS"))
        raise SequenceError(f"{root} has no split file {listing.name}"
                            + (f" (it has: {', '.join(have)})" if have else ""))
    out = []
    for lineno, line in enumerate(listing.read_text().splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not is_sequence_dir(root / name):
            raise SequenceError(f"{listing}, line {lineno}: {name!r} is not a sequence folder in {root}")
        out.append(root / name)
    if not out:
        raise SequenceError(f"{listing} lists no sequences")
    return out


def split_file_digest(root: str | os.PathLike, split: str) -> str:
    """The SHA-256 of ``root/<split>.txt`` (first 12 hex digits), recorded in the weights' meta."""
    return hashlib.sha256((Path(root) / f"{split}.txt").read_bytes()).hexdigest()[:12]


def expand_sequence_folders(paths, split: str | None = "train", require_split: bool = False) -> list[Path]:
    """Sequence folders from what a user typed: a sequence folder is itself; a folder with
    ``<split>.txt`` means the sequences it lists; any other folder means every sequence in it.

    ``split=None`` never reads split files (every sequence of a plain folder). With
    ``require_split`` (``acvm bench --split``) a folder of sequences without ``<split>.txt`` is an error.
    """
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise SequenceError(f"sequence folder {p} does not exist")
        if is_sequence_dir(p) or not p.is_dir():
            out.append(p)
        elif split is not None and ((p / f"{split}.txt").is_file() or require_split):
            out.extend(split_sequences(p, split))
        else:
            inner = list_sequences(p)
            if not inner:
                raise SequenceError(f"{p} is neither a sequence folder nor a folder of sequences")
            out.extend(inner)
    return out


def user_sequences_dir() -> Path:
    """The user's own folder for the course's sequences (``acvm data where`` names it): the user
    data folder of ``platformdirs`` (``~/.local/share/acvm/sequences`` on Linux, ``~/Library/
    Application Support/acvm/sequences`` on macOS), else ``$XDG_DATA_HOME/acvm/sequences``."""
    try:
        from platformdirs import user_data_dir
        return Path(user_data_dir("acvm", appauthor=False)) / "sequences"
    except ImportError:  # pragma: no cover - platformdirs comes with the environment
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "acvm" / "sequences"


def _has_sequences(folder: Path) -> bool:
    return folder.is_dir() and any((folder / d).is_dir() for d in os.listdir(folder))


def _shared_sequences() -> Path | None:
    for start in [Path.cwd(), Path(__file__).resolve().parent]:
        for parent in [start, *start.parents]:
            for cand in (parent / "shared" / "sequences", parent / "sequences"):
                if _has_sequences(cand):
                    return cand
    return None


def sequence_places() -> list[tuple[str, Path | None]]:
    """Where the course's sequences are looked up, in order: ``(what, folder or None)``."""
    env = os.environ.get("ACVM_SEQUENCES")
    return [("$ACVM_SEQUENCES", Path(env) if env else None),
            ("shared/sequences beside or above the working folder or the package", _shared_sequences()),
            ("the user data folder", user_sequences_dir())]


def sequences_dir() -> Path | None:
    """The folder of real sequences: ``$ACVM_SEQUENCES`` (when set, only it), else ``shared/sequences``
    beside or above the current folder or this package (the course's layout), else the user data
    folder (:func:`user_sequences_dir`), else ``None``."""
    env = os.environ.get("ACVM_SEQUENCES")
    if env:
        return Path(env) if Path(env).is_dir() else None
    shared = _shared_sequences()
    if shared is not None:
        return shared
    user = user_sequences_dir()
    return user if _has_sequences(user) else None


def list_sequences(root: str | os.PathLike | None = None) -> list[Path]:
    """Sequence folders under ``root`` (default :func:`sequences_dir`), sorted by name."""
    root = Path(root) if root else sequences_dir()
    if root is None or not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and is_sequence_dir(p))


def course_sequence(name: str) -> Sequence:
    """Load one of the course's real sequences by name (e.g. ``"OTB_Human7"``).

    Raises :class:`SequenceError` saying where it looked when the shared folder is missing.
    """
    root = sequences_dir()
    if root is None:
        raise SequenceError(f"cannot find the course's sequences folder for {name!r}: set ACVM_SEQUENCES "
                            "to the folder holding OTB_*/VOT* sequences, put them in ../shared/sequences or in "
                            f"{user_sequences_dir()} (`acvm data where` lists the places)")
    return load_sequence(root / name)
