"""Listening: the WebSocket (``/ws/{channel}``) and the endless WAV stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from functools import partial
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from gateway import auth, cuts, metrics
from gateway.encode import FORMATS, OPUS_RATE
from gateway.hub import HEADER, Listener
from playbach.gm import PROGRAMS
from playbach.schemas import AUDIO_CHANNELS, PlayerReport
from playbach.service import REDIS_DOWN

router = APIRouter()
log = logging.getLogger("gateway")
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Same origin, listed origins, or anything with ["*"]. No Origin header (not a browser):
    allowed, since browsers always send one and the check exists to stop other sites' pages."""
    if origin is None or "*" in allowed or origin in allowed:
        return True
    return urlsplit(origin).netloc == (host or "")


def may_listen(conn: Request | WebSocket, token: str | None) -> bool:
    """Listening is public, or needs a valid token, admin or listen-only, as ``?token=`` or
    ``Authorization: Bearer`` (PUBLIC_LISTENING=false)."""
    if conn.app.state.settings.public_listening:
        return True
    header = conn.headers.get("authorization", "")
    given = token or (header[7:] if header.lower().startswith("bearer ") else None)
    return auth.token_user(conn, given, ("admin", "listen")) is not None


class UnderrunBudget:
    """Underruns one connection may report: a bucket of 5 that refills one per second. A real
    player reports a few; a hostile one cannot inflate /api/stats."""

    def __init__(self, size: float = 5.0, per_s: float = 1.0) -> None:
        self.size, self.per_s = size, per_s
        self.tokens, self.at = size, time.monotonic()

    def take(self, count: int) -> int:
        now = time.monotonic()
        self.tokens = min(self.size, self.tokens + (now - self.at) * self.per_s)
        self.at = now
        granted = int(min(count, self.tokens))
        self.tokens -= granted
        return granted


def player_report(message: dict) -> PlayerReport | None:
    """A well-formed report from the player, or None for anything else (ignored quietly:
    binary frames, other JSON, absurd numbers)."""
    text = message.get("text")
    if not isinstance(text, str):
        return None
    try:
        return PlayerReport.model_validate_json(text)
    except ValidationError:
        return None


async def refuse(ws: WebSocket, reason: str, code: int = POLICY_VIOLATION) -> None:
    """Accept, then close with the reason: a close before accepting reaches the browser as a
    bare HTTP 403, and the player could not say what is wrong."""
    await ws.accept()
    await ws.close(code, reason)


@router.websocket("/ws/{cid}")
async def websocket(ws: WebSocket, cid: str, token: str | None = Query(None),
                    codec: str = Query("pcm"),
                    resume: int | None = Query(None, alias="from", ge=0)) -> None:
    """Binary frames: a u64 position and a u32 take, then s16le PCM (``codec=pcm``) or
    20 ms Opus packets (``codec=opus``, positions at 48 kHz; the player decodes them with
    WebCodecs). JSON events between them (hello, notes, params, error). A player that
    reconnects passes ``from``, the position its audio ends at (at the codec's rate): it
    gets the audio from there, held for RESUME_SECONDS, instead of the backlog."""
    app = ws.app
    settings = app.state.settings
    if not origin_allowed(ws.headers.get("origin"), ws.headers.get("host"),
                          settings.allowed_origins):
        await refuse(ws, "this site may not embed the player (origin not allowed)")
        return
    if not may_listen(ws, token):
        await refuse(ws, "listening needs a token: log in first")
        return
    try:
        params = await app.state.store.params(cid)
    except REDIS_DOWN:
        await refuse(ws, "the server is restarting; trying again", TRY_AGAIN_LATER)
        return
    if params is None:
        await refuse(ws, f"no channel {cid!r}")
        return
    if codec not in ("pcm", "opus"):
        await refuse(ws, f"codec {codec!r}: the player takes pcm or opus")
        return
    await ws.accept()
    cuts.limit_send_buffer(ws)
    await ws.send_text(json.dumps({
        "type": "hello", "channel": cid, "format": "s16le", "rate": settings.sample_rate,
        "channels": AUDIO_CHANNELS, "codec": codec,
        "codec_rate": OPUS_RATE if codec == "opus" else settings.sample_rate,
        "frame": "u64le position (at codec_rate), u32le take, then PCM or an Opus packet",
        "replica": settings.replica_id, "params": params.model_dump()}))
    opus = codec == "opus"  # 50 packets a second where PCM has 21.5 frames
    listener = Listener(settings.client_queue * (3 if opus else 1), settings.max_drops,
                        encoding="opus" if opus else None, timeout=settings.send_timeout_s)
    # written to directly by the hub where the server's transport is reachable (uvicorn)
    listener.transport = cuts.transport(ws)
    hub = await app.state.hubs.join(cid, listener, resume)
    sender = None if listener.transport else asyncio.create_task(
        _send(ws, listener, settings.send_timeout_s))
    budget = UnderrunBudget()
    try:
        while (message := await ws.receive())["type"] != "websocket.disconnect":
            report = player_report(message)
            count = budget.take(report.count) if report else 0
            if count:
                metrics.UNDERRUNS.labels(metrics.shown(cid)).inc(count)
                with contextlib.suppress(*REDIS_DOWN):
                    await app.state.store.count_underruns(cid, count)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        listener.close()
        if sender:
            sender.cancel()
        await hub.leave(listener)


async def _send(ws: WebSocket, listener: Listener, timeout: float) -> None:
    """Frames to one listener. A send the client does not take within ``timeout`` (it stopped
    reading), or too many frames lost, cuts the connection at once."""
    try:
        while (item := await listener.next()) is not None:
            if isinstance(item, bytes):
                await asyncio.wait_for(ws.send_bytes(item), timeout)
            else:
                await asyncio.wait_for(ws.send_text(item), timeout)
            metrics.FRAMES_SENT.inc()
    except TimeoutError:
        metrics.SLOW_CLIENTS_CUT.inc()
    except (WebSocketDisconnect, RuntimeError, OSError):
        return
    with contextlib.suppress(TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
        await asyncio.wait_for(ws.close(TRY_AGAIN_LATER, "too slow: the connection could not "
                                                         "keep up"), 1)
    cuts.cut(ws)


def wav_header(rate: int, channels: int, data_bytes: int | None = None) -> bytes:
    """A 16-bit PCM WAV header; without a size, the largest (a stream with no end)."""
    data = 0xFFFFFFFF - 36 if data_bytes is None else data_bytes
    return b"RIFF" + struct.pack("<I", data + 36) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16
    ) + b"data" + struct.pack("<I", data)


# status_code: FastAPI reads the default from the response class, and LiveResponse has none.
@router.get("/stream/{cid}.wav", tags=["listen"], status_code=200,
            response_class=cuts.LiveResponse, responses={200: {"content": {"audio/wav": {}}}})
async def wav(cid: str, request: Request,
              token: str | None = Query(None)) -> cuts.LiveResponse:
    """The endless WAV stream of a channel, for VLC or an ``<audio>`` tag."""
    app = request.app
    if not may_listen(request, token):
        raise HTTPException(401, "listening needs a token: ?token=...")
    if await app.state.store.params(cid) is None:
        raise HTTPException(404, f"no channel {cid!r}")
    settings = app.state.settings
    listener = Listener(settings.client_queue, settings.max_drops)
    hub = await app.state.hubs.join(cid, listener)
    cuts.limit_send_buffer(request)

    async def body():
        try:
            yield wav_header(settings.sample_rate, AUDIO_CHANNELS)
            width, at = 2 * AUDIO_CHANNELS, None  # the end of what the file has
            while (item := await listener.next()) is not None:
                if not isinstance(item, bytes):
                    continue
                pos = HEADER.unpack_from(item)[0]
                end = pos + (len(item) - HEADER.size) // width
                if at is None or end > at:  # a file cannot take audio back: a late new
                    skip = max(0, at - pos) if at is not None else 0  # take keeps the old
                    yield item[HEADER.size + skip * width:]
                    at = end
        finally:
            listener.close()
            await hub.leave(listener)

    return cuts.LiveResponse(body(), request, settings.send_timeout_s, media_type="audio/wav",
                             headers={"Cache-Control": "no-store"})


ICY_METAINT = 16_000  # audio bytes between two ICY metadata blocks (Shoutcast's usual)


def icy_block(title: str | None) -> bytes:
    """An ICY metadata block: a length byte (in 16s), then StreamTitle padded; b"\\0" if the
    title is unchanged."""
    if title is None:
        return b"\0"
    text = f"StreamTitle='{title.replace(chr(39), chr(8217))}';".encode()[:16 * 255]
    blocks = -(-len(text) // 16)
    return bytes([blocks]) + text.ljust(16 * blocks, b"\0")


def now_playing(item: str, name: str, facts: dict[str, str]) -> str:
    """The stream's title: the channel, model, instrument, key and BPM. It follows a
    change of any of them (a notes or params message updates ``facts``), not every note."""
    msg = json.loads(item)
    if msg.get("type") == "params":
        p = msg.get("params") or {}
        if "bpm" in p:
            facts["bpm"] = f"{round(float(p['bpm']))} BPM"
    for note in (msg.get("notes") or [])[-1:]:
        facts.update(model=note.get("model", ""), key=note.get("key", ""),
                     instrument=PROGRAMS[note["program"]] if "program" in note else "")
    said = (facts.get(k) for k in ("model", "instrument", "key", "bpm"))
    return " · ".join([f"Play Bach: {name}", *(f for f in said if f)])


async def _compressed(fmt: str, cid: str, request: Request, token: str | None
                      ) -> cuts.LiveResponse:
    app = request.app
    if not may_listen(request, token):
        raise HTTPException(401, "listening needs a token: ?token=...")
    params = await app.state.store.params(cid)
    if params is None:
        raise HTTPException(404, f"no channel {cid!r}")
    settings = app.state.settings
    # pages of 20 ms and note events: room for as many seconds as the PCM queue holds
    listener = Listener(4 * settings.client_queue, 4 * settings.max_drops, encoding=fmt,
                        timeout=settings.send_timeout_s)
    cuts.limit_send_buffer(request)
    icy = fmt == "mp3" and request.headers.get("icy-metadata") == "1"
    name = params.name or cid
    headers = {"Cache-Control": "no-store", "icy-name": f"Play Bach: {name}"}
    if not icy and cuts.transport(request) is not None:  # the same bytes for all: the hub's
        return cuts.DirectStream(request, listener, partial(app.state.hubs.join, cid),
                                 media_type=FORMATS[fmt].media_type, headers=headers)
    hub = await app.state.hubs.join(cid, listener)

    async def body():
        facts = {"model": params.model, "instrument": PROGRAMS[params.instrument],
                 "bpm": f"{round(params.bpm)} BPM"}
        title, sent, left = now_playing("{}", name, facts), None, ICY_METAINT
        try:
            while (item := await listener.next()) is not None:
                if isinstance(item, str):
                    if icy:
                        title = now_playing(item, name, facts)
                    continue
                while icy and len(item) >= left:  # a metadata block every ICY_METAINT bytes
                    yield item[:left]
                    item, left = item[left:], ICY_METAINT
                    yield icy_block(title if title != sent else None)
                    sent = title
                left -= len(item) if icy else 0
                if item:
                    yield item
        finally:
            listener.close()
            await hub.leave(listener)

    if icy:
        headers["icy-metaint"] = str(ICY_METAINT)
    return cuts.LiveResponse(body(), request, settings.send_timeout_s,
                             media_type=FORMATS[fmt].media_type, headers=headers)


@router.get("/stream/{cid}.ogg", tags=["listen"], status_code=200,
            response_class=cuts.LiveResponse, responses={200: {"content": {"audio/ogg": {}}}})
async def ogg(cid: str, request: Request, token: str | None = Query(None)) -> cuts.LiveResponse:
    """The channel as an endless Ogg Opus stream (96 kbps, 48 kHz), encoded once for all its
    listeners: for VLC, browsers' ``<audio>``, smart speakers."""
    return await _compressed("ogg", cid, request, token)


@router.get("/stream/{cid}.mp3", tags=["listen"], status_code=200,
            response_class=cuts.LiveResponse, responses={200: {"content": {"audio/mpeg": {}}}})
async def mp3(cid: str, request: Request, token: str | None = Query(None)) -> cuts.LiveResponse:
    """The channel as an endless MP3 stream (96 kbps), encoded once for all its listeners:
    for car radios, iOS ``<audio>``, anything. With ``Icy-MetaData: 1`` it carries ICY
    metadata every 16,000 bytes: the channel, the model and the note that starts."""
    return await _compressed("mp3", cid, request, token)
