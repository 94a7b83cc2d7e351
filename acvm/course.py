"""Course tooling: the student notebooks are generated from the solved ones.

``solutions/NN_topic.ipynb`` is the single source. :func:`build` writes ``notebooks/NN_topic.ipynb``
from it by

* replacing every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` block in a code cell with a
  ``raise NotImplementedError`` at the same indentation, and in a markdown cell with
  ``*Your answer here.*``;
* dropping the instructor notes (cells tagged ``instructor``);
* clearing outputs and execution counts.

:func:`nbgrader_course` writes the same notebooks as an nbgrader course instead (``acvm course
nbgrader --out DIR``): exercise cells become nbgrader solution cells, each check cell an
autograded test cell worth one point (it fails unless the student's function passed), so
``nbgrader generate_assignment`` and ``nbgrader autograde`` run on the course.

:func:`check` lists the notebooks that differ from what :func:`build` would write; a test runs it.
"""
from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path

import nbformat

__all__ = ["student_version", "build", "check", "execute", "slides", "slide_problems", "nbgrader_version",
           "nbgrader_course", "lecture_plan", "resolve_notebooks", "CHECK_CALL", "SOLUTION_BEGIN",
           "SOLUTION_END", "INSTRUCTOR_TAG", "SLIDE_TYPES"]

SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"
INSTRUCTOR_TAG = "instructor"
_BLOCK = re.compile(r"^([ \t]*)" + re.escape(SOLUTION_BEGIN) + r".*?^[ \t]*" + re.escape(SOLUTION_END) + r"[^\n]*\n?",
                    re.S | re.M)


def _strip_code(source: str, where: str) -> str:
    if source.count(SOLUTION_BEGIN) != source.count(SOLUTION_END):
        raise ValueError(f"{where}: unbalanced {SOLUTION_BEGIN!r} / {SOLUTION_END!r} markers")

    def repl(m: re.Match) -> str:
        return f'{m.group(1)}raise NotImplementedError("Exercise: replace this line with your code.")\n'
    return _BLOCK.sub(repl, source)


def _strip_markdown(source: str, where: str) -> str:
    if source.count(SOLUTION_BEGIN) != source.count(SOLUTION_END):
        raise ValueError(f"{where}: unbalanced solution markers")
    return _BLOCK.sub(lambda m: f"{m.group(1)}*Your answer here.*\n", source)


#: an exercise's check: ``use_fn = check(fn, reference, ...)`` (acvm.exercise.check)
CHECK_CALL = re.compile(r"^(\w+) = check\((\w+)\b", re.M)
_DEF = re.compile(r"^def (\w+)\(", re.M)


def nbgrader_version(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The solved notebook ``nb`` as an nbgrader *source* notebook (``nb`` is not modified).

    Instructor notes are dropped and outputs cleared, as for students; each exercise cell (the
    one holding the solution markers) becomes an nbgrader solution cell named after its
    function, and each check cell a locked, autograded test cell worth one point: it ends with
    ``assert use_fn is fn``, which holds only when :func:`acvm.exercise.check` accepted the
    student's function. ``nbgrader generate_assignment`` then replaces the solutions.
    """
    out = copy.deepcopy(nb)
    cells = []
    for i, cell in enumerate(out.cells):
        if is_instructor_cell(cell):
            continue
        cell.metadata.pop("nbgrader", None)
        if cell.cell_type == "code":
            _clear_outputs(cell)
            if SOLUTION_BEGIN in cell.source:
                _strip_code(cell.source, f"{name}, cell {i}")     # the markers must balance
                fn = _DEF.search(cell.source)
                cell.metadata["nbgrader"] = {"solution": True, "grade": False, "locked": False, "task": False,
                                             "grade_id": fn.group(1) if fn else f"cell{i}", "schema_version": 3}
            checks = CHECK_CALL.findall(cell.source)
            if checks:
                cell.source = cell.source.rstrip("\n") + "".join(
                    f"\nassert {bound} is {student}, \"{student} does not pass its check yet (see the line above)\""
                    for bound, student in checks)
                cell.metadata["nbgrader"] = {"solution": False, "grade": True, "locked": True, "task": False,
                                             "points": len(checks), "schema_version": 3,
                                             "grade_id": "check_" + "_".join(s for _, s in checks)}
        cells.append(cell)
    out.cells = cells
    return out


def nbgrader_course(out: str | Path, notebooks: list[str | Path] | None = None, root: str | Path = ".") -> list[Path]:
    """Write an nbgrader course to ``out``: ``source/<stem>/<stem>.ipynb`` per notebook (one
    assignment each; default: every solved notebook) and an ``nbgrader_config.py``. Returns the
    written notebooks. Then, in ``out``: ``nbgrader generate_assignment 01_particle_filter``,
    collect the students' work under ``submitted/<student>/01_particle_filter/``, and
    ``nbgrader autograde 01_particle_filter``.
    """
    out = Path(out)
    paths = resolve_notebooks(notebooks, root)
    written = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        dst = out / "source" / path.stem / path.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(_dumps(nbgrader_version(nb, path.name)))
        written.append(dst)
    config = out / "nbgrader_config.py"
    if not config.exists():
        config.write_text('c = get_config()  # noqa: F821 - nbgrader defines it\nc.CourseDirectory.course_id = "acvm"\n'
                          "# autograde runs each notebook top to bottom; the slowest takes about a minute\n"
                          "c.ExecutePreprocessor.timeout = 300\n")
    return written


def lecture_plan(root: str | Path = ".") -> list[dict]:
    """Per solved notebook, what the 90-minute lecture shows and what it leaves for the lab.

    Returns dicts with ``notebook`` (stem), ``shown`` (the ``## N. title`` sections that hold a
    slide tagged ``lecture``), ``lab`` (the other sections), ``exercises`` (function names) and
    ``think`` (how many think questions). The lecture guide's table is written from it, and a
    test keeps the two in step.
    """
    from .slides import LECTURE_TAG, slide_groups
    plan = []
    for src, _ in _pairs(root):
        nb = nbformat.read(src, as_version=4)
        sections, shown, section = [], [], None
        for group in slide_groups(nb.cells):
            first = group[0]
            title = first.source.split("\n")[0]
            if first.cell_type == "markdown" and re.match(r"## \d+\. ", title):
                section = title[3:]
                sections.append(section)
            if section and LECTURE_TAG in first.metadata.get("tags", []) and section not in shown:
                shown.append(section)
        plan.append({"notebook": src.stem, "shown": shown, "lab": [s for s in sections if s not in shown],
                     "exercises": [m for c in nb.cells if SOLUTION_BEGIN in c.source and not is_instructor_cell(c)
                                   for m in _DEF.findall(c.source)],
                     "think": sum("think" in c.metadata.get("tags", []) for c in nb.cells)})
    return plan


def _clear_outputs(cell) -> None:
    """A code cell as before it ran: no outputs, no execution count or timing."""
    cell.outputs, cell.execution_count = [], None
    cell.metadata.pop("execution", None)


def is_instructor_cell(cell) -> bool:
    """True for instructor notes: cells tagged ``instructor``."""
    return INSTRUCTOR_TAG in cell.get("metadata", {}).get("tags", [])


def student_version(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """Return the student notebook made from the solved notebook ``nb`` (``nb`` is not modified)."""
    out = copy.deepcopy(nb)
    cells = []
    for i, cell in enumerate(out.cells):
        if is_instructor_cell(cell):
            continue
        where = f"{name}, cell {i}"
        if cell.cell_type == "code":
            cell.source = _strip_code(cell.source, where)
            _clear_outputs(cell)
        elif cell.cell_type == "markdown":
            cell.source = _strip_markdown(cell.source, where)
        cell.pop("id", None)
        cells.append(cell)
    out.cells = cells
    out.nbformat, out.nbformat_minor = 4, 4
    out.metadata.pop("widgets", None)
    # name the kernel, or JupyterLab may ask which one to start when a student opens the notebook
    out.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    return out


def _dumps(nb) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def _pairs(root: str | Path):
    root = Path(root)
    sol = root / "solutions"
    if not sol.is_dir():
        raise FileNotFoundError(f"{sol} does not exist: run this from the course folder or pass --root")
    for path in sorted(sol.glob("[0-9][0-9]_*.ipynb")):
        yield path, root / "notebooks" / path.name


def build(root: str | Path = ".") -> list[Path]:
    """Write ``notebooks/`` from ``solutions/``; returns the written paths."""
    written = []
    for src, dst in _pairs(root):
        nb = nbformat.read(src, as_version=4)
        dst.parent.mkdir(parents=True, exist_ok=True)
        text = _dumps(student_version(nb, src.name))
        if not dst.exists() or dst.read_text() != text:
            dst.write_text(text)
        written.append(dst)
    return written


def check(root: str | Path = ".") -> list[str]:
    """Problems that make ``notebooks/`` differ from ``build``'s output (empty list: in sync)."""
    problems = []
    expected = set()
    for src, dst in _pairs(root):
        expected.add(dst.name)
        text = _dumps(student_version(nbformat.read(src, as_version=4), src.name))
        if not dst.exists():
            problems.append(f"notebooks/{dst.name} is missing")
        elif dst.read_text() != text:
            problems.append(f"notebooks/{dst.name} differs from what solutions/{src.name} generates")
        if SOLUTION_BEGIN in (dst.read_text() if dst.exists() else ""):
            problems.append(f"notebooks/{dst.name} still contains a solution")
    nb_dir = Path(root) / "notebooks"
    for extra in sorted(nb_dir.glob("[0-9][0-9]_*.ipynb")) if nb_dir.is_dir() else []:
        if extra.name not in expected:
            problems.append(f"notebooks/{extra.name} has no solutions/{extra.name}")
    return problems


#: the slide types of RISE / nbconvert's reveal.js export ("-": continue the current slide)
SLIDE_TYPES = ("slide", "subslide", "fragment", "-", "skip", "notes")


def _slide_type(cell) -> str | None:
    return cell.get("metadata", {}).get("slideshow", {}).get("slide_type")


def slide_problems(nb: nbformat.NotebookNode, name: str = "notebook") -> list[str]:
    """What keeps a solved notebook from presenting as the course's slides (empty list: fine).

    The rules: every cell has a slide type; the first cell is a ``slide`` stating the
    "Learning goals"; the set-up (first code cell) is ``skip``; the last markdown cell for
    students holds the "Summary" and the "References"; instructor notes are markdown cells
    tagged ``instructor`` with slide type ``notes`` (and every ``notes`` cell is one); each
    exercise has an instructor note after it on its own slide, before the next exercise.
    """
    problems = []
    cells = nb.cells
    for i, cell in enumerate(cells):
        kind = _slide_type(cell)
        if kind not in SLIDE_TYPES:
            problems.append(f"{name}, cell {i}: slide type {kind!r}, expected one of {', '.join(SLIDE_TYPES)}")
        if is_instructor_cell(cell) and (cell.cell_type != "markdown" or kind != "notes"):
            problems.append(f"{name}, cell {i}: an instructor note must be a markdown cell of slide type 'notes'")
        if kind == "notes" and not is_instructor_cell(cell):
            problems.append(f"{name}, cell {i}: a 'notes' cell must be tagged {INSTRUCTOR_TAG!r}")
    if not cells:
        return problems + [f"{name}: the notebook is empty"]
    first = cells[0]
    if first.cell_type != "markdown" or _slide_type(first) != "slide" or "Learning goals" not in first.source:
        problems.append(f"{name}: the first cell must be a markdown 'slide' with the title and the Learning goals")
    code = [c for c in cells if c.cell_type == "code"]
    if code and _slide_type(code[0]) != "skip":
        problems.append(f"{name}: the set-up (first code cell) must have slide type 'skip'")
    shown = [c for c in cells if c.cell_type == "markdown" and not is_instructor_cell(c)]
    if not shown or "Summary" not in shown[-1].source or "References" not in shown[-1].source:
        problems.append(f"{name}: the last markdown cell must hold the Summary and the References")
    exercises = [i for i, c in enumerate(cells) if SOLUTION_BEGIN in c.source and not is_instructor_cell(c)]
    for k, i in enumerate(exercises):
        end = exercises[k + 1] if k + 1 < len(exercises) else len(cells)
        end = next((j for j in range(i + 1, end) if _slide_type(cells[j]) == "slide"), end)
        if not any(is_instructor_cell(cells[j]) for j in range(i + 1, end)):
            problems.append(f"{name}, cell {i}: the exercise has no instructor note on its slide")
    return problems


def execute(path: str | Path, timeout: int = 600) -> float:
    """Run a notebook top to bottom in its own folder and save it with outputs; returns seconds."""
    from nbclient import NotebookClient
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent.resolve())}}).execute()
    seconds = time.time() - t0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    path.write_text(_dumps(nb))
    return seconds


def resolve_notebooks(notebooks, root: str | Path | None = None) -> list[Path]:
    """Paths of the solved notebooks meant by ``notebooks``: a path as it is, else a name
    (``05_siamfc``, ``05_siamfc.ipynb`` or just ``05``) looked up in ``root/solutions/``; none: all.

    Raises ``FileNotFoundError`` naming what matched nothing (and the names there are).
    """
    sol = Path(root or ".") / "solutions"
    if not notebooks:
        return [src for src, _ in _pairs(root or ".")]
    out = []
    for item in notebooks:
        path = Path(item)
        if path.is_file():
            out.append(path)
            continue
        stem = path.name.removesuffix(".ipynb")
        found = sorted(sol.glob(f"{stem}.ipynb")) or sorted(sol.glob(f"{stem}_*.ipynb"))
        if len(found) != 1:
            names = ", ".join(p.stem for p in sorted(sol.glob("[0-9][0-9]_*.ipynb")))
            raise FileNotFoundError(f"{item!r} is neither a notebook file nor the name of one solved notebook"
                                    f" in {sol} ({names or 'none there'})")
        out.append(found[0])
    return out


def slides(notebooks: list[str | Path], out_dir: str | Path, root: str | Path | None = None,
           lecture: bool = False) -> list[Path]:
    """Export notebooks (default: every solved notebook) to self-contained reveal.js HTML decks;
    with ``lecture``, one deck ``lecture.slides.html`` of their slides tagged ``lecture``."""
    from .slides import export_deck, export_lecture
    notebooks = resolve_notebooks(notebooks, root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if lecture:
        return [export_lecture([Path(nb) for nb in notebooks], out_dir)]
    return [export_deck(Path(nb), out_dir) for nb in notebooks]
