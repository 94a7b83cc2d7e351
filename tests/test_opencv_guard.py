"""OpenCV's trackers behind the guard. Each failure the guard exists for is reproduced: the hangs
(MIL, Boosting) and the crash (TLD) through the benchmark's worker with a time limit, every call
that could hang inside a subprocess with a timeout of its own, so this file can never hang CI."""
import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from acvm.opencv_trackers import LIMITS, OpenCVTracker, opencv_tracker_names
from conftest import ROOT

KINDS = opencv_tracker_names()


def _python(code: str, timeout: float) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object last."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def unguarded():
    """OpenCV without the guard, in the benchmark's workers (8 s limit each): hang, crash, control."""
    return _python("""
        import json
        from acvm.cli import _run_in_processes
        from acvm.opencv_trackers import unguarded_run
        jobs = {"mil 2x2 box": ("mil", (64, 64), (20, 20, 2, 2)),
                "boosting 4x4 box": ("boosting", (64, 64), (20, 20, 4, 4)),
                "boosting 1x1 image": ("boosting", (1, 1), (0, 0, 1, 1)),
                "tld 1x1 image": ("tld", (1, 1), (0, 0, 1, 1)),
                "kcf control": ("kcf", (64, 64), (20, 20, 10, 10))}
        names = list(jobs)
        rows = {}
        _run_in_processes(list(enumerate(jobs.values())), 3, lambda job: 8.0,
                          lambda i, row: rows.__setitem__(names[i], row), target=unguarded_run)
        print(json.dumps(rows))
    """, timeout=150)


@pytest.mark.skipif(not {"mil", "boosting", "tld", "kcf"} <= set(KINDS), reason="this OpenCV lacks a tracker")
@pytest.mark.parametrize("case, expected", [
    ("mil 2x2 box", "timed out after 8 s"),
    ("boosting 4x4 box", "timed out after 8 s"),
    ("boosting 1x1 image", "timed out after 8 s"),
    ("tld 1x1 image", "died with exit code -11 (a segmentation fault"),
])
def test_unguarded_opencv_hangs_or_crashes_and_the_worker_says_so(unguarded, case, expected):
    assert expected in unguarded[case]["error"]
    control = unguarded["kcf control"]
    assert "error" not in control and len(control["boxes"]) == 2     # the worker does run a good job


@pytest.fixture(scope="module")
def guarded():
    """The same inputs and the library's other awkward ones through ``OpenCVTracker``, in a subprocess."""
    return _python("""
        import json
        import numpy as np
        from acvm.opencv_trackers import OpenCVTracker, opencv_tracker_names
        rng = np.random.default_rng(1)
        cases = {"2x2 box": ((64, 64), (20, 20, 2, 2)), "4x4 box": ((64, 64), (20, 20, 4, 4)),
                 "1x1 image": ((1, 1), (0, 0, 1, 1)), "16 px image": ((16, 16), (0, 0, 16, 16)),
                 "whole frame": ((64, 64), (0, 0, 64, 64)), "partly outside": ((64, 64), (50, 50, 30, 30)),
                 "1 px wide": ((64, 64), (20, 20, 1, 20)), "ordinary": ((64, 80), (20, 20, 12, 10)),
                 "large": ((120, 130), (30, 40, 20, 25)), "large whole frame": ((120, 130), (0, 0, 130, 120)),
                 "large partly outside": ((120, 130), (110, 100, 40, 40))}
        out = {}
        for kind in opencv_tracker_names():
            for case, (shape, box) in cases.items():
                t = OpenCVTracker(kind)
                frame = lambda: rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
                try:
                    t.init(frame(), box)
                    start = t.box.tolist()
                    boxes = [t.update(frame()).tolist() for _ in range(3)]
                    out[f"{kind} {case}"] = {"start": start, "boxes": boxes}
                except ValueError as exc:
                    out[f"{kind} {case}"] = {"ValueError": str(exc)}
                except Exception as exc:
                    out[f"{kind} {case}"] = {"other": f"{type(exc).__name__}: {exc}"}
            t = OpenCVTracker(kind)
            t.init(rng.integers(0, 256, (120, 130, 3), dtype=np.uint8), (30, 40, 20, 25))
            try:
                t.update(np.zeros((100, 130, 3), np.uint8))
                out[f"{kind} resized"] = {"boxes": []}
            except ValueError as exc:
                out[f"{kind} resized"] = {"ValueError": str(exc)}
        print(json.dumps(out))
    """, timeout=240)


REFUSED = {  # (kind, case) -> words of the ValueError; measured limits (acvm.opencv_trackers.LIMITS)
    ("mil", "2x2 box"): "at least 3 pixels a side and 20 in area", ("mil", "4x4 box"): "20 in area",
    ("boosting", "2x2 box"): "at least 3 pixels a side", ("boosting", "4x4 box"): "20 in area",
    ("boosting", "1x1 image"): "at least 3 pixels a side", ("mil", "1x1 image"): "at least 3 pixels",
    ("mil", "16 px image"): "room for its negative samples", ("mil", "whole frame"): "can move 5 pixels",
    ("mil", "large whole frame"): "can move 5 pixels",
    **{("tld", c): "an image of at least 100×100 pixels" for c in
       ["2x2 box", "4x4 box", "1x1 image", "16 px image", "whole frame", "partly outside", "1 px wide", "ordinary"]},
    ("mil", "1 px wide"): "3 pixels a side", ("boosting", "1 px wide"): "3 pixels a side",
    ("csrt", "1x1 image"): "at least 2 pixels a side", ("mosse", "1x1 image"): "at least 2 pixels a side",
    ("csrt", "1 px wide"): "at least 2 pixels a side", ("mosse", "1 px wide"): "at least 2 pixels a side",
}
CASES = ["2x2 box", "4x4 box", "1x1 image", "16 px image", "whole frame", "partly outside", "1 px wide", "ordinary",
         "large", "large whole frame", "large partly outside"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES)
def test_guard_refuses_clearly_or_tracks_inside_the_image(guarded, kind, case):
    got = guarded[f"{kind} {case}"]
    assert "other" not in got, got["other"]          # never a raw cv2.error or anything else
    if (kind, case) in REFUSED:
        assert f"opencv-{kind} needs" in got.get("ValueError", ""), got
        assert REFUSED[(kind, case)] in got["ValueError"]
        return
    assert "ValueError" not in got, got["ValueError"]
    shape = {"1x1 image": (1, 1), "16 px image": (16, 16), "ordinary": (64, 80)}.get(
        case, (120, 130) if case.startswith("large") else (64, 64))
    for b in got["boxes"]:
        x, y, w, h = b
        assert np.isfinite(b).all() and w > 0 and h > 0
        assert x < shape[1] and y < shape[0] and x + w > 0 and y + h > 0, f"{b} lies outside the image"
    if case.endswith("partly outside"):
        # the first box starts clipped to the image: (50, 50, 30, 30) -> (50, 50, 14, 14) in 64×64
        assert got["start"][2] < 30 and got["start"][0] + got["start"][2] <= shape[1], got["start"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_frame_of_another_size_is_a_clear_error(guarded, kind):
    assert "the frame is 130×100 but the tracker started on a 130×120 one" in guarded[f"{kind} resized"]["ValueError"]


class _Raising:
    def update(self, image):
        raise cv2.error("OpenCV(5.0.0) x.cpp:1: error: (-215:Assertion failed) roi fits in function 'f'\n")


class _Returning:
    def __init__(self, rect, ok=True):
        self.rect, self.ok = rect, ok

    def update(self, image):
        return self.ok, self.rect


def _started(kind="kcf"):
    t = OpenCVTracker(kind)
    t.init(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8), (10, 10, 8, 8))
    return t


def test_cv2_error_in_update_is_a_failure_not_a_traceback():
    t = _started()
    t._tracker = _Raising()
    box = t.update(np.zeros((40, 50, 3), np.uint8))
    assert box.tolist() == [10, 10, 8, 8] and t.confidence == 0.0
    assert "(-215:Assertion failed) roi fits" in t.last_error


@pytest.mark.parametrize("rect", [(60, 5, 8, 8), (-20, 5, 8, 8), (5, 45, 8, 8), (5, -30, 8, 8), (np.nan, 1, 2, 3),
                                  (5, 5, 0, 8)])
def test_a_box_outside_the_image_is_a_failure(rect):
    t = _started()
    t._tracker = _Returning(rect)
    assert t.update(np.zeros((40, 50, 3), np.uint8)).tolist() == [10, 10, 8, 8] and t.confidence == 0.0
    assert t.last_error
    t._tracker = _Returning((45, 35, 8, 8))       # partly inside: a position
    assert t.update(np.zeros((40, 50, 3), np.uint8)).tolist() == [45, 35, 8, 8] and t.confidence == 1.0
    assert t.last_error is None


def test_limits_cover_every_kind():
    assert set(KINDS) <= set(LIMITS)


def test_bench_turns_a_refused_opencv_run_into_an_error_row(tmp_path, capsys):
    from acvm.cli import main
    from acvm.synth import make_sequence, write_otb
    seq = make_sequence(seed=3, n_frames=4, size=(64, 48))
    folder = write_otb(seq, tmp_path / "s")
    gt = next(folder.glob("groundtruth*.txt"))
    lines = gt.read_text().splitlines()
    gt.write_text("\n".join(["11,11,2,2"] + lines[1:]) + "\n")     # a 2×2 first box (1-based file)
    out = tmp_path / "r.json"
    assert main(["bench", str(folder), "--trackers", "opencv-mil,opencv-kcf", "--json", str(out), "--quiet"]) == 1
    rows = json.loads(out.read_text())["results"]
    assert "opencv-mil needs a box of at least 3 pixels" in rows[0]["error"]
    assert "error" not in rows[1]
