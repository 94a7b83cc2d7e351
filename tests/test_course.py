import nbformat
import numpy as np
import pytest

from acvm import course
from acvm.exercise import check, compare

from conftest import ROOT


def _nb(cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    return nb


def test_student_version_replaces_solutions_and_drops_notes():
    code = ("def f(x):\n    \"\"\"doc\"\"\"\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n"
            "    ### END SOLUTION\n\nprint(1)\n")
    note = nbformat.v4.new_markdown_cell("Ask the class why.", metadata={"tags": ["instructor"]})
    md = nbformat.v4.new_markdown_cell("Answer: ### BEGIN SOLUTION\nit drifts\n### END SOLUTION\n")
    cell = nbformat.v4.new_code_cell(code, execution_count=3,
                                     outputs=[nbformat.v4.new_output("stream", text="1\n")],
                                     metadata={"slideshow": {"slide_type": "slide"}})
    out = course.student_version(_nb([cell, note, md]))
    assert len(out.cells) == 2
    src = out.cells[0].source
    assert "y = x + 1" not in src and "BEGIN SOLUTION" not in src
    assert '    raise NotImplementedError("Exercise: replace this line with your code.")\n' in src
    assert src.startswith('def f(x):\n    """doc"""\n') and src.endswith("\nprint(1)\n")
    assert out.cells[0].outputs == [] and out.cells[0].execution_count is None
    assert out.cells[0].metadata["slideshow"] == {"slide_type": "slide"}
    # the student code is valid Python that raises NotImplementedError
    ns = {}
    exec(compile(src.replace("print(1)", ""), "cell", "exec"), ns)
    with pytest.raises(NotImplementedError):
        ns["f"](1)


def test_unbalanced_markers_are_reported():
    cell = nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError, match="unbalanced"):
        course.student_version(_nb([cell]), "bad.ipynb")


def test_build_and_check_detect_drift(tmp_path):
    (tmp_path / "solutions").mkdir()
    nb = _nb([nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\nx = 2\n### END SOLUTION\n")])
    nbformat.write(nb, tmp_path / "solutions" / "00_demo.ipynb")
    assert course.check(tmp_path) == ["notebooks/00_demo.ipynb is missing"]
    course.build(tmp_path)
    assert course.check(tmp_path) == []
    (tmp_path / "notebooks" / "00_demo.ipynb").write_text(
        (tmp_path / "notebooks" / "00_demo.ipynb").read_text().replace("x = 1", "x = 3"))
    assert "differs" in course.check(tmp_path)[0]


def test_repository_notebooks_are_in_sync():
    """notebooks/ must be exactly what `acvm course build` makes from solutions/."""
    assert course.check(ROOT) == []


def test_every_notebook_names_its_kernel_and_place_in_the_course():
    """A kernelspec (JupyterLab and nbval pick the kernel without asking) and the right count."""
    paths = sorted((ROOT / "solutions").glob("*.ipynb")) + sorted((ROOT / "notebooks").glob("*.ipynb"))
    n = len(list((ROOT / "solutions").glob("*.ipynb")))
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path} has no python3 kernelspec"
        assert f"of the {n} (00–{n - 1:02d})" in nb.cells[0].source, f"{path}: its first cell miscounts the notebooks"


def test_instructor_notes_never_reach_students():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            assert not course.is_instructor_cell(cell), f"{path.name} has an instructor cell"
            assert "BEGIN SOLUTION" not in cell.source, f"{path.name} leaks a solution"


def test_every_solved_notebook_has_exercises_and_checks():
    for path in sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")):
        text = path.read_text()
        if path.name.startswith("12_"):
            continue  # the benchmark notebook has no exercise
        assert course.SOLUTION_BEGIN in text, f"{path.name} has no exercise"
        assert "check(" in text, f"{path.name} never checks its exercises"


def test_check_reports_each_kind_of_mistake(capsys):
    ref = lambda a: np.asarray(a, dtype=np.float64) * 2  # noqa: E731
    ref.__name__ = "double"
    inputs = [(np.arange(3.0),), (np.ones((2, 2)),)]
    assert check(lambda a: a * 2, ref, inputs) is not ref
    assert "✓ double" in capsys.readouterr().out

    def todo(a):
        raise NotImplementedError
    assert check(todo, ref, inputs) is ref
    assert "not done yet" in capsys.readouterr().out
    assert check(lambda a: (a * 2)[None], ref, inputs) is ref
    assert "shape (1, 3), expected (3,)" in capsys.readouterr().out
    assert check(lambda a: (a * 2).astype(int), ref, inputs) is ref
    assert "dtype int64, expected float64" in capsys.readouterr().out
    assert check(lambda a: a * 2 + (a == 1), ref, inputs) is ref
    assert "differs at index (1,): got 3.0, expected 2.0" in capsys.readouterr().out
    assert check(lambda a: 1 / 0, ref, inputs) is ref
    assert "raised ZeroDivisionError" in capsys.readouterr().out


def test_mismatch_names_the_largest_error_and_a_crash_its_line(capsys):
    # the first wrong value is tiny (it reads like rounding), the worst one is not
    msg = compare(np.array([1.0, 1.46e-12, 3.0]), np.array([1.0, 1.21e-6, 2.0]))
    assert "at index (2,): got 3.0, expected 2.0" in msg and "2 of 3 values wrong" in msg
    assert "largest error is 1 " in msg

    def ref(a):
        return a * 2

    def mine(a):
        b = a * 2
        return b[10]
    check(mine, ref, [(np.arange(3.0),)])
    out = capsys.readouterr().out
    assert "raised IndexError" in out and "in line 3 of mine `return b[10]`" in out


def test_compare_nested():
    assert compare((1.0, {"a": np.zeros(2)}), (1.0, {"a": np.zeros(2)})) is None
    assert "output[1]['a'] has shape" in compare((1.0, {"a": np.zeros(3)}), (1.0, {"a": np.zeros(2)}))
    assert "forget to return" in compare(None, np.zeros(2))


def _slide_notebook():
    """A notebook that follows every slide rule: title, set-up, exercise with its note, summary."""
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell

    def kind(t, tags=None):
        return {"slideshow": {"slide_type": t}, **({"tags": tags} if tags else {})}
    return _nb([
        md("# 01 · Title\n\n**Learning goals.** ...", metadata=kind("slide")),
        code("import acvm", metadata=kind("skip")),
        md("## 1. Exercise", metadata=kind("slide")),
        code("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n", metadata=kind("subslide")),
        code("f = check(f, ref, inputs)", metadata=kind("fragment")),
        md("**Instructor notes.** Ask why.", metadata=kind("notes", ["instructor"])),
        md("## Summary\n\n* ...\n\n## References\n\n1. ...", metadata=kind("slide")),
    ])


def test_slide_problems_names_each_broken_rule():
    assert course.slide_problems(_slide_notebook(), "nb") == []

    def broken(edit):
        nb = _slide_notebook()
        edit(nb.cells)
        return course.slide_problems(nb, "nb")

    assert broken(lambda c: c[3].metadata.pop("slideshow")) == [
        "nb, cell 3: slide type None, expected one of slide, subslide, fragment, -, skip, notes"]
    assert broken(lambda c: c[0].update(source="# Title")) == [
        "nb: the first cell must be a markdown 'slide' with the title and the Learning goals"]
    assert broken(lambda c: c[1].metadata.slideshow.update(slide_type="-")) == [
        "nb: the set-up (first code cell) must have slide type 'skip'"]
    assert broken(lambda c: c[6].update(source="## Summary")) == [
        "nb: the last markdown cell must hold the Summary and the References"]
    assert broken(lambda c: c[5].metadata.pop("tags")) == [
        "nb, cell 5: a 'notes' cell must be tagged 'instructor'",
        "nb, cell 3: the exercise has no instructor note on its slide"]
    assert broken(lambda c: c[5].metadata.slideshow.update(slide_type="-")) == [
        "nb, cell 5: an instructor note must be a markdown cell of slide type 'notes'"]
    # a note on the next slide does not count for this exercise
    assert broken(lambda c: c.insert(5, nbformat.v4.new_markdown_cell(
        "## 2. Next", metadata={"slideshow": {"slide_type": "slide"}}))) == [
        "nb, cell 3: the exercise has no instructor note on its slide"]


def test_solved_notebooks_present_as_slides():
    """Every solved notebook: slide types everywhere, goals first, summary and references last,
    one instructor note per exercise (the rules of course.slide_problems)."""
    problems = []
    for path in sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")):
        problems += course.slide_problems(nbformat.read(path, as_version=4), path.name)
    assert problems == []


# what a tracker or training run measures: it follows the CPU's kernels, so never in a checked cell
_RUN_METRICS = ("run_ope(", "run_vot(", ".auc", ".precision20", "make_tracker(", "Tracker(", "fit(",
                "ScoreMapViewer(", "ParticleRun(", "mask_scores(", "refine_boxes(", "iou_heatmaps(")


def test_no_checked_cell_prints_a_metric_of_a_run():
    offenders = []
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and "# NBVAL_CHECK_OUTPUT" in cell.source:
                hits = [t for t in _RUN_METRICS if t in cell.source]
                if hits:
                    offenders.append(f"{path.name} cell {i}: {', '.join(hits)}")
    assert not offenders, "checked cells that print metrics of tracker or training runs: " + "; ".join(offenders)


def test_expect_passes_within_tolerance_and_names_the_number():
    from acvm.exercise import expect
    assert expect("AUC", 0.71, 0.69, 0.03) == pytest.approx(0.71)
    assert expect("failures", 20, 18, 2) == 20.0
    with pytest.raises(AssertionError, match=r"atom's AUC is 0\.6.*0\.69 ± 0\.03"):
        expect("atom's AUC", 0.65, 0.69, 0.03)
    with pytest.raises(AssertionError, match="nan"):
        expect("AUC", float("nan"), 0.69, 0.03)


def _check_cells(nb):
    """(index, bound name, student function) of every exercise check cell."""
    return [(i, m.group(1), m.group(2)) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for m in course.CHECK_CALL.finditer(c.source)]


def test_checks_never_rebind_the_students_function():
    """``fn = check(fn, ...)`` would make a re-run check test the reference and print ✓."""
    for path in sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")):
        for i, bound, student in _check_cells(nbformat.read(path, as_version=4)):
            assert bound != student, f"{path.name} cell {i}: `{bound} = check({student}, ...)` rebinds {student}"


def test_check_takes_a_behaviour_comparison(capsys):
    ref = lambda n, rng: np.random.default_rng(rng).normal(size=n)  # noqa: E731
    mine = lambda n, rng: np.random.default_rng(rng + 1).normal(size=n)  # noqa: E731
    inputs = [(5000, 1)]
    assert check(mine, ref, inputs, name="noise") is ref               # other numbers: not equal
    assert "✗ noise" in capsys.readouterr().out
    same_law = lambda got, exp, n, rng: None if abs(np.std(got) - 1) < 0.05 else "wrong spread"  # noqa: E731
    assert check(mine, ref, inputs, name="noise", compare=same_law) is mine
    assert "✓ noise" in capsys.readouterr().out
    assert check(lambda n, rng: 2 * mine(n, rng), ref, inputs, name="noise", compare=same_law) is ref
    assert "✗ noise: wrong spread" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")
                                        if "check(" in p.read_text()))
def test_rerun_checks_of_unsolved_notebooks_never_report_a_tick(name):
    """Run a student notebook up to its last check, each check cell twice: no ✓ (nothing is solved)."""
    from nbclient import NotebookClient
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    checks = _check_cells(nb)
    assert checks, f"{name} has no check cell"
    last = max(i for i, _, _ in checks)
    cells, rerun = [], []
    for i, cell in enumerate(nb.cells[:last + 1]):
        cells.append(cell)
        if i in {j for j, _, _ in checks}:
            cells.append(nbformat.v4.new_code_cell(cell.source))
            rerun.append((len(cells) - 2, len(cells) - 1))
    nb.cells = cells
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}},
                   ).execute()
    for first, again in rerun:
        for k in (first, again):
            text = "".join(o.get("text", "") for o in nb.cells[k].outputs)
            assert "✓" not in text, f"{name}: a check of an unsolved exercise says ✓:\n{nb.cells[k].source}\n{text}"
            assert "○" in text, f"{name}: a check of an unsolved exercise does not say it is open:\n{text}"


def test_every_student_notebook_asks_at_least_two_think_questions_answered_for_instructors():
    """``think`` cells reach students; each is followed, in solutions/, by an instructor answer."""
    for path in sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        think = [i for i, c in enumerate(cells) if "think" in c.metadata.get("tags", [])]
        assert len(think) >= 2, f"{path.name} has {len(think)} think cells"
        for i in think:
            assert cells[i].cell_type == "markdown" and cells[i].source.startswith(("**Think.**", "**Predict, then run.**"))
            answer = cells[i + 1]
            assert course.is_instructor_cell(answer) and "Answer" in answer.source[:40], \
                f"{path.name} cell {i}: the question has no instructor answer after it"
        student = nbformat.read(ROOT / "notebooks" / path.name, as_version=4).cells
        assert [c.source for c in student if "think" in c.metadata.get("tags", [])] == [cells[i].source for i in think]


def test_lecture_guide_quotes_only_numbers_its_notebooks_print():
    """Every decimal number in a notebook's section of the lecture guide is one the executed
    notebook prints or states (to the guide's rounding): the guide cannot go stale silently."""
    import json
    import re
    guide = (ROOT / "docs" / "lecture_guide.md").read_text()
    parts = re.split(r"^## (\d\d) · ", guide, flags=re.M)
    assert len(parts) > 20, "the guide has lost its per-notebook sections"
    number = re.compile(r"(?<![\d.\w])\d+\.\d+(?![\d.])")
    for k in range(1, len(parts), 2):
        nb = json.loads(next((ROOT / "solutions").glob(f"{parts[k]}_*.ipynb")).read_text())
        chunks = []
        for c in nb["cells"]:
            chunks.append("".join(c["source"]))
            for o in c.get("outputs", []):
                chunks.append("".join(o.get("text", "")))
                chunks.append("".join(o.get("data", {}).get("text/plain", "")))
        printed = [float(x) for x in re.findall(r"(?<![\d.])\d+\.\d+", " ".join(chunks))]
        for n in set(number.findall(parts[k + 1])):
            dec = len(n.split(".")[1])
            assert any(round(v, dec) == float(n) for v in printed), \
                f"the guide's section {parts[k]} quotes {n}, which notebook {parts[k]} does not print"


def test_notebooks_are_found_by_path_name_or_number(tmp_path):
    by_path = course.resolve_notebooks([ROOT / "solutions" / "05_siamfc.ipynb"], ROOT)
    assert by_path == [ROOT / "solutions" / "05_siamfc.ipynb"]
    for name in ("05_siamfc", "05_siamfc.ipynb", "05"):
        assert course.resolve_notebooks([name], ROOT) == by_path, name
    assert len(course.resolve_notebooks([], ROOT)) == 13
    with pytest.raises(FileNotFoundError, match="'nope' is neither.*05_siamfc"):
        course.resolve_notebooks(["nope"], ROOT)


def test_instructor_lab_opens_the_repository_root_with_rise():
    """`bash setup.sh lab --instructor` installs jupyterlab-rise and starts JupyterLab on the root
    (here with --version, so that it prints and exits instead of serving)."""
    import subprocess
    done = subprocess.run(["bash", "setup.sh", "lab", "--instructor", "--version"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "opening JupyterLab at the repository root" in done.stdout
    assert subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", "import jupyterlab_rise"]).returncode == 0
