"""`acvm vot workspace` without the toolkit: the layout it writes and its errors."""
import subprocess
import sys

import pytest

from acvm.data import load_sequence
from acvm.synth import make_sequence, write_otb
from acvm.vot import write_workspace


@pytest.fixture
def otb(tmp_path):
    write_otb(make_sequence(seed=3, n_frames=8, size=(96, 72)), tmp_path / "synth")
    return tmp_path / "synth"


def test_layout_from_an_otb_folder(tmp_path, otb):
    ws = write_workspace(tmp_path / "ws", ["ncc", "opencv-csrt"], [otb], frames=5)
    seq_dir = ws / "sequences" / "synth"
    assert (ws / "sequences" / "list.txt").read_text().split() == ["synth"]
    assert "channels.color=color/%08d.jpg" in (seq_dir / "sequence").read_text()
    assert sorted(p.name for p in (seq_dir / "color").iterdir()) == [f"{i:08d}.jpg" for i in range(1, 6)]
    original, written = load_sequence(otb), load_sequence(seq_dir)
    assert len(written) == 5
    # OTB's 1-based boxes become the 0-based x,y,w,h rows of the VOT layout, the same boxes
    assert abs(written.boxes - original.boxes[:5]).max() < 1e-3
    ini = (ws / "trackers.ini").read_text()
    assert "[acvm-ncc]" in ini and "[acvm-opencv-csrt]" in ini and "-m acvm.vot opencv-csrt" in ini
    assert "stack: stack.yaml" in (ws / "config.yaml").read_text()
    assert "type: supervised" in (ws / "stack.yaml").read_text()


def test_errors_name_what_is_wrong(tmp_path, otb):
    with pytest.raises(ValueError, match="'nope'"):
        write_workspace(tmp_path / "a", ["siamfc", "nope"], [otb])
    with pytest.raises(ValueError, match="at least 2"):
        write_workspace(tmp_path / "b", ["ncc"], [otb], frames=1)
    write_workspace(tmp_path / "c", ["ncc"], [otb])
    with pytest.raises(FileExistsError, match="config.yaml"):
        write_workspace(tmp_path / "c", ["ncc"], [otb])
    done = subprocess.run([sys.executable, "-m", "acvm", "vot", "workspace", str(tmp_path / "d"),
                           str(tmp_path / "missing"), "--trackers", "ncc"], capture_output=True, text=True)
    assert done.returncode == 2 and "missing" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "d" / "config.yaml").exists()          # nothing written for a bad folder
