"""Video in, video out: track a video file, and write frames with the boxes drawn on them.

Frames are read with OpenCV one at a time (a long video is never held in memory) and handed to
trackers as RGB, like every frame of the course; the output video is written with OpenCV's
``mp4v`` codec at the input's frame rate.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .data import SequenceError

#: colours (RGB) of the drawn boxes: the tracker's, then the ground truth's
TRACKER_COLOUR = (255, 40, 40)
TRUTH_COLOUR = (0, 220, 90)


VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a video file (not a sequence folder) by its extension."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES and not Path(path).is_dir()


class VideoSequence:
    """A video file as a sequence that :func:`acvm.evaluation.run_ope` can run: ``seq[i]`` is frame
    ``i`` as RGB ``H×W×3`` uint8, decoded when asked for (in order: one frame in memory, a jump
    seeks), and ``boxes`` holds ``box`` on frame 0 and NaN after it (no ground truth).

    ``len()`` is the container's frame count; a frame that does not decode raises
    :class:`SequenceError` naming the file and the frame. ``fps`` is the file's frame rate (25
    where it does not say).
    """

    layout = "video"

    def __init__(self, path: str | os.PathLike, box):
        self.path = Path(path)
        if not self.path.is_file():
            raise SequenceError(f"video {self.path} does not exist")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise SequenceError(f"video {self.path} cannot be opened by OpenCV (unknown or damaged format)")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if count < 1:
            raise SequenceError(f"video {self.path} has no frames")
        self.name = self.path.stem
        self.boxes = np.full((count, 4), np.nan)
        self.boxes[0] = np.asarray(box, dtype=np.float64)
        self._next, self._last = 0, None

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} of {self.path} ({len(self)} frames)")
        if index == self._next - 1 and self._last is not None:
            return self._last
        if index != self._next:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = self._cap.read()
        if not ok:
            raise SequenceError(f"video {self.path}: frame {index} does not decode (the file says {len(self)} frames)")
        self._next, self._last = index + 1, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        return self._last

    def close(self) -> None:
        self._cap.release()


def draw_boxes(frame: np.ndarray, box=None, truth=None, thickness: int = 2) -> np.ndarray:
    """A copy of the RGB ``frame`` with ``box`` (red) and ``truth`` (green) drawn; NaN boxes are skipped."""
    out = np.ascontiguousarray(frame).copy()
    for b, colour in ((truth, TRUTH_COLOUR), (box, TRACKER_COLOUR)):
        if b is None:
            continue
        b = np.asarray(b, dtype=np.float64)
        if b.shape != (4,) or not np.isfinite(b).all():
            continue
        x0, y0 = int(round(b[0])), int(round(b[1]))
        x1, y1 = int(round(b[0] + b[2])) - 1, int(round(b[1] + b[3])) - 1
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness)
    return out


class VideoWriter:
    """Writes RGB frames to an ``mp4v`` video; the size is taken from the first frame."""

    def __init__(self, path: str | os.PathLike, fps: float):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = float(fps)
        self._writer = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if self._writer is None:
            h, w = frame.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"OpenCV cannot write the video {self.path} (mp4v codec, {w}×{h})")
            self._size = (h, w)
        if frame.shape[:2] != self._size:
            raise ValueError(f"frame {self.frames} is {frame.shape[1]}×{frame.shape[0]}, the video "
                             f"{self.path} is {self._size[1]}×{self._size[0]}")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
