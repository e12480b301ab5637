"""Running a service: settings, Redis that may come and go, signals, health probes.

No service exits because Redis is away: every loop goes through :class:`RedisWatch`, which
backs off while Redis does not answer and logs one line when it goes and one when it is back.
A Redis that comes back empty (restarted without persistence) is noticed by :func:`epoch`
changing, and each service then re-publishes what it holds (see docs/architecture.md)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from playbach import streams
from playbach.settings import ServiceSettings, cluster_seed, load, redacted

S = TypeVar("S", bound=ServiceSettings)
log = logging.getLogger("playbach")
REDIS_DOWN = (RedisError, OSError, TimeoutError)  # what an unreachable or restarting Redis raises


class _PacedCluster(RedisCluster):
    """A cluster client whose commands wait for one of ``connections`` turns when all are
    taken, as the single-Redis pool below does (the cluster's own pool fails them)."""

    def __init__(self, *args: object, connections: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(connections)

    async def execute_command(self, *args: object, **kwargs: object) -> object:
        async with self._turns:
            return await super().execute_command(*args, **kwargs)


def client(url: str, connections: int = 64) -> Redis:
    """A Redis client whose pool makes callers wait for a free connection when all are busy
    (the default pool fails them instead: a crowd joining at once got errors). Timeouts keep
    a Redis that hangs from hanging us: blocking reads use at most 1 s, well under 10. One
    retry on a broken connection: after Redis restarts, each idle pooled connection fails
    once, and that must not look like a second outage. A cluster URL gives a cluster client
    with the same behaviour; it learns the shards from the node named and follows them."""
    timeouts = {"socket_connect_timeout": 3, "socket_timeout": 10, "health_check_interval": 15}
    seed = cluster_seed(url)
    if seed:
        # pipelines bypass the turns: room for them beside the paced commands
        return _PacedCluster.from_url(seed, connections=connections,
                                      max_connections=2 * connections + 8, **timeouts)
    # from_pool: the client owns its pool, so closing it closes the connections (given the
    # pool, it would leave them open: every gateway hub left its reader's behind)
    return Redis.from_pool(BlockingConnectionPool.from_url(
        url, max_connections=connections, timeout=20, retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError], **timeouts))


class RedisWatch:
    """Whether Redis answers, with one log line per change and a backoff while it does not."""

    def __init__(self, service: str, url: str) -> None:
        self.service, self.url = service, redacted(url)
        self.up: bool | None = None  # None: not known yet
        self.since = time.monotonic()
        self.failures = 0

    def ok(self) -> None:
        if self.up is not True:
            if self.up is False:
                log.warning("%s: Redis answers again after %.1f s", self.service,
                            time.monotonic() - self.since)
            self.up, self.since, self.failures = True, time.monotonic(), 0

    def failed(self, exc: BaseException) -> float:
        """Note a failure; the seconds to wait before trying again (0.1 s doubling to 2 s)."""
        if self.up is not False:
            log.warning("%s: Redis at %s does not answer (%s); retrying until it does",
                        self.service, self.url, exc or type(exc).__name__)
            self.up, self.since = False, time.monotonic()
        self.failures += 1
        return min(0.1 * 2 ** (self.failures - 1), 2.0)

    async def guard(self, step: Callable[[], Awaitable[None]]) -> float:
        """Run ``step``; the pause to take before the next one if Redis failed (else 0)."""
        try:
            await step()
        except REDIS_DOWN as exc:
            return self.failed(exc)
        self.ok()
        return 0.0


def give_back_memory() -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim). A channel's
    FluidSynth, network states and audio buffers are many mid-sized allocations; freed, they
    stay in the process's heap, fragmented, and its memory never came down (40 channels
    made and deleted left the synth at 751 MB for its 229). Elsewhere than glibc: nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def epoch(redis: Redis) -> str:
    """The id of Redis's current data set. It changes only when Redis lost its data (a restart
    without persistence, a flush): then the services re-publish what they hold."""
    pipe = redis.pipeline(transaction=False)
    pipe.set(streams.EPOCH, secrets.token_hex(8), nx=True)
    pipe.get(streams.EPOCH)
    _, value = await pipe.execute()
    return streams.text(value) or ""


class Epoch:
    """The data set a service last saw. ``changed`` is true at the first reading and whenever
    the id changes; ``lost`` tells the second case (Redis lost what it held)."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.lost = False

    async def changed(self, redis: Redis) -> bool:
        value = await epoch(redis)
        if value == self.current:
            return False
        self.lost, self.current = self.current is not None, value
        return True


async def follow(redis: Redis, key: str, down: Callable[[Exception], float],
                 up: Callable[[], None] = lambda: None) -> AsyncIterator[list[tuple]]:
    """Each batch of entries added to stream ``key`` from now on, as they come (a blocking
    XREAD, at most 1 s at a time, so a dead connection is noticed). While Redis does not
    answer, pauses for what ``down(exc)`` says; ``up()`` after each answer."""
    last: bytes | str = "$"
    while True:
        try:
            found = await redis.xread({key: last}, block=1000, count=100)
        except REDIS_DOWN as exc:
            await asyncio.sleep(down(exc))
            continue
        up()
        for _, entries in found:
            last = entries[-1][0]
            yield entries


async def tick_until(stop: asyncio.Event, interval_s: float, tick: Callable[[], Awaitable[None]],
                     watch: RedisWatch, wake: asyncio.Event | None = None) -> None:
    """Call ``tick`` every ``interval_s`` (less the time it took) until ``stop`` is set, or
    sooner when ``wake`` is set; a Redis failure pauses with backoff instead of ending the
    loop."""
    while not stop.is_set():
        started = time.monotonic()
        if wake is not None:
            wake.clear()  # before the tick: what is set during it wakes the next one
        backoff = await watch.guard(tick)
        pause = max(backoff, interval_s - (time.monotonic() - started))
        if wake is None or backoff > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(pause, 0.001))
            continue
        waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
        await asyncio.wait(waits, timeout=max(pause, 0.001),
                           return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()


class Health:
    """``/healthz`` (the loop is alive) and ``/readyz`` (and Redis answers) over plain HTTP,
    for Compose and Kubernetes probes of services that have no web server of their own."""

    def __init__(self, watch: RedisWatch, stale_s: float = 15.0) -> None:
        self.watch, self.stale_s = watch, stale_s
        self.beat = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.beat < self.stale_s

    def status(self, path: str) -> tuple[int, dict[str, object]]:
        body: dict[str, object] = {"service": self.watch.service, "alive": self.alive(),
                                   "redis": bool(self.watch.up)}
        ok = self.alive() and (path != "/readyz" or bool(self.watch.up))
        known = path in ("/healthz", "/readyz")
        return (200 if ok else 503) if known else 404, body

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            parts = line.decode("latin-1").split()
            code, body = self.status(parts[1] if len(parts) > 1 else "/")
            data = json.dumps(body).encode()
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (
                             code, b"OK" if code == 200 else b"Unavailable", len(data), data))
            await writer.drain()
        except (OSError, TimeoutError, UnicodeError):
            pass
        finally:
            writer.close()

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._handle, host, port)


def run(service: str, settings_cls: type[S],
        main: Callable[[Redis, S, asyncio.Event, RedisWatch], Awaitable[None]]) -> None:
    """Load settings (one line and exit 2 if bad), run ``main`` until SIGINT or SIGTERM.
    Redis need not answer yet: ``main`` waits for it through the watch."""
    settings = load(settings_cls, service)

    async def start() -> None:
        redis = client(settings.redis_url)
        watch = RedisWatch(service, settings.redis_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await main(redis, settings, stop, watch)
        finally:
            with contextlib.suppress(*REDIS_DOWN):
                await redis.aclose()
        log.info("%s stopped", service)

    asyncio.run(start())
