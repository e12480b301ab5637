"""The REST API against a real gateway and redis-server: validation, auth, models, stats."""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import time

import httpx
import pytest

from playbach.schemas import DEFAULT_MODEL
from tests.conftest import PASSWORD, SHIPPED, login, run
from tests.live.client import Heard, listen


@pytest.fixture
def api(services) -> httpx.Client:
    url = services.gateway()
    with httpx.Client(base_url=url, timeout=10) as client:
        client.headers.update(login(url))
        yield client


@pytest.mark.parametrize(("change", "message"), [
    ({"bpm": 500}, "bpm: Input should be less than or equal to 240 (got 500)"),
    ({"bpm": 39}, "bpm: Input should be greater than or equal to 40"),
    ({"temperature": 0}, "temperature: Input should be greater than or equal to 0.1"),
    ({"temperature": 3.5}, "temperature: Input should be less than or equal to 3"),
    ({"top_p": 1.5}, "top_p: Input should be less than or equal to 1"),
    ({"top_p": 0}, "top_p: Input should be greater than or equal to 0.05"),
    ({"instrument": 128}, "instrument: Input should be less than or equal to 127"),
    ({"instrument": "loud"}, "instrument: Input should be a valid integer"),
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"name": ""}, "name: String should have at least 1 character"),
    ({"name": "x" * 61}, "name: String should have at most 60 characters"),
    ({"name": "two\nlines"}, "name: String should match pattern"),
    ({"model": "../x"}, "model: String should match pattern"),
    ({"volume": 11}, "volume: Extra inputs are not permitted"),
])
def test_bad_parameters_get_422_saying_what_is_allowed(api, change, message):
    res = api.patch("/api/channels/radio", json=change)
    assert res.status_code == 422
    assert message in res.json()["detail"]
    assert api.get("/api/channels/radio").json()["params"]["bpm"] == 84  # nothing changed


def test_unknown_channel_and_model_are_404(api):
    assert api.get("/api/channels/nope").status_code == 404
    assert api.patch("/api/channels/nope", json={"bpm": 100}).status_code == 404
    res = api.patch("/api/channels/radio", json={"model": "no-such-model"})
    assert res.status_code == 404 and "available: cello-suites, chorales" in res.json()["detail"]
    assert api.get("/api/models/no-such-model").status_code == 404


def test_changes_need_a_valid_token(services):
    url = services.gateway()
    assert httpx.patch(f"{url}/api/channels/radio", json={"bpm": 100}).status_code == 401
    forged = {"Authorization": "Bearer eyJzdWIiOiJhZG1pbiIsImV4cCI6OTk5OTk5OTk5OX0.AAAA"}
    assert httpx.patch(f"{url}/api/channels/radio", json={"bpm": 100},
                       headers=forged).status_code == 401
    assert httpx.post(f"{url}/api/channels", json={}).status_code == 401
    good = login(url)
    assert httpx.patch(f"{url}/api/channels/radio", json={"bpm": 100},
                       headers=good).status_code == 200


def test_failed_logins_are_slowed_down(services):
    url = services.gateway()
    times = []
    for _ in range(4):
        t = time.perf_counter()
        res = httpx.post(f"{url}/api/login", json={"username": "admin", "password": "guess"})
        times.append(time.perf_counter() - t)
        assert res.status_code == 401
    assert times[3] > 0.7 and times[3] > 3 * times[0]  # 0.2 s, doubling
    ok = httpx.post(f"{url}/api/login", json={"username": "admin", "password": PASSWORD})
    assert ok.status_code == 200 and ok.json()["expires_at"] > time.time()


def test_channels_life_cycle_models_instruments_ping_health(api, services):
    created = api.post("/api/channels", json={"bpm": 100, "instrument": 42})
    assert created.status_code == 201
    cid = created.json()["id"]
    assert cid.startswith("ch-") and created.json()["params"]["instrument"] == 42
    assert api.post("/api/channels", json={"id": "radio"}).status_code == 409
    assert cid in [c["id"] for c in api.get("/api/channels").json()]
    assert api.delete(f"/api/channels/{cid}").status_code == 204
    assert api.get(f"/api/channels/{cid}").status_code == 404
    models = api.get("/api/models").json()
    assert {DEFAULT_MODEL, "chorales"} <= {m["name"] for m in models}
    default = next(m for m in models if m["name"] == DEFAULT_MODEL)
    assert 0 < default["test_accuracy"]["pitch"] < 1 and default["ngram_accuracy"]["pitch"] > 0
    assert api.get(f"/api/models/{DEFAULT_MODEL}").json()["format_version"] == 2
    names = api.get("/api/instruments").json()
    assert len(names) == 128 and names[42]["gm_name"] == "Cello"
    ping = api.get("/api/ping").json()
    assert ping["pong"] is True and 0 < ping["redis_ms"] < 1000
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").status_code == 200
    assert "playbach_frames_sent_total" in api.get("/metrics").text
    assert "/api/channels/{cid}" in api.get("/openapi.json").json()["paths"]


def test_a_broken_model_is_refused_and_the_old_one_keeps_playing(services, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(SHIPPED / DEFAULT_MODEL, models / DEFAULT_MODEL)
    shutil.copytree(SHIPPED / DEFAULT_MODEL, models / "broken")
    (models / "broken" / "step.tflite").write_bytes(b"\x00" * 64)
    url = services.gateway(MODELS_DIR=str(models))
    services.start("inference-1", "inference", MODELS_DIR=str(models))
    services.start("synth-1", "synth")
    auth = login(url)

    notes_at_refusal: list[int] = []

    def three_notes_after_the_refusal(heard: Heard) -> bool:
        # counted in notes, not in seconds: a held note or a rest can fill a second, and a
        # busy machine can deliver less audio in the same wall time
        if not notes_at_refusal and any(e["type"] == "error" for e in heard.events):
            notes_at_refusal.append(len(heard.notes))
        return bool(notes_at_refusal) and len(heard.notes) >= notes_at_refusal[0] + 3

    async def scenario():
        heard = Heard()
        task = asyncio.create_task(
            listen(url, "radio", 30.0, heard, until=three_notes_after_the_refusal))
        await asyncio.sleep(3.0)
        res = httpx.patch(f"{url}/api/channels/radio", json={"model": "broken"}, headers=auth)
        assert res.status_code == 200  # it exists; whether it loads is the inference's call
        await task
        return heard

    heard = run(scenario())
    errors = [e for e in heard.events if e["type"] == "error"]
    refused = f"model 'broken' refused, still playing '{DEFAULT_MODEL}'"
    assert errors and refused in errors[0]["message"]
    assert httpx.get(f"{url}/api/channels/radio").json()["params"]["model"] == DEFAULT_MODEL
    late = heard.notes[notes_at_refusal[0]:]
    assert len(late) >= 3 and all(n["model"] == DEFAULT_MODEL for n in late)  # it played on


def test_a_stalled_listener_does_not_delay_a_healthy_one(services):
    url = services.gateway(CLIENT_QUEUE="8", MAX_DROPS="20")
    services.start("inference-1", "inference")
    services.start("synth-1", "synth")

    async def scenario():
        stalled_url = url.replace("http://", "ws://") + "/ws/radio"
        import websockets

        # never reads: its socket buffers fill, then its queue; it is dropped, then cut
        async with websockets.connect(stalled_url, max_queue=1, max_size=2**22) as stalled:
            # six seconds of audio, however long a busy machine takes to start the stream:
            # what is measured is the pace once it flows
            healthy = await listen(url, "radio", 30.0, until=lambda h: h.seconds() >= 6.0)
            return healthy, stalled

    healthy, _ = run(scenario())
    arrival = [t for _, _, t in healthy.chunks]
    audio_seconds = healthy.seconds()
    wall = arrival[-1] - arrival[0]
    assert audio_seconds >= 6.0 and wall < audio_seconds + 1.0  # in real time, no stall
    gaps = [b - a for a, b in itertools.pairwise(arrival)]
    assert max(gaps) < 0.5, f"the healthy listener waited {max(gaps):.2f} s for a frame"


def test_channels_have_readable_names(api):
    """The radio is "Radio"; a channel made without a name gets one like "Sarabande in D
    minor" (its id stays unguessable: the link is the key); a name can be changed."""
    assert api.get("/api/channels/radio").json()["params"]["name"] == "Radio"
    made = api.post("/api/channels", json={}).json()
    assert re.fullmatch(r"[A-Z][a-zé]+ in [A-G](-flat)? (major|minor)", made["params"]["name"])
    assert re.fullmatch(r"ch-[0-9a-f]{20}", made["id"])  # 80 bits
    named = api.post("/api/channels", json={"id": "for-anna", "name": "Anna’s Bach"}).json()
    assert named["params"]["name"] == "Anna’s Bach"
    res = api.patch("/api/channels/for-anna", json={"name": "Evening"})
    assert res.status_code == 200 and res.json()["params"]["name"] == "Evening"
    listed = {c["id"]: c["params"]["name"] for c in api.get("/api/channels").json()}
    assert listed["for-anna"] == "Evening" and listed["radio"] == "Radio"
