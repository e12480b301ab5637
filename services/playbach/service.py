"""Running a worker service: settings, Redis, signals, one clear line on a bad start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from playbach.settings import ServiceSettings, load

S = TypeVar("S", bound=ServiceSettings)
log = logging.getLogger("playbach")


def client(url: str, connections: int = 64) -> Redis:
    """A Redis client whose pool makes callers wait for a free connection when all are busy
    (the default pool fails them instead: a crowd joining at once got errors)."""
    return Redis(connection_pool=BlockingConnectionPool.from_url(
        url, max_connections=connections, timeout=20))


async def connect(url: str, service: str) -> Redis:
    """A Redis client that answered a PING, or exit(2) with one line saying where it looked."""
    redis = client(url)
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        print(f"{service}: cannot reach Redis at {url}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return redis


async def tick_until(stop: asyncio.Event, interval_s: float,
                     tick: Callable[[], Awaitable[None]]) -> None:
    """Call ``tick`` every ``interval_s`` (less the time it took) until ``stop`` is set."""
    while not stop.is_set():
        started = time.monotonic()
        await tick()
        pause = interval_s - (time.monotonic() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(pause, 0.001))


def run(service: str, settings_cls: type[S],
        main: Callable[[Redis, S, asyncio.Event], Awaitable[None]]) -> None:
    """Load settings, connect, run ``main`` until SIGINT or SIGTERM."""
    settings = load(settings_cls, service)

    async def start() -> None:
        redis = await connect(settings.redis_url, service)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await main(redis, settings, stop)
        finally:
            await redis.aclose()
        log.info("%s stopped", service)

    asyncio.run(start())
