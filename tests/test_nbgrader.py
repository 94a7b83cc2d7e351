"""nbgrader on the course: ``acvm course nbgrader`` writes a source course, and nbgrader's own
``generate_assignment`` and ``autograde`` grade a solved, a half-solved and an unsolved copy."""
import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from acvm import course

from conftest import ROOT

NOTEBOOK = ROOT / "solutions" / "01_particle_filter.ipynb"   # three exercises, runs in seconds
NAME = NOTEBOOK.stem


def _nbgrader(args, cwd):
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_nbgrader_version_marks_exercises_and_checks():
    nb = course.nbgrader_version(nbformat.read(NOTEBOOK, as_version=4), NOTEBOOK.name)
    meta = [c.metadata.get("nbgrader") for c in nb.cells]
    solutions = [m["grade_id"] for m in meta if m and m["solution"]]
    tests = [(m["grade_id"], m["points"]) for m in meta if m and m["grade"]]
    assert solutions == ["predict", "update", "resample_systematic"]
    assert tests == [("check_predict", 1), ("check_update", 1), ("check_resample_systematic", 1)]
    assert not any(course.is_instructor_cell(c) for c in nb.cells)
    graded = [c for c, m in zip(nb.cells, meta) if m and m["grade"]]
    assert graded[0].source.endswith('assert use_predict is predict, "predict does not pass its check yet (see the line above)"')


def test_generate_assignment_and_autograde_give_each_student_their_points(tmp_path):
    pytest.importorskip("nbgrader", reason="nbgrader is not installed (pip install -e '.[test]')")
    course.nbgrader_course(tmp_path, [NOTEBOOK])
    _nbgrader(["generate_assignment", NAME, "--force"], tmp_path)
    release = nbformat.read(tmp_path / "release" / NAME / NOTEBOOK.name, as_version=4)
    source = nbformat.read(tmp_path / "source" / NAME / NOTEBOOK.name, as_version=4)
    assert course.SOLUTION_BEGIN not in "".join(c.source for c in release.cells)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
               if c.metadata.get("nbgrader", {}).get("solution")}

    def submit(student, solved):
        nb = copy.deepcopy(release)
        for c in nb.cells:
            gid = c.metadata.get("nbgrader", {}).get("grade_id")
            if c.metadata.get("nbgrader", {}).get("solution") and gid in solved:
                c.source = solved[gid]
        folder = tmp_path / "submitted" / student / NAME
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / NOTEBOOK.name)

    submit("alice", answers)                                             # everything solved
    wrong_update = answers["update"].replace("return w / total", "return w")   # forgets to normalise
    submit("bob", {"predict": answers["predict"], "update": wrong_update})
    submit("carol", {})                                                  # nothing done
    _nbgrader(["autograde", NAME, "--create", "--force"], tmp_path)

    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:
        scores = {s: gb.find_submission(NAME, s).score for s in ("alice", "bob", "carol")}
        assert gb.find_submission(NAME, "alice").max_score == 3
    assert scores == {"alice": 3, "bob": 1, "carol": 0}
    shutil.rmtree(tmp_path / "autograded", ignore_errors=True)
