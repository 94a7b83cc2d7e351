"""acvm's trackers inside the VOT toolkit (``vot-toolkit``), over the TraX protocol (``vot-trax``).

Two parts:

* :func:`serve` is a TraX tracker: the toolkit starts ``python -m acvm.vot NAME`` (or ``acvm
  vot-tracker NAME``) and sends it image paths and a rectangle or polygon region; every
  (re-)initialisation builds a fresh acvm tracker, as ``acvm bench --vot`` does, and every frame is
  answered with the tracker's axis-aligned box. A polygon region becomes its axis-aligned bounding
  box, the box every acvm tracker starts from.
* :func:`write_workspace` writes a VOT workspace offline from local sequences: the toolkit's
  sequence layout (``sequences/list.txt``, ``sequences/NAME/sequence`` metadata,
  ``groundtruth.txt``, ``color/%08d.jpg`` linked to the original frames), a ``trackers.ini`` that
  names the acvm trackers and a stack with the supervised baseline experiment. Then::

      vot evaluate --workspace DIR acvm-siamfc
      vot analysis --workspace DIR --format json acvm-siamfc

The toolkit is an optional extra: ``pip install -e '.[vot]'`` (``vot-toolkit`` 0.7.4 with
``attributee`` 0.1.9; 0.8.1 and 0.9.0 cannot run a single-object TraX tracker in the supervised
experiment, see ``pyproject.toml``).
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import numpy as np

#: the baseline experiment of VOT2014–2016 (supervised: reset 5 frames after a failure), one run a
#: sequence since every course tracker is deterministic on the CPU
STACK = """title: acvm offline baseline (VOT supervised experiment)
experiments:
  baseline:
    type: supervised
    repetitions: 1
    skip_initialize: 5
    analyses:
      - type: supervised_average_ar
        sensitivity: 30
"""


def region_to_box(region) -> np.ndarray:
    """A TraX region (``trax.Rectangle`` or ``trax.Polygon``) as an axis-aligned ``[x, y, w, h]``."""
    kind = region.type
    if kind == "rectangle":
        return np.asarray(region.bounds(), dtype=np.float64)
    if kind == "polygon":
        points = np.asarray([region.get(i) for i in range(region.size())], dtype=np.float64)
        lo, hi = points.min(axis=0), points.max(axis=0)
        return np.r_[lo, hi - lo]
    raise ValueError(f"acvm trackers take a rectangle or a polygon region, the toolkit sent a {kind}")


def serve(name: str, log: bool = False) -> None:
    """Run tracker ``name`` as a TraX server on stdin/stdout until the client quits."""
    import trax
    from .data import read_frame
    from .evaluation import safe_box
    from .registry import make_tracker

    make_tracker(name)                       # an unknown name fails here, before the handshake
    tracker, box = None, None
    with trax.Server([trax.Region.RECTANGLE, trax.Region.POLYGON], [trax.Image.PATH],
                     tracker_name=f"acvm-{name}", log=log) as server:
        while True:
            request = server.wait()
            if request.type in (trax.TraxStatus.QUIT, trax.TraxStatus.ERROR):
                break
            image = read_frame(request.image["color"].path())
            if request.type == trax.TraxStatus.INITIALIZE:
                box = region_to_box(request.objects[0][0])
                tracker = make_tracker(name)
                tracker.init(image, box)
            else:
                box = safe_box(tracker.update(image), box)
            confidence = getattr(tracker, "confidence", None)
            properties = {} if confidence is None or not np.isfinite(confidence) else {"confidence": float(confidence)}
            server.status([(trax.Rectangle.create(*map(float, box)), properties)])


def write_workspace(directory, trackers: list[str], sequences: list, copy: bool = False,
                    frames: int | None = None) -> Path:
    """Write a VOT toolkit workspace in ``directory`` for ``trackers`` on local ``sequences``.

    Args:
        directory: the workspace folder (created; an existing ``config.yaml`` there is an error).
        trackers: acvm tracker names; each becomes ``acvm-<name>`` in ``trackers.ini``, run as
            ``<this Python> -m acvm.vot <name>``.
        sequences: sequence folders that :func:`acvm.data.load_sequence` reads (OTB, VOT, GOT-10k).
        copy: copy the frames instead of linking them.
        frames: keep only the first ``frames`` frames of each sequence (a quick trial).
    Returns:
        the workspace folder.
    """
    import shutil
    from .data import load_sequence
    from .registry import available_trackers

    root = Path(directory)
    if (root / "config.yaml").exists():
        raise FileExistsError(f"{root / 'config.yaml'} exists: choose an empty folder for the workspace")
    known = available_trackers()
    unknown = [t for t in trackers if t not in known]
    if unknown:
        raise ValueError(f"unknown tracker {', '.join(map(repr, unknown))}; choose from: {', '.join(known)}")
    if not sequences:
        raise ValueError("no sequences given for the workspace")
    if frames is not None and frames < 2:
        raise ValueError(f"frames must be at least 2, got {frames}")
    loaded = [load_sequence(p) for p in sequences]            # errors name the folder before anything is written
    names = [s.name for s in loaded]
    if len(set(names)) != len(names):
        raise ValueError(f"two sequences share a name: {', '.join(sorted(n for n in names if names.count(n) > 1))}")
    (root / "results").mkdir(parents=True, exist_ok=True)
    for seq in loaded:
        folder = root / "sequences" / seq.name
        (folder / "color").mkdir(parents=True, exist_ok=True)
        n = len(seq) if frames is None else min(frames, len(seq))
        for i, src in enumerate(seq.frame_paths[:n], start=1):
            if src.suffix.lower() not in (".jpg", ".jpeg"):
                raise ValueError(f"{src}: the workspace's frames are %08d.jpg, this sequence has {src.suffix} frames")
            dst = folder / "color" / f"{i:08d}.jpg"
            if dst.exists() or dst.is_symlink():
                dst.unlink()
            if copy:
                shutil.copyfile(src, dst)
            else:
                os.symlink(Path(src).resolve(), dst)
        (folder / "groundtruth.txt").write_text("".join(_groundtruth(seq).splitlines(keepends=True)[:n]))
        (folder / "sequence").write_text(f"channels.color=color/%08d.jpg\nformat=default\nfps=30\nname={seq.name}\n")
    (root / "sequences" / "list.txt").write_text("\n".join(names) + "\n")
    (root / "stack.yaml").write_text(STACK)
    (root / "config.yaml").write_text("registry:\n- ./trackers.ini\nstack: stack.yaml\n")
    python = shlex.quote(sys.executable)
    ini = []
    for t in trackers:
        ini += [f"[acvm-{t}]", f"label = acvm-{t}", "protocol = trax", f"command = {python} -m acvm.vot {t}",
                "timeout = 120", ""]
    (root / "trackers.ini").write_text("\n".join(ini))
    return root


def _groundtruth(seq) -> str:
    """The sequence's own VOT ``groundtruth.txt`` (polygons kept, as the VOT toolkit scores them), else
    its axis-aligned boxes; a frame without ground truth is written as ``0`` (VOT: unknown)."""
    own = Path(seq.path) / "groundtruth.txt" if getattr(seq, "path", None) else None
    if own is not None and own.is_file():
        lines = [ln.strip() for ln in own.read_text().splitlines() if ln.strip()]
        if len(lines) == len(seq) and all("," in ln for ln in lines):
            return "\n".join(lines) + "\n"
    rows = [",".join(f"{v:.4f}" for v in b) if np.isfinite(b).all() else "0" for b in seq.boxes]
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    """``python -m acvm.vot NAME``: the TraX tracker the VOT toolkit starts."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m acvm.vot", description="an acvm tracker as a TraX server for the VOT toolkit")
    p.add_argument("tracker", help="a name from `acvm trackers`")
    p.add_argument("--log", action="store_true", help="TraX protocol log on stderr")
    args = p.parse_args(argv)
    serve(args.tracker, log=args.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
