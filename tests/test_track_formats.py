"""`acvm track --format`: each format read back by the tool it is for."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from acvm.data import load_sequence
from acvm.synth import make_sequence, write_otb


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    write_otb(make_sequence(seed=8, n_frames=12, size=(120, 96)), root / "seq")
    out = {}
    for fmt in ("acvm", "otb", "vot", "got10k"):
        path = root / f"{fmt}.txt"
        done = subprocess.run([sys.executable, "-m", "acvm", "track", "ncc", str(root / "seq"), "--out", str(path),
                               "--format", fmt, "--quiet"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        out[fmt] = path
    return root, out


def test_otb_format_is_read_back_by_the_otb_loader(runs):
    root, out = runs
    boxes = np.loadtxt(out["acvm"], delimiter=",")
    # put the 1-based file where OTB's ground truth goes: acvm's OTB loader shifts it back
    shutil.copytree(root / "seq", root / "as_otb")
    shutil.copyfile(out["otb"], root / "as_otb" / "groundtruth_rect.txt")
    assert np.abs(load_sequence(root / "as_otb").boxes - boxes).max() < 0.006
    assert np.abs(np.loadtxt(out["got10k"], delimiter=",") - boxes).max() < 0.006


def test_vot_format_is_read_by_the_vot_toolkit(runs):
    io = pytest.importorskip("vot.region.io", reason="the VOT toolkit is the extra `vot`")
    from vot.region import Rectangle, Special
    _, out = runs
    trajectory = io.read_trajectory(str(out["vot"]))
    boxes = np.loadtxt(out["acvm"], delimiter=",")
    assert len(trajectory) == len(boxes)
    assert isinstance(trajectory[0], Special) and trajectory[0].code == 1     # VOT's "initialised here"
    got = np.array([[r.x, r.y, r.width, r.height] for r in trajectory[1:]])
    assert all(isinstance(r, Rectangle) for r in trajectory[1:])
    assert np.abs(got - boxes[1:]).max() < 0.006
