"""Listening: the WebSocket (``/ws/{channel}``) and the endless WAV stream."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from gateway import auth, metrics
from gateway.hub import HEADER, Listener
from playbach.schemas import AUDIO_CHANNELS, SAMPLE_RATE

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
    """Listening is public, or needs a valid token (PUBLIC_LISTENING=false)."""
    return conn.app.state.settings.public_listening or auth.token_user(conn, token) is not None


@router.websocket("/ws/{cid}")
async def websocket(ws: WebSocket, cid: str, token: str | None = Query(None)) -> None:
    app = ws.app
    settings = app.state.settings
    if not origin_allowed(ws.headers.get("origin"), ws.headers.get("host"),
                          settings.allowed_origins):
        await ws.close(POLICY_VIOLATION, "origin not allowed")
        return
    if not may_listen(ws, token):
        await ws.close(POLICY_VIOLATION, "listening needs a token: ?token=...")
        return
    params = await app.state.store.params(cid)
    if params is None:
        await ws.close(POLICY_VIOLATION, f"no channel {cid!r}")
        return
    await ws.accept()
    await ws.send_text(json.dumps({
        "type": "hello", "channel": cid, "format": "s16le", "rate": SAMPLE_RATE,
        "channels": AUDIO_CHANNELS, "frame": "u64le sample position, then PCM",
        "params": params.model_dump()}))
    listener = Listener(settings.client_queue, settings.max_drops)
    hub = await app.state.hubs.join(cid, listener)
    sender = asyncio.create_task(_send(ws, listener))
    try:
        while True:  # the player reports underruns; anything else is ignored
            msg = json.loads(await ws.receive_text())
            if msg.get("type") == "underrun" and int(msg.get("count", 0)) > 0:
                count = min(int(msg["count"]), 10_000)
                await app.state.store.count_underruns(cid, count)
                metrics.UNDERRUNS.labels(cid).inc(count)
    except (WebSocketDisconnect, ValueError, TypeError, RuntimeError):
        pass
    finally:
        listener.close()
        sender.cancel()
        await hub.leave(listener)


async def _send(ws: WebSocket, listener: Listener) -> None:
    try:
        while (item := await listener.next()) is not None:
            if isinstance(item, bytes):
                await ws.send_bytes(item)
            else:
                await ws.send_text(item)
            metrics.FRAMES_SENT.inc()
        await ws.close(TRY_AGAIN_LATER, "too slow: the connection could not keep up")
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass


def wav_header(rate: int, channels: int, data_bytes: int | None = None) -> bytes:
    """A 16-bit PCM WAV header; without a size, the largest (a stream with no end)."""
    data = 0xFFFFFFFF - 36 if data_bytes is None else data_bytes
    return b"RIFF" + struct.pack("<I", data + 36) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16
    ) + b"data" + struct.pack("<I", data)


@router.get("/stream/{cid}.wav", tags=["listen"],
            responses={200: {"content": {"audio/wav": {}}}})
async def wav(cid: str, request: Request, token: str | None = Query(None)) -> StreamingResponse:
    """The endless WAV stream of a channel, for VLC or an ``<audio>`` tag."""
    app = request.app
    if not may_listen(request, token):
        raise HTTPException(401, "listening needs a token: ?token=...")
    if await app.state.store.params(cid) is None:
        raise HTTPException(404, f"no channel {cid!r}")
    settings = app.state.settings
    listener = Listener(settings.client_queue, settings.max_drops)
    hub = await app.state.hubs.join(cid, listener)

    async def body():
        try:
            yield wav_header(SAMPLE_RATE, AUDIO_CHANNELS)
            while (item := await listener.next()) is not None:
                if isinstance(item, bytes):
                    yield item[HEADER.size:]
        finally:
            listener.close()
            await hub.leave(listener)

    return StreamingResponse(body(), media_type="audio/wav",
                             headers={"Cache-Control": "no-store"})
