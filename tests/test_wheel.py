"""A wheel carries the shipped weights: build it, install it into a fresh virtual environment
outside the repository, and run `acvm track siamfc` and `acvm bench` there on a synthetic sequence."""
import subprocess
import sys
import sysconfig

import pytest

from conftest import ROOT


def _run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert done.returncode == 0, f"{cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_carries_the_weights_and_tracks_outside_the_repository(tmp_path):
    pytest.importorskip("setuptools")
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
          str(ROOT)])
    [wheel] = list(wheels.glob("acvm-*.whl"))
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    assert "acvm_data/weights/siamfc.pt" in names and "acvm_data/weights/MANIFEST.json" in names
    assert "acvm/sequences_manifest.json" in names
    env_dir = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(env_dir)])
    python = env_dir / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    # the course's dependencies (torch, OpenCV, ...) come from this environment, acvm from the wheel only
    with open(f"{site}/course_deps.pth", "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)])
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([str(python), "-c", "import acvm, acvm.registry as r; print(acvm.__file__); print(r.WEIGHTS_DIR)"],
                 cwd=work).split()
    assert where[0].startswith(site) and where[1] == f"{site}/acvm_data/weights"
    acvm_cmd = str(env_dir / "bin" / "acvm")
    _run([acvm_cmd, "data", "synth", str(work / "SYN"), "--frames", "12", "--seed", "4"], cwd=work)
    seq = work / "SYN"
    _run([acvm_cmd, "track", "siamfc", str(seq), "--out", str(work / "boxes.txt"), "--quiet"], cwd=work)
    assert len((work / "boxes.txt").read_text().splitlines()) == 12
    _run([acvm_cmd, "bench", str(seq), "--trackers", "siamfc", "--json", str(work / "bench.json"), "--quiet"],
         cwd=work)
    from acvm.evaluation import load_bench
    rows = load_bench(work / "bench.json")
    assert [r["tracker"] for r in rows] == ["siamfc"] and rows[0]["auc"] > 0.2
