"""Headless Chromium (Debian's, driven by Playwright) for the browser tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]  # no autoplay override: the tests click Play, as people do
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}


# Pixels of the roll in the notes' warm colours (the background and grid are grey).
COLOURED_PIXELS = """() => {
    const c = document.getElementById('roll');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] > 80 && d[i] > d[i + 2] + 40) n++;
    return n; }"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed (make test installs it)")
    return path


def open_browser(p, tmp_path: Path, viewport: dict[str, int] = PHONE):
    return p.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=chromium(), headless=True,
        args=CHROMIUM_FLAGS, viewport=viewport)
