"""Slide decks: offline reveal.js HTML from the solved notebooks (acvm/slides.py).

The unit tests build small notebooks by hand; the browser tests export every solutions/*.ipynb
and open each deck in headless Chromium from a file:// URL with the network blocked.
"""
import re

import nbformat
import pytest

from acvm import course, slides

from _browser import chromium, looks_blank, png_pixels, require_browser, save_artifact
from conftest import ROOT

SOLVED = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def _widget_notebook():
    """A notebook shaped like an executed one: title, skipped set-up, a widget, notes, summary."""
    md = nbformat.v4.new_markdown_cell
    code = nbformat.v4.new_code_cell
    state = {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_row", "IPY_MODEL_out"]}},
        "row": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_slider", "IPY_MODEL_box"]}},  # a cycle
        "slider": {"model_name": "IntSliderModel", "state": {"value": 0}},
        "out": {"model_name": "OutputModel", "state": {"outputs": [
            {"output_type": "display_data", "data": {"image/png": PNG_1PX, "text/plain": "<Figure>"}, "metadata": {}}]}},
    }
    view = nbformat.v4.new_output("execute_result", execution_count=2, data={
        slides.WIDGET_VIEW: {"model_id": "box", "version_major": 2, "version_minor": 0}, "text/plain": "VBox(...)"})
    lost = nbformat.v4.new_output("execute_result", execution_count=3, data={
        slides.WIDGET_VIEW: {"model_id": "gone", "version_major": 2, "version_minor": 0}, "text/plain": "VBox(...)"})
    cells = [
        md("# Title\n\n**Learning goals.** IoU $\\frac{|A\\cap B|}{|A\\cup B|}$.", metadata={"slideshow": {"slide_type": "slide"}}),
        code("import secret_setup_module", metadata={"slideshow": {"slide_type": "skip"}}),
        code("player.widget()", outputs=[view], execution_count=2, metadata={"slideshow": {"slide_type": "subslide"}}),
        code("other.widget()", outputs=[lost], execution_count=3, metadata={"slideshow": {"slide_type": "fragment"}}),
        md("**Instructor notes.** Ask about occlusion.", metadata={"slideshow": {"slide_type": "notes"},
                                                                 "tags": [course.INSTRUCTOR_TAG]}),
        md("## Summary\n\nDone.\n\n## References\n\n1. A paper.", metadata={"slideshow": {"slide_type": "slide"}}),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["widgets"] = {slides.WIDGET_STATE: {"state": state, "version_major": 2, "version_minor": 0}}
    return nb


def test_widget_figures_walks_children_in_order_and_survives_cycles():
    state = _widget_notebook().metadata["widgets"][slides.WIDGET_STATE]["state"]
    found = slides.widget_figures("box", state)
    assert [o["data"]["image/png"] for o in found] == [PNG_1PX]
    assert slides.widget_figures("slider", state) == []
    assert slides.widget_figures("not-there", state) == []


def test_deck_notebook_shows_the_saved_figure_and_drops_skip_cells():
    nb = _widget_notebook()
    deck = slides.deck_notebook(nb)
    assert "widgets" in nb.metadata, "the input notebook must not be modified"
    assert "widgets" not in deck.metadata
    assert all("secret_setup_module" not in c.source for c in deck.cells)
    player, other = deck.cells[1], deck.cells[3]
    assert [o.output_type for o in player.outputs] == ["display_data", "display_data"]
    assert player.outputs[0].data["image/png"] == PNG_1PX
    assert slides.WIDGET_VIEW not in player.outputs[0].data
    assert "move its controls" in player.outputs[1].data["text/plain"]
    # a widget whose state was not saved says so instead of vanishing
    assert len(other.outputs) == 1 and "was not saved" in other.outputs[0].data["text/plain"]
    notes = [c for c in deck.cells if course.is_instructor_cell(c)]
    assert len(notes) == 1 and notes[0].metadata.slideshow.slide_type == "notes"
    # the note, written after a fragment, moves up beside the start of its subslide so that the
    # speaker view shows it before the fragment is revealed
    assert [c.source[:13] for c in deck.cells[1:4]] == ["player.widget", "**Instructor ", "other.widget("]


def test_decks_never_show_test_harness_comments_or_solution_markers():
    code = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\ndef f(x):\n    ### BEGIN SOLUTION\n    return x\n"
                                     "    ### END SOLUTION\nprint(f(1))  # NBVAL_ kept only as a whole line\n")
    md = nbformat.v4.new_markdown_cell("Answer: ### BEGIN SOLUTION\nit drifts\n### END SOLUTION\n")
    deck = slides.deck_notebook(nbformat.v4.new_notebook(cells=[code, md]))
    assert deck.cells[0].source == "def f(x):\n    return x\nprint(f(1))  # NBVAL_ kept only as a whole line\n"
    assert "SOLUTION" not in deck.cells[1].source and "it drifts" in deck.cells[1].source
    for path in SOLVED:
        for cell in slides.deck_notebook(nbformat.read(path, as_version=4)).cells:
            assert not re.search(r"NBVAL_[A-Z]|(BEGIN|END) SOLUTION", cell.source), f"{path.name}: {cell.source[:80]}"


def test_lecture_deck_takes_each_title_and_the_tagged_slides_only():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    def nb(n):
        return nbformat.v4.new_notebook(cells=[
            md(f"# {n}\n\n**Learning goals.**", metadata={"slideshow": {"slide_type": "slide"}}),
            code("import x", metadata={"slideshow": {"slide_type": "skip"}}),
            md(f"## 1. shown {n}", metadata={"slideshow": {"slide_type": "slide"}, "tags": [slides.LECTURE_TAG]}),
            code(f"fig_{n}()", metadata={"slideshow": {"slide_type": "fragment"}}),
            md("**Instructor notes.** ask", metadata={"slideshow": {"slide_type": "notes"}, "tags": ["instructor"]}),
            md(f"## 2. lab only {n}", metadata={"slideshow": {"slide_type": "slide"}}),
            code(f"exercise_{n}()", metadata={"slideshow": {"slide_type": "-"}})])
    out = slides.lecture_notebook([nb("a"), nb("b")])
    text = [c.source for c in out.cells]
    assert text == ["# a\n\n**Learning goals.**", "## 1. shown a", "fig_a()", "**Instructor notes.** ask",
                    "# b\n\n**Learning goals.**", "## 1. shown b", "fig_b()", "**Instructor notes.** ask"]
    kinds = [c.metadata["slideshow"]["slide_type"] for c in out.cells]
    assert kinds == ["slide", "subslide", "fragment", "notes"] * 2


def test_lecture_guide_plans_90_minutes_from_the_tags():
    """The guide's 90-minute table names, per notebook, exactly the sections whose slides are tagged."""
    guide = (ROOT / "docs" / "lecture_guide.md").read_text()
    table = guide.split("## The 90-minute lecture", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): (int(m.group(2)), m.group(3)) for m in re.finditer(r"^\| (\d\d) \| (\d+) \| ([^|]*) \|", table, re.M)}
    plan = {p["notebook"][:2]: p for p in course.lecture_plan(ROOT)}
    assert set(rows) == set(plan), "the table must have one row per notebook"
    assert sum(m for m, _ in rows.values()) <= 90
    for k, (minutes, shown) in rows.items():
        assert plan[k]["shown"], f"notebook {k} shows nothing in the lecture"
        listed = re.findall(r"§(\d+)\.", shown)
        assert listed == [s.split(".")[0] for s in plan[k]["shown"]], f"notebook {k}: the guide and the tags disagree"


def test_render_math_draws_tex_and_leaves_code_and_prices_alone():
    out = slides.render_math("Softmax $QK^\\top/\\sqrt d$ in `a = $x$` costs $5 and $6.")
    assert out.count('<img class="acvm-math"') == 1
    assert "`a = $x$`" in out and "costs $5 and $6." in out
    alt = re.search(r'alt="([^"]*)"', out).group(1)
    assert alt == "QK^\\top/\\sqrt d"
    display = slides.render_math("$$A = \\mathrm{softmax}\\!\\left(\\frac{QK^\\top}{\\sqrt d}\\right)\n V$$")
    assert display.startswith('<div class="acvm-math-display"><img')
    # an unknown command cannot be drawn: the TeX source stays readable
    assert slides.render_math("$\\nosuchcommand{x}$") == '<code class="acvm-tex">$\\nosuchcommand{x}$</code>'
    # fenced code is not maths
    fenced = "```\nprice = $3 + $4\n```"
    assert slides.render_math(fenced) == fenced


def test_every_formula_of_the_course_draws_and_the_rewrites_mathtext_needs():
    """No formula of a solved notebook reaches a deck as raw TeX (issue 22 found seven that did)."""
    for path in SOLVED:
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "markdown":
                html_text = slides.render_math(cell.source)
                assert 'class="acvm-tex"' not in html_text, f"{path.name} cell {i}: a formula stays TeX: {html_text[:300]}"
    src = slides._mathtext_source
    assert src(r"a \le b \ge c \leq d") == r"a \leq b \geq c \leq d"
    assert src(r"1/(2\sqrt\rho - 1)") == r"1/(2\sqrt{\rho} - 1)"
    assert src(r"\underbrace{p(y)}_{\text{the likelihood}}") == r"\underset{\mathrm{the\ likelihood}}{p(y)}"
    assert src(r"\begin{bmatrix}1 & t\\ 0 & 1\end{bmatrix}") == r"\left[\genfrac{}{}{0}{}{1 \quad  t}{0 \quad  1}\right]"


def test_math_images_sit_on_the_baseline():
    """A formula with a descender (subscript) hangs below the text line, one without does not."""
    def valign(tex):
        html = slides.render_math(f"${tex}$")
        return float(re.search(r"vertical-align:(-?[\d.]+)em", html).group(1))
    assert valign("x_i") < valign("x") <= 0.0


def test_export_deck_is_self_contained_with_speaker_notes(tmp_path):
    src = tmp_path / "05_demo.ipynb"
    nbformat.write(_widget_notebook(), src)
    out = slides.export_deck(src, tmp_path / "decks")
    assert out == tmp_path / "decks" / "05_demo.slides.html"
    text = out.read_text()
    # nothing is loaded from elsewhere: no script/link/img/@import pointing at a URL or a file
    assert not re.search(r"<script[^>]*\bsrc=", text)
    assert not re.search(r"<link[^>]*\bhref=", text)
    markup = re.sub(r"<script>.*?</script>", "", text, flags=re.S)  # reveal.js itself builds <img src=...>
    assert not re.search(r"<img[^>]*\bsrc=\"(?!data:)", markup)
    assert not re.search(r"@import", text)
    assert "unpkg.com" not in text and "cdn.jsdelivr" not in text and "require(" not in text
    assert "reveal.js 5" in text and "RevealNotes" in text and "data:font/woff;base64," in text
    assert re.search(r'<aside class="notes">.*?Ask about occlusion.*?</aside>', text, re.S)
    assert "secret_setup_module" not in text
    assert f"data:image/png;base64,{PNG_1PX}" in text


def test_unknown_theme_is_named(tmp_path):
    src = tmp_path / "05_demo.ipynb"
    nbformat.write(_widget_notebook(), src)
    with pytest.raises(ValueError, match="'nope' is not a reveal.js theme; choose one of .*white"):
        slides.export_deck(src, tmp_path, theme="nope")


# ------------------------------------------------------------------------------------------------
# every solved notebook as a deck, in one headless Chromium
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser_page():
    require_browser()
    with chromium() as (context, page):
        yield page


@pytest.fixture(scope="module")
def decks(tmp_path_factory):
    out = tmp_path_factory.mktemp("decks")
    made = {p.stem: slides.export_deck(p, out) for p in SOLVED}
    made["lecture"] = slides.export_lecture(SOLVED, out)
    return made


def _open_deck(page, path):
    """Load a deck with every request that is not file:// or data: refused; returns (errors, blocked)."""
    errors, blocked = [], []
    page.unroute("**/*")
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
               else (blocked.append(route.request.url), route.abort()))
    page.remove_listener("pageerror", getattr(page, "_acvm_errors", lambda e: None))
    page._acvm_errors = lambda e: errors.append(str(e))
    page.on("pageerror", page._acvm_errors)
    page.goto(path.as_uri())
    page.wait_for_function("window.Reveal && Reveal.isReady()", timeout=15000)
    return errors, blocked


@pytest.mark.browser
def test_blank_detector_tells_an_empty_page_from_a_deck(browser_page):
    """The not-blank check below must be able to fail: an empty page is blank, a text slide is not."""
    browser_page.set_content("<html><body style='background:#fff'></body></html>")
    assert looks_blank(browser_page.screenshot())
    browser_page.set_content("<html><body style='background:#fff'><h1>A</h1></body></html>")
    assert looks_blank(browser_page.screenshot()), "one letter is not a slide"


@pytest.mark.browser
@pytest.mark.parametrize("notebook", [p.stem for p in SOLVED])
def test_deck_opens_offline_in_chromium(browser_page, decks, notebook):
    page, deck = browser_page, decks[notebook]
    errors, blocked = _open_deck(page, deck)
    shot = page.screenshot()
    save_artifact(f"deck_{notebook}.png", shot)
    assert errors == [], f"{deck.name}: JavaScript errors {errors}"
    assert blocked == [], f"{deck.name} tried to load {blocked[:3]}"
    assert page.evaluate("Reveal.getIndices().h") == 0
    assert not looks_blank(shot), f"{deck.name}: the first slide looks blank (see artifacts/browser)"
    first = page.evaluate("Reveal.getCurrentSlide().innerText")
    assert "Learning goals" in first, f"{deck.name}: the first slide does not state the learning goals"

    nb = nbformat.read(ROOT / "solutions" / f"{notebook}.ipynb", as_version=4)
    n_notes = sum(course.is_instructor_cell(c) for c in nb.cells)
    assert page.evaluate("document.querySelectorAll('aside.notes').length") == n_notes
    assert page.evaluate("document.querySelectorAll('.fragment aside.notes').length") == 0, \
        "a speaker note inside a fragment stays hidden until the fragment is revealed"
    if n_notes:
        assert page.evaluate("Reveal.getSlides().some(s => (Reveal.getSlideNotes(s) || '').includes('Instructor'))")

    # the first interactive view shows its saved figure on its slide
    if page.evaluate("!!document.querySelector('.acvm-widget-note')"):
        page.evaluate("""() => { const s = document.querySelector('.acvm-widget-note').closest('section');
                                 const i = Reveal.getIndices(s); Reveal.slide(i.h, i.v, 99); }""")
        img = page.evaluate_handle("""() => { const n = document.querySelector('.acvm-widget-note');
                                             const out = n.closest('.jp-OutputArea');
                                             return out.querySelector('img'); }""").as_element()
        assert img is not None, f"{deck.name}: the interactive view has no static figure"
        figure = img.screenshot()
        save_artifact(f"deck_{notebook}_widget.png", figure)
        assert not looks_blank(figure) and png_pixels(figure).shape[0] > 100


@pytest.mark.browser
@pytest.mark.parametrize("notebook", [p.stem for p in SOLVED] + ["lecture"])
def test_every_slide_fits_the_slide_with_its_fragments_shown(browser_page, decks, notebook):
    """No slide runs off the 1280×720 slide: a long one is shrunk to fit, never below FIT_MIN_SCALE."""
    errors, blocked = _open_deck(browser_page, decks[notebook])
    found = browser_page.evaluate("""() => Reveal.getSlides().map((s, i) => {
        const ix = Reveal.getIndices(s); Reveal.slide(ix.h, ix.v, 999);    // every fragment shown
        const r = s.getBoundingClientRect(), room = document.querySelector('.reveal .slides').getBoundingClientRect();
        return {i, over: r.bottom - room.top - room.height, scale: Number(s.dataset.acvmScale || 1),
                text: (s.innerText || '').slice(0, 40)}; })""")
    assert len(found) > 5 and errors == []
    too_tall = [(f["i"], round(f["over"]), f["text"]) for f in found if f["over"] > 2]
    assert not too_tall, f"{notebook}: slides taller than the slide (index, px over, start): {too_tall}"
    assert min(f["scale"] for f in found) >= slides.FIT_MIN_SCALE - 1e-6


@pytest.mark.browser
def test_speaker_view_shows_the_instructor_note_when_its_slide_appears(browser_page, decks):
    """Press s on a slide with an instructor note: reveal.js opens its speaker view, offline."""
    with_notes = [n for n in decks if n != "lecture" and "aside class=\"notes\"" in decks[n].read_text()]
    if not with_notes:
        pytest.skip("no solved notebook has instructor notes yet")
    page = browser_page
    errors, blocked = _open_deck(page, decks[with_notes[0]])
    page.evaluate("""() => { const s = document.querySelector('aside.notes').closest('section');
                             const i = Reveal.getIndices(s); Reveal.slide(i.h, i.v); }""")
    with page.context.expect_page(timeout=10000) as popup:
        page.keyboard.press("s")
    speaker = popup.value
    try:
        speaker.wait_for_function("() => /Instructor/.test((document.querySelector('.speaker-controls-notes')"
                                  " || {}).innerText || '')", timeout=10000)
        speaker.set_viewport_size({"width": 1280, "height": 800})
        save_artifact("deck_speaker_view.png", speaker.screenshot())
    finally:
        speaker.close()
    assert errors == [] and blocked == []
