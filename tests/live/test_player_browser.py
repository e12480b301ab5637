"""The web player in a real headless Chromium: press play, and the AudioWorklet plays audio."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import REPO

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


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


def open_browser(p, tmp_path: Path):
    return p.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=chromium(), headless=True,
        args=CHROMIUM_FLAGS, viewport={"width": 390, "height": 844})  # a phone


@pytest.mark.parametrize("device_rate", [None, 48000])
def test_player_plays_audio_and_draws_the_piano_roll(live, tmp_path, device_rate):
    ARTIFACTS.mkdir(exist_ok=True)
    console: list[str] = []
    with sync_playwright() as p:
        browser = open_browser(p, tmp_path)
        page = browser.new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.goto(f"{live.gateway_url}/?channel=radio"
                  + (f"&ctxrate={device_rate}" if device_rate else ""))
        page.get_by_role("button", name="▶ Play").click()
        page.wait_for_function("window.playbach.consumed > 44100 * 2", timeout=20_000)
        page.wait_for_function("window.playbach.noteCount >= 3", timeout=10_000)
        # stream samples consumed per second of wall time: 44100 whatever the device's rate
        rate = page.evaluate("""async () => {
            const a = window.playbach.consumed, t = performance.now();
            await new Promise((r) => setTimeout(r, 3000));
            return (window.playbach.consumed - a) / ((performance.now() - t) / 1000); }""")
        state = page.evaluate("""() => ({consumed: window.playbach.consumed,
            errors: window.playbach.errors, rate: window.playbach.ctx.sampleRate,
            frames: window.playbach.frames, model: document.getElementById('p-model').textContent,
            instrument: document.getElementById('p-instrument').textContent,
            status: document.getElementById('status').textContent})""")
        page.screenshot(path=str(ARTIFACTS / f"player-{device_rate or 'device'}.png"))
        # the roll has drawn notes: some pixels are in the notes' colours
        drawn = page.evaluate(COLOURED_PIXELS)
        browser.close()
    assert state["errors"] == [], state["errors"]
    assert not [c for c in console if c.startswith(("error", "pageerror"))], console
    assert state["consumed"] > 2 * 44100 and state["frames"] > 20
    assert state["status"] == "playing" and state["model"] == "default"
    assert state["instrument"] == "Church Organ"  # the SoundFont's own name
    assert drawn > 50, "the piano roll drew no notes"
    if device_rate:
        assert state["rate"] == device_rate
    assert abs(rate - 44100) / 44100 < 0.05, f"played {rate:.0f} stream samples per second"
    print(f"\nplayer: device at {state['rate']} Hz plays {rate:.0f} stream samples/s")
