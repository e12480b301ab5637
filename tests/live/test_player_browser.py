"""The web player in a real headless Chromium: press play, and the AudioWorklet plays audio."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from playbach.schemas import DEFAULT_MODEL
from tests.conftest import login
from tests.live.browser import ARTIFACTS, COLOURED_PIXELS, DESKTOP, PHONE, open_browser


@pytest.mark.parametrize(("device_rate", "codec", "decoder"), [
    (None, None, None), (48000, None, "wasm"), (None, "pcm", None)])
def test_player_plays_audio_and_draws_the_piano_roll(live, tmp_path, device_rate, codec,
                                                     decoder):
    """The player picks Opus by itself where WebCodecs decodes it (Chromium does), decodes it
    with the bundled WebAssembly libopus where told to (as in a browser without WebCodecs;
    here on a 48 kHz device, which the worklet resamples for), or
    takes PCM when told to; each way it plays at the stream's pace, draws the roll, and takes a
    change as a new take."""
    ARTIFACTS.mkdir(exist_ok=True)
    console: list[str] = []
    with sync_playwright() as p:
        browser = open_browser(p, tmp_path)
        page = browser.new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.goto(f"{live.gateway_url}/?channel=radio"
                  + (f"&ctxrate={device_rate}" if device_rate else "")
                  + (f"&codec={codec}" if codec else "")
                  + (f"&decoder={decoder}" if decoder else ""))
        first = (device_rate, codec, decoder) == (None, None, None)
        if first:  # a download before anything played is explained, not a 404 page
            page.get_by_role("link", name="MIDI").click()
            nothing = page.locator("#m-error").text_content()
        page.get_by_role("button", name="▶ Play").click()
        page.wait_for_function("window.playbach.consumed > 44100 * 2", timeout=20_000)
        page.wait_for_function("window.playbach.noteCount >= 3", timeout=10_000)
        # a change while it plays comes as a new take: spliced in, playback unbroken
        httpx.patch(f"{live.gateway_url}/api/channels/radio", json={"bpm": 100},
                    headers=login(live.gateway_url)).raise_for_status()
        # stream samples consumed per second of wall time: 44100 whatever the device's rate
        rate, bytes_per_s = page.evaluate("""async () => {
            const a = window.playbach.consumed, b = window.playbach.bytes, t = performance.now();
            await new Promise((r) => setTimeout(r, 3000));
            const s = (performance.now() - t) / 1000;
            return [(window.playbach.consumed - a) / s, (window.playbach.bytes - b) / s]; }""")
        state = page.evaluate("""() => ({consumed: window.playbach.consumed,
            errors: window.playbach.errors, rate: window.playbach.ctx.sampleRate,
            splices: window.playbach.splices, underruns: window.playbach.underruns,
            codec: window.playbach.codec, decoder: window.playbach.decoderKind,
            frames: window.playbach.frames, model: document.getElementById('p-model').textContent,
            instrument: document.getElementById('p-instrument').textContent,
            key: document.getElementById('p-key').textContent,
            channel: document.getElementById('channel').selectedOptions[0].textContent,
            status: document.getElementById('status').textContent})""")
        if first:  # what a listener is told: octaves on the roll, help, the buffer's aim
            labels = page.evaluate("window.playbach.labels")
            buffer = page.locator("#m-buffer").text_content()
            page.get_by_role("button", name="? Help").click()
            helped = page.locator("#help").is_visible() and "piano roll" in (
                page.locator("#help").text_content())
            with page.expect_download() as download:
                page.get_by_role("link", name="MIDI").click()
            midi = Path(download.value.path()).read_bytes()
            name = download.value.suggested_filename
            # what a lock screen, headphones and a car are told, and the line on the page
            session = page.evaluate("""() => { const m = navigator.mediaSession.metadata;
                return {title: m && m.title, artist: m && m.artist, album: m && m.album,
                        state: navigator.mediaSession.playbackState,
                        line: document.getElementById('now-playing').textContent}; }""")
            volume = page.evaluate("""() => new Promise((done) => {
                const v = document.getElementById('volume');
                v.value = '0.25'; v.dispatchEvent(new Event('input'));
                setTimeout(() => done([window.playbach.gain.gain.value,
                                       localStorage.getItem('playbach-volume')]), 400); })""")
            page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                           origin=live.gateway_url)
            page.get_by_role("button", name="Copy link").click()
            page.wait_for_function(
                "document.getElementById('share').textContent === 'Link copied'")
            link = page.evaluate("navigator.clipboard.readText()")
        page.screenshot(path=str(ARTIFACTS / f"player-{device_rate or 'device'}-"
                                             f"{codec or 'auto'}-{decoder or 'auto'}.png"))
        # the roll has drawn notes: some pixels are in the notes' colours
        drawn = page.evaluate(COLOURED_PIXELS)
        browser.close()
    assert state["errors"] == [], state["errors"]
    if first:
        assert nothing == "nothing heard yet: press ▶ Play, listen, then download"
        assert labels == ["C1", "C2", "C3", "C4", "C5", "C6", "C7"]
        assert re.fullmatch(r"\d+ ms \(aim \d+ ms\)", buffer), buffer
        assert helped and midi[:4] == b"MThd"
        assert re.fullmatch(rf"playbach-radio-{DEFAULT_MODEL}-\d{{8}}-\d{{6}}\.mid", name), name
        assert session["title"] == "Radio" and session["state"] == "playing", session
        assert session["artist"] == f"Play Bach · {DEFAULT_MODEL}", session
        assert re.fullmatch(r"Cello · [A-G]#? (major|minor)", session["album"]), session
        assert session["line"] == f"Radio · {DEFAULT_MODEL} · {session['album']} · 100 BPM"
        assert abs(volume[0] - 0.25) < 0.01 and volume[1] == "0.25", volume
        assert link == f"{live.gateway_url}/?channel=radio"
    assert not [c for c in console if c.startswith(("error", "pageerror"))], console
    assert state["consumed"] > 2 * 44100 and state["frames"] > 20
    assert state["status"] == "playing" and state["model"] == DEFAULT_MODEL
    assert state["instrument"] == "Cello"  # the SoundFont's own name
    assert re.fullmatch(r"[A-G]#? (major|minor)", state["key"]), state["key"]  # as it sounds
    assert state["channel"] == "Radio"  # the channel's name, not its id
    assert drawn > 50, "the piano roll drew no notes"
    assert state["splices"] >= 1 and state["underruns"] == 0, state
    if device_rate:
        assert state["rate"] == device_rate
    assert abs(rate - 44100) / 44100 < 0.05, f"played {rate:.0f} stream samples per second"
    assert state["codec"] == (codec or "opus")
    assert state["codec"] == "pcm" or state["decoder"] == (decoder or "webcodecs")
    if state["codec"] == "opus":  # 80 kbps of Opus and the events, against 706 kbps of PCM
        assert bytes_per_s * 8 < 120_000, f"{bytes_per_s * 8:.0f} bit/s"
    print(f"\nplayer ({state['codec']}, {state['decoder']}): device at {state['rate']} Hz "
          f"plays {rate:.0f} stream "
          f"samples/s, {bytes_per_s * 8 / 1000:.0f} kbit/s in")


def test_the_api_docs_render_without_the_internet(services, tmp_path):
    """/docs loads Swagger UI from the gateway itself: every request leaving it is blocked,
    and the page still shows every operation."""
    url = services.gateway()
    outside: list[str] = []

    def only_ours(route) -> None:
        if route.request.url.startswith(url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = open_browser(p, tmp_path, DESKTOP)
        page = browser.new_page()
        page.route("**/*", only_ours)
        page.goto(f"{url}/docs")
        page.locator(".swagger-ui .info .title").wait_for(timeout=20_000)
        title = page.locator(".swagger-ui .info .title").text_content()
        operations = page.locator(".opblock").count()
        page.screenshot(path=str(ARTIFACTS / "api-docs-desktop.png"))
        page.set_viewport_size(PHONE)
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / "api-docs-phone.png"))
        browser.close()
    assert outside == [], f"/docs needs the internet: {outside}"
    assert title.startswith("Play Bach") and operations >= 20
