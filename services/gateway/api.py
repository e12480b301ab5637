"""The REST API: channels, models, instruments, login, ping, stats. OpenAPI docs at /docs."""

from __future__ import annotations

import re
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, Field

from gateway import auth, metrics
from gateway.listen import wav_header
from gateway.store import Store
from playbach import streams
from playbach.midifile import to_midi
from playbach.modeldir import ModelError
from playbach.schemas import ChannelParams, ChannelUpdate

router = APIRouter(prefix="/api")
CHANNEL_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
ChannelId = Annotated[str, Path(pattern=CHANNEL_PATTERN,
                                description="channel id: 1-40 of a-z 0-9 _ -")]


def store(request: Request) -> Store:
    return request.app.state.store


class Login(BaseModel):
    username: str = Field(max_length=200)
    password: str = Field(max_length=500)


class Token(BaseModel):
    token: str
    expires_at: int


class NewChannel(ChannelParams):
    id: str | None = Field(None, pattern=CHANNEL_PATTERN,
                           description="omit for a new private channel id")


class Channel(BaseModel):
    id: str
    params: ChannelParams
    listeners: int = 0


@router.post("/login", response_model=Token, tags=["auth"])
async def login(body: Login, request: Request) -> Token:
    """A signed token for changing things (``Authorization: Bearer <token>``)."""
    settings = request.app.state.settings
    redis = request.app.state.redis
    client = request.client.host if request.client else "unknown"
    await auth.slow_down_failures(redis, client)
    expected = settings.admin_password.get_secret_value() if settings.admin_password else None
    ok = expected is not None and secrets.compare_digest(body.username, settings.admin_user) \
        and secrets.compare_digest(body.password.encode(), expected.encode())
    if not ok:
        await auth.record_failure(redis, client)
        metrics.LOGIN_FAILURES.inc()
        reason = "wrong user name or password" if expected else \
            "login is disabled: the server has no ADMIN_PASSWORD"
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, reason)
    token, expires = auth.sign(settings.token_secret.get_secret_value(), body.username,
                               settings.token_ttl_s)
    return Token(token=token, expires_at=expires)


@router.get("/ping", tags=["health"])
async def ping(request: Request) -> dict[str, Any]:
    """The original's "server test": a round trip through Redis, timed."""
    redis = request.app.state.redis
    value = secrets.token_hex(8)
    t = time.perf_counter()
    await redis.set(streams.PING, value, px=10_000)
    echoed = await redis.get(streams.PING)
    ms = (time.perf_counter() - t) * 1000
    return {"pong": echoed == value.encode(), "redis_ms": round(ms, 3),
            "server_time": time.time(), "replica": request.app.state.settings.replica_id}


# --- channels ----------------------------------------------------------------------------


async def _model_must_exist(db: Store, name: str | None) -> None:
    if name is not None and name not in db.model_names():
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"unknown model {name!r}; available: {', '.join(db.model_names())}")


async def _channel(db: Store, cid: str) -> ChannelParams:
    params = await db.params(cid)
    if params is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no channel {cid!r}")
    return params


@router.get("/channels", response_model=list[Channel], tags=["channels"])
async def list_channels(db: Annotated[Store, Depends(store)]) -> list[Channel]:
    out = []
    for cid in await db.ids():
        params = await db.params(cid)
        if params:
            out.append(Channel(id=cid, params=params, listeners=await db.listeners(cid)))
    return out


@router.post("/channels", response_model=Channel, status_code=201, tags=["channels"])
async def create_channel(body: NewChannel, db: Annotated[Store, Depends(store)],
                         _: Annotated[str, Depends(auth.require_user)]) -> Channel:
    """A new channel: give an id for a shared one, or none for one just for you."""
    await _model_must_exist(db, body.model)
    cid = body.id or f"ch-{secrets.token_hex(4)}"
    params = ChannelParams(**body.model_dump(exclude={"id"}))
    if not await db.create(cid, params):
        raise HTTPException(status.HTTP_409_CONFLICT, f"channel {cid!r} exists already")
    return Channel(id=cid, params=params)


@router.get("/channels/{cid}", response_model=Channel, tags=["channels"])
async def get_channel(cid: ChannelId, db: Annotated[Store, Depends(store)]) -> Channel:
    return Channel(id=cid, params=await _channel(db, cid), listeners=await db.listeners(cid))


@router.patch("/channels/{cid}", response_model=Channel, tags=["channels"])
async def update_channel(cid: ChannelId, change: Annotated[ChannelUpdate, Body()],
                         db: Annotated[Store, Depends(store)],
                         _: Annotated[str, Depends(auth.require_user)]) -> Channel:
    """Change model, instrument, BPM, temperature or seed while it plays."""
    await _channel(db, cid)
    await _model_must_exist(db, change.model)
    params = await db.update(cid, change)
    return Channel(id=cid, params=params, listeners=await db.listeners(cid))


@router.delete("/channels/{cid}", status_code=204, tags=["channels"])
async def delete_channel(cid: ChannelId, db: Annotated[Store, Depends(store)],
                         _: Annotated[str, Depends(auth.require_user)]) -> Response:
    await _channel(db, cid)
    await db.delete(cid)
    return Response(status_code=204)


@router.post("/channels/{cid}/tone", status_code=202, tags=["channels"])
async def audio_test(cid: ChannelId, db: Annotated[Store, Depends(store)]) -> dict[str, str]:
    """The "audio test": one second of A4 (440 Hz) through the channel's own audio path."""
    await _channel(db, cid)
    await db.announce(cid, "tone", hz=440, seconds=1.0)
    return {"status": "a 440 Hz test tone is on its way"}


@router.get("/channels/{cid}/recent.mid", tags=["channels"],
            responses={200: {"content": {"audio/midi": {}}}})
async def recent_midi(cid: ChannelId, db: Annotated[Store, Depends(store)],
                      seconds: Annotated[float, Query(gt=0, le=600)] = 120) -> Response:
    """What the channel played in the last ``seconds`` (at most 600), as a MIDI file."""
    params = await _channel(db, cid)
    notes = await db.heard_notes(cid, seconds)
    if not notes:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"channel {cid!r} played nothing in the last {seconds:g} s")
    data = to_midi([n.event() for n in notes], params.bpm, params.instrument)
    return Response(data, media_type="audio/midi", headers={
        "Content-Disposition": f'attachment; filename="playbach-{cid}.mid"'})


@router.get("/channels/{cid}/recent.wav", tags=["channels"],
            responses={200: {"content": {"audio/wav": {}}}})
async def recent_wav(cid: ChannelId, db: Annotated[Store, Depends(store)],
                     seconds: Annotated[float, Query(gt=0, le=120)] = 60) -> Response:
    """The channel's audio of the last ``seconds`` (at most 120, what Redis keeps), as WAV."""
    await _channel(db, cid)
    chunks = await db.heard_audio(cid, seconds)
    if not chunks:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"channel {cid!r} played nothing in the last {seconds:g} s")
    pcm = b"".join(c.pcm for c in chunks)
    return Response(wav_header(chunks[0].rate, chunks[0].channels, len(pcm)) + pcm,
                    media_type="audio/wav", headers={
                        "Content-Disposition": f'attachment; filename="playbach-{cid}.wav"'})


# --- models, instruments, stats ------------------------------------------------------------


@router.get("/models", tags=["models"])
async def models(db: Annotated[Store, Depends(store)]) -> list[dict[str, Any]]:
    """Every published model with its held-out metrics."""
    out = []
    for name in db.model_names():
        try:
            out.append(db.model_summary(name))
        except ModelError as exc:
            out.append({"name": name, "error": str(exc)})
    return out


@router.get("/models/{name}", tags=["models"])
async def model(name: str, db: Annotated[Store, Depends(store)]) -> dict[str, Any]:
    """A model's whole meta.json."""
    if not re.match(r"^[a-z0-9][a-z0-9._-]{0,63}$", name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown model {name!r}")
    try:
        return db.model_meta(name)
    except ModelError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.get("/instruments", tags=["models"])
async def instruments(db: Annotated[Store, Depends(store)]) -> list[dict[str, Any]]:
    """The 128 General MIDI programs, named as the synth's SoundFont names them."""
    return await db.instruments()


@router.get("/stats", tags=["health"])
async def stats(db: Annotated[Store, Depends(store)]) -> dict[str, Any]:
    """Per channel: listeners, notes/s, chunks/s, synth lead, underruns reported by players."""
    return {"time": time.time(),
            "channels": {cid: await db.stats(cid) for cid in await db.ids()}}
