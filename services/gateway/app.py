"""The FastAPI application: routes, the player page, health, metrics, clear 422s."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway import api, listen, metrics
from gateway.hub import Hubs
from gateway.settings import GatewaySettings
from gateway.store import Store
from playbach import service
from playbach.schemas import ChannelParams

log = logging.getLogger("gateway")
STATIC = Path(__file__).parent / "static"


def explain(exc: RequestValidationError) -> str:
    """One sentence per bad field, naming what is allowed."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p not in ("body", "query", "path"))
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        parts.append(f"{where or 'request'}: {err['msg']}{shown}")
    return "; ".join(parts)


def create_app(settings: GatewaySettings, redis: Redis | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # A listener's hub holds a connection in a blocking read: room for many channels.
        app.state.redis = redis or service.client(settings.redis_url, connections=256)
        app.state.store = Store(app.state.redis, settings.models_dir)
        backlog = round(settings.backlog_seconds * 44100 / 2048)
        app.state.hubs = Hubs(app.state.redis, settings.replica_id, backlog)
        app.state.hubs.start()
        if settings.default_channel:
            try:
                await app.state.store.create(settings.default_channel, ChannelParams())
            except RedisError as exc:
                log.error("cannot create channel %s: %s", settings.default_channel, exc)
        if settings.admin_password is None:
            log.warning("no ADMIN_PASSWORD: login is disabled, channels cannot be changed")
        yield
        await app.state.hubs.stop()
        if redis is None:
            await app.state.redis.aclose()

    app = FastAPI(title="Play Bach", version="0.1.0", lifespan=lifespan,
                  description="Bach improvised live by a neural network: channels, models, "
                              "and the audio over WebSocket (`/ws/{channel}`) or WAV.")
    app.state.settings = settings
    app.include_router(api.router)
    app.include_router(listen.router)

    @app.exception_handler(RequestValidationError)
    async def unprocessable(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": explain(exc),
                                                      "errors": jsonable(exc.errors())})

    @app.middleware("http")
    async def timing(request: Request, call_next):
        t = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "other")
        metrics.REQUESTS.labels(path, response.status_code).observe(time.perf_counter() - t)
        return response

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        """Redis answers and at least one model is published."""
        problems = []
        try:
            await request.app.state.redis.ping()
        except (RedisError, OSError) as exc:
            problems.append(f"redis: {exc}")
        if not request.app.state.store.model_names():
            problems.append(f"no models in {settings.models_dir}")
        body = {"status": "ready" if not problems else "not ready", "problems": problems}
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="player")
    return app


def jsonable(errors: list) -> list:
    """Pydantic's error list as plain JSON (locations as lists, inputs as text if odd)."""
    plain = (str, int, float, bool, type(None))
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"],
             "input": e.get("input") if isinstance(e.get("input"), plain) else None}
            for e in errors]
