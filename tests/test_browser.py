"""A student's session in a real browser: JupyterLab, Run All, move a slider, see the figure change.

Starts its own JupyterLab (fresh token, free port, temporary settings and a temporary copy of
the student notebooks), drives it with headless Chromium, and stops it in a ``finally`` block.
Screenshots go to artifacts/browser/ (git-ignored). Select with ``pytest -m browser``; skipped
where Chromium is missing.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from _browser import ROOT, chromium, looks_blank, png_pixels, require_browser, save_artifact

pytestmark = pytest.mark.browser

# notebooks with an interactive view, in lecture order; the test runs the ones that exist
VIEWS = ["00_tracking_basics", "02_correlation", "10_attention"]
PRESENT = [n for n in VIEWS if (ROOT / "notebooks" / f"{n}.ipynb").is_file()]
RUN_ALL_TIMEOUT_S = 240  # a notebook must run in well under a minute; this leaves room for a busy CI box
# JupyterLab's user settings for the test session: every cell stays in the page (the default
# virtual scrolling would drop cells out of view from the DOM) and no news or update pop-ups
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _add_kernelspec(path: Path) -> None:
    """Name the python3 kernel in a notebook that names none.

    Without one JupyterLab may ask which kernel to start, in a dialog that can open after the
    page looks ready; the test accepts it if it comes, but naming the kernel keeps runs alike.
    """
    nb = json.loads(path.read_text())
    if "kernelspec" not in nb.get("metadata", {}):
        nb.setdefault("metadata", {})["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                                       "language": "python"}
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False))


class Lab:
    """A JupyterLab server of our own, on a temporary copy of ``notebooks/``."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "course"
        shutil.copytree(ROOT / "notebooks", self.root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        for path in self.root.glob("*.ipynb"):
            _add_kernelspec(path)
        for name, values in LAB_SETTINGS.items():
            path = tmp / "lab-settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.log = tmp / "jupyter.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        from acvm.data import sequences_dir
        env = dict(os.environ)
        env.pop("MPLBACKEND", None)  # the kernel must use the inline backend, not the tests' Agg
        env.update(JUPYTER_CONFIG_DIR=str(self.tmp / "config"), JUPYTER_RUNTIME_DIR=str(self.tmp / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(self.tmp / "lab-settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(self.tmp / "workspaces"), IPYTHONDIR=str(self.tmp / "ipython"))
        if sequences_dir() is not None:  # the copy lives outside the course folder
            env["ACVM_SEQUENCES"] = str(sequences_dir())
        cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip", "127.0.0.1",
               "--port", str(self.port), f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root}",
               "--ServerApp.port_retries=0"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.root, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url('api/status')}", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer in {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def url(self, path: str, query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}{query}"

    def shutdown_kernels(self) -> None:
        """Stop every kernel (through the REST API) so the next notebook has the CPU to itself."""
        with urllib.request.urlopen(self.url("api/sessions"), timeout=10) as r:
            sessions = json.load(r)
        for s in sessions:
            req = urllib.request.Request(self.url(f"api/sessions/{s['id']}"), method="DELETE")
            urllib.request.urlopen(req, timeout=30).close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_browser()
    server = Lab(tmp_path_factory.mktemp("lab"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(lab):
    with chromium(viewport=(1400, 900)) as (context, page):
        yield page


# JavaScript predicates evaluated in the page; _PANEL is the notebook tab in front
_PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
_IDLE = f'{_PANEL} .jp-Notebook-ExecutionIndicator[data-status="idle"]'
# every code cell shows an execution count ("[*]" while it runs) and the kernel is idle
_ALL_RUN = """() => {
  const prompts = [...document.querySelectorAll('PANEL .jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim());
  const status = document.querySelector('PANEL .jp-Notebook-ExecutionIndicator');
  return prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:?$/.test(t))
         && (!status || status.getAttribute('data-status') === 'idle');
}""".replace("PANEL", _PANEL)
# the code cells' prompts ("[ ]", "[*]", "[12]"), and whether any cell has been queued or run
_PROMPTS = """() => [...document.querySelectorAll('PANEL .jp-CodeCell .jp-InputPrompt')]
  .map(e => e.innerText.trim())""".replace("PANEL", _PANEL)
_ANY_STARTED = """() => [...document.querySelectorAll('PANEL .jp-CodeCell .jp-InputPrompt')]
  .some(e => /\\[(\\*|\\d+)\\]/.test(e.innerText))""".replace("PANEL", _PANEL)
_RETRY_S = 45   # seconds after Run All with no cell queued before it is clicked again
# tracebacks and error outputs, as JupyterLab renders them
_ERRORS = """() => [...document.querySelectorAll(
    'PANEL .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"],'
  + 'PANEL .jp-RenderedText[data-mime-type*="error"]')]
  .map(e => e.innerText).filter(t => /Traceback|Error/.test(t)).map(t => t.slice(0, 400))""".replace("PANEL", _PANEL)
# the first interactive view: an ipywidgets box holding a slider and an Output with a figure
_VIEW = """() => [...document.querySelectorAll('PANEL .widget-vbox')]
  .find(b => b.querySelector('.widget-output img') && b.querySelector('.noUi-handle'))""".replace("PANEL", _PANEL)
# the view under test is pinned by an attribute: while its Output redraws it briefly holds no
# image, and a fresh search would then find the next view on the page
_PINNED = "[data-acvm-under-test]"
_NEW_FIGURE = """(old) => { const i = document.querySelector('%s .widget-output img');
                           return !!i && i.src !== old && i.complete; }""" % _PINNED


def _wait_until_settled(page, quiet_s: float = 1.5, timeout_s: float = 30.0) -> None:
    """Wait until the kernel is idle and the view's figure has not changed for ``quiet_s``."""
    src, since, deadline = None, time.time(), time.time() + timeout_s
    while time.time() < deadline:
        now = page.evaluate(f"() => {{ const i = document.querySelector('{_PINNED} .widget-output img');"
                            f" return i && i.complete ? i.src : null; }}")
        idle = page.locator(_IDLE).count() > 0
        if now != src or not idle or now is None:
            src, since = now, time.time()
        elif time.time() - since >= quiet_s:
            return
        page.wait_for_timeout(250)
    raise TimeoutError(f"the view kept changing for {timeout_s:.0f} s after the slider moved")


def _wait_for_kernel(page, steady_s: float = 1.0, timeout_s: float = 60.0) -> None:
    """Wait until the notebook's kernel has been idle for ``steady_s``, accepting the 'Select
    Kernel' dialog whenever it is up (JupyterLab shows it for a notebook without a kernelspec)."""
    accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    since, deadline = None, time.time() + timeout_s
    while time.time() < deadline:
        if accept.count():
            accept.first.click()
            since = None
        elif page.locator(_IDLE).count():
            since = since or time.time()
            if time.time() - since >= steady_s:
                return
        else:
            since = None
        page.wait_for_timeout(200)
    raise TimeoutError(f"the kernel did not become idle in {timeout_s:.0f} s")


def _run_all_cells(page) -> None:
    """Run → Run All Cells, through the menu bar as a student would."""
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    # JupyterLab 4 names the entry runmenu:run-all; older releases notebook:run-all-cells
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"], '
                 '.lm-Menu-item[data-command="notebook:run-all-cells"]').first.click()


def _wait_for_run_all(page, timeout_s: float) -> None:
    """Wait until every code cell has run. On a busy machine JupyterLab may show the status 'Idle'
    before the new kernel is attached and then ask 'Select Kernel', dropping the Run All that was
    clicked meanwhile (every prompt stays ``[ ]``): accept the dialog, as a student would, and run
    all cells again."""
    accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    deadline = clicked = time.time()
    deadline += timeout_s
    while time.time() < deadline:
        if accept.count():
            accept.first.click()
            _wait_for_kernel(page)
            _run_all_cells(page)
            clicked = time.time()
        elif page.evaluate(_ALL_RUN):
            return
        elif time.time() - clicked > _RETRY_S and not page.evaluate(_ANY_STARTED):
            # no cell has even been queued: the click was lost without a dialog (a kernel still
            # attaching on a busy machine); a student would click Run All again
            _wait_for_kernel(page)
            _run_all_cells(page)
            clicked = time.time()
        page.wait_for_timeout(500)
    state = page.evaluate(_PROMPTS)
    raise TimeoutError(f"Run All did not finish in {timeout_s:.0f} s; the prompts: {' '.join(state)}")


@pytest.mark.parametrize("notebook", PRESENT)
def test_run_all_then_move_a_slider(lab, page, notebook):
    lab.shutdown_kernels()
    t0 = time.time()
    page.goto(lab.url(f"lab/tree/{notebook}.ipynb", "&reset"))  # reset: no tabs from the last test
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=60000)
    _wait_for_kernel(page)
    _run_all_cells(page)
    try:
        _wait_for_run_all(page, RUN_ALL_TIMEOUT_S)
    finally:
        save_artifact(f"lab_{notebook}_run_all.png", page.screenshot())
    t_run = time.time() - t0

    errors = page.evaluate(_ERRORS)
    assert errors == [], f"{notebook}: a cell shows an error:\n" + "\n---\n".join(errors)

    view = page.evaluate_handle(_VIEW).as_element()
    assert view is not None, f"{notebook}: no interactive view with a slider and a figure rendered"
    view.evaluate("e => e.setAttribute('data-acvm-under-test', '')")
    view.scroll_into_view_if_needed()
    readout = view.query_selector(".widget-readout").inner_text()
    figure = view.query_selector(".widget-output img")
    before_src = figure.get_attribute("src")
    before = figure.screenshot()
    save_artifact(f"lab_{notebook}_figure_before.png", before)
    assert not looks_blank(before), f"{notebook}: the first figure of the view is blank"

    # keyboard on the slider's handle: what a student does after clicking it
    handle = view.query_selector(".noUi-handle")
    assert handle is not None, f"{notebook}: the view's slider has no handle to move"
    handle.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(_NEW_FIGURE, arg=before_src, timeout=30000, polling=250)
    _wait_until_settled(page)  # each key press asked for a redraw; let the last one arrive
    assert view.query_selector(".widget-readout").inner_text() != readout, "the slider did not move"
    view.scroll_into_view_if_needed()
    after = page.locator(f"{_PINNED} .widget-output img").screenshot()
    save_artifact(f"lab_{notebook}_figure_after.png", after)
    save_artifact(f"lab_{notebook}_after.png", page.screenshot())
    a, b = png_pixels(before), png_pixels(after)
    changed = a.shape != b.shape or (abs(a.astype(int) - b.astype(int)).max(axis=2) > 24).mean() > 0.005
    assert changed, f"{notebook}: the figure did not change after moving the slider"
    print(f"{notebook}: opened and ran all cells in {t_run:.1f} s, slider round trip done at {time.time() - t0:.1f} s")
