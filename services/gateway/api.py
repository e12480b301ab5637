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
from gateway.store import Caps, Refused, Store
from playbach import streams
from playbach.midifile import heard_midi
from playbach.modeldir import ModelError
from playbach.schemas import MODEL_PATTERN, ChannelAccess, ChannelParams, ChannelUpdate


class Problem(BaseModel):
    """Every error: a sentence saying what is wrong and what is allowed (422s add the fields)."""

    detail: str
    errors: list[dict[str, Any]] | None = None


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "required": True,
                               "schema": {"type": "integer", "minimum": 1}}}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer with."""
    said = {400: "the body is not JSON text (not even UTF-8)",
            401: "log in first (or the token is not valid)",
            403: "not yours: only its owner or the admin may do this",
            404: "no such channel or model",
            409: "it exists already, or may not be removed",
            411: "an upload needs a Content-Length header",
            413: "over an upload limit (the message names it)", 422: "a parameter out of range",
            429: "too many attempts, or too many channels; see the message",
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
                           description="the admin may choose one; omit it for an unguessable "
                                       "id (its link is the key to a private channel)")
    public: bool = Field(False, description="listed to everyone; else only to its owner and "
                                            "the admin, and heard by whoever has its link")


class ChannelChange(ChannelUpdate):
    public: bool | None = Field(None, description="listed to everyone, or only to its owner "
                                                  "and the admin")


class Channel(BaseModel):
    id: str
    params: ChannelParams
    listeners: int = 0
    public: bool = False
    yours: bool = Field(False, description="you made it (or you are the admin): you may "
                                           "change it")

    @classmethod
    def of(cls, cid: str, params: ChannelParams, access: ChannelAccess,
           who: auth.Identity | None, listeners: int = 0) -> Channel:
        return cls(id=cid, params=params, listeners=listeners, public=access.public,
                   yours=bool(who and who.may_change(access)))


@router.post("/login", response_model=Token, tags=["auth"],
             responses=problems(400, 401, 429, 503))
async def login(body: Login, request: Request) -> Token:
    """A signed token for changing things (``Authorization: Bearer <token>``)."""
    settings = request.app.state.settings
    credentials = auth.ready_credentials(request)
    redis = request.app.state.redis
    client = auth.client_address(request)
    auth.warn_of_an_untrusted_proxy(request, settings.trusted_proxies)
    await auth.login_attempt(redis, client)
    # scrypt takes ~20 ms: off the event loop, so listeners' audio does not wait for it
    if not await asyncio.to_thread(credentials.check, body.username, body.password):
        metrics.LOGIN_FAILURES.inc()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password")
    await auth.login_succeeded(redis, client)
    token, expires = auth.sign(credentials.token_secret, body.username, settings.token_ttl_s)
    return Token(token=token, expires_at=expires)


@router.post("/guest", response_model=Token, status_code=201, tags=["auth"],
             responses=problems(403, 429, 503))
async def guest(request: Request) -> Token:
    """A session of your own, without a password: with it you may make channels (private
    unless you say otherwise) and change or delete those, never anyone else's. A few an hour
    per address; off while listening is not public."""
    settings = request.app.state.settings
    if not settings.public_listening:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "guest sessions are off while listening "
                                                       "is not public: log in")
    credentials = auth.ready_credentials(request)
    await auth.guest_allowed(request.app.state.redis, auth.client_address(request),
                             settings.guest_sessions_per_hour)
    token, expires = auth.sign(credentials.token_secret,
                               f"{auth.GUEST_PREFIX}{secrets.token_hex(8)}",
                               settings.token_ttl_s, scope="guest")
    return Token(token=token, expires_at=expires)


@router.post("/listen-token", response_model=Token, tags=["auth"],
             responses=problems(401, 503))
async def listen_token(request: Request,
                       user: Annotated[str, Depends(auth.require_admin)]) -> Token:
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


async def _changeable(db: Store, cid: str, who: auth.Identity) -> ChannelAccess:
    """The channel's access, if ``who`` may change it: 404 if there is none, 403 if not
    theirs."""
    await _channel(db, cid)
    access = await db.access(cid) or ChannelAccess()
    if not who.may_change(access):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"channel {cid!r} is not yours: only its owner or the admin may "
                            "change it; make one of your own with POST /api/channels")
    return access


Who = Annotated[auth.Identity | None, Depends(auth.optional_user)]
# A token is welcome, not required (OpenAPI's "no requirement" alternative): it shows more.
OPTIONAL_TOKEN = {"security": [{}, {"HTTPBearer": []}]}
User = Annotated[auth.Identity, Depends(auth.require_user)]


@router.get("/channels", response_model=list[Channel], tags=["channels"],
            openapi_extra=OPTIONAL_TOKEN)
async def list_channels(db: Annotated[Store, Depends(store)], who: Who) -> list[Channel]:
    """The public channels, and with a token yours too (the admin sees all). A private
    channel is not listed to anyone else: whoever has its id may still listen to it."""
    out = []
    for cid in await db.visible_ids(who.name if who else None, bool(who and who.admin)):
        params, access = await db.params(cid), await db.access(cid)
        if params and access:
            out.append(Channel.of(cid, params, access, who, await db.listeners(cid)))
    return out


@router.post("/channels", response_model=Channel, status_code=201, tags=["channels"],
             responses=problems(400, 401, 403, 404, 409, 429))
async def create_channel(body: NewChannel, request: Request,
                         db: Annotated[Store, Depends(store)], who: User) -> Channel:
    """A new channel, private unless ``public``: its unguessable id is the key to it (only
    the admin may choose an id). Each user may make at most MAX_CHANNELS_PER_USER."""
    if body.id and not who.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the admin may choose a channel's "
                                                       "id; omit it for an unguessable one")
    await _model_must_exist(db, body.model)
    cid = body.id or f"ch-{secrets.token_hex(10)}"  # 80 bits: the link is the key
    params = ChannelParams(**{**body.model_dump(exclude={"id", "public"}),
                              "name": body.name or readable_name()})
    access = ChannelAccess(owner=who.name, public=body.public)
    settings = request.app.state.settings
    try:
        await db.create(cid, params, access,
                        Caps(settings.max_channels, settings.max_channels_per_user))
    except Refused as exc:  # a cap: until a channel is removed, which Retry-After cannot tell
        headers = {"Retry-After": "60"} if exc.status == 429 else None
        raise HTTPException(exc.status, exc.detail, headers=headers) from None
    return Channel.of(cid, params, access, who)


@router.get("/channels/{cid}", response_model=Channel, tags=["channels"],
            responses=problems(404), openapi_extra=OPTIONAL_TOKEN)
async def get_channel(cid: ChannelId, db: Annotated[Store, Depends(store)],
                      who: Who) -> Channel:
    """One channel, listed or not: its id is what it takes."""
    params = await _channel(db, cid)
    access = await db.access(cid) or ChannelAccess()
    return Channel.of(cid, params, access, who, await db.listeners(cid))


def _nulls_to_defaults(change: ChannelUpdate) -> ChannelUpdate:
    """A null puts a parameter back to its default, as it always did for the seed (whose
    default is none); a null model, BPM... reached ChannelParams as None: a 500."""
    values = change.model_dump(exclude_unset=True)
    defaults = {k: ChannelParams.model_fields[k].default for k, v in values.items() if v is None}
    return ChannelUpdate(**{**values, **defaults})


@router.patch("/channels/{cid}", response_model=Channel, tags=["channels"],
              responses=problems(400, 401, 403, 404))
async def update_channel(cid: ChannelId, change: Annotated[ChannelChange, Body()],
                         db: Annotated[Store, Depends(store)], who: User) -> Channel:
    """Change model, instrument, BPM, temperature or seed while it plays (null: back to the
    default), or whether it is listed to everyone (``public``). Yours, or any as the admin."""
    access = await _changeable(db, cid, who)
    public = change.public
    params_change = _nulls_to_defaults(ChannelUpdate(**change.model_dump(
        exclude_unset=True, exclude={"public"})))
    await _model_must_exist(db, params_change.model)
    if public is not None and public != access.public:
        access = await db.set_public(cid, public)
    params = await db.update(cid, params_change) if params_change.model_fields_set else \
        await _channel(db, cid)
    return Channel.of(cid, params, access, who, await db.listeners(cid))


@router.delete("/channels/{cid}", status_code=204, tags=["channels"],
               responses=problems(401, 403, 404, 409))
async def delete_channel(cid: ChannelId, request: Request, db: Annotated[Store, Depends(store)],
                         who: User) -> Response:
    """Remove a channel of yours (the admin: any but the shared radio, which always
    exists)."""
    await _changeable(db, cid, who)
    if cid == request.app.state.settings.default_channel:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"{cid!r} is the shared channel and cannot be removed")
    await db.delete(cid)
    return Response(status_code=204)


@router.post("/channels/{cid}/tone", status_code=202, tags=["channels"],
             responses=problems(401, 403, 404))
async def audio_test(cid: ChannelId, db: Annotated[Store, Depends(store)],
                     who: User) -> dict[str, str]:
    """The "audio test": one second of A4 (440 Hz) through the channel's own audio path.
    Everyone on the channel hears it, so it needs a token: yours, or the admin's."""
    await _changeable(db, cid, who)
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


def download_name(params: ChannelParams, cid: str, ext: str) -> str:
    """``playbach-<channel name>-<model>-<UTC time>.<ext>``: downloads from several channels
    and sessions do not overwrite each other (letters, digits and dashes only)."""
    words = re.sub(r"[^a-z0-9]+", "-", f"{params.name or cid} {params.model}".lower())
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"playbach-{words.strip('-')[:80]}-{stamp}.{ext}"


@router.get("/channels/{cid}/recent.mid", tags=["channels"], response_class=Response,
            responses={200: {"content": {"audio/midi": {}}}, **problems(401, 404, 429)})
async def recent_midi(cid: ChannelId, request: Request, db: Annotated[Store, Depends(store)],
                      seconds: Annotated[float, Query(gt=0, le=600)] = 120,
                      token: DownloadToken = None) -> Response:
    """What the channel played in the last ``seconds`` (at most 600), as a MIDI file that
    matches the WAV: its tempo and instrument changes where they were heard."""
    params = await _channel(db, cid)
    await may_download(request, token)
    onsets, length_s = await db.heard_onsets(cid, seconds)
    if not onsets:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"channel {cid!r} played nothing in the last {seconds:g} s")
    data = heard_midi(onsets, length_s)
    return Response(data, media_type="audio/midi", headers={
        "Content-Disposition": f'attachment; filename="{download_name(params, cid, "mid")}"'})


@router.get("/channels/{cid}/recent.wav", tags=["channels"], response_class=StreamingResponse,
            responses={200: {"content": {"audio/wav": {}}}, **problems(401, 404, 429)})
async def recent_wav(cid: ChannelId, request: Request, db: Annotated[Store, Depends(store)],
                     seconds: Annotated[float, Query(gt=0, le=120)] = 60,
                     token: DownloadToken = None) -> StreamingResponse:
    """The channel's audio of the last ``seconds`` (at most 120, what Redis keeps), as WAV,
    streamed from Redis a page at a time (a download holds a page in memory, not the file)."""
    params = await _channel(db, cid)
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
        "Content-Disposition": f'attachment; filename="{download_name(params, cid, "wav")}"',
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


@router.get("/stats", tags=["health"], openapi_extra=OPTIONAL_TOKEN)
async def stats(db: Annotated[Store, Depends(store)], who: Who) -> dict[str, Any]:
    """Per channel listed to you (``GET /api/channels``): listeners, notes/s, chunks/s,
    synth lead, underruns reported by players."""
    ids = await db.visible_ids(who.name if who else None, bool(who and who.admin))
    return {"time": time.time(), "channels": {cid: await db.stats(cid) for cid in ids}}
