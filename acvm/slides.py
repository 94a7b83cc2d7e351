"""Self-contained reveal.js slide decks from the solved notebooks.

:func:`export_deck` turns ``solutions/NN_topic.ipynb`` into one HTML file that a lecturer can
open from a USB stick in a lecture hall without network:

* nbconvert's ``SlidesExporter`` lays out the slides from each cell's ``slideshow`` metadata
  (``slide``, ``subslide``, ``fragment``); cells of type ``skip`` (the set-up) are left out;
* instructor notes (cells tagged ``instructor``, slide type ``notes``) become reveal.js speaker
  notes: press ``s`` in the deck to see them beside the current slide;
* reveal.js, its CSS, the theme with its fonts and the notes plugin are inlined from the copy
  that the ``sphinx-revealjs`` package ships (nothing is fetched from a CDN, and no require.js
  loader is needed to start reveal.js);
* figures are already inline (base64 PNG); an interactive view, which a static page cannot run,
  shows the figure its widget held when the notebook was executed (the saved widget state);
* TeX in markdown (``$...$``, ``$$...$$``) is drawn by matplotlib's mathtext into inline SVG,
  since MathJax would need the network; a formula mathtext cannot parse stays as TeX source.
"""
from __future__ import annotations

import base64
import copy
import functools
import html
import importlib.util
import io
import json
import re
from pathlib import Path

import nbformat

__all__ = ["export_deck", "deck_notebook", "widget_figures", "render_math", "reveal_dir", "strip_markers",
           "lecture_notebook", "export_lecture", "slide_groups", "LECTURE_TAG", "DECK_SUFFIX"]

DECK_SUFFIX = ".slides.html"
#: the tag on the first cell of a (sub)slide that the 90-minute lecture shows (docs/lecture_guide.md)
LECTURE_TAG = "lecture"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
#: reveal.js settings of every deck (https://revealjs.com/config/)
REVEAL_CONFIG = {
    "width": 1280, "height": 720,  # the slide's logical size (a 16:9 projector); reveal.js scales it to the screen
    "controls": True, "progress": True, "slideNumber": "c/t",
    "hash": True,                  # the URL names the slide, so a reload stays on it
    "transition": "none",          # no animation: code and figures stay readable while moving on
    "center": False,               # top-aligned: long cells grow downwards and scroll
}

# Our blocks replace the template's network loads: jQuery, require.js, mermaid, the widget
# manager and MathJax come from CDNs, and reveal.js is started by require.js there.
_TEMPLATE = r"""{%- extends 'reveal/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{% block footer_js %}
<!-- ACVM_REVEAL_SCRIPTS -->
{% endblock footer_js %}
"""

# A slide whose cells are taller than the slide is shrunk to fit it (like a presentation
# program's "shrink text on overflow"), down to FIT_MIN_SCALE; only a slide that would need less
# scrolls. Measured with every fragment in place (hidden fragments keep their space).
FIT_MIN_SCALE = 0.58
_START = """
function acvmFit(slide) {
  if (!slide || slide.classList.contains('stack')) return;
  slide.classList.remove('acvm-fit');
  slide.style.transform = '';
  const room = Reveal.getConfig().height, need = slide.scrollHeight;
  if (need <= room + 1) return;
  const k = Math.max(%(min_scale)s, room / need);
  slide.classList.add('acvm-fit');
  slide.style.transform = 'scale(' + k.toFixed(4) + ')';
  slide.dataset.acvmScale = k.toFixed(4);
}
Reveal.initialize(Object.assign(%(config)s, {plugins: [RevealNotes]})).then(() => {
  Reveal.getSlides().forEach(acvmFit);
  Reveal.on('slidechanged', e => acvmFit(e.currentSlide));
});
"""

# a slide taller than the screen scrolls instead of running off its bottom edge
_EXTRA_CSS = """
.reveal .slides section { padding: 0 1em; box-sizing: border-box; }
.reveal .slides section:not(.stack) { max-height: SLIDE_HEIGHTpx; overflow-y: auto; }
.reveal .slides section.acvm-fit { max-height: none; overflow: visible; transform-origin: top center; }
.reveal img.acvm-math { display: inline; margin: 0; vertical-align: baseline; }
.reveal .acvm-math-display { text-align: center; margin: 0.5em 0; }
.reveal code.acvm-tex { color: #444; background: #f4f4f4; }
.reveal .acvm-widget-note { font-size: 60%; color: #666; font-style: italic; }
.reveal .jp-OutputArea-output img { max-height: 560px; width: auto; }
"""


def reveal_dir() -> Path:
    """The reveal.js distribution bundled in the installed ``sphinx_revealjs`` package.

    Found without importing sphinx. Raises ``ModuleNotFoundError`` naming the package to install.
    """
    spec = importlib.util.find_spec("sphinx_revealjs")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("slide decks need reveal.js, which the sphinx-revealjs package bundles: "
                                  "pip install 'acvm[slides]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "_static" / "revealjs"
    if not (path / "dist" / "reveal.js").is_file():
        raise FileNotFoundError(f"reveal.js is not where sphinx-revealjs usually keeps it: {path}")
    return path


# ---------------------------------------------------------------------------------------------
# widgets: the saved widget state holds the figure each interactive view showed
# ---------------------------------------------------------------------------------------------

def widget_figures(model_id: str, state: dict) -> list[dict]:
    """Outputs (nbformat output dicts) held by the ``Output`` widgets inside widget ``model_id``.

    ``state`` is the notebook's ``metadata.widgets[WIDGET_STATE]["state"]`` (model id -> model).
    Children are searched depth-first in display order, so the figure comes back in the order
    the view shows it. Returns ``[]`` when the model is not in the state (a notebook saved
    without widget state).
    """
    found, seen = [], set()

    def visit(mid: str) -> None:
        if mid in seen or mid not in state:
            return
        seen.add(mid)
        model = state[mid]
        values = model.get("state", {})
        if model.get("model_name") == "OutputModel":
            found.extend(copy.deepcopy(values.get("outputs", [])))
        for child in values.get("children", []):
            if isinstance(child, str) and child.startswith("IPY_MODEL_"):
                visit(child[len("IPY_MODEL_"):])

    visit(model_id)
    return found


def _static_outputs(output: dict, state: dict) -> list[dict]:
    """Replace one widget-view output by what the widget displayed, or a one-line note."""
    model_id = output["data"][WIDGET_VIEW].get("model_id", "")
    static = []
    for o in widget_figures(model_id, state):
        kind = o.get("output_type")
        if kind == "stream":
            static.append(nbformat.v4.new_output("stream", name=o.get("name", "stdout"), text=o.get("text", "")))
        elif kind in ("display_data", "execute_result"):
            static.append(nbformat.v4.new_output("display_data", data=o.get("data", {}), metadata=o.get("metadata", {})))
    note = ("Interactive view: move its controls in the notebook." if static
            else "Interactive view: run the notebook to use it (its figure was not saved).")
    static.append(nbformat.v4.new_output("display_data", data={
        "text/html": f'<p class="acvm-widget-note">{note}</p>', "text/plain": note}))
    return static


# ---------------------------------------------------------------------------------------------
# maths: TeX -> inline SVG with matplotlib's mathtext
# ---------------------------------------------------------------------------------------------

# mathtext wants braces where TeX accepts a single token: \sqrt d, \mathbf p, \mathbb R
_BRACE_ARG = re.compile(r"\\(sqrt|mathbf|mathbb|mathrm|mathcal|mathit|tilde|hat|bar|vec|dot|boldsymbol)\s+"
                        r"([A-Za-z0-9]|\\[A-Za-z]+)")
# size hints mathtext does not know; the plain delimiter reads the same on a slide
_SIZERS = re.compile(r"\\[Bb]igg?[lr]?(?![A-Za-z])")


def _braced(tex: str, start: int) -> int:
    """Index just past the ``{...}`` group that opens at ``tex[start]`` (braces nest)."""
    depth = 0
    for k in range(start, len(tex)):
        depth += {"{": 1, "}": -1}.get(tex[k], 0)
        if depth == 0:
            return k + 1
    raise ValueError("unbalanced braces")


def _underbrace_to_underset(tex: str) -> str:
    r"""``\underbrace{A}_{B}`` -> ``\underset{B}{A}``: mathtext has no braces under a formula."""
    while (i := tex.find(r"\underbrace{")) >= 0:
        a_end = _braced(tex, i + len(r"\underbrace"))
        body = tex[i + len(r"\underbrace") + 1:a_end - 1]
        if tex[a_end:a_end + 2] != "_{":
            tex = tex[:i] + body + tex[a_end:]
            continue
        b_end = _braced(tex, a_end + 1)
        tex = tex[:i] + r"\underset{" + tex[a_end + 2:b_end - 1] + "}{" + body + "}" + tex[b_end:]
    return tex


def _two_row_matrices(tex: str) -> str:
    r"""A two-row ``bmatrix`` drawn as mathtext can: rows stacked by ``\genfrac`` without a bar."""
    def repl(m: re.Match) -> str:
        rows = [r.strip() for r in re.split(r"\\\\", m.group(1)) if r.strip()]
        if len(rows) != 2:
            return m.group(0)
        a, b = (r.replace("&", r"\quad ") for r in rows)
        return r"\left[\genfrac{}{}{0}{}{" + a + "}{" + b + r"}\right]"
    return re.sub(r"\\begin\{bmatrix\}(.*?)\\end\{bmatrix\}", repl, tex)


def _mathtext_source(tex: str) -> str:
    tex = " ".join(tex.split())  # a newline inside TeX maths is only a space
    tex = _SIZERS.sub("", tex)
    tex = re.sub(r"\\(le|ge)(?![a-zA-Z])", r"\\\1q", tex)          # mathtext knows \leq, \geq only
    tex = re.sub(r"\\sqrt\s*(\\[a-zA-Z]+|\w)", r"\\sqrt{\1}", tex)  # \sqrt\rho -> \sqrt{\rho}
    try:
        tex = _underbrace_to_underset(tex)
    except ValueError:
        pass
    tex = _two_row_matrices(tex)
    # \text{a b} keeps its spaces as \mathrm{a\ b} (mathtext drops plain spaces in maths)
    tex = re.sub(r"\\text\{([^{}]*)\}", lambda m: r"\mathrm{" + m.group(1).replace(" ", r"\ ") + "}", tex)
    tex = tex.replace(r"\text{", r"\mathrm{").replace(r"\operatorname{", r"\mathrm{")
    tex = tex.replace(r"\boldsymbol{", r"\mathbf{")
    return _BRACE_ARG.sub(lambda m: f"\\{m.group(1)}{{{m.group(2)}}}", tex)


@functools.lru_cache(maxsize=4096)
def _math_svg(tex: str) -> tuple[str, float, float, float] | None:
    """(SVG text, width, height, depth in pt at 12 pt) of one formula, or None if mathtext fails."""
    import matplotlib as mpl
    from matplotlib import mathtext
    from matplotlib.font_manager import FontProperties
    buf = io.BytesIO()
    with mpl.rc_context({"mathtext.fontset": "cm", "svg.fonttype": "path", "svg.hashsalt": "acvm"}):
        try:
            depth = mathtext.math_to_image(f"${tex}$", buf, prop=FontProperties(size=12), format="svg")
        except Exception:  # mathtext raises several pyparsing / ValueError kinds on TeX it lacks
            return None
    svg = buf.getvalue().decode("utf-8")
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)  # a date: decks would differ run to run
    m = re.search(r'width="([\d.]+)pt" height="([\d.]+)pt"', svg)
    return svg, float(m.group(1)), float(m.group(2)), float(depth or 0.0)


def _math_html(tex: str, display: bool) -> str:
    drawn = _math_svg(_mathtext_source(tex))
    alt = html.escape(tex.strip(), quote=True)
    if drawn is None:
        src = html.escape(("$$%s$$" if display else "$%s$") % tex.strip())
        code = f'<code class="acvm-tex">{src}</code>'
        return f'<div class="acvm-math-display">{code}</div>' if display else code
    svg, w, h, depth = drawn
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    scale = 1.1 / 12.0  # pt at 12 pt -> em of the text; a little larger reads better beside sans-serif
    style = f"height:{h * scale:.3f}em;width:{w * scale:.3f}em;vertical-align:{-depth * scale:.3f}em"
    if display:
        style = f"height:{1.2 * h * scale:.3f}em;width:{1.2 * w * scale:.3f}em"
    img = f'<img class="acvm-math" alt="{alt}" style="{style}" src="data:image/svg+xml;base64,{data}">'
    return f'<div class="acvm-math-display">{img}</div>' if display else img


# code spans and fenced blocks keep their dollars; maths is everything else between $ or $$
_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.S)
_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\d)", re.S)


def render_math(markdown: str) -> str:
    """Replace the TeX in a markdown cell's source by inline SVG images (``str`` -> ``str``).

    ``$...$`` becomes an inline image on the text's baseline, ``$$...$$`` a centred block; code
    spans and fenced code are left alone, as is a formula mathtext cannot draw (shown as TeX).
    """
    parts = _CODE.split(markdown)
    for i in range(0, len(parts), 2):  # even parts are outside code
        parts[i] = _MATH.sub(lambda m: _math_html(m.group(1), True) if m.group(1) is not None
                             else _math_html(m.group(2), False), parts[i])
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# the deck
# ---------------------------------------------------------------------------------------------

#: lines a deck leaves out: nbval's cell markers and the solution markers of the student build
_MARKER_LINE = re.compile(r"^[ \t]*(# NBVAL_[A-Z_]+|### (BEGIN|END) SOLUTION)[ \t]*(\n|$)", re.M)
_INLINE_MARKER = re.compile(r"[ \t]*### (BEGIN|END) SOLUTION[ \t]*")


def strip_markers(source: str) -> str:
    """``source`` without the lines (and inline markers) meant for nbval and the student build."""
    return _INLINE_MARKER.sub(" ", _MARKER_LINE.sub("", source)).rstrip(" ")


def deck_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook as the deck shows it (``nb`` is not modified).

    Drops ``skip`` cells, turns every widget-view output into the static outputs its widget held,
    removes the widget state (so no widget manager is loaded) and draws the maths of markdown
    cells. Lines that only the test harness and the student build read (``# NBVAL_...`` comments,
    the solution markers) are removed, so the audience never sees them. Instructor notes keep
    their ``notes`` slide type and become speaker notes.
    """
    out = copy.deepcopy(nb)
    state = out.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    cells = []
    for cell in out.cells:
        slide_type = cell.metadata.get("slideshow", {}).get("slide_type", "-")
        if slide_type == "skip":
            continue
        cell.source = strip_markers(cell.source)
        if cell.cell_type == "code":
            outputs = []
            for o in cell.get("outputs", []):
                if WIDGET_VIEW in o.get("data", {}):
                    outputs.extend(_static_outputs(o, state))
                else:
                    outputs.append(o)
            cell.outputs = outputs
        elif cell.cell_type == "markdown":
            cell.source = render_math(cell.source)
        cells.append(cell)
    out.cells = _notes_beside_slides(cells)
    out.metadata.pop("widgets", None)
    return out


def _notes_beside_slides(cells: list) -> list:
    """Move each ``notes`` cell up to just after the first cell of its (sub)slide.

    A note written after a fragment would otherwise sit inside that fragment's element, and
    reveal.js's speaker view only shows it once the fragment is revealed; the presenter wants it
    as soon as the slide appears.
    """
    ordered: list = []
    insert_at = 0  # where the next note of the current (sub)slide goes
    for cell in cells:
        kind = cell.metadata.get("slideshow", {}).get("slide_type", "-")
        if kind == "notes":
            ordered.insert(insert_at, cell)
            insert_at += 1
            continue
        if kind in ("slide", "subslide") or not ordered:
            insert_at = len(ordered) + 1
        ordered.append(cell)
    return ordered


def _font_faces(css_file: Path) -> str:
    """The theme's @font-face rules with only their WOFF file, inlined (browsers all read WOFF)."""
    rules = []
    for block in re.findall(r"@font-face\s*{[^}]*}", css_file.read_text()):
        woff = re.search(r"url\(['\"]?([^'\")?#]+\.woff)['\"]?\)", block)
        if not woff:
            continue
        data = base64.b64encode((css_file.parent / woff.group(1)).read_bytes()).decode("ascii")
        keep = [line.strip() for line in block.strip("@font-face{} \n").split(";")
                if line.strip() and not line.strip().startswith("src")]
        rules.append("@font-face { %s; src: url(data:font/woff;base64,%s) format('woff'); }" % ("; ".join(keep), data))
    return "\n".join(rules)


def _theme_css(theme: str) -> str:
    path = reveal_dir() / "dist" / "theme" / f"{theme}.css"
    if not path.is_file():
        names = sorted(p.stem for p in path.parent.glob("*.css"))
        raise ValueError(f"theme {theme!r} is not a reveal.js theme; choose one of {', '.join(names)}")
    css = path.read_text()

    def inline_import(m: re.Match) -> str:
        return _font_faces(path.parent / m.group(1))
    return re.sub(r"@import url\(['\"]?(\./fonts/[^'\")]+\.css)['\"]?\);", inline_import, css)


def _script(js: str) -> str:
    # a literal "</script" inside the inlined code would end the script element early; the source
    # map comment would only make developer tools look for a file the deck does not carry
    js = re.sub(r"^//# sourceMappingURL=.*$", "", js, flags=re.M)
    return "<script>\n" + js.replace("</script", "<\\/script") + "\n</script>"


def _style(css: str) -> str:
    return '<style type="text/css">\n' + css.replace("</style", "<\\/style") + "\n</style>"


def export_deck(notebook_path: str | Path, out_dir: str | Path, theme: str = "white") -> Path:
    """Write ``out_dir/<notebook stem>.slides.html``, a reveal.js deck needing no network.

    ``notebook_path`` is an executed notebook with ``slideshow`` metadata on its cells; ``theme``
    is a reveal.js theme name (``white``, ``simple``, ``black``, ...). Returns the written path.
    """
    from nbconvert import SlidesExporter
    from jinja2 import DictLoader

    notebook_path, out_dir = Path(notebook_path), Path(out_dir)
    nb = deck_notebook(nbformat.read(notebook_path, as_version=4))
    rdir = reveal_dir()
    # the template links reveal's CSS under this prefix; the links are replaced by the files below
    prefix = "acvm-reveal-inline"
    exporter = SlidesExporter(extra_loaders=[DictLoader({"acvm_deck.html.j2": _TEMPLATE})],
                              template_file="acvm_deck.html.j2", exclude_input_prompt=True,
                              exclude_output_prompt=True, reveal_url_prefix=prefix, reveal_theme=theme)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": notebook_path.stem}})

    inline = {"dist/reveal.css": _style((rdir / "dist" / "reveal.css").read_text()),
              f"dist/theme/{theme}.css": _style(_theme_css(theme) + _EXTRA_CSS.replace("SLIDE_HEIGHT", str(REVEAL_CONFIG["height"])))}
    body = re.sub(r"<link[^>]*href=\"%s/([^\"]+)\"[^>]*>" % re.escape(prefix),
                  lambda m: inline.get(m.group(1), m.group(0)), body)
    scripts = "\n".join([_script((rdir / "dist" / "reveal.js").read_text()),
                         _script((rdir / "plugin" / "notes" / "notes.js").read_text()),
                         _script(_START % {"config": json.dumps(REVEAL_CONFIG), "min_scale": FIT_MIN_SCALE})])
    body = body.replace("<!-- ACVM_REVEAL_SCRIPTS -->", scripts, 1)
    if prefix in body:
        raise RuntimeError("nbconvert's reveal template changed: a reveal.js link was not inlined")

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / (notebook_path.stem + DECK_SUFFIX)
    out.write_text(body, encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------------
# the 90-minute lecture: the slides tagged `lecture` of every notebook, in one deck
# ---------------------------------------------------------------------------------------------

def slide_groups(cells: list) -> list[list]:
    """Cells grouped by (sub)slide: each group starts at a ``slide`` or ``subslide`` cell."""
    groups: list[list] = []
    for cell in cells:
        kind = cell.metadata.get("slideshow", {}).get("slide_type", "-")
        if kind == "skip":
            continue
        if kind in ("slide", "subslide") or not groups:
            groups.append([])
        groups[-1].append(cell)
    return groups


def lecture_notebook(notebooks: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    """One notebook of the lecture's slides: of each notebook its title slide and every
    (sub)slide whose first cell is tagged ``lecture``, as vertical slides below the title.
    Speaker notes go along with their slide; widget views keep their saved figures."""
    out = nbformat.v4.new_notebook()
    state: dict = {}
    for nb in notebooks:
        groups = slide_groups(copy.deepcopy(nb.cells))
        if not groups:
            continue
        title, rest = groups[0], groups[1:]
        title[0].metadata.setdefault("slideshow", {})["slide_type"] = "slide"
        out.cells.extend(title)
        for group in rest:
            if LECTURE_TAG in group[0].metadata.get("tags", []):
                group[0].metadata.setdefault("slideshow", {})["slide_type"] = "subslide"
                out.cells.extend(group)
        state.update(nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {}))
    out.metadata["widgets"] = {WIDGET_STATE: {"state": state, "version_major": 2, "version_minor": 0}}
    out.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    return out


def export_lecture(notebook_paths: list[str | Path], out_dir: str | Path, theme: str = "white") -> Path:
    """Write ``out_dir/lecture.slides.html``: the 90-minute path through the notebooks as one deck."""
    import tempfile
    nb = lecture_notebook([nbformat.read(p, as_version=4) for p in notebook_paths])
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "lecture.ipynb"
        nbformat.write(nb, src)
        return export_deck(src, out_dir, theme)
