"""The control room in a real headless Chromium, against make-up-style local services: log in,
press play, change the BPM; the embedded player plays and draws the notes."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import PASSWORD, REPO, free_port
from tests.live.browser import ARTIFACTS, COLOURED_PIXELS, open_browser


@pytest.fixture
def ui(live, tmp_path):
    port = free_port()
    log = (tmp_path / "ui.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "ui"], cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, env={**live.env, "UI_PORT": str(port),
                                                           "GATEWAY_URL": live.gateway_url})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=1).text == "ok":
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


def player_frame(page, gateway: str, timeout: float = 20):
    """The embedded player's frame, once it has loaded."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for frame in page.frames:
            if frame.url.startswith(gateway):
                frame.wait_for_load_state()
                return frame
        page.wait_for_timeout(200)
    raise AssertionError("the player did not appear in the control room")


def set_bpm(page, slider, stored, target: int, timeout: float = 30) -> None:
    """Arrow keys until the channel holds ``target``: on a busy machine the control room
    re-renders between presses, and a press can land while the slider has no focus."""
    deadline = time.time() + timeout
    while stored() != target:
        assert time.time() < deadline, f"the channel's BPM stays at {stored()}"
        now = int(slider.input_value())
        if now != target:
            slider.focus()
            page.keyboard.press("ArrowRight" if now < target else "ArrowLeft")
        page.wait_for_timeout(50 if now != target else 300)


def test_log_in_play_change_bpm_and_hear_it(ui, live, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = open_browser(p, tmp_path, {"width": 1280, "height": 1100})
        page = browser.new_page()
        page.goto(ui)
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_text("logged in").first.wait_for(timeout=20_000)
        # a product, not a Streamlit sketch: no Deploy button, no developer menu
        deploy = page.get_by_role("button", name="Deploy").count()
        page.get_by_test_id("stMainMenu").click()
        page.wait_for_timeout(300)
        developer = page.get_by_text("Clear cache").count() + page.get_by_text("Rerun").count()
        page.keyboard.press("Escape")
        page.get_by_role("button", name="▶ Play").click()
        frame = player_frame(page, live.gateway_url)
        frame.get_by_role("button", name="▶ Play").click()  # the browser's own gesture
        frame.wait_for_function("window.playbach.consumed > 44100", timeout=20_000)
        set_bpm(page, page.get_by_role("slider", name="BPM"), lambda: httpx.get(
            f"{live.gateway_url}/api/channels/radio").json()["params"]["bpm"], 100)
        frame.wait_for_function("document.getElementById('p-bpm').textContent === '100'",
                                timeout=10_000)  # the player heard of the change
        frame.wait_for_function("window.playbach.consumed > 44100 * 4", timeout=20_000)
        drawn = frame.evaluate(COLOURED_PIXELS)
        errors = frame.evaluate("window.playbach.errors")
        page.screenshot(path=str(ARTIFACTS / "control-room.png"), full_page=True)
        browser.close()
    assert errors == []
    assert drawn > 50, "the embedded piano roll drew no notes"
    assert (deploy, developer) == (0, 0), "Streamlit's Deploy button or developer menu shows"
