"""Video in, video out: `acvm track NAME video.mp4 --box ... --out ... --video out.mp4`."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from acvm.boxes import iou
from acvm.synth import make_sequence, write_otb
from acvm.video import VideoSequence, draw_boxes


def _mp4(path, seq, fps=20):
    h, w = seq[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for i in range(len(seq)):
        writer.write(cv2.cvtColor(seq[i], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _frames(path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return out
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def _track(*args):
    return subprocess.run([sys.executable, "-m", "acvm", "track", *args, "--quiet"], capture_output=True, text=True)


@pytest.fixture(scope="module")
def synthetic():
    return make_sequence(seed=4, n_frames=30, size=(160, 120))


def test_track_a_video_file(tmp_path, synthetic):
    video = _mp4(tmp_path / "clip.mp4", synthetic)
    box = ",".join(f"{v:.2f}" for v in synthetic.boxes[0])
    done = _track("dcf", str(video), "--box", box, "--out", str(tmp_path / "b.txt"), "--video", str(tmp_path / "o.mp4"))
    assert done.returncode == 0, done.stderr
    boxes = np.loadtxt(tmp_path / "b.txt", delimiter=",")
    assert boxes.shape == (len(synthetic), 4)                  # one box a frame, frame 0 the given one
    assert np.allclose(boxes[0], synthetic.boxes[0], atol=0.01)
    # the tracker ran on the decoded video: it follows the synthetic target (mp4v is lossy)
    assert np.nanmean(iou(boxes[1:], synthetic.boxes[1:])) > 0.5
    written = _frames(tmp_path / "o.mp4")
    assert len(written) == len(synthetic)
    # the red box is drawn where the tracker put it: the top edge of frame 10's box is red
    x, y, w, h = np.round(boxes[10]).astype(int)
    edge = written[10][max(y, 0), max(x, 0) + 2:x + w - 2].astype(int)
    assert (edge[:, 0] - edge[:, 1] > 80).mean() > 0.8


def test_track_a_folder_into_a_video_draws_the_truth(tmp_path, synthetic):
    write_otb(synthetic, tmp_path / "seq")
    done = _track("ncc", str(tmp_path / "seq"), "--out", str(tmp_path / "b.txt"), "--video", str(tmp_path / "o.mp4"))
    assert done.returncode == 0, done.stderr
    assert "AUC" in done.stdout
    written = _frames(tmp_path / "o.mp4")
    assert len(written) == len(synthetic) == len(np.loadtxt(tmp_path / "b.txt", delimiter=","))
    # the ground truth is drawn in green (under the tracker's red box): look at the frame where the
    # two boxes' bottom edges are furthest apart
    boxes = np.loadtxt(tmp_path / "b.txt", delimiter=",")
    k = int(np.argmax(np.abs((boxes[:, 1] + boxes[:, 3]) - (synthetic.boxes[:, 1] + synthetic.boxes[:, 3]))))
    assert abs((boxes[k, 1] + boxes[k, 3]) - (synthetic.boxes[k, 1] + synthetic.boxes[k, 3])) > 3
    x, y, w, h = np.round(synthetic.boxes[k]).astype(int)
    edge = written[k][y + h - 1, x + 2:x + w - 2].astype(int)
    assert (edge[:, 1] - edge[:, 0] > 80).mean() > 0.6


def test_errors_name_the_problem(tmp_path, synthetic):
    video = _mp4(tmp_path / "clip.mp4", synthetic)
    done = _track("dcf", str(video), "--out", str(tmp_path / "b.txt"))
    assert done.returncode == 2 and "--box" in done.stderr and "Traceback" not in done.stderr
    done = _track("dcf", str(video), "--box", "1,2,0,4", "--out", str(tmp_path / "b.txt"))
    assert done.returncode == 2 and "w and h > 0" in done.stderr
    done = _track("dcf", str(tmp_path / "none.mp4"), "--box", "1,2,3,4", "--out", str(tmp_path / "b.txt"))
    assert done.returncode != 0 and "none.mp4" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    done = _track("dcf", str(tmp_path / "junk.mp4"), "--box", "1,2,3,4", "--out", str(tmp_path / "b.txt"))
    assert done.returncode != 0 and "junk.mp4" in done.stderr and "Traceback" not in done.stderr


def test_video_sequence_reads_in_order_and_seeks(tmp_path, synthetic):
    seq = VideoSequence(_mp4(tmp_path / "clip.mp4", synthetic), synthetic.boxes[0])
    assert len(seq) == len(synthetic) and np.isnan(seq.boxes[1:]).all()
    a = seq[5]
    assert seq[5] is a                                   # the frame just read is not decoded again
    b = seq[2]                                           # a jump back seeks
    assert b.shape == synthetic[2].shape and np.abs(b.astype(int) - synthetic[2]).mean() < 12
    with pytest.raises(IndexError):
        seq[len(seq)]
    seq.close()
    frame = draw_boxes(np.zeros((20, 20, 3), np.uint8), [2, 2, 10, 10], [np.nan] * 4)
    assert frame[2, 5, 0] == 255 and frame.sum() > 0    # a NaN truth is skipped, the box drawn
