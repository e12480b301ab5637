"""Fan-out: one Redis reader per channel per gateway process, many listeners behind it.

Each listener has a bounded queue. Broadcasting never waits on a listener: when a queue is full
its oldest audio frame is dropped, and a listener that keeps losing frames is cut off. So a slow
client loses audio or its connection and never slows anyone else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from gateway import metrics
from playbach import streams
from playbach.schemas import AudioChunk, ControlEntry
from playbach.service import REDIS_DOWN, RedisWatch

log = logging.getLogger("gateway")
HEADER = struct.Struct("<Q")  # binary frame: u64 little-endian sample position, then s16le PCM
# A playing channel's synth writes a chunk every ~50 ms; when its newest chunk is older than
# this, the channel is paused and its backlog is the last session's tail, not what plays now.
LIVE_S = 0.5


def frame(chunk: AudioChunk) -> bytes:
    return HEADER.pack(chunk.pos) + chunk.pcm


def notes_message(chunk: AudioChunk) -> str | None:
    if not chunk.notes:
        return None
    return json.dumps({"type": "notes", "notes": [
        {"pos": chunk.pos + n.offset, **n.model_dump(exclude={"offset"})} for n in chunk.notes]})


@dataclass(eq=False)
class Listener:
    """One client's queue of frames (bytes: audio, str: JSON events)."""

    limit: int
    max_drops: int
    queue: deque[bytes | str] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0
    closed: bool = False

    def offer(self, item: bytes | str) -> None:
        if self.closed:
            return
        if len(self.queue) >= self.limit:
            for i, old in enumerate(self.queue):  # lose the oldest audio, keep the events
                if isinstance(old, bytes):
                    del self.queue[i]
                    break
            else:
                self.queue.popleft()
            self.dropped += 1
            metrics.FRAMES_DROPPED.inc()
            if self.dropped > self.max_drops:
                self.closed = True
                metrics.SLOW_CLIENTS_CUT.inc()
        self.queue.append(item)
        self.ready.set()

    async def next(self) -> bytes | str | None:
        """The next frame, or None once the listener has been cut off."""
        while not self.queue:
            if self.closed:
                return None
            self.ready.clear()
            await self.ready.wait()
        return None if self.closed else self.queue.popleft()

    def close(self) -> None:
        self.closed = True
        self.ready.set()


class ChannelHub:
    """Reads ``pb:audio:<id>`` once and hands every chunk to this process's listeners."""

    def __init__(self, redis: Redis, cid: str, backlog_chunks: int,
                 on_empty: Callable[[str], Awaitable[None]], watch: RedisWatch) -> None:
        # ``redis`` is this hub's own client: its blocking read holds a connection, which is
        # closed with the hub, so open files fall back when listeners leave.
        self.redis, self.cid, self.watch = redis, cid, watch
        self.listeners: set[Listener] = set()
        # (when it was written, on our monotonic clock; its notes message; its frame)
        self.recent: deque[tuple[float, str | None, bytes]] = deque(
            maxlen=max(backlog_chunks, 1))
        self.backlog_chunks = backlog_chunks
        self.on_empty = on_empty
        self.task: asyncio.Task | None = None
        self.stopping = False
        self.heard = time.monotonic()  # when audio last arrived (or the hub started)

    async def start(self) -> None:
        """Fill the backlog from the stream's tail (if Redis answers), then follow it."""
        last: bytes | str = "$"
        try:
            entries = await self.redis.xrevrange(streams.audio(self.cid),
                                                 count=self.backlog_chunks)
        except REDIS_DOWN as exc:
            self.watch.failed(exc)
            entries = []
        now_ms, now = time.time() * 1000, time.monotonic()
        for entry_id, fields in reversed(entries):
            chunk = AudioChunk.from_fields(fields)
            written = now - (now_ms - int(streams.text(entry_id).split("-")[0])) / 1000
            self.recent.append((written, notes_message(chunk), frame(chunk)))
        if entries:
            last = entries[0][0]
        self.task = asyncio.create_task(self._follow(last))

    def silent_for(self) -> float:
        """Seconds since this channel last sent audio, while someone listens (else 0)."""
        return time.monotonic() - self.heard if self.listeners else 0.0

    def join(self, listener: Listener) -> None:
        """A new listener gets the backlog at once, but only audio of the current session: a
        channel waking from idle has an old tail in its stream, which would play as a
        fragment of the last session and then a cut to silence."""
        live = bool(self.recent) and time.monotonic() - self.recent[-1][0] < LIVE_S
        for _, notes, audio in self.recent if self.backlog_chunks and live else ():
            if notes:
                listener.offer(notes)
            listener.offer(audio)
        self.listeners.add(listener)
        metrics.LISTENERS.labels(self.cid).set(len(self.listeners))

    async def leave(self, listener: Listener) -> None:
        self.listeners.discard(listener)
        metrics.LISTENERS.labels(self.cid).set(len(self.listeners))
        if not self.listeners:
            await self.on_empty(self.cid)

    def broadcast(self, item: bytes | str) -> None:
        for listener in list(self.listeners):
            listener.offer(item)

    async def _follow(self, last: bytes | str) -> None:
        key = streams.audio(self.cid)
        while not self.stopping:
            try:
                found = await self.redis.xread({key: last}, block=1000, count=50)
            except REDIS_DOWN as exc:
                if self.stopping:  # redis-py reports a cancelled blocking read as an error
                    return
                await asyncio.sleep(self.watch.failed(exc))
                continue
            self.watch.ok()
            for _, entries in found:
                for entry_id, fields in entries:
                    last = entry_id
                    self.heard = time.monotonic()
                    chunk = AudioChunk.from_fields(fields)
                    notes, audio = notes_message(chunk), frame(chunk)
                    self.recent.append((time.monotonic(), notes, audio))
                    if notes:
                        self.broadcast(notes)
                    self.broadcast(audio)
                    metrics.CHUNKS_FANNED.inc()

    async def stop(self) -> None:
        self.stopping = True
        if self.task:
            self.task.cancel()
            done, _ = await asyncio.wait({self.task}, timeout=2)
            if not done:
                log.warning("channel %s: the audio reader did not stop in 2 s", self.cid)
        for listener in list(self.listeners):
            listener.close()
        with contextlib.suppress(*REDIS_DOWN):
            await self.redis.aclose()


class Hubs:
    """This process's hubs, the listener heartbeat that keeps channels playing, and the
    control stream reader that passes parameter changes and errors on to listeners."""

    def __init__(self, redis: Redis, replica: str, backlog_chunks: int,
                 reader: Callable[[], Redis], watch: RedisWatch) -> None:
        self.redis, self.replica, self.backlog_chunks = redis, replica, backlog_chunks
        self.reader, self.watch = reader, watch
        self.hubs: dict[str, ChannelHub] = {}
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []

    async def join(self, cid: str, listener: Listener) -> ChannelHub:
        # Under the lock that _empty takes too: a listener never joins a hub being stopped.
        async with self._lock:
            hub = self.hubs.get(cid)
            if hub is None:
                hub = ChannelHub(self.reader(), cid, self.backlog_chunks, self._empty,
                                 self.watch)
                await hub.start()
                self.hubs[cid] = hub
            hub.join(listener)
        with contextlib.suppress(*REDIS_DOWN):  # the heartbeat will try again
            await self.beat(cid, len(hub.listeners))  # a channel nobody heard starts at once
        return hub

    async def _empty(self, cid: str) -> None:
        async with self._lock:  # only the bookkeeping: nothing slow may hold up joins
            hub = self.hubs.get(cid)
            if hub is None or hub.listeners:
                return
            del self.hubs[cid]
        await hub.stop()
        with contextlib.suppress(*REDIS_DOWN):
            await self.redis.hdel(streams.listeners(cid), self.replica)

    async def beat(self, cid: str, count: int) -> None:
        now = int(time.time() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(streams.ACTIVE, {cid: now})
        pipe.hset(streams.listeners(cid), self.replica, count)
        pipe.expire(streams.listeners(cid), 5)
        await pipe.execute()

    async def heartbeat(self) -> None:
        while True:  # keep beating whatever happens: silence here stops every channel's music
            pause = 1.0
            for cid, hub in list(self.hubs.items()):
                try:
                    await self.beat(cid, len(hub.listeners))
                except REDIS_DOWN as exc:
                    pause = self.watch.failed(exc)
                    break
                except Exception:  # a bug here must not end the heartbeat of every channel
                    log.exception("heartbeat for channel %s failed", cid)
            await asyncio.sleep(min(pause, 1.0))

    async def control(self) -> None:
        """Forward pb:control events (params, error, tone) to the channel's listeners."""
        last: bytes | str = "$"
        while True:
            try:
                found = await self.redis.xread({streams.CONTROL: last}, block=1000, count=100)
            except REDIS_DOWN as exc:
                await asyncio.sleep(self.watch.failed(exc))
                continue
            self.watch.ok()
            for _, entries in found:
                for entry_id, fields in entries:
                    last = entry_id
                    try:
                        entry = ControlEntry.from_fields(fields)
                    except (ValueError, TypeError, KeyError):  # malformed: skip it, not the rest
                        log.warning("skipped a malformed control entry %s", entry_id)
                        continue
                    hub = self.hubs.get(entry.channel)
                    if hub:
                        hub.broadcast(json.dumps(entry.event()))

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self.heartbeat()), asyncio.create_task(self.control())]

    def silent(self, limit_s: float) -> dict[str, float]:
        """Channels with listeners here that have sent no audio for over ``limit_s``."""
        return {cid: round(hub.silent_for(), 1) for cid, hub in self.hubs.items()
                if hub.silent_for() > limit_s}

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for hub in list(self.hubs.values()):
            await hub.stop()
        self.hubs.clear()
