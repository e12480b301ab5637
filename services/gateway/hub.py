"""Fan-out: one Redis reader per channel per gateway process, many listeners behind it.

The synth writes seconds ahead; the hub holds that lead and sends each frame SEND_AHEAD_S
before it is due on the channel's clock (so a synth replica that dies is covered by the lead
held here, and a change is never queued behind it). A chunk of a newer take replaces the
frames from its position on: those still held are dropped, and those already sent go out again
(the player replaces them).

Broadcasting never waits on a listener. WebSocket listeners, and Ogg and MP3 listeners
without ICY titles, are written to directly: each message is framed once (``ws_frame``, an
HTTP chunk) and the same bytes go onto every listener's socket, with no task, queue or
framing per listener (bench/fanout.py: what this buys). The others (WAV, which trims late
takes per listener; MP3 with ICY titles, whose metadata falls at each listener's own byte
count) have a bounded queue that their own task empties. Either way a
client that does not take its audio loses frames (the oldest, for a queue) and then, if it
keeps losing them, its connection: a slow client never slows anyone else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from redis.asyncio import Redis

from gateway import metrics
from gateway.encode import OPUS_RATE, PACKET_SAMPLES, Encoder, OpusPackets
from playbach import streams
from playbach.schemas import COALESCE_S, SEND_AHEAD_S, AudioChunk, ControlEntry
from playbach.service import REDIS_DOWN, RedisWatch, follow, give_back_memory

log = logging.getLogger("gateway")
# binary frame: u64 little-endian sample position, u32 take, then s16le PCM
HEADER = struct.Struct("<QI")
PACKET_LENGTH = struct.Struct("<H")  # before each Opus packet in a frame
# When the newest frame sent was due longer ago than this, the channel is paused and its
# backlog is the last session's tail, not what plays now.
LIVE_S = 0.5
RESTART_S = 5.0  # a same-take chunk this far behind what was sent: the timeline restarted


def ws_frame(item: bytes | str) -> bytes:
    """A message as one unmasked, unfragmented WebSocket frame (RFC 6455, 5.2): binary for
    bytes, text for str. A server's frames are the same for every client, so one framing
    serves them all."""
    data, op = (item, 0x82) if isinstance(item, bytes) else (item.encode(), 0x81)
    n = len(data)
    if n < 126:
        head = bytes((op, n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", op, 126, n)
    else:
        head = struct.pack("!BBQ", op, 127, n)
    return head + data


def fan_out(listeners: Iterable[Listener], *items: bytes | str | None) -> None:
    """``items`` (a chunk's notes, then its audio) to each listener. Those written to directly
    get them framed once for all (once per framing) and in one write: a send is most of a
    listener's cost."""
    items = tuple(i for i in items if i is not None)
    wires: dict[Callable[[bytes | str], bytes], bytes] = {}
    audio, sent = any(isinstance(i, bytes) for i in items), 0
    for listener in list(listeners):
        if listener.transport is None:
            for item in items:
                listener.offer(item)
            continue
        framing = listener.framing
        wire = wires.get(framing)
        if wire is None:
            wire = wires[framing] = b"".join(framing(item) for item in items)
        sent += listener.write(wire, audio)
    if sent:
        metrics.FRAMES_SENT.inc(sent)


def frame(chunk: AudioChunk) -> bytes:
    return HEADER.pack(chunk.pos, chunk.ver) + chunk.pcm


def opus_frame(packets: list[tuple[int, bytes]], ver: int) -> bytes:
    """The player's Opus frame: the first packet's 48 kHz position and the take, then each
    packet (consecutive, 20 ms each) behind its u16 length. One frame per chunk, not per
    packet: a listener costs as many messages a second as with PCM."""
    return HEADER.pack(packets[0][0], ver) + b"".join(
        PACKET_LENGTH.pack(len(packet)) + packet for _, packet in packets)


def notes_message(chunk: AudioChunk) -> str | None:
    if not chunk.notes:
        return None
    return json.dumps({"type": "notes", "ver": chunk.ver, "notes": [
        {"pos": chunk.pos + n.offset, **n.model_dump(exclude={"offset"})} for n in chunk.notes]})


@dataclass
class Frame:
    """A chunk as the hub sends it."""

    pos: int
    end: int
    ver: int
    rate: int
    due: float  # epoch seconds
    notes: str | None
    audio: bytes

    @classmethod
    def of(cls, chunk: AudioChunk, written_ms: float) -> Frame:
        due = (chunk.due or written_ms) / 1000  # a chunk without a clock is due when written
        return cls(chunk.pos, chunk.pos + chunk.frames, chunk.ver, chunk.rate, due,
                   notes_message(chunk), frame(chunk))


class OpusSent(NamedTuple):
    """An Opus frame as sent to players, kept for joiners: its span at 48 kHz."""

    pos: int
    end: int
    due: float
    frame: bytes


H = TypeVar("H", Frame, OpusSent)


@dataclass(eq=False)
class Listener:
    """One client: its transport (a WebSocket's, or an Ogg or MP3 stream's), written to
    directly, or a queue of frames (bytes: audio, str: JSON events) that its own task sends."""

    limit: int  # frames the queue (or the socket's write buffer) may hold
    max_drops: int
    encoding: str | None = None  # a compressed stream ("ogg", "mp3"); None: PCM frames
    transport: asyncio.WriteTransport | None = None  # written to directly, if set
    framing: Callable[[bytes | str], bytes] = ws_frame  # how: a WebSocket's, or cuts.DirectStream's
    timeout: float = 5.0  # seconds a directly written socket may stay backed up
    backed_up: float = 0.0  # since when it has been (monotonic), or 0
    queue: deque[bytes | str] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0
    closed: bool = False
    started: bool = False  # has had the compressed stream's header

    def write(self, wire: bytes, audio: bool = True) -> int:
        """A framed message onto the socket now (1 if written). Audio is dropped while the
        client has not taken ``limit`` messages' worth; events always go. A client whose
        socket has not drained for ``timeout`` seconds is cut, as a queued listener whose
        send stalls that long is (listen._send)."""
        t = self.transport
        if self.closed or t is None or t.is_closing():
            self.closed = True
            return 0
        if not wire:  # nothing in this framing (an event, for an HTTP stream)
            return 0
        buffered = t.get_write_buffer_size()  # what the kernel's buffer could not take
        now = time.monotonic()
        self.backed_up = (self.backed_up or now) if buffered else 0.0
        if self.backed_up and now - self.backed_up > self.timeout:
            self.closed = True
            metrics.SLOW_CLIENTS_CUT.inc()
        elif audio and buffered > self.limit * len(wire):
            self._lost()
        else:
            t.write(wire)
            return 1
        if self.closed:
            t.abort()  # as cuts.cut: no closing handshake with a client that does not read
        return 0

    def _lost(self) -> None:
        self.dropped += 1
        metrics.FRAMES_DROPPED.inc()
        if self.dropped > self.max_drops:
            self.closed = True
            metrics.SLOW_CLIENTS_CUT.inc()

    def offer(self, item: bytes | str) -> None:
        if self.closed:
            return
        if self.transport is not None:
            self.write(self.framing(item), isinstance(item, bytes))
            return
        if len(self.queue) >= self.limit:
            for i, old in enumerate(self.queue):  # lose the oldest audio, keep the events
                if isinstance(old, bytes):
                    del self.queue[i]
                    break
            else:
                self.queue.popleft()
            self._lost()
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
                 on_empty: Callable[[str], Awaitable[None]], watch: RedisWatch,
                 held_chunks: int = 0) -> None:
        # ``redis`` is this hub's own client: its blocking read holds a connection, which is
        # closed with the hub, so open files fall back when listeners leave.
        self.redis, self.cid, self.watch = redis, cid, watch
        self.listeners: set[Listener] = set()
        # format -> its encoder (made with the first frame after its first listener joined)
        # and its listeners; "opus" (the player's packets) keeps what was sent as PCM does
        self.encoded: dict[str, tuple[Encoder | OpusPackets | None, set[Listener]]] = {}
        # What was sent, held for joiners: the last ``backlog_chunks`` for a new listener,
        # all ``held_chunks`` for a player that reconnects and resumes where it was.
        held = max(backlog_chunks, held_chunks, 1)
        self.opus_recent: deque[OpusSent] = deque(maxlen=held)
        self.recent: deque[Frame] = deque(maxlen=held)
        self.ahead: dict[int, Frame] = {}  # received, not yet due: pos -> frame
        self.ver = -1  # the newest take received
        self.params_rev = 0  # the newest parameters announced (Store.update)
        self.sent_to = -1  # the end of the frames sent
        self.wake = asyncio.Event()  # a frame came that may be due before the one awaited
        self.backlog_chunks = backlog_chunks
        self.on_empty = on_empty
        self.tasks: list[asyncio.Task] = []
        self.stopping = False
        self.heard = time.monotonic()  # when audio last went out (or the hub started)

    async def start(self) -> None:
        """Take the stream's tail (the lead, and the backlog before it) if Redis answers,
        then follow the stream and send each frame when it is due."""
        last: bytes | str = "$"
        try:
            entries = await self.tail()
        except REDIS_DOWN as exc:
            self.watch.failed(exc)
            entries = []
        for entry_id, chunk in reversed(entries):
            self.receive(chunk, streams.written_ms(entry_id))
        if entries:
            last = entries[0][0]
        # what was due before now is the backlog, not to be sent to nobody
        now = time.time()
        for pos in sorted(self.ahead):
            if self.ahead[pos].due > now:
                break
            self.recent.append(self.ahead.pop(pos))
            self.sent_to = self.recent[-1].end
        self.tasks = [asyncio.create_task(self._follow(last)), asyncio.create_task(self._pace())]

    async def tail(self, page: int = 64) -> list[tuple[bytes, AudioChunk]]:
        """The stream's newest entries, newest first: all not yet due (the lead, and the
        takes that replace part of it) and enough that were to fill what is held (with a
        page to spare for takes). Read a page at a time: hundreds of chunks in one reply
        made megabytes of short-lived buffers per channel, and the memory stayed."""
        out: list[tuple[bytes, AudioChunk]] = []
        before, past, now_ms = "+", 0, time.time() * 1000
        while past < (self.recent.maxlen or 0) + page:
            entries = await self.redis.xrevrange(streams.audio(self.cid), max=before, count=page)
            for entry_id, fields in entries:
                chunk = AudioChunk.from_fields(fields)
                out.append((entry_id, chunk))
                past += (chunk.due or streams.written_ms(entry_id)) <= now_ms
            if len(entries) < page:
                break
            before = f"({streams.text(entries[-1][0])}"
        return out

    def silent_for(self) -> float:
        """Seconds since this channel last sent audio, while someone listens (else 0)."""
        return time.monotonic() - self.heard if self.count() else 0.0

    def join(self, listener: Listener, resume: int | None = None) -> None:
        """A new listener gets the backlog at once, but only audio of the current session: a
        channel waking from idle has an old tail in its stream, which would play as a
        fragment of the last session and then a cut to silence. A player that reconnected
        (its gateway died) says where its audio ends (``resume``, at its codec's rate) and
        gets what is held from there instead, so it plays on without a gap. A listener to
        an Ogg or MP3 stream joins its format's encoder at the live point."""
        live = bool(self.recent) and time.time() - self.recent[-1].due < LIVE_S
        if listener.encoding == "opus":
            if self.encoded.get("opus", (None,))[0] is None and live:
                self._start_opus(resume)
            for *_, frame in self.held(self.opus_recent if live else (), resume):
                listener.offer(frame)
        if listener.encoding:
            self.encoded.setdefault(listener.encoding, (None, set()))[1].add(listener)
            return
        for sent in self.held(self.recent if live else (), resume):
            if sent.notes:
                listener.offer(sent.notes)
            listener.offer(sent.audio)
        self.listeners.add(listener)

    def held(self, kept: Iterable[H], resume: int | None) -> list[H]:
        """What a joiner gets of what was sent (Frames, or OpusSent): from ``resume`` on if
        that is held, else the last ``backlog_chunks``."""
        kept = list(kept)
        if resume is not None and kept and kept[0].pos <= resume:
            return [k for k in kept if k.end > resume]
        return kept[len(kept) - self.backlog_chunks:] if self.backlog_chunks else []

    def _start_opus(self, resume: int | None) -> None:
        """The first Opus player here: its encoder starts on the audio sent (from where the
        player resumes, or the backlog), so that player hears at once."""
        rate = self.recent[-1].rate
        encoder = OpusPackets(rate)
        self.encoded["opus"] = (encoder, self.encoded.get("opus", (None, set()))[1])
        metrics.ENCODERS.labels("opus").inc()
        pos = None if resume is None else resume * rate // OPUS_RATE
        for f in self.held(self.recent, pos):
            self._opus(encoder, f)

    def _opus(self, encoder: OpusPackets, f: Frame) -> bytes | None:
        """A frame's Opus packets as the player's frame (None until a packet is complete),
        kept for joiners."""
        packets = encoder.encode(f.pos, f.audio[HEADER.size:])
        if not packets:
            return None
        sent = OpusSent(packets[0][0], packets[-1][0] + PACKET_SAMPLES, f.due,
                        opus_frame(packets, f.ver))
        self.opus_recent.append(sent)
        return sent.frame

    def count(self) -> int:
        return len(self.listeners) + sum(len(m) for _, m in self.encoded.values())

    async def leave(self, listener: Listener) -> None:
        self.listeners.discard(listener)
        if listener.encoding in self.encoded:
            encoder, members = self.encoded[listener.encoding]
            members.discard(listener)
            if not members:  # the last one: its encoder goes too
                del self.encoded[listener.encoding]
                if listener.encoding == "opus":
                    self.opus_recent.clear()
                if encoder:
                    encoder.close()
                    metrics.ENCODERS.labels(listener.encoding).dec()
        if not self.count():
            await self.on_empty(self.cid)

    def broadcast(self, *items: bytes | str | None) -> None:
        fan_out(self.listeners, *items)

    def newer(self, entry: ControlEntry) -> bool:
        """False for parameters older than those passed on already (Store.update: racing
        changes may be announced out of order)."""
        if entry.type != "params":
            return True
        rev = int(entry.data.get("rev", 0))
        if rev and rev <= self.params_rev:
            return False
        self.params_rev = max(self.params_rev, rev)
        return True

    def announce(self, event: str) -> None:
        """An event (params, error) for every listener, whatever stream it takes."""
        self.broadcast(event)
        for _, members in self.encoded.values():
            fan_out(members, event)

    def receive(self, chunk: AudioChunk, written: float) -> None:
        """A chunk from the stream: held until due; a newer take drops what it replaces."""
        f = Frame.of(chunk, written)
        restarted = f.ver <= self.ver and f.pos < self.sent_to - RESTART_S * chunk.rate
        if restarted:  # the channel was made anew: a new timeline
            self.ahead.clear()
            self.sent_to = -1
        elif f.ver < self.ver:
            return  # an old take, written late by a replica that lost the channel
        elif f.ver > self.ver:
            for pos in [p for p in self.ahead if p >= f.pos]:
                del self.ahead[pos]
        self.ver = f.ver
        if f.pos >= self.sent_to:
            self.ahead[f.pos] = f
            self.wake.set()
        elif any(r.pos == f.pos and r.ver < f.ver for r in self.recent):
            self.send(f)  # replaces audio already sent: late, but still ahead of the players
        # else: the same take again (a backlog overlap): already sent

    def send(self, *frames: Frame) -> None:
        """Frames in timeline order (or one newer take of a frame sent) to every listener, in
        one write to each of those written to directly."""
        late = frames[0].pos < self.sent_to  # a newer take of a frame sent (then it is alone)
        items: list[bytes | str | None] = []
        for f in frames:
            if late:  # the backlog holds it instead of the old take
                self.recent = deque((f if r.pos == f.pos else r for r in self.recent),
                                    maxlen=self.recent.maxlen)
            else:
                self.recent.append(f)
            self.sent_to = max(self.sent_to, f.end)
            items += (f.notes, f.audio)
        self.heard = time.monotonic()
        self.broadcast(*items)
        try:
            if not late:  # an encoded stream cannot take audio back: it keeps the old take
                self.encode(frames)
        except Exception:  # a codec's failure must not stop the PCM listeners' audio
            log.exception("channel %s: encoding failed; its compressed listeners are cut",
                          self.cid)
            for _, members in self.encoded.values():
                for listener in members:
                    listener.close()
        metrics.CHUNKS_FANNED.inc(len(frames))

    def encode(self, frames: tuple[Frame, ...]) -> None:
        """The frames into each compressed stream someone listens to: encoded once, offered
        to each of its listeners (a newcomer first gets the stream's header)."""
        for name, (encoder, members) in list(self.encoded.items()):
            if encoder is None:
                encoder = OpusPackets(frames[0].rate) if name == "opus" else \
                    Encoder(name, frames[0].rate)
                self.encoded[name] = (encoder, members)
                metrics.ENCODERS.labels(name).inc()
            items: list[bytes | str | None] = []
            for f in frames:
                if isinstance(encoder, OpusPackets):  # the player's frames: one per chunk
                    parts = [self._opus(encoder, f)]
                else:  # a byte stream: its pages (or MP3 frames) in one piece, one send
                    parts = [b"".join(encoder.encode(f.audio[HEADER.size:]))]
                items += (f.notes, *(part for part in parts if part))
            for listener in list(members) if isinstance(encoder, Encoder) else ():
                if not listener.started:
                    for part in encoder.header:  # (whole after the first encode)
                        listener.offer(part)
                listener.started = True
            fan_out(members, *items)

    async def _pace(self) -> None:
        """Send each held frame SEND_AHEAD_S before it is due, in timeline order, with those
        due within COALESCE_S after it."""
        while not self.stopping:
            self.wake.clear()
            if not self.ahead:
                await self.wake.wait()
                continue
            f = self.ahead[min(self.ahead)]
            wait = f.due - SEND_AHEAD_S - time.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait)
                continue
            # with it, what is due within COALESCE_S: one write for both (schemas.py)
            until = time.time() + SEND_AHEAD_S + COALESCE_S
            batch = [self.ahead.pop(pos) for pos in sorted(self.ahead)
                     if self.ahead[pos].due <= until]
            self.send(*batch)

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
                    self.receive(AudioChunk.from_fields(fields), streams.written_ms(entry_id))

    async def stop(self) -> None:
        self.stopping = True
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            done, _ = await asyncio.wait(set(self.tasks), timeout=2)
            if len(done) < len(self.tasks):
                log.warning("channel %s: the audio reader did not stop in 2 s", self.cid)
        for listener in list(self.listeners):
            listener.close()
        for name, (encoder, members) in self.encoded.items():
            for listener in members:
                listener.close()
            if encoder:
                encoder.close()
                metrics.ENCODERS.labels(name).dec()
        self.recent.clear()  # now, not when the last reference goes: the memory is given
        self.opus_recent.clear()  # back right after this (Hubs._empty)
        self.ahead.clear()
        with contextlib.suppress(*REDIS_DOWN):
            await self.redis.aclose()


class Hubs:
    """This process's hubs, the listener heartbeat that keeps channels playing, and the
    control stream reader that passes parameter changes and errors on to listeners."""

    def __init__(self, redis: Redis, replica: str, backlog_chunks: int, held_chunks: int,
                 reader: Callable[[], Redis], watch: RedisWatch) -> None:
        self.redis, self.replica, self.backlog_chunks = redis, replica, backlog_chunks
        self.held_chunks = held_chunks
        self.reader, self.watch = reader, watch
        self.hubs: dict[str, ChannelHub] = {}
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []

    async def join(self, cid: str, listener: Listener, resume: int | None = None
                   ) -> ChannelHub:
        # Under the lock that _empty takes too: a listener never joins a hub being stopped.
        async with self._lock:
            hub = self.hubs.get(cid)
            if hub is None:
                hub = ChannelHub(self.reader(), cid, self.backlog_chunks, self._empty,
                                 self.watch, self.held_chunks)
                await hub.start()
                self.hubs[cid] = hub
            hub.join(listener, resume)
        with contextlib.suppress(*REDIS_DOWN):  # the heartbeat will try again
            await self.beat(cid, hub.count())  # a channel nobody heard starts at once
        return hub

    async def _empty(self, cid: str) -> None:
        async with self._lock:  # only the bookkeeping: nothing slow may hold up joins
            hub = self.hubs.get(cid)
            if hub is None or hub.count():
                return
            del self.hubs[cid]
        await hub.stop()
        give_back_memory()  # its held audio and encoders (playbach.service)
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
                    await self.beat(cid, hub.count())
                except REDIS_DOWN as exc:
                    pause = self.watch.failed(exc)
                    break
                except Exception:  # a bug here must not end the heartbeat of every channel
                    log.exception("heartbeat for channel %s failed", cid)
            await asyncio.sleep(min(pause, 1.0))

    async def control(self) -> None:
        """Forward pb:control events (params, error, tone) to the channel's listeners."""
        async for entries in follow(self.redis, streams.CONTROL, self.watch.failed,
                                    self.watch.ok):
            for entry_id, fields in entries:
                try:
                    entry = ControlEntry.from_fields(fields)
                except (ValueError, TypeError, KeyError):  # malformed: skip it, not the rest
                    log.warning("skipped a malformed control entry %s", entry_id)
                    continue
                hub = self.hubs.get(entry.channel)
                if hub and hub.newer(entry):
                    hub.announce(json.dumps(entry.event()))

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self.heartbeat()), asyncio.create_task(self.control())]

    def counts(self) -> dict[str, int]:
        """Listeners per channel in this process."""
        return {cid: hub.count() for cid, hub in list(self.hubs.items())}

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
