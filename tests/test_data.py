from pathlib import Path

import cv2
import numpy as np
import pytest

from acvm.data import SequenceError, load_sequence, list_sequences, read_frame, read_groundtruth

EXPECTED = {  # name: (frames, layout, frame 0 box from the original files, shifted to 0-based for OTB)
    "OTB_Crossing": (120, "otb", (204, 150, 17, 50)),
    "OTB_Human7": (250, "otb", (109, 110, 37, 116)),
    "OTB_Surfer": (376, "otb", (274, 136, 23, 26)),
    "VOT2014_ball": (602, "vot", (200.35, 113.74, 245.48 - 200.35, 159.32 - 113.74)),
    "VOT2014_car": (252, "vot", (6, 166, 43, 27)),
    "VOT2015_bag": (196, "vot", (291.827, 124.711, 442.173 - 291.827, 264.289 - 124.711)),
}


def test_every_shared_sequence_loads(shared_sequences):
    found = {p.name for p in list_sequences(shared_sequences)}
    assert set(EXPECTED) <= found
    for name, (n, layout, box0) in EXPECTED.items():
        seq = load_sequence(shared_sequences / name)
        assert len(seq) == n and seq.boxes.shape == (n, 4) and seq.layout == layout
        assert np.allclose(seq.boxes[0], box0, atol=1e-6)
        first, last = seq[0], seq[-1]
        assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
        assert first.shape == last.shape
        # RGB, not BGR: compare with OpenCV's own read
        bgr = cv2.imread(str(seq.frame_paths[0]))
        assert np.array_equal(first, bgr[:, :, ::-1])


def _make_seq(folder: Path, n=5, gt_lines=None, name="groundtruth_rect.txt", sub="img", sep=",", size=(40, 60)):
    frames = folder / sub if sub else folder
    frames.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(frames / f"{i + 1:04d}.jpg"), np.full((*size, 3), 40 * i % 255, np.uint8))
    if gt_lines is None:
        gt_lines = [sep.join(["11", "21", "10", "8"])] * n
    (folder / name).write_text("\n".join(gt_lines) + "\n")
    return folder


def test_layouts_and_separators(tmp_path):
    otb = load_sequence(_make_seq(tmp_path / "tabs", sep="\t"))
    assert np.allclose(otb.boxes[0], (10, 20, 10, 8))  # 1-based -> 0-based
    spaces = load_sequence(_make_seq(tmp_path / "spaces", sep=" "))
    assert np.allclose(spaces.boxes, otb.boxes)
    vot = load_sequence(_make_seq(tmp_path / "vot", name="groundtruth.txt", sub="color",
                                  gt_lines=["1,2,11,2,11,7,1,7"] * 5))
    assert vot.layout == "vot" and np.allclose(vot.boxes[0], (1, 2, 10, 5))
    got = _make_seq(tmp_path / "got", name="groundtruth.txt", sub=None, gt_lines=["3,4,5,6"] * 5)
    (got / "absence.label").write_text("0\n" * 5)
    g = load_sequence(got)
    assert g.layout == "got10k" and np.allclose(g.boxes[0], (3, 4, 5, 6)) and len(g) == 5


def test_frames_sorted_naturally(tmp_path):
    folder = tmp_path / "nat" / "img"
    folder.mkdir(parents=True)
    for i in [1, 2, 10]:
        cv2.imwrite(str(folder / f"{i}.png"), np.full((4, 4, 3), i, np.uint8))
    (tmp_path / "nat" / "groundtruth_rect.txt").write_text("1,1,2,2\n" * 3)
    seq = load_sequence(tmp_path / "nat")
    assert [p.name for p in seq.frame_paths] == ["1.png", "2.png", "10.png"]


def test_missing_folder(tmp_path):
    with pytest.raises(SequenceError, match="does not exist"):
        load_sequence(tmp_path / "nothing")


def test_no_frames(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "groundtruth_rect.txt").write_text("1,1,2,2\n")
    with pytest.raises(SequenceError, match="has no frames"):
        load_sequence(tmp_path / "empty")


def test_no_groundtruth(tmp_path):
    folder = _make_seq(tmp_path / "s")
    (folder / "groundtruth_rect.txt").unlink()
    with pytest.raises(SequenceError, match="has no ground truth"):
        load_sequence(folder)


@pytest.mark.parametrize("lines, message", [
    (["1,1,2,2"] * 4, "has 4 boxes but .* has 5 frames"),
    (["1,1,2,2"] * 6, "has 6 boxes but .* has 5 frames"),
    (["1,1,2,2"] * 2 + ["1,abc,2,2"] + ["1,1,2,2"] * 2, "line 3: 'abc' is not a number"),
    (["1,1,2,2"] * 3 + ["nan,1,2,2"] + ["1,1,2,2"], "line 4: the box contains NaN"),
    (["1,1,2,2", "1,1,0,2"] + ["1,1,2,2"] * 3, "line 2: .* zero or negative area"),
    (["1,1,2"] + ["1,1,2,2"] * 4, "line 1: expected 4 numbers"),
])
def test_bad_groundtruth(tmp_path, lines, message):
    folder = _make_seq(tmp_path / "s", gt_lines=lines)
    with pytest.raises(SequenceError, match=message) as info:
        load_sequence(folder)
    assert "groundtruth_rect.txt" in str(info.value)


def test_vot_absent_target_rows_are_nan(tmp_path):
    folder = _make_seq(tmp_path / "v", name="groundtruth.txt", gt_lines=["1,1,4,4", "nan,nan,nan,nan", "0,0,0,0", "1,1,4,4", "1,1,4,4"])
    seq = load_sequence(folder)
    assert np.isnan(seq.boxes[1]).all() and np.isnan(seq.boxes[2]).all()


def test_unreadable_and_truncated_frames_are_named(tmp_path):
    folder = _make_seq(tmp_path / "s")
    (folder / "img" / "0003.jpg").write_bytes(b"this is not a jpeg")
    good = (folder / "img" / "0001.jpg").read_bytes()
    (folder / "img" / "0004.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (folder / "img" / "0005.jpg").write_bytes(b"")
    seq = load_sequence(folder)
    with pytest.raises(SequenceError, match="0003.jpg is not a readable image"):
        seq[2]
    try:  # OpenCV decodes some truncated JPEGs partially; either a clear error or a full-size frame
        frame = seq[3]
        assert frame.shape == seq[0].shape
    except SequenceError as exc:
        assert "0004.jpg" in str(exc)
    with pytest.raises(SequenceError, match="0005.jpg is empty"):
        seq[4]
    with pytest.raises(IndexError, match="frame 9 is out of range"):
        seq[9]


def test_grey_frames_become_rgb(tmp_path):
    path = tmp_path / "g.png"
    cv2.imwrite(str(path), np.arange(12, dtype=np.uint8).reshape(3, 4))
    img = read_frame(path)
    assert img.shape == (3, 4, 3) and (img[..., 0] == img[..., 2]).all()


def test_read_groundtruth_polygon(tmp_path):
    p = tmp_path / "gt.txt"
    p.write_text("0 0 4 0 4 3 0 3\n")
    assert np.allclose(read_groundtruth(p), [[0, 0, 4, 3]])


# --- issue 20: loader and message gaps --------------------------------------------------------

def test_got10k_absence_label_makes_absent_rows_nan(tmp_path):
    got = _make_seq(tmp_path / "got", name="groundtruth.txt", sub=None, gt_lines=["3,4,5,6"] * 5)
    (got / "absence.label").write_text("0\n0\n1\n0\n1\n")
    seq = load_sequence(got)
    assert seq.layout == "got10k"
    assert np.isnan(seq.boxes[[2, 4]]).all() and np.isfinite(seq.boxes[[0, 1, 3]]).all()
    # the evaluation skips them: a tracker that sits still is perfect on the present frames
    from acvm.evaluation import OPEResult
    res = OPEResult("still", seq.name, np.tile([3.0, 4, 5, 6], (5, 1)), seq.boxes, np.ones(4))
    assert res.auc == pytest.approx(np.mean(np.linspace(0, 1, 21) < 1))
    assert np.isnan(res.ious[[2, 4]]).all()
    (got / "absence.label").write_text("0\n0\n2\n0\n1\n")
    with pytest.raises(SequenceError, match=r"absence.label, line 3: expected 0 \(present\) or 1 \(absent\), got '2'"):
        load_sequence(got)
    (got / "absence.label").write_text("0\n0\n")
    with pytest.raises(SequenceError, match="absence.label has 2 lines but the ground truth has 5 boxes"):
        load_sequence(got)
    (got / "absence.label").write_text("1\n0\n0\n0\n0\n")
    with pytest.raises(SequenceError, match="line 1: the first box must be a valid box"):
        load_sequence(got)


def test_utf8_bom_in_groundtruth_is_accepted(tmp_path):
    folder = _make_seq(tmp_path / "bom")
    gt = folder / "groundtruth_rect.txt"
    gt.write_bytes(b"\xef\xbb\xbf" + gt.read_bytes())
    assert np.allclose(load_sequence(folder).boxes[0], (10, 20, 10, 8))
    assert np.allclose(read_groundtruth(gt), [[11, 21, 10, 8]] * 5)


def test_hidden_files_are_not_frames(tmp_path):
    folder = _make_seq(tmp_path / "mac")
    (folder / "img" / "._0001.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (folder / "img" / ".DS_Store").write_bytes(b"Bud1")
    (folder / "img" / ".hidden.png").write_bytes(b"x")
    seq = load_sequence(folder)
    assert len(seq) == 5 and [p.name for p in seq.frame_paths][:2] == ["0001.jpg", "0002.jpg"]


def test_count_mismatch_names_the_surplus_frames(tmp_path):
    folder = _make_seq(tmp_path / "more", n=9, gt_lines=["11,21,10,8"] * 4)
    with pytest.raises(SequenceError) as info:
        load_sequence(folder)
    msg = str(info.value)
    assert "has 4 boxes but" in msg and "has 9 frames" in msg
    assert "frames without a box: 0005.jpg, 0006.jpg, 0007.jpg and 2 more" in msg
    folder = _make_seq(tmp_path / "fewer", n=3, gt_lines=["11,21,10,8"] * 5)
    with pytest.raises(SequenceError, match="boxes 4 to 5 have no frame"):
        load_sequence(folder)


def test_first_box_outside_the_image_names_file_and_line(tmp_path):
    # frames are 60 wide and 40 tall; OTB's 1-based 101 is x = 100
    folder = _make_seq(tmp_path / "out", gt_lines=["", "101.5,21,10,8"] + ["11,21,10,8"] * 4)
    with pytest.raises(SequenceError) as info:
        load_sequence(folder)
    msg = str(info.value)
    assert "groundtruth_rect.txt, line 2: the first box (100.5, 20, 10, 8) lies outside the 60×40 frame 0001.jpg" in msg


def test_messages_print_plain_numbers(tmp_path):
    p = tmp_path / "gt.txt"
    p.write_text("1.5 2.25 0 3\n")
    with pytest.raises(SequenceError) as info:
        read_groundtruth(p)
    assert "the box (1.5, 2.25, 0, 3) has zero or negative area" in str(info.value)
    assert "np.float64" not in str(info.value)


def test_a_frame_of_another_size_is_named(tmp_path):
    folder = _make_seq(tmp_path / "sizes")
    cv2.imwrite(str(folder / "img" / "0004.jpg"), np.zeros((30, 50, 3), np.uint8))
    seq = load_sequence(folder)
    assert seq[2].shape == (40, 60, 3)
    with pytest.raises(SequenceError, match=r"0004.jpg is 50×30 but the first frame 0001.jpg of sizes is 60×40"):
        seq[3]
    # the same check when the first frame read is not frame 0
    seq = load_sequence(folder)
    seq._cache.clear()
    with pytest.raises(SequenceError, match="0004.jpg is 50×30"):
        seq[3]


def test_sixteen_bit_frames_keep_one_scale(tmp_path):
    # a dark and a bright 16-bit frame: divided by 257, not stretched to 0..255 each
    dark, bright = tmp_path / "dark.png", tmp_path / "bright.png"
    cv2.imwrite(str(dark), np.full((2, 2), 257 * 10, np.uint16))
    cv2.imwrite(str(bright), np.full((2, 2), 257 * 200, np.uint16))
    assert read_frame(dark).max() == 10 and read_frame(bright).max() == 200


def test_lasot_and_trackingnet_layouts(tmp_path):
    from acvm.synth import make_sequence
    seq = make_sequence(seed=12, n_frames=6, size=(64, 48))
    boxes = "\n".join(",".join(f"{v:.2f}" for v in b) for b in seq.boxes) + "\n"
    # LaSOT: NAME/img/00000001.jpg..., groundtruth.txt, full_occlusion.txt, out_of_view.txt
    lasot = tmp_path / "airplane-1"
    (lasot / "img").mkdir(parents=True)
    for i in range(len(seq)):
        cv2.imwrite(str(lasot / "img" / f"{i + 1:08d}.jpg"), seq[i][:, :, ::-1])
    (lasot / "groundtruth.txt").write_text(boxes)
    (lasot / "full_occlusion.txt").write_text(",".join("0" * len(seq)) + "\n")
    (lasot / "out_of_view.txt").write_text(",".join("0" * len(seq)) + "\n")
    got = load_sequence(lasot)
    assert got.layout == "lasot" and len(got) == len(seq) and np.abs(got.boxes - seq.boxes).max() < 0.006
    # TrackingNet: TRAIN_0/frames/NAME/0.jpg ... 10.jpg (no zero padding), TRAIN_0/anno/NAME.txt
    chunk = tmp_path / "TRAIN_0"
    (chunk / "frames" / "abc").mkdir(parents=True)
    (chunk / "anno").mkdir()
    for i in range(len(seq)):
        cv2.imwrite(str(chunk / "frames" / "abc" / f"{i}.jpg"), seq[i][:, :, ::-1])
    (chunk / "anno" / "abc.txt").write_text(boxes)
    got = load_sequence(chunk / "frames" / "abc")
    assert got.layout == "trackingnet" and [p.name for p in got.frame_paths][:3] == ["0.jpg", "1.jpg", "2.jpg"]
    assert np.abs(got.boxes - seq.boxes).max() < 0.006
    (chunk / "anno" / "abc.txt").unlink()
    with pytest.raises(SequenceError, match="no ground truth"):
        load_sequence(chunk / "frames" / "abc")


def test_the_user_data_folder_is_read_last_and_acvm_data_where_names_every_place(tmp_path, monkeypatch):
    import subprocess
    import sys
    import acvm.data as data
    from acvm.synth import make_sequence, write_otb
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ACVM_SEQUENCES", raising=False)
    user = data.user_sequences_dir()
    assert user == tmp_path / "xdg" / "acvm" / "sequences"
    write_otb(make_sequence(seed=1, n_frames=5), user / "SYN_one")
    monkeypatch.setattr(data, "_shared_sequences", lambda: None)      # no ../shared/sequences
    assert data.sequences_dir() == user
    assert [p.name for p in data.list_sequences()] == ["SYN_one"]
    monkeypatch.setenv("ACVM_SEQUENCES", str(tmp_path / "missing"))   # when set, only it counts
    assert data.sequences_dir() is None
    with pytest.raises(data.SequenceError, match="acvm data where"):
        data.course_sequence("OTB_Human7")
    done = subprocess.run([sys.executable, "-m", "acvm", "data", "where"], capture_output=True, text=True,
                          env={**__import__("os").environ, "ACVM_SEQUENCES": str(tmp_path / "missing")})
    assert done.returncode == 1 and "(missing)" in done.stdout and "the user data folder" in done.stdout
