"""The REST API: channels, models, instruments, login, ping, stats. OpenAPI docs at /docs."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from gateway import auth, metrics
from gateway.listen import may_listen, wav_header
from gateway.store import Store
from playbach import streams
from playbach.midifile import heard_midi
from playbach.modeldir import ModelError
from playbach.schemas import MODEL_PATTERN, ChannelParams, ChannelUpdate


class Problem(BaseModel):
    """Every error: a sentence saying what is wrong and what is allowed (422s add the fields)."""

    detail: str
    errors: list[dict[str, Any]] | None = None


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "required": True,
                               "schema": {"type": "integer", "minimum": 1}}}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer with."""
    said = {400: "the body is not JSON text (not even UTF-8)",
            401: "log in first (or the token is not valid)", 404: "no such channel or model",
            409: "it exists already, or may not be removed",
            411: "an upload needs a Content-Length header",
            413: "over an upload limit (the message names it)", 422: "a parameter out of range",
            429: "too many attempts; see Retry-After",
            503: "Redis is unreachable, or not reached yet since the start"}
    out: dict[int | str, dict[str, Any]] = {
        code: {"model": Problem, "description": said[code]} for code in codes}
    for code in set(codes) & {429, 503}:
        out[code]["headers"] = RETRY_AFTER  # both always say when to try again
    return out


router = APIRouter(prefix="/api", responses=problems(422, 503))
CHANNEL_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
ChannelId = Annotated[str, Path(pattern=CHANNEL_PATTERN,
                                description="channel id: 1-40 of a-z 0-9 _ -")]


MOVEMENTS = ("Prelude", "Allemande", "Courante", "Sarabande", "Minuet", "Bourrée", "Gavotte",
             "Gigue", "Chorale", "Aria", "Invention", "Fugue")
KEYS = ("C", "D", "E-flat", "E", "F", "G", "A", "B-flat", "B")


def readable_name() -> str:
    """A name for a channel that was given none, e.g. "Sarabande in D minor"."""
    choose = secrets.SystemRandom().choice
    return f"{choose(MOVEMENTS)} in {choose(KEYS)} {choose(('major', 'minor'))}"


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


@router.post("/login", response_model=Token, tags=["auth"],
             responses=problems(400, 401, 429, 503))
async def login(body: Login, request: Request) -> Token:
    """A signed token for changing things (``Authorization: Bearer <token>``)."""
    settings = request.app.state.settings
    credentials = auth.ready_credentials(request)
    redis = request.app.state.redis
    client = auth.client_address(request)
    await auth.login_attempt(redis, client)
    # scrypt takes ~20 ms: off the event loop, so listeners' audio does not wait for it
    if not await asyncio.to_thread(credentials.check, body.username, body.password):
        metrics.LOGIN_FAILURES.inc()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password")
    await auth.login_succeeded(redis, client)
    token, expires = auth.sign(credentials.token_secret, body.username, settings.token_ttl_s)
    return Token(token=token, expires_at=expires)


@router.post("/listen-token", response_model=Token, tags=["auth"],
             responses=problems(401, 503))
async def listen_token(request: Request,
                       user: Annotated[str, Depends(auth.require_user)]) -> Token:
    """A token that may only listen (for an embedded player, or a link to share when
    PUBLIC_LISTENING=false): it cannot change anything."""
    settings = request.app.state.settings
    token, expires = auth.sign(auth.ready_credentials(request).token_secret, user,
                               settings.token_ttl_s, scope="listen")
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


@router.post("/channels", response_model=Channel, status_code=201, tags=["channels"],
             responses=problems(400, 401, 404, 409))
async def create_channel(body: NewChannel, db: Annotated[Store, Depends(store)],
                         _: Annotated[str, Depends(auth.require_user)]) -> Channel:
    """A new channel: give an id for a shared one, or none for one just for you."""
    await _model_must_exist(db, body.model)
    cid = body.id or f"ch-{secrets.token_hex(4)}"  # unguessable: the link is the key
    params = ChannelParams(**{**body.model_dump(exclude={"id"}),
                              "name": body.name or readable_name()})
    if not await db.create(cid, params):
        raise HTTPException(status.HTTP_409_CONFLICT, f"channel {cid!r} exists already")
    return Channel(id=cid, params=params)


@router.get("/channels/{cid}", response_model=Channel, tags=["channels"],
            responses=problems(404))
async def get_channel(cid: ChannelId, db: Annotated[Store, Depends(store)]) -> Channel:
    return Channel(id=cid, params=await _channel(db, cid), listeners=await db.listeners(cid))


def _nulls_to_defaults(change: ChannelUpdate) -> ChannelUpdate:
    """A null puts a parameter back to its default, as it always did for the seed (whose
    default is none); a null model, BPM... reached ChannelParams as None: a 500."""
    values = change.model_dump(exclude_unset=True)
    defaults = {k: ChannelParams.model_fields[k].default for k, v in values.items() if v is None}
    return ChannelUpdate(**{**values, **defaults})


@router.patch("/channels/{cid}", response_model=Channel, tags=["channels"],
              responses=problems(400, 401, 404))
async def update_channel(cid: ChannelId, change: Annotated[ChannelUpdate, Body()],
                         db: Annotated[Store, Depends(store)],
                         _: Annotated[str, Depends(auth.require_user)]) -> Channel:
    """Change model, instrument, BPM, temperature or seed while it plays (null: back to the
    default)."""
    await _channel(db, cid)
    change = _nulls_to_defaults(change)
    await _model_must_exist(db, change.model)
    params = await db.update(cid, change)
    return Channel(id=cid, params=params, listeners=await db.listeners(cid))


@router.delete("/channels/{cid}", status_code=204, tags=["channels"],
               responses=problems(401, 404, 409))
async def delete_channel(cid: ChannelId, request: Request, db: Annotated[Store, Depends(store)],
                         _: Annotated[str, Depends(auth.require_user)]) -> Response:
    """Remove a channel (not the shared radio, which always exists)."""
    await _channel(db, cid)
    if cid == request.app.state.settings.default_channel:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"{cid!r} is the shared channel and cannot be removed")
    await db.delete(cid)
    return Response(status_code=204)


@router.post("/channels/{cid}/tone", status_code=202, tags=["channels"],
             responses=problems(401, 404))
async def audio_test(cid: ChannelId, db: Annotated[Store, Depends(store)],
                     _: Annotated[str, Depends(auth.require_user)]) -> dict[str, str]:
    """The "audio test": one second of A4 (440 Hz) through the channel's own audio path.
    Everyone on the channel hears it, so it needs a token."""
    await _channel(db, cid)
    await db.announce(cid, "tone", hz=440, seconds=1.0)
    return {"status": "a 440 Hz test tone is on its way"}


async def may_download(request: Request, token: str | None) -> None:
    """Downloads obey the listening rule, and a per-address rate."""
    if not may_listen(request, token):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "listening needs a token: log in "
                            "first", headers={"WWW-Authenticate": "Bearer"})
    await auth.download_allowed(request.app.state.redis, auth.client_address(request))


DownloadToken = Annotated[str | None, Query(description="a listen or admin token, when "
                                                        "listening is not public")]


@router.get("/channels/{cid}/recent.mid", tags=["channels"], response_class=Response,
            responses={200: {"content": {"audio/midi": {}}}, **problems(401, 404, 429)})
async def recent_midi(cid: ChannelId, request: Request, db: Annotated[Store, Depends(store)],
                      seconds: Annotated[float, Query(gt=0, le=600)] = 120,
                      token: DownloadToken = None) -> Response:
    """What the channel played in the last ``seconds`` (at most 600), as a MIDI file that
    matches the WAV: its tempo and instrument changes where they were heard."""
    await _channel(db, cid)
    await may_download(request, token)
    onsets, length_s = await db.heard_onsets(cid, seconds)
    if not onsets:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"channel {cid!r} played nothing in the last {seconds:g} s")
    data = heard_midi(onsets, length_s)
    return Response(data, media_type="audio/midi", headers={
        "Content-Disposition": f'attachment; filename="playbach-{cid}.mid"'})


@router.get("/channels/{cid}/recent.wav", tags=["channels"], response_class=StreamingResponse,
            responses={200: {"content": {"audio/wav": {}}}, **problems(401, 404, 429)})
async def recent_wav(cid: ChannelId, request: Request, db: Annotated[Store, Depends(store)],
                     seconds: Annotated[float, Query(gt=0, le=120)] = 60,
                     token: DownloadToken = None) -> StreamingResponse:
    """The channel's audio of the last ``seconds`` (at most 120, what Redis keeps), as WAV,
    streamed from Redis a page at a time (a download holds a page in memory, not the file)."""
    await _channel(db, cid)
    await may_download(request, token)
    heard = await db.heard_pcm(cid, seconds)
    if heard is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"channel {cid!r} played nothing in the last {seconds:g} s")
    first, frames, pcm = heard

    async def body():
        yield wav_header(first.rate, first.channels, frames * 2 * first.channels)
        async for data in pcm:
            yield data

    return StreamingResponse(body(), media_type="audio/wav", headers={
        "Content-Disposition": f'attachment; filename="playbach-{cid}.wav"',
        "Content-Length": str(44 + frames * 2 * first.channels)})


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


@router.get("/models/{name}", tags=["models"], responses=problems(404))
async def model(name: str, db: Annotated[Store, Depends(store)]) -> dict[str, Any]:
    """A model's whole meta.json."""
    if not re.match(MODEL_PATTERN, name):
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
