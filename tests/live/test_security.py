"""Security holes, closed: changes need a token, downloads obey the listening rule and are
streamed and rate-limited, the login limit cannot be raced or dodged, no secret is echoed or
logged, and the player listens with a listen-only token."""

from __future__ import annotations

import asyncio
import re
import struct
import time

import httpx
import numpy as np
import pytest
import websockets

from playbach import streams
from playbach.schemas import AudioChunk
from tests.conftest import PASSWORD, guest, login, run
from tests.live.client import Heard, listen
from tests.live.test_hostile import rss_mb

RATE = 44100


@pytest.fixture
def gateway(services) -> str:
    return services.gateway()


def test_the_audio_test_needs_a_token(gateway):
    assert httpx.post(f"{gateway}/api/channels/radio/tone").status_code == 401
    assert httpx.post(f"{gateway}/api/channels/radio/tone",
                      headers=login(gateway)).status_code == 202


def test_the_shared_radio_cannot_be_deleted(gateway):
    res = httpx.delete(f"{gateway}/api/channels/radio", headers=login(gateway))
    assert res.status_code == 409 and "cannot be removed" in res.json()["detail"]


def fill_audio(redis, cid: str, seconds: float) -> None:
    """``seconds`` of a known tone in the channel's audio stream, as the synth writes it."""
    frames = 2048
    pipe = redis.pipeline()
    for i in range(int(seconds * RATE / frames)):
        t = (np.arange(frames) + i * frames) / RATE
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).tobytes()
        pipe.xadd(streams.audio(cid), AudioChunk(pos=i * frames, pcm=pcm).to_fields())
    pipe.execute()


def test_private_listening_covers_downloads_and_a_listen_token_cannot_change(services, redis):
    url = services.gateway(PUBLIC_LISTENING="false")
    fill_audio(redis, "radio", 2)
    for path in ("recent.wav", "recent.mid"):
        res = httpx.get(f"{url}/api/channels/radio/{path}")
        assert res.status_code == 401, path
    admin = login(url)
    listen_token = httpx.post(f"{url}/api/listen-token", headers=admin).json()["token"]
    res = httpx.get(f"{url}/api/channels/radio/recent.wav", params={"token": listen_token})
    assert res.status_code == 200 and len(res.content) == 44 + 2 * 2048 * int(2 * RATE / 2048)
    res = httpx.patch(f"{url}/api/channels/radio", json={"bpm": 100},
                      headers={"Authorization": f"Bearer {listen_token}"})
    assert res.status_code == 401  # it may listen, never change
    refused = run(listen(url, "radio", 3.0))
    assert refused.closed and "needs a token" in refused.closed
    heard = run(listen(url, "radio", 3.0, until=lambda h: bool(h.hello),
                       additional_headers={"Authorization": f"Bearer {listen_token}"}))
    assert heard.hello.get("channel") == "radio"


def test_recent_wav_is_streamed_a_page_at_a_time_and_rate_limited(services, redis):
    url = services.gateway()
    pid = services.procs["gw"].pid
    fill_audio(redis, "radio", 120)
    before = rss_mb(pid)

    async def downloads(count: int) -> list[tuple[int, int, bytes]]:
        async with httpx.AsyncClient(timeout=60) as client:
            async def one() -> tuple[int, int, bytes]:
                size, head = 0, b""
                async with client.stream("GET", f"{url}/api/channels/radio/recent.wav",
                                         params={"seconds": 120}) as res:
                    async for part in res.aiter_bytes():
                        head = head or part[:44]
                        size += len(part)
                        await asyncio.sleep(0.001)  # a client slower than the server
                return res.status_code, size, head
            return await asyncio.gather(*(one() for _ in range(count)))

    results = run(downloads(10))
    grown = rss_mb(pid) - before
    print(f"\n10 simultaneous 120 s WAV downloads ({results[0][1] / 1e6:.1f} MB each): "
          f"gateway RSS {grown:+.1f} MB")
    assert all(status == 200 for status, _, _ in results)
    size = results[0][1]
    assert size > 120 * RATE * 2 * 0.95
    (data_bytes,) = struct.unpack("<I", results[0][2][40:44])
    assert data_bytes == size - 44  # the header tells the truth
    assert grown < 30, "downloads are held in memory"
    over = httpx.get(f"{url}/api/channels/radio/recent.mid")
    assert over.status_code == 429 and "Retry-After" in over.headers


def test_the_login_limit_cannot_be_raced_or_dodged(gateway):
    async def burst(count: int, forge: bool) -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(i: int) -> int:
                headers = {"X-Forwarded-For": f"10.9.{i // 250}.{i % 250}"} if forge else {}
                res = await client.post(f"{gateway}/api/login", headers=headers,
                                        json={"username": "admin", "password": f"guess{i}"})
                return res.status_code
            return await asyncio.gather(*(one(i) for i in range(count)))

    t = time.monotonic()
    codes = run(burst(100, forge=False))
    print(f"\n100 parallel wrong passwords: {codes.count(401)} checked, {codes.count(429)} "
          f"refused with 429 ({time.monotonic() - t:.1f} s)")
    assert codes.count(401) <= 20 and codes.count(429) >= 80 and set(codes) <= {401, 429}
    forged = run(burst(10, forge=True))
    assert set(forged) == {429}, "a forged X-Forwarded-For gave a fresh counter"
    # the admin elsewhere is not locked out (another loopback address is another client)
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    res = other.post(f"{gateway}/api/login", json={"username": "admin", "password": PASSWORD})
    assert res.status_code == 200


def test_no_secret_in_a_response_or_a_log_line(services):
    url = services.gateway()
    res = httpx.post(f"{url}/api/login", json={"username": "Jürgen", "password": "x"})
    assert res.status_code == 401  # not 500
    secret = "hunter2-do-not-echo"
    res = httpx.post(f"{url}/api/login", data={"username": "admin", "password": secret})
    assert res.status_code == 422 and secret not in res.text
    token = login(url)["Authorization"].removeprefix("Bearer ")
    ws = url.replace("http://", "ws://") + f"/ws/radio?token={token}"

    async def with_token() -> None:
        async with websockets.connect(ws) as conn:
            await asyncio.wait_for(conn.recv(), 5)

    run(with_token())
    with httpx.stream("GET", f"{url}/stream/radio.wav", params={"token": token}, timeout=5):
        pass
    time.sleep(0.5)
    log = services.log("gw")
    assert "token=***" in log and token not in log and secret not in log


def test_unconfigured_gateways_generate_one_password_and_share_the_token_key(services):
    """No ADMIN_PASSWORD, no TOKEN_SECRET: the first gateway prints a generated password once;
    a token from one replica is good at the other (the key is made once, in Redis)."""
    services.env.pop("ADMIN_PASSWORD")
    services.env.pop("TOKEN_SECRET", None)
    one, two = services.gateway("gw-1"), services.gateway("gw-2")

    def printed() -> list[str]:
        return re.findall(r"log in as admin / (\S+) ", services.log("gw-1") + services.log("gw-2"))

    deadline = time.monotonic() + 20  # the keeper's first step makes it, soon after start
    while not printed() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # a keeper step of each replica more: still printed once
    assert len(printed()) == 1, services.log("gw-1") + services.log("gw-2")
    res = httpx.post(f"{one}/api/login", json={"username": "admin", "password": printed()[0]})
    assert res.status_code == 200, res.text
    headers = {"Authorization": f"Bearer {res.json()['token']}"}
    res = httpx.patch(f"{two}/api/channels/radio", json={"bpm": 97}, headers=headers)
    assert res.status_code == 200 and res.json()["params"]["bpm"] == 97, res.text
    res = httpx.post(f"{two}/api/login", json={"username": "admin", "password": "${X:-}"})
    assert res.status_code == 401


def test_a_private_channel_is_listed_only_to_its_owner_and_heard_by_its_link(services):
    """An admin's and a guest's private channels: anonymous listings (channels, stats,
    Prometheus) and a second guest see neither, nor may that guest change them; whoever has
    the link hears the music. Made public, a channel is listed to all."""
    url = services.gateway(MAX_CHANNELS_PER_USER="3")
    services.start("inference-1", "inference")
    services.start("synth-1", "synth")
    admin, anna, bob = login(url), guest(url), guest(url)
    secret = httpx.post(f"{url}/api/channels", headers=admin,
                        json={"name": "my secret channel"}).json()
    annas = httpx.post(f"{url}/api/channels", headers=anna, json={"name": "Anna's"}).json()
    assert not secret["public"] and not annas["public"] and annas["yours"]

    def listed(headers: dict | None = None) -> set[str]:
        return {c["id"] for c in httpx.get(f"{url}/api/channels", headers=headers).json()}

    def in_stats(headers: dict | None = None) -> set[str]:
        return set(httpx.get(f"{url}/api/stats", headers=headers).json()["channels"])

    hidden = {secret["id"], annas["id"]}

    async def hear_and_scrape() -> tuple[Heard, str]:
        hearing = asyncio.create_task(listen(url, annas["id"], 4.0))
        await asyncio.sleep(3.0)
        async with httpx.AsyncClient() as client:
            scraped = (await client.get(f"{url}/metrics")).text
        return await hearing, scraped

    heard, metrics_text = run(hear_and_scrape())  # the link is the key: anonymous hears it
    assert heard.seconds() > 1 and heard.rms() > 100
    assert heard.hello["params"]["name"] == "Anna's"
    assert 'playbach_listeners{channel="(private)"} 1.0' in metrics_text
    for who in (None, bob):
        assert listed(who) == in_stats(who) == {"radio"}, who
    assert not any(cid in metrics_text or name in metrics_text for cid, name in (
        (secret["id"], "my secret channel"), (annas["id"], "Anna's")))
    assert listed(anna) == {"radio", annas["id"]} and listed(admin) >= {"radio", *hidden}
    assert in_stats(anna) == {"radio", annas["id"]}
    for method, path, body in (("PATCH", "", {"bpm": 100}), ("DELETE", "", None),
                               ("POST", "/tone", None)):
        res = httpx.request(method, f"{url}/api/channels/{annas['id']}{path}", headers=bob,
                            json=body)
        assert res.status_code == 403 and "not yours" in res.json()["detail"], res.text
        no_token = httpx.request(method, f"{url}/api/channels/{annas['id']}{path}", json=body)
        assert no_token.status_code == 401
    assert httpx.patch(f"{url}/api/channels/radio", headers=bob,
                       json={"bpm": 100}).status_code == 403  # the radio is the admin's
    res = httpx.patch(f"{url}/api/channels/{annas['id']}", headers=anna, json={"public": True})
    assert res.status_code == 200 and res.json()["public"]
    assert listed() == listed(bob) == {"radio", annas["id"]}
    assert httpx.post(f"{url}/api/channels", headers=bob,
                      json={"id": "bobs-own"}).status_code == 403  # ids are the admin's


def test_channels_per_user_are_capped_even_in_a_burst(services):
    url = services.gateway(MAX_CHANNELS_PER_USER="3")
    bob = guest(url)

    async def burst(count: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.post(f"{url}/api/channels", headers=bob,
                                                      json={}) for _ in range(count)))

    codes = [r.status_code for r in run(burst(20))]
    assert codes.count(201) == 3 and codes.count(429) == 17, codes
    refused = next(r for r in run(burst(1)))
    assert refused.status_code == 429
    assert "you have 3 channels, the most one user may make" in refused.json()["detail"]
    mine = [c for c in httpx.get(f"{url}/api/channels", headers=bob).json() if c["yours"]]
    assert len(mine) == 3
    assert httpx.delete(f"{url}/api/channels/{mine[0]['id']}", headers=bob).status_code == 204
    assert httpx.post(f"{url}/api/channels", headers=bob, json={}).status_code == 201
    # guest sessions are limited per address (each one may make channels)
    codes = [httpx.post(f"{url}/api/guest").status_code for _ in range(12)]
    assert codes.count(201) == 9 and set(codes[9:]) == {429}, codes  # 10 an hour, 1 used


def test_behind_a_proxy_failures_from_others_do_not_lock_the_admin_out(services):
    """A reverse proxy (here the test, on 127.0.0.1) names each client in X-Forwarded-For,
    and the gateway trusts it (TRUSTED_PROXIES): 20 clients' wrong passwords, and 25 from
    one of them, lock out that one client only; the admin logs in from their own address.
    Untrusted, the header is ignored and the gateway says how to set it."""
    url = services.gateway(TRUSTED_PROXIES="127.0.0.1")

    def attempt(client: str, password: str = "wrong-guess") -> int:
        return httpx.post(f"{url}/api/login", headers={"X-Forwarded-For": client},
                          json={"username": "admin", "password": password}).status_code

    async def many(clients: list[str]) -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            return [r.status_code for r in await asyncio.gather(*(client.post(
                f"{url}/api/login", headers={"X-Forwarded-For": c},
                json={"username": "admin", "password": "wrong-guess"}) for c in clients))]

    others = run(many([f"203.0.113.{i}" for i in range(1, 21)]))
    one = run(many(["198.51.100.66"] * 25))
    assert set(others) == {401} and one.count(429) >= 5, (others, one)
    assert attempt("198.51.100.66", PASSWORD) == 429  # that client is locked out
    assert attempt("198.51.100.7", PASSWORD) == 200  # the admin, from their own address

    untrusted = services.gateway("gw-2")  # no TRUSTED_PROXIES: the header is not believed
    res = httpx.post(f"{untrusted}/api/login", headers={"X-Forwarded-For": "192.0.2.1"},
                     json={"username": "admin", "password": "wrong-guess"})
    assert res.status_code == 401
    assert "set TRUSTED_PROXIES=127.0.0.1" in services.log("gw-2")
