"""Gateway parts without a server: tokens, origins, the listener queue, the WAV header."""

import asyncio
import struct
import time

import numpy as np

from gateway import auth
from gateway.hub import Listener
from gateway.listen import origin_allowed, wav_header


def test_tokens_are_signed_and_expire():
    token, expires = auth.sign("secret", "admin", 60)
    assert auth.verify("secret", token) == "admin" and expires > time.time()
    assert auth.verify("other-secret", token) is None
    body, mac = token.split(".")
    assert auth.verify("secret", body + "x." + mac) is None
    assert auth.verify("secret", "garbage") is None
    old, _ = auth.sign("secret", "admin", -1)
    assert auth.verify("secret", old) is None


def test_origins():
    assert origin_allowed("http://bach.example:8000", "bach.example:8000", [])
    assert not origin_allowed("http://evil.example", "bach.example:8000", [])
    assert origin_allowed("http://ui.example", "bach.example", ["http://ui.example"])
    assert origin_allowed("http://anything", "bach.example", ["*"])
    assert origin_allowed(None, "bach.example", [])  # not a browser


def test_a_full_queue_drops_the_oldest_audio_and_cuts_a_hopeless_listener():
    listener = Listener(limit=3, max_drops=2)
    for item in (b"a1", "note", b"a2", b"a3"):
        listener.offer(item)
    assert list(listener.queue) == ["note", b"a2", b"a3"]  # events survive, old audio goes
    listener.offer(b"a4")
    assert not listener.closed
    listener.offer(b"a5")
    assert listener.closed  # a third drop: cut off
    assert asyncio.run(listener.next()) is None


def test_wav_header_is_a_valid_endless_wav():
    h = wav_header(44100, 1)
    assert len(h) == 44 and h[:4] == b"RIFF" and h[8:12] == b"WAVE"
    channels, rate, byte_rate, align, bits = struct.unpack("<HIIHH", h[22:36])
    assert (channels, rate, byte_rate, align, bits) == (1, 44100, 88200, 2, 16)


def test_empty_secrets_mean_unset(monkeypatch):
    from gateway.settings import GatewaySettings

    monkeypatch.setenv("ADMIN_PASSWORD", "")
    monkeypatch.setenv("TOKEN_SECRET", "")
    settings = GatewaySettings()
    assert settings.admin_password is None  # nobody logs in with an empty password
    assert settings.token_secret is None  # made in Redis, shared by replicas, never ""


def test_a_late_take_replaces_every_frame_already_sent_and_nothing_else():
    """Chunks of a newer take that arrive after the old take's frames left go out at once,
    each one (a player overwrites them); the same take again is not sent twice."""
    import asyncio as aio

    from gateway.hub import HEADER, ChannelHub, Listener
    from playbach.schemas import AudioChunk

    async def scenario() -> list[tuple[int, int]]:
        hub = ChannelHub(None, "c", 8, None, None)  # no Redis: chunks handed in directly
        listener = Listener(100, 100)
        hub.listeners.add(listener)
        for pos in range(0, 4 * 4, 4):  # due long ago: sent as they come
            hub.receive(AudioChunk(pos=pos, pcm=b"\0\0" * 4, ver=0, due=1.0), 0)
            hub.send(hub.ahead.pop(pos))
        for pos in (8, 12, 16):  # a take from 8 on; 16 was never sent
            hub.receive(AudioChunk(pos=pos, pcm=b"\1\0" * 4, ver=1, due=1.0), 0)
        hub.receive(AudioChunk(pos=8, pcm=b"\1\0" * 4, ver=1, due=1.0), 0)  # the same again
        return [HEADER.unpack_from(f) for f in listener.queue if isinstance(f, bytes)], hub

    sent, hub = aio.run(scenario())
    assert sent == [(0, 0), (4, 0), (8, 0), (12, 0), (8, 1), (12, 1)]
    assert list(hub.ahead) == [16] and [(r.pos, r.ver) for r in hub.recent] == [
        (0, 0), (4, 0), (8, 1), (12, 1)]


def test_a_late_take_is_not_fed_to_the_encoders():
    """Compressed streams cannot take audio back: a late take goes to the PCM players only,
    and the Opus packets stay one consecutive timeline."""
    import asyncio as aio

    from gateway.hub import HEADER, ChannelHub, Listener
    from playbach.schemas import AudioChunk

    pcm = (np.sin(np.arange(2048) / 9) * 5000).astype(np.int16).tobytes()

    async def scenario() -> list[int]:
        hub = ChannelHub(None, "c", 8, None, None)
        opus = Listener(100, 100, encoding="opus")
        hub.join(opus)
        for pos in range(0, 6 * 2048, 2048):
            hub.receive(AudioChunk(pos=pos, pcm=pcm, ver=0, due=1.0), 0)
            hub.send(hub.ahead.pop(pos))
        hub.receive(AudioChunk(pos=4 * 2048, pcm=pcm, ver=1, due=1.0), 0)  # late
        return [HEADER.unpack_from(f)[0] for f in opus.queue if isinstance(f, bytes)]

    starts = aio.run(scenario())
    assert len(starts) == 6 and starts == sorted(starts)


def test_successful_polls_leave_no_access_line_and_everything_else_does():
    import logging

    from gateway.__main__ import QuietPolls

    def kept(method: str, path: str, status: int) -> bool:
        record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0,
                                   '%s - "%s %s HTTP/%s" %d',
                                   ("1.2.3.4:5", method, path, "1.1", status), None)
        return QuietPolls().filter(record)

    assert not kept("GET", "/api/stats", 200) and not kept("GET", "/readyz", 200)
    assert not kept("GET", "/api/train/jobs/abc123?after=1-0", 200)
    assert kept("GET", "/api/stats", 503) and kept("PATCH", "/api/channels/radio", 200)
    assert kept("GET", "/api/train/jobs", 200) and kept("GET", "/api/statsx", 200)
