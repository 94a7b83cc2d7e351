"""Headless Chromium for the browser tests (tests/test_slides.py, tests/test_browser.py).

We drive the system's Chromium through playwright and never download a browser: the tests skip
with a reason where ``/usr/bin/chromium`` (or ``$ACVM_CHROMIUM``) or playwright is missing.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = Path(os.environ.get("ACVM_CHROMIUM", "/usr/bin/chromium"))
# no sandbox: the tests may run as root in a container; the rest keeps Chromium off the network
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]


def require_browser():
    """Skip the calling test unless Chromium and playwright are both there."""
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (set ACVM_CHROMIUM to another binary)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@contextmanager
def chromium(viewport=(1280, 800)):
    """A fresh headless Chromium (its own temporary profile) with one page; yields ``(context, page)``."""
    from playwright.sync_api import sync_playwright
    profile = tempfile.mkdtemp(prefix="acvm-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                viewport={"width": viewport[0], "height": viewport[1]})
            try:
                page = context.pages[0] if context.pages else context.new_page()
                yield context, page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def png_pixels(png: bytes) -> np.ndarray:
    """Decode PNG bytes to an ``(H, W, 3)`` uint8 array."""
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def looks_blank(png: bytes, min_std: float = 8.0, min_colours: int = 32) -> bool:
    """True for a screenshot with (almost) nothing on it: a flat or near-flat page.

    A blank or single-colour page has a pixel standard deviation near 0 and a handful of distinct
    colours; anti-aliased text alone gives dozens of colours and a standard deviation above 10.
    """
    px = png_pixels(png)
    colours = np.unique(px.reshape(-1, 3), axis=0).shape[0]
    return float(px.std()) < min_std or colours < min_colours


def save_artifact(name: str, data: bytes) -> Path:
    """Keep a screenshot under artifacts/browser/ (git-ignored) for a person to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(data)
    return path
