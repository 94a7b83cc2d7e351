"""``acvm bench`` keeps what it has: the journal, error rows, --resume, the JSON marked incomplete
until done, Ctrl-C and SIGTERM; ``acvm track`` stopping at a bad frame."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import acvm.cli
from acvm.cli import journal_path, main, read_journal
from acvm.evaluation import load_bench, per_sequence_winners, summarise
from conftest import ROOT, write_split_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = write_split_folder(tmp_path_factory.mktemp("bench") / "d", n_frames=6, size=(96, 72))
    return root


def _bad_copy(src: Path, dst: Path, frame: str = "0004.jpg") -> Path:
    import shutil
    shutil.copytree(src, dst)
    (dst / "img" / frame).write_bytes(b"not a jpeg")
    return dst


def test_journal_error_rows_and_complete_json(folders, tmp_path, capsys):
    bad = _bad_copy(folders / "a", tmp_path / "bad")
    out = tmp_path / "r.json"
    out.write_text(json.dumps({"results": [{"tracker": "old", "sequence": "stale", "auc": 1.0}]}))
    rc = main(["bench", str(bad), str(folders / "b"), "--trackers", "ncc,mosse", "--json", str(out), "--quiet"])
    assert rc == 1                                        # some runs failed: a non-zero exit
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["complete"] is True
    rows = data["results"]
    assert [(r["tracker"], r["sequence"]) for r in rows] == [("ncc", "bad"), ("mosse", "bad"), ("ncc", "b"), ("mosse", "b")]
    for r in rows[:2]:
        assert "0004.jpg is not a readable image" in r["error"] and "auc" not in r
    assert all("error" not in r and 0 <= r["auc"] <= 1 for r in rows[2:])
    assert "failed: ncc on bad: SequenceError" in printed and "(1 of 2 runs failed)" in printed
    # the journal holds the same four runs, one line each
    entries = read_journal(journal_path(out))
    assert [e["row"] for e in entries] == rows
    # load_bench and summarise read it; error rows are left out of the means, and said so
    loaded = load_bench(out)
    with pytest.warns(UserWarning, match="2 failed runs left out of the means"):
        summary = summarise(loaded)
    assert summary["ncc"]["sequences"] == 1 and summary["ncc"]["failed"] == 1
    assert summary["ncc"]["auc"] == pytest.approx(rows[2]["auc"])
    assert data["summary"]["ncc"]["failed"] == 1
    assert set(per_sequence_winners(loaded)) == {"b"}


def test_every_run_failing_gives_nan_means_and_null_json(folders, tmp_path):
    bad = _bad_copy(folders / "a", tmp_path / "bad", frame="0002.jpg")
    out = tmp_path / "r.json"
    assert main(["bench", str(bad), "--trackers", "ncc", "--json", str(out), "--quiet"]) == 1
    data = json.loads(out.read_text())        # strict JSON: no NaN in it
    assert data["summary"]["ncc"]["auc"] is None and data["summary"]["ncc"]["sequences"] == 0
    assert np.isnan(summarise(data["results"], warn=False)["ncc"]["auc"])


def test_interrupt_keeps_what_finished_and_resume_runs_the_rest(folders, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r.json"
    out.write_text(json.dumps({"complete": True, "results": [{"tracker": "old", "sequence": "x", "auc": 1}]}))
    real = acvm.cli._bench_job
    calls = []

    def interrupted_second(job):
        calls.append(job[:2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(acvm.cli, "_bench_job", interrupted_second)
    argv = ["bench", str(folders / "a"), str(folders / "b"), "--trackers", "ncc", "--json", str(out), "--quiet"]
    assert main(argv) == 130
    assert "--resume" in capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["complete"] is False                      # never mistaken for a finished benchmark
    assert [r["sequence"] for r in data["results"]] == ["a"]   # the stale row is gone, the finished one kept
    with pytest.warns(UserWarning, match="is incomplete"):
        load_bench(out)
    # --resume runs only what the journal lacks
    calls.clear()
    monkeypatch.setattr(acvm.cli, "_bench_job", lambda job: calls.append(job[:2]) or real(job))
    assert main(argv + ["--resume"]) == 0
    assert [Path(s).name for _, s in calls] == ["b"]
    data = json.loads(out.read_text())
    assert data["complete"] is True and [r["sequence"] for r in data["results"]] == ["a", "b"]
    assert len(read_journal(journal_path(out))) == 2
    # without --resume the journal starts afresh and every run runs again
    calls.clear()
    assert main(argv) == 0
    assert len(calls) == 2 and len(read_journal(journal_path(out))) == 2


def test_a_cut_journal_line_is_skipped(tmp_path):
    j = tmp_path / "j.jsonl"
    j.write_text(json.dumps({"key": ["ncc", "/a", False], "row": {"tracker": "ncc"}}) + "\n" + '{"key": ["ncc", "/b"')
    assert [e["key"][1] for e in read_journal(j)] == ["/a"]


def test_two_workers_keep_every_finished_run(folders, tmp_path):
    bad = _bad_copy(folders / "a", tmp_path / "bad")
    out = tmp_path / "r.json"
    rc = main(["bench", str(bad), str(folders / "b"), "--trackers", "ncc", "--json", str(out), "--quiet",
               "--workers", "2"])
    assert rc == 1
    rows = json.loads(out.read_text())["results"]
    assert [r["sequence"] for r in rows] == ["bad", "b"]
    assert "0004.jpg" in rows[0]["error"] and rows[1]["auc"] >= 0
    assert len(read_journal(journal_path(out))) == 2


def test_sigterm_writes_what_finished(folders, tmp_path):
    # ncc on a finishes at once; mdnet on a (fine-tuning on 2 cores) is still running when SIGTERM comes
    out = tmp_path / "r.json"
    journal = journal_path(out)
    proc = subprocess.Popen([sys.executable, "-m", "acvm", "bench", str(folders / "a"), "--trackers", "ncc,mdnet",
                             "--json", str(out), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (journal.is_file() and journal.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the first run did not finish in 2 minutes"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode == 0:
        pytest.skip("mdnet finished before SIGTERM arrived")
    assert proc.returncode == 130 and "terminated" in err
    data = json.loads(out.read_text())
    assert data["complete"] is False and [r["tracker"] for r in data["results"]] == ["ncc"]


def test_track_writes_the_frames_before_a_bad_one(folders, tmp_path, capsys):
    bad = _bad_copy(folders / "a", tmp_path / "bad")
    out = tmp_path / "boxes.txt"
    assert main(["track", "ncc", str(bad), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "stopped at frame 3" in err and "0004.jpg is not a readable image" in err
    assert "frames 0 to 2 are written" in err
    boxes = np.loadtxt(out, delimiter=",")
    assert boxes.shape == (3, 4) and np.allclose(boxes[0], np.round(load_sequence_boxes(bad)[0], 2))


def load_sequence_boxes(folder):
    from acvm.data import load_sequence
    return load_sequence(folder).boxes


def test_track_stopping_at_the_first_update_keeps_frame_zero(folders, tmp_path, capsys):
    bad = _bad_copy(folders / "a", tmp_path / "bad", frame="0002.jpg")
    out = tmp_path / "boxes.txt"
    assert main(["track", "ncc", str(bad), "--out", str(out), "--quiet"]) == 1
    assert "stopped at frame 1" in capsys.readouterr().err
    assert np.loadtxt(out, delimiter=",", ndmin=2).shape == (1, 4)
    bad0 = _bad_copy(folders / "a", tmp_path / "bad0", frame="0001.jpg")
    with pytest.raises(SystemExit):          # frame 0 is read by load_sequence: a clear error, no file
        main(["track", "ncc", str(bad0), "--out", str(tmp_path / "none.txt"), "--quiet"])
    assert "0001.jpg is not a readable image" in capsys.readouterr().err
    assert not (tmp_path / "none.txt").exists()


def test_resume_survives_a_cut_last_line(folders, tmp_path):
    out = tmp_path / "r.json"
    argv = ["bench", str(folders / "a"), str(folders / "b"), "--trackers", "ncc", "--json", str(out), "--quiet"]
    assert main(argv) == 0
    j = journal_path(out)
    lines = j.read_text().splitlines()
    j.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])      # killed while writing the second
    assert main(argv + ["--resume"]) == 0
    assert [e["row"]["sequence"] for e in read_journal(j)] == ["a", "b"]
