"""The FastAPI application: routes, the player page, health, metrics, clear 422s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, SecretStr
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount

from gateway import api, listen, metrics, training
from gateway.credentials import Credentials
from gateway.hub import Hubs
from gateway.keeper import Keeper
from gateway.limits import BodyLimit
from gateway.settings import GatewaySettings
from gateway.store import Store
from gateway.uploads import UploadLimits
from playbach import service
from playbach.settings import SECRET_WORDS

log = logging.getLogger("gateway")
STATIC = Path(__file__).parent / "static"
SILENT_S = 3.0  # a channel with listeners and no audio for this long makes us not ready
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class Readiness(BaseModel):
    status: str
    problems: list[str]


def secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def printable(text: str) -> str:
    """Text UTF-8 can carry. A JSON body may hold a lone surrogate ("\\ud800"); quoted back
    as it is, it made the whole 422 fail to encode (a 500). Shown escaped instead."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def shown_input(err: dict) -> object:
    """The input to quote back in a 422, or None: never a secret, never a raw request body
    (a form-encoded login would echo its password)."""
    got = err.get("input")
    names = [str(p).lower() for p in err["loc"]]
    if len(err["loc"]) < 2 or any(w in n for n in names for w in SECRET_WORDS):
        return None
    if isinstance(got, float) and not math.isfinite(got):
        return str(got)  # 1e999 in a body parses as inf, which JSON cannot carry back
    return got if isinstance(got, str | int | float | bool) else None


def explain(exc: RequestValidationError) -> str:
    """One sentence per bad field, naming what is allowed."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p not in ("body", "query", "path"))
        got = shown_input(err)
        shown = "" if got is None else f" (got {got!r})"
        parts.append(printable(f"{where or 'request'}: {err['msg']}{shown}"))
    return "; ".join(parts)


def allowed_methods(app: FastAPI, scope: dict) -> list[str]:
    """The methods some route takes at this path. The player's files, mounted at "/", match
    every path and method, so without this a wrong method on an API path got their 404 (or
    their "Allow: GET, HEAD") instead of a 405 naming the methods the API takes."""
    routes = [r for r in app.routes if not isinstance(r, Mount)]
    return [m for m in METHODS
            if any(r.matches({**scope, "method": m})[0] == Match.FULL for r in routes)]


def create_app(settings: GatewaySettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Requests share a small pool (they wait for a free connection under a crowd); each
        # channel's hub has its own connection for its blocking read, closed with the hub.
        watch = service.RedisWatch("gateway", settings.redis_url)
        app.state.redis = service.client(settings.redis_url, connections=16)
        app.state.store = Store(app.state.redis, settings.models_dir)
        chunks = settings.sample_rate / settings.chunk_frames  # a second's
        backlog = round(settings.backlog_seconds * chunks)
        app.state.hubs = Hubs(app.state.redis, settings.replica_id, backlog,
                              round(settings.resume_seconds * chunks),
                              lambda: service.client(settings.redis_url, connections=2), watch)
        app.state.hubs.start()
        keeper = Keeper(app.state.store, settings.default_channel, watch, app.state.credentials,
                        app.state.hubs.counts)
        keeping = asyncio.create_task(keeper.run())
        yield
        keeping.cancel()
        await app.state.hubs.stop()
        with contextlib.suppress(*service.REDIS_DOWN):
            await app.state.redis.aclose()

    app = FastAPI(title="Play Bach", version="0.1.0", lifespan=lifespan, docs_url=None,
                  redoc_url=None,
                  description="Bach improvised live by a neural network: channels, models, "
                              "and the audio over WebSocket (`/ws/{channel}`) or WAV.")
    app.state.settings = settings
    app.state.credentials = Credentials(settings.admin_user, secret(settings.admin_password),
                                        secret(settings.token_secret))
    app.include_router(api.router)
    # Declared here: listen cannot import api (api imports listen).
    app.include_router(listen.router, responses=api.problems(401, 404, 422, 503))
    app.include_router(training.router)
    app.include_router(training.ws_router)

    @app.exception_handler(RequestValidationError)
    async def unprocessable(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": explain(exc),
                                                      "errors": jsonable(exc.errors())})

    @app.exception_handler(HTTPException)
    async def http_problem(request: Request, exc: HTTPException) -> Response:
        if exc.status_code in (404, 405):
            allowed = allowed_methods(request.app, request.scope)
            if allowed and request.method not in allowed:
                exc = HTTPException(405, headers={"Allow": ", ".join(allowed)})
        return await http_exception_handler(request, exc)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
        """The 503 every /api route documents, rather than a bare 500 while Redis is away."""
        return JSONResponse({"detail": f"Redis is unreachable ({type(exc).__name__}); try "
                                       "again shortly"}, status_code=503,
                            headers={"Retry-After": "1"})

    app.add_middleware(Timing)
    # outermost of ours: a body over its limit is refused before any other layer reads it
    app.add_middleware(BodyLimit, limit_for=body_limits(settings),
                       body_timeout_s=settings.body_timeout_s)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=Readiness,
             responses={503: {"model": Readiness, "description": "not ready: see problems"}})
    async def readyz(request: Request) -> JSONResponse:
        """Redis answers, the default channel exists, a model is published, the credentials
        are known, and every channel someone listens to here has sent audio within 3 s."""
        problems = []
        default = settings.default_channel
        try:
            if default and not await asyncio.wait_for(request.app.state.store.exists(default), 2):
                problems.append(f"channel {default}: not created yet")
        except (*service.REDIS_DOWN, TimeoutError) as exc:
            problems.append(f"redis: {exc or 'no answer in 2 s'}")
        if not request.app.state.store.model_names():
            problems.append(f"no models in {settings.models_dir}")
        if not request.app.state.credentials.ready:
            problems.append("login: the shared token key is not read from Redis yet")
        for cid, seconds in request.app.state.hubs.silent(SILENT_S).items():
            problems.append(f"channel {cid}: no audio for {seconds:g} s")
        body = {"status": "ready" if not problems else "not ready", "problems": problems}
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        """Swagger UI from our own files (static/vendor/swagger-ui): no CDN needed."""
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="Play Bach — API",
                                   swagger_js_url="/vendor/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/vendor/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="/favicon.svg")

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> PlainTextResponse:
        body, media_type = metrics.exposition()
        return PlainTextResponse(body, media_type=media_type)

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="player")
    return app


def body_limits(settings: GatewaySettings):
    """The largest body each route takes, and how to say so: uploads their documented
    limit (and the form around the files), every other route a small JSON body."""
    json_bytes = settings.json_body_kib * 1024
    upload = UploadLimits(settings.upload_max_files, settings.upload_max_mb,
                          settings.upload_file_mb)
    upload_bytes = int(upload.max_mb * 1_000_000) + training.FORM_SLACK

    def limit_for(method: str, path: str) -> tuple[int, str]:
        if method == "POST" and path == training.UPLOADS:
            return upload_bytes, f"an upload takes {upload.describe()}"
        return json_bytes, f"this route takes at most {settings.json_body_kib} KiB"

    return limit_for


def jsonable(errors: list) -> list:
    """Pydantic's error list as plain JSON (locations as lists; inputs only where safe)."""

    def plain(value: object) -> object:
        return printable(value) if isinstance(value, str) else value

    return [{"loc": [plain(p) for p in e["loc"]], "msg": printable(e["msg"]),
             "type": e["type"], "input": plain(shown_input(e))} for e in errors]


class Timing:
    """Request durations for Prometheus, as plain ASGI middleware: it passes uvicorn's own
    receive and send through (Starlette's BaseHTTPMiddleware would wrap a streamed response
    in a queue of its own, and hide the connection a stalled listener must be cut from)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t, status = time.perf_counter(), [500]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = getattr(scope.get("route"), "path", "other")
            metrics.REQUESTS.labels(path, status[0]).observe(time.perf_counter() - t)
