import json
import subprocess
import sys

import numpy as np
import pytest

from acvm.cli import main
from conftest import write_split_folder
from acvm.registry import available_trackers, make_tracker


def test_trackers_lists_opencv(capsys):
    assert main(["trackers"]) == 0
    out = capsys.readouterr().out
    assert "opencv-csrt" in out and "opencv-kcf" in out
    assert "opencv-csrt" in available_trackers()


def test_unknown_tracker_message():
    with pytest.raises(ValueError, match="unknown tracker 'nope'; choose one of"):
        make_tracker("nope")


def test_track_writes_one_line_per_frame(shared_sequences, tmp_path, capsys):
    out = tmp_path / "boxes.txt"
    assert main(["track", "opencv-csrt", str(shared_sequences / "OTB_Crossing"), "--out", str(out), "--quiet"]) == 0
    boxes = np.loadtxt(out, delimiter=",")
    assert boxes.shape == (120, 4)
    assert np.allclose(boxes[0], [204, 150, 17, 50])
    assert "frames per second" in capsys.readouterr().out


def test_bench_json_and_plot(shared_sequences, tmp_path):
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    seqs = [str(shared_sequences / "OTB_Crossing"), str(shared_sequences / "VOT2015_bag")]
    assert main(["bench", *seqs, "--trackers", "opencv-csrt,opencv-mosse", "--json", str(js),
                 "--plot", str(png), "--quiet", "--vot"]) == 0
    data = json.loads(js.read_text())
    rows = data["results"]
    assert len(rows) == 4
    for r in rows:
        assert {"tracker", "sequence", "auc", "precision20", "fps", "frames"} <= set(r)
        assert 0 <= r["auc"] <= 1 and r["fps"] > 0 and r["vot_failures"] >= 0
    csrt = [r for r in rows if r["tracker"] == "opencv-csrt" and r["sequence"] == "OTB_Crossing"][0]
    assert csrt["frames"] == 120 and csrt["auc"] > 0.5  # CSRT follows the pedestrian
    assert png.stat().st_size > 10_000


def test_bench_names_a_bad_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", str(tmp_path / "missing"), "--trackers", "opencv-kcf", "--json", str(tmp_path / "x.json")])
    assert info.value.code == 2
    assert "missing does not exist" in capsys.readouterr().err


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "acvm", "trackers"], capture_output=True, text=True, check=True)
    assert "opencv-kcf" in out.stdout


def test_bench_skips_files_from_a_glob(shared_sequences, tmp_path, capsys):
    # `acvm bench ../shared/sequences/*` also matches README.md: it is skipped with a note
    js = tmp_path / "b.json"
    assert main(["bench", str(shared_sequences / "README.md"), str(shared_sequences / "OTB_Crossing"),
                 "--trackers", "opencv-mosse", "--json", str(js), "--quiet"]) == 0
    assert "skipping" in capsys.readouterr().err
    assert len(json.loads(js.read_text())["results"]) == 1


def test_train_passes_batch_size_and_workers(monkeypatch, tmp_path, capsys):
    import acvm.siamfc
    seen = {}

    def fake_train(**kwargs):
        seen.update(kwargs)
        return kwargs["out"]

    monkeypatch.setattr(acvm.siamfc, "train", fake_train)
    out = tmp_path / "w.pt"
    assert main(["train", "siamfc", "--steps", "7", "--batch-size", "3", "--workers", "0", "--seed", "2",
                 "--out", str(out)]) == 0
    assert seen["steps"] == 7 and seen["batch_size"] == 3 and seen["workers"] == 0 and seen["out"] == str(out)
    assert seen["seed"] == 2
    seen.clear()
    assert main(["train", "siamfc", "--out", str(out)]) == 0
    # the model's own defaults apply (the shipped weights' recipe, seed included)
    assert "batch_size" not in seen and "workers" not in seen and "seed" not in seen
    assert f"weights written to {out}" in capsys.readouterr().out
    # --threads is in force while the trainer runs
    import torch
    before = torch.get_num_threads()
    monkeypatch.setattr(acvm.siamfc, "train", lambda **kw: seen.update(threads=torch.get_num_threads()) or kw["out"])
    try:
        assert main(["train", "siamfc", "--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == 1


@pytest.mark.parametrize("argv, message", [
    (["train", "siamfc", "--batch-size", "0"], "--batch-size must be positive"),
    (["train", "siamfc", "--workers", "-1"], "--workers must be zero or more"),
    (["train", "siamfc", "--threads", "0"], "--threads must be positive"),
    (["bench", ".", "--trackers", "ncc", "--json", "x.json", "--threads", "0"], "--threads must be at least 1"),
])
def test_bad_counts_are_named(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_threads_sets_torch_threads(shared_sequences, tmp_path):
    import torch
    from acvm.cli import bench
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        bench([str(shared_sequences / "OTB_Crossing")], ["mosse"], threads=1, progress=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_parse_settings_reads_literals_and_keeps_text():
    from acvm.registry import parse_settings
    assert parse_settings(["lr=0.25", " calibrate = True", "ratios=(1, 2)", "aspect_update_rate=None",
                           "weights=/tmp/w.pt"]) == {"lr": 0.25, "calibrate": True, "ratios": (1, 2),
                                                     "aspect_update_rate": None, "weights": "/tmp/w.pt"}
    assert parse_settings(None) == {} and parse_settings(["a=b=c"]) == {"a": "b=c"}
    # a shell user's lower-case words: "false" kept as text would be truthy
    assert parse_settings(["calibrate=false", "a=TRUE", "b=none", "c=falsey"]) == {
        "calibrate": False, "a": True, "b": None, "c": "falsey"}
    # the trackers' "inf: never" settings (max_aspect=inf), which Python's literals do not spell
    assert parse_settings(["max_aspect=inf", "x=-Inf"]) == {"max_aspect": float("inf"), "x": float("-inf")}
    with pytest.raises(ValueError, match="NAME=VALUE, got 'lr'"):
        parse_settings(["lr"])


def test_train_data_and_synthetic_fraction_reach_the_trainer(monkeypatch, tmp_path, capsys):
    import acvm.siamfc
    from acvm.training import TrainingData
    seen = {}
    monkeypatch.setattr(acvm.siamfc, "train", lambda **kw: seen.update(kw) or kw["out"])
    root = write_split_folder(tmp_path / "d")
    out = str(tmp_path / "w.pt")
    assert main(["train", "siamfc", "--data", str(root), "--out", out]) == 0
    assert seen["data"] == TrainingData((str(root),), 0.5)          # real folders: half synthetic by default
    assert main(["train", "siamfc", "--data", str(root), "--synthetic-fraction", "0.2", "--out", out]) == 0
    assert seen["data"].synthetic_fraction == 0.2
    assert main(["train", "siamfc", "--out", out]) == 0
    assert seen["data"] is None                                       # the shipped recipes: synthetic only
    for argv, message in ([["--synthetic-fraction", "0.3"], "needs --data folders"],
                          [["--data", str(tmp_path / "nope")], "no such folder"],
                          [["--data", str(root), "--synthetic-fraction", "2"], "must lie in [0, 1]"]):
        with pytest.raises(SystemExit):
            main(["train", "siamfc", "--out", out, *argv])
        assert message in capsys.readouterr().err


def test_bench_split_runs_the_listed_sequences(tmp_path, capsys):
    root = write_split_folder(tmp_path / "d")
    out = tmp_path / "v.json"
    assert main(["bench", str(root), "--split", "validation", "--trackers", "ncc", "--json", str(out),
                 "--quiet"]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["sequence"] for r in rows] == ["c"]
    with pytest.raises(SystemExit):
        main(["bench", str(root), "--split", "test", "--trackers", "ncc", "--json", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert "has no split file test.txt" in err and "train" in err and "validation" in err
    (root / "validation.txt").write_text("c\nmissing\n")
    with pytest.raises(SystemExit):
        main(["bench", str(root), "--split", "validation", "--trackers", "ncc", "--json", str(out), "--quiet"])
    assert "validation.txt, line 2: 'missing' is not a sequence folder" in capsys.readouterr().err
