"""Faults that must not stop the music: Redis killed and restarted empty, broken models.

Real processes throughout: redis-server killed with SIGKILL and started again on the same port
(with no persistence, the hard case: every key is gone), the services as subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from playbach import modeldir, streams
from playbach.schemas import DEFAULT_MODEL
from tests.conftest import SHIPPED, Services, free_port, login, run, start_redis
from tests.live.browser import open_browser
from tests.live.client import Heard, listen
from tests.live.timing import silence

RATE = 44100


class Restartable:
    """A redis-server on a fixed port that can be killed and started again, empty."""

    def __init__(self, folder: Path, persist: bool = False) -> None:
        self.folder, self.persist = folder, persist
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc, _ = start_redis(self.folder, self.port, self.persist)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(params=[False, True], ids=["no-persistence", "appendonly"])
def own_redis(request, tmp_path):
    server = Restartable(tmp_path, persist=request.param)
    server.start()
    yield server
    server.stop()


def get(url: str) -> int:
    try:
        return httpx.get(url, timeout=3).status_code
    except httpx.HTTPError:
        return 0


def wait_for(check, seconds: float, every: float = 0.1) -> float | None:
    """Seconds until ``check()`` is true, or None if it never was within ``seconds``."""
    t = time.monotonic()
    while time.monotonic() - t < seconds:
        if check():
            return time.monotonic() - t
        time.sleep(every)
    return None


def redis_lines(log: str) -> int:
    return sum("Redis at" in line and "does not answer" in line for line in log.splitlines())


def test_redis_killed_and_restarted_the_music_comes_back(own_redis, tmp_path):
    """Without persistence Redis comes back empty (the hard case); with it, the leases have
    run out meanwhile. Either way: the same WebSocket hears the music go on."""
    services = Services(own_redis.url, tmp_path)
    health = {"inference-1": free_port(), "synth-1": free_port()}
    try:
        url = services.gateway()
        services.start("inference-1", "inference", HEALTH_PORT=str(health["inference-1"]))
        services.start("synth-1", "synth", HEALTH_PORT=str(health["synth-1"]))
        auth = login(url)
        created = httpx.post(f"{url}/api/channels", headers=auth,
                             json={"id": "mine", "bpm": 150, "instrument": 42})
        assert created.status_code == 201
        probes = {name: f"http://127.0.0.1:{port}" for name, port in health.items()}
        report: dict[str, float | None] = {}

        async def outage(heard: Heard) -> None:
            await asyncio.sleep(4.0)  # playing
            own_redis.kill()
            report["killed"] = time.monotonic()
            await asyncio.sleep(2.0)  # an outage longer than a lease
            report["gateway /healthz"] = get(f"{url}/healthz")
            report["gateway /readyz"] = get(f"{url}/readyz")
            for name, probe in probes.items():
                report[f"{name} /healthz"] = get(f"{probe}/healthz")
                report[f"{name} /readyz"] = get(f"{probe}/readyz")
            report["chunks before"] = len(heard.chunks)
            own_redis.start()  # empty without persistence
            report["restarted"] = time.monotonic()

        async def scenario() -> Heard:
            heard = Heard()
            task = asyncio.create_task(listen(url, "radio", 16.0, heard))
            await outage(heard)
            await task
            return heard

        heard = run(scenario())
        assert heard.closed is None, f"the listener was disconnected: {heard.closed}"
        for name, proc in services.procs.items():
            assert proc.poll() is None, f"{name} exited: {services.log(name)[-2000:]}"
        assert report["gateway /healthz"] == 200 and report["gateway /readyz"] == 503
        for name in probes:
            assert report[f"{name} /healthz"] == 200, name  # alive: nothing to restart
            assert report[f"{name} /readyz"] == 503, name  # but not ready without Redis
        before = heard.chunks[:report["chunks before"]]
        after = [c for c in heard.chunks if c[2] > report["restarted"]]
        assert before and after, "no audio after Redis came back"
        back = after[0][2] - report["restarted"]
        kind = "with appendonly" if own_redis.persist else "empty"
        print(f"\nRedis down {report['restarted'] - report['killed']:.1f} s, back {kind}; "
              f"audio again {back:.2f} s after it answered, on the same WebSocket")
        assert back < 5.0
        # the timeline continues: positions go on from where they were, never back to 0
        assert after[0][0] >= before[-1][0] + len(before[-1][1])
        seqs = [n["seq"] for n in heard.notes]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert max(np.abs(after[-1][1].astype(int))) > 100  # music, not silence
        # channels and their parameters survived the empty restart
        channels = {c["id"]: c["params"] for c in httpx.get(f"{url}/api/channels",
                                                              headers=login(url)).json()}
        assert "radio" in channels and channels["mine"]["bpm"] == 150
        listed = [c["id"] for c in httpx.get(f"{url}/api/channels").json()]
        assert listed == ["radio"], "a private channel came back public"
        assert channels["mine"]["instrument"] == 42
        assert wait_for(lambda: get(f"{url}/readyz") == 200, 10) is not None
        for name in ("gw", "inference-1", "synth-1"):
            assert redis_lines(services.log(name)) == 1, services.log(name)[-3000:]
    finally:
        services.stop()


def test_services_wait_for_a_redis_that_is_not_there_yet(tmp_path):
    """Started before Redis (as Compose and Kubernetes may), they wait, then serve."""
    server = Restartable(tmp_path)
    services = Services(server.url, tmp_path)
    try:
        services.start("inference-1", "inference")
        services.start("synth-1", "synth")
        gateway = services.start("gw", "gateway", PORT=str(port := free_port()))
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: get(f"{url}/healthz") == 200, 20) is not None
        assert get(f"{url}/readyz") == 503
        time.sleep(2)
        assert all(p.poll() is None for p in services.procs.values())
        server.start()
        assert wait_for(lambda: get(f"{url}/readyz") == 200, 10) is not None
        # the synth fills the wait for the first notes with silence (inference may still be
        # loading its model on a busy machine): listen until music, not for a fixed second
        heard = run(listen(url, "radio", 30.0,
                           until=lambda h: h.seconds() > 1.0 and h.rms() > 100))
        assert heard.seconds() > 1.0 and heard.rms() > 100
        assert gateway.poll() is None
        for name in services.procs:
            assert redis_lines(services.log(name)) == 1, services.log(name)
    finally:
        services.stop()
        server.stop()


# --- broken models ----------------------------------------------------------------------


def nan_model(src: Path, dst: Path) -> Path:
    """A copy of a model whose step.tflite loads but gives NaN logits (a head's bias: the
    pitch head's where the converter kept it apart, else the duration head's, which the
    joining's shift leaves unfolded)."""
    from ai_edge_litert.interpreter import Interpreter

    shutil.copytree(src, dst)
    content = bytearray((dst / "step.tflite").read_bytes())
    interp = Interpreter(model_content=bytes(content))
    interp.allocate_tensors()
    biases = sorted((d for d in interp.get_tensor_details()
                     if "_head" in d["name"] and d["name"].endswith("BiasAdd")),
                    key=lambda d: "pitch_head" not in d["name"])
    for detail in biases:
        bias = interp.get_tensor(detail["index"])
        at = bytes(content).find(bias.tobytes())
        if at > 0:  # a constant stored as such in the file
            content[at:at + bias.nbytes] = np.full(bias.shape, np.nan, np.float32).tobytes()
            (dst / "step.tflite").write_bytes(bytes(content))
            return dst
    raise AssertionError("no head bias found in the model")


@pytest.fixture
def models(tmp_path) -> Path:
    folder = tmp_path / "models"
    shutil.copytree(SHIPPED / DEFAULT_MODEL, folder / DEFAULT_MODEL)
    nan_model(SHIPPED / DEFAULT_MODEL, folder / "nan")
    return folder


def test_a_model_giving_nan_is_refused_on_change_and_the_old_one_plays_on(services, models):
    url = services.gateway(MODELS_DIR=str(models))
    inference = services.start("inference-1", "inference", MODELS_DIR=str(models))
    services.start("synth-1", "synth", MODELS_DIR=str(models))
    auth = login(url)

    async def scenario() -> tuple[Heard, float]:
        heard = Heard()
        task = asyncio.create_task(listen(url, "radio", 9.0, heard))
        await asyncio.sleep(3.0)
        changed = time.monotonic()
        res = httpx.patch(f"{url}/api/channels/radio", json={"model": "nan"}, headers=auth)
        assert res.status_code == 200
        await task
        return heard, changed

    heard, changed = run(scenario())
    assert inference.poll() is None, services.log("inference-1")[-2000:]
    errors = [e for e in heard.events if e["type"] == "error"]
    assert len(errors) == 1, errors
    assert f"model 'nan' refused, still playing '{DEFAULT_MODEL}'" in errors[0]["message"]
    assert "non-finite" in errors[0]["message"]
    assert httpx.get(f"{url}/api/channels/radio").json()["params"]["model"] == DEFAULT_MODEL
    late = [c for c in heard.chunks if c[2] > changed + 2.0]
    assert late and max(np.abs(np.concatenate([c[1] for c in late]).astype(int))) > 100
    assert {n["model"] for n in heard.notes} == {DEFAULT_MODEL}


def test_a_channel_naming_a_nan_model_at_takeover_falls_back_at_once(services, models, redis):
    """The channel already names the broken model when a replica takes it (a restart, a
    takeover): the replica plays the default instead, says so once, and never crashes."""
    url = services.gateway(MODELS_DIR=str(models))
    redis.hset(streams.channel("radio"), "model", "nan")
    inference = services.start("inference-1", "inference", MODELS_DIR=str(models))
    services.start("synth-1", "synth", MODELS_DIR=str(models))

    async def scenario() -> tuple[Heard, float]:
        heard = Heard()
        t = time.monotonic()
        await listen(url, "radio", 8.0, heard)
        return heard, t

    heard, started = run(scenario())
    assert inference.poll() is None, services.log("inference-1")[-2000:]
    errors = [e for e in heard.events if e["type"] == "error"]
    assert 1 <= len(errors) <= 2, errors  # one event; at most one a second, never a storm
    assert f"model 'nan' refused, playing '{DEFAULT_MODEL}'" in errors[0]["message"]
    assert heard.notes and heard.notes[0]["model"] == DEFAULT_MODEL
    first_note = next(c[2] for c in heard.chunks if np.abs(c[1].astype(int)).max() > 100)
    assert first_note - started < 4.0, "the channel stayed silent"
    assert redis.hget(streams.channel("radio"), "model") == DEFAULT_MODEL.encode()
    crashes = services.log("inference-1").count("Traceback")
    assert crashes == 0, services.log("inference-1")[-3000:]


def test_nan_logits_while_sampling_raise_a_model_error_not_a_bad_index():
    from playbach.modeldir import ModelError
    from playbach.stepmodel import sample

    rng = np.random.default_rng(0)
    logits = np.zeros(10, np.float32)
    assert 2 <= sample(logits, 1.0, rng, banned=(0, 1)) < 10
    logits[4] = np.nan
    with pytest.raises(ModelError, match="non-finite"):
        sample(logits, 1.0, rng)


def test_the_probe_refuses_a_nan_model_at_load(tmp_path):
    from playbach.modeldir import ModelError
    from playbach.stepmodel import StepModel

    StepModel(SHIPPED / DEFAULT_MODEL).probe()
    broken = StepModel(nan_model(SHIPPED / DEFAULT_MODEL, tmp_path / "nan"))
    with pytest.raises(ModelError, match="non-finite"):
        broken.probe()


def test_health_endpoint_of_a_worker(redis_url, tmp_path):
    services = Services(redis_url, tmp_path)
    port = free_port()
    try:
        services.start("synth-1", "synth", HEALTH_PORT=str(port))
        probe = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: get(f"{probe}/readyz") == 200, 20) is not None
        assert httpx.get(f"{probe}/healthz").json()["alive"] is True
        assert get(f"{probe}/nope") == 404
    finally:
        services.stop()
    assert os.path.exists(tmp_path / "synth-1.log")


PLAYER_STATE = """() => ({consumed: window.playbach.consumed / 44100,
    underruns: window.playbach.underruns, silence: window.playbach.silence,
    reconnects: window.playbach.reconnects, replica: window.playbach.replica,
    opened: window.playbach.opened, errors: window.playbach.errors,
    buffered: window.playbach.buffered,
    status: document.getElementById('status').textContent})"""


def playing_player(p, url: str, tmp_path: Path, seconds: float):
    """Headless Chromium's player on the radio, pressed Play, ``seconds`` of audio played."""
    browser = open_browser(p, tmp_path)
    page = browser.new_page()
    page.goto(f"{url}/?channel=radio")
    page.get_by_role("button", name="▶ Play").click()
    page.wait_for_function(f"window.playbach.consumed > 44100 * {seconds}", timeout=30_000)
    return browser, page


def test_a_gateway_killed_under_a_player_costs_it_no_silence(services, tmp_path):
    """Two gateway processes on one port (WORKERS=2). SIGKILL the one the player streams
    from: it reconnects at once to the other (the kernel sends new connections to the live
    one), resumes at the sample it had, and its buffer covers the gap: no underrun."""
    url = services.gateway(WORKERS="2", REPLICA_ID="")  # unnamed: replica ids carry the pid
    services.start("inference-1", "inference")
    services.start("synth-1", "synth")
    with sync_playwright() as p:
        browser, page = playing_player(p, url, tmp_path, 4)
        before = page.evaluate(PLAYER_STATE)
        victim = int(before["replica"].rsplit("-", 1)[1])
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        page.wait_for_function(f"window.playbach.consumed > 44100 * {before['consumed'] + 5}",
                               timeout=30_000)
        after = page.evaluate(PLAYER_STATE)
        browser.close()
    back = (after["opened"][-1] / 1000 - killed) if len(after["opened"]) > 1 else None
    print(f"\na gateway worker killed under the player (buffer {before['buffered']:.2f} s): "
          f"reconnected to the other in "
          f"{back:.3f} s; {after['underruns'] - before['underruns']} underruns, "
          f"{after['silence'] - before['silence']:.3f} s of silence")
    assert after["reconnects"] == 1 and after["replica"] != before["replica"], after
    assert after["underruns"] == before["underruns"] == 0, (before, after)
    assert after["silence"] == 0 and after["errors"] == [] and after["status"] == "playing"
    log = services.log("gw")
    assert f"(pid {victim}) ended (signal 9); starting it again" in log, log[-2000:]


def test_the_only_gateway_restarted_costs_the_restart_and_no_more(services, tmp_path):
    """One gateway, SIGKILLed and started again 1 s later on its port: the player's retries
    (100 ms, doubling to 0.5 s, jittered) find it within a retry of it answering."""
    port = free_port()
    url = services.gateway(port=port)
    services.start("inference-1", "inference")
    services.start("synth-1", "synth")
    with sync_playwright() as p:
        browser, page = playing_player(p, url, tmp_path, 3)
        services.kill("gw")
        killed = time.time()
        time.sleep(1.0)
        services.gateway(port=port)
        ready = time.time()  # /readyz answered (gateway() waited for it)
        page.wait_for_function("window.playbach.opened.length > 1", timeout=20_000)
        played = page.evaluate(PLAYER_STATE)["consumed"]
        page.wait_for_function(f"window.playbach.consumed > 44100 * {played + 2}",
                               timeout=20_000)  # and it plays again
        state = page.evaluate(PLAYER_STATE)
        browser.close()
    reopened = state["opened"][-1] / 1000
    print(f"\nthe only gateway killed, started again after 1 s: ready {ready - killed:.2f} s "
          f"after the kill, the player reconnected {reopened - ready:+.2f} s after that "
          f"({state['reconnects']} tries); {state['silence']:.2f} s of silence in all")
    assert reopened - ready < 0.8, (killed, ready, state)  # one retry at most
    assert state["errors"] == []


def republish(models: Path, name: str, source: Path, build: str) -> None:
    """``source`` published as ``name`` as the trainer does (a staging folder swapped in by
    one rename), its meta.json saying ``build``."""
    staging = modeldir.staging_dir(models, name)
    shutil.rmtree(staging)
    shutil.copytree(source, staging)
    meta = json.loads((staging / "meta.json").read_text())
    modeldir.write_json(staging / "meta.json", {**meta, "build_id": build})
    modeldir.publish(staging, models / name)


def test_a_model_published_anew_broken_or_removed_while_it_plays(services, models):
    """The radio plays "mine". Published anew (other weights): within a few seconds every
    channel on it plays the new one and listeners get a ``model`` event. Published broken:
    refused, the version before plays on, one error. Removed: the default plays, one
    error."""
    republish(models, "mine", SHIPPED / "chorales", "first")
    url = services.gateway(MODELS_DIR=str(models))
    services.start("inference-1", "inference", MODELS_DIR=str(models))
    services.start("synth-1", "synth", MODELS_DIR=str(models))
    auth = login(url)
    httpx.patch(f"{url}/api/channels/radio", json={"model": "mine"},
                headers=auth).raise_for_status()

    async def scenario() -> tuple[Heard, dict[str, float]]:
        heard, at = Heard(), {}
        listening = asyncio.create_task(listen(url, "radio", 17.0, heard))
        await asyncio.sleep(3.0)
        republish(models, "mine", SHIPPED / DEFAULT_MODEL, "second")
        at["anew"] = time.monotonic()
        await asyncio.sleep(4.0)
        republish(models, "mine", models / "nan", "broken")
        at["broken"] = time.monotonic()
        await asyncio.sleep(4.0)
        shutil.rmtree(models / "mine")
        at["removed"] = time.monotonic()
        await listening
        return heard, at

    heard, at = run(scenario())
    events = [e for e in heard.events if e["type"] in ("model", "error")]
    print("\nmodel events: " + "; ".join(
        f"{e['type']} {e.get('build') or e.get('message')!r}" for e in events))
    assert [e["type"] for e in events] == ["model", "error", "error"], events
    assert events[0]["build"] == "second" and events[0]["model"] == "mine"
    assert "was published anew but is refused" in events[1]["message"]
    assert "non-finite" in events[1]["message"]
    assert f"playing '{DEFAULT_MODEL}'" in events[2]["message"]
    assert httpx.get(f"{url}/api/channels/radio").json()["params"]["model"] == DEFAULT_MODEL
    for since, until in (("anew", "broken"), ("broken", "removed"), ("removed", None)):
        chunks = [c for c in heard.chunks if at[since] + 1 < c[2] < (at[until] if until
                                                                      else float("inf"))]
        assert chunks and max(np.abs(np.concatenate([c[1] for c in chunks]))) > 100, since
    assert silence(heard, RATE) == 0.0
