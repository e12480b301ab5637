"""Channels, models and instruments as the REST API sees them (Redis and MODELS_DIR)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import WatchError

from playbach import streams
from playbach.gm import PROGRAMS
from playbach.modeldir import ModelError, list_models, model_dir, read_meta
from playbach.schemas import (
    LEAD_S,
    AudioChunk,
    ChannelAccess,
    ChannelParams,
    ChannelUpdate,
    ControlEntry,
    NoteOn,
    SynthPosition,
)


async def _chain(first: AudioChunk, rest: AsyncIterator[AudioChunk]
                 ) -> AsyncIterator[AudioChunk]:
    yield first
    async for chunk in rest:
        yield chunk


@dataclass(frozen=True)
class Caps:
    """How many channels may exist, and how many one user may make."""

    total: int
    per_user: int


class Refused(Exception):
    """A channel was not made: ``status`` and a sentence saying why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


REV = "rev"  # a field of pb:channel:{<id>} beside the parameters: see Store.update


def next_rev(fields: dict) -> int:
    """The revision of a change to a hash read as ``fields``: one more than the stored one,
    and at least the time in µs, so it still grows after Redis lost the hash (restore does
    not put ``rev`` back)."""
    stored = fields.get(REV.encode(), fields.get(REV, 0))
    return max(int(stored) + 1, time.time_ns() // 1000)


# Add ARGV[1] to the set KEYS[1] unless it holds ARGV[2] members already: 1 if added, 0 if
# full, -1 if it was there.
_ADD_CAPPED = "if redis.call('sismember', KEYS[1], ARGV[1]) == 1 then return -1 end " \
              "if redis.call('scard', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end " \
              "return redis.call('sadd', KEYS[1], ARGV[1])"


class Store:
    def __init__(self, redis: Redis, models_dir: Path) -> None:
        self.redis, self.models_dir = redis, Path(models_dir)
        self._add_capped = redis.register_script(_ADD_CAPPED)

    # --- channels --------------------------------------------------------------------------

    async def exists(self, cid: str) -> bool:
        return bool(await self.redis.sismember(streams.CHANNELS, cid))

    async def params(self, cid: str) -> ChannelParams | None:
        return await ChannelParams.read(self.redis, cid)

    async def ids(self) -> list[str]:
        return sorted(streams.text(c) for c in await self.redis.smembers(streams.CHANNELS))

    async def access(self, cid: str) -> ChannelAccess | None:
        fields = await self.redis.hgetall(streams.channel(cid))
        return ChannelAccess.from_fields(fields) if fields else None

    async def visible_ids(self, user: str | None, admin: bool) -> list[str]:
        """The channels listed to this caller: all for the admin; the public ones and a
        guest's own for anyone else."""
        if admin:
            return await self.ids()
        found = set(await self.redis.smembers(streams.PUBLIC))
        if user:
            found |= set(await self.redis.smembers(streams.owned(user)))
        return sorted(streams.text(c) for c in found)

    async def all_records(self) -> dict[str, tuple[ChannelParams, ChannelAccess]]:
        """Every channel's parameters and access, in one round trip after the list."""
        ids = await self.ids()
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hgetall(streams.channel(cid))
        out = {}
        for cid, fields in zip(ids, await pipe.execute(), strict=True):
            with contextlib.suppress(ValidationError):  # a hand-edited bad hash: not ours
                if fields:
                    out[cid] = (ChannelParams.from_fields(fields),
                                ChannelAccess.from_fields(fields))
        return out

    async def create(self, cid: str, params: ChannelParams, access: ChannelAccess,
                     caps: Caps) -> None:
        """Store a new channel, or raise Refused: it exists, or a cap is reached. Each cap
        is a set's size, checked and added to in one script, so a burst of creations in
        parallel can neither pass it nor be refused short of it."""
        if await self.exists(cid):
            raise Refused(409, f"channel {cid!r} exists already")
        mine = streams.owned(access.owner) if access.owner else None
        if mine and not await self._add_capped(keys=[mine], args=[cid, caps.per_user]):
            raise Refused(429, f"you have {caps.per_user} channels, the most one user may "
                               "make; delete one of them first")
        added = await self._add_capped(keys=[streams.CHANNELS], args=[cid, caps.total])
        if added < 1 and mine:
            await self.redis.srem(mine, cid)
        if added < 0:
            raise Refused(409, f"channel {cid!r} exists already")
        if not added:
            raise Refused(429, f"the server holds its most channels ({caps.total}); listen to "
                               "one that exists, or try again when some are removed")
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(streams.channel(cid), mapping={**params.to_fields(), **access.to_fields()})
        access.index(pipe, cid)
        await pipe.execute()

    async def set_public(self, cid: str, public: bool) -> ChannelAccess:
        await self.redis.hset(streams.channel(cid), "public", "1" if public else "0")
        access = await self.access(cid) or ChannelAccess(public=public)
        pipe = self.redis.pipeline(transaction=False)
        access.index(pipe, cid)
        await pipe.execute()
        return access

    async def update(self, cid: str, change: ChannelUpdate) -> ChannelParams:
        """Read, change and store the parameters as one transaction (retried if another
        change came between), then announce them: changes racing from a dragged slider or two
        gateways lose nothing. The transaction holds only the channel's hash, which a Redis
        Cluster needs (pb:control lives in another slot), so announcements of racing changes
        can arrive out of order: each carries ``rev``, which grows with every change stored,
        and gateways pass on only a newer one than they passed (ChannelHub.newer)."""
        key, values = streams.channel(cid), change.model_dump(exclude_unset=True)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    fields = await pipe.hgetall(key)
                    current = ChannelParams.from_fields(fields) if fields else ChannelParams()
                    new = ChannelParams(**{**current.model_dump(), **values})
                    rev = next_rev(fields)
                    pipe.multi()
                    pipe.hset(key, mapping={**new.to_fields(), REV: rev})
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        await self.announce(cid, "params", params=new.model_dump(), rev=rev)
        return new

    async def delete(self, cid: str) -> None:
        access = await self.access(cid)
        if access and access.owner:
            await self.redis.srem(streams.owned(access.owner), cid)
        await self.redis.srem(streams.PUBLIC, cid)
        await self.redis.srem(streams.CHANNELS, cid)
        await self.redis.zrem(streams.ACTIVE, cid)
        await self.redis.delete(streams.channel(cid), streams.notes(cid), streams.audio(cid),
                                streams.synth_position(cid), streams.listeners(cid),
                                streams.stats(cid))

    async def announce(self, cid: str, kind: str, **data: Any) -> None:
        """An event on pb:control: services act on it, gateways pass it to listeners."""
        await self._announce(self.redis, cid, kind, **data)

    @staticmethod
    def _announce(redis, cid: str, kind: str, **data: Any):
        return ControlEntry(type=kind, channel=cid, data=data).post(redis)

    async def listeners(self, cid: str) -> int:
        counts = await self.redis.hvals(streams.listeners(cid))
        return sum(int(c) for c in counts)

    async def stats(self, cid: str) -> dict[str, Any]:
        """Rates over the last 10 s from the streams' own ids (ms timestamps)."""
        since = int(time.time() * 1000) - 10_000
        notes = await self.redis.xrange(streams.notes(cid), min=f"{since}-0", count=10_000)
        chunks = await self.redis.xrange(streams.audio(cid), min=f"{since}-0", count=10_000)
        pos = await SynthPosition.read(self.redis, cid)
        counters = {streams.text(k): int(v) for k, v in
                    (await self.redis.hgetall(streams.stats(cid))).items()}
        owner = await self.redis.get(streams.lease(streams.INFERENCE, cid))
        return {
            "listeners": await self.listeners(cid),
            "notes_per_s": len(notes) / 10, "chunks_per_s": len(chunks) / 10,
            "lead_ms": pos.lead_ms, "starved_chunks": pos.starved,
            "underruns": counters.get("underruns", 0),
            "inference": streams.text(owner) if owner else None, "synth": pos.replica,
        }

    async def heard(self, cid: str, seconds: float, page: int = 64
                    ) -> AsyncIterator[AudioChunk]:
        """The chunks of the last ``seconds`` as listeners heard them: in timeline order, each
        new take replacing the audio from its pos on, none not yet due. A page of entries at a
        time; a chunk is passed on once an entry written after it was due has been read (a
        take is always written before the audio it replaces is due)."""
        now = time.time() * 1000
        since = now - (seconds + LEAD_S + 1) * 1000  # the synth writes up to LEAD_S early
        held: list[AudioChunk] = []
        ver, done = -1, -1  # the take followed; the end of what was passed on
        after = f"{int(since)}-0"
        while entries := await self.redis.xrange(streams.audio(cid), min=after, count=page):
            after = f"({streams.text(entries[-1][0])}"
            for entry_id, fields in entries:
                written = streams.written_ms(entry_id)
                chunk = AudioChunk.from_fields(fields)
                chunk.due = chunk.due or written  # a chunk without a clock: due when written
                if chunk.ver < ver:
                    continue  # an old take, written late
                if chunk.ver > ver:
                    held = [c for c in held if c.pos < chunk.pos]
                    ver = chunk.ver
                for c in [c for c in held if c.due <= written]:
                    held.remove(c)
                    if c.due >= now - seconds * 1000 and c.pos >= done:
                        done = c.pos + c.frames
                        yield c
                held.append(chunk)
        for c in held:
            if now - seconds * 1000 <= c.due <= now and c.pos >= done:
                done = c.pos + c.frames
                yield c

    async def _heard_end(self, cid: str, page: int = 64) -> int:
        """Where the audio heard so far ends: the newest chunk due by now that no later take
        replaced, found by paging back from the stream's end."""
        now, before = time.time() * 1000, "+"
        starts: dict[int, int] = {}  # take -> the lowest pos it was written from, so far
        while entries := await self.redis.xrevrange(streams.audio(cid), max=before,
                                                    count=page):
            before = f"({streams.text(entries[-1][0])}"
            for entry_id, fields in entries:
                chunk = AudioChunk.from_fields(fields)
                due = chunk.due or streams.written_ms(entry_id)
                replaced = any(v > chunk.ver and p <= chunk.pos for v, p in starts.items())
                if due <= now and not replaced:
                    return chunk.pos + chunk.frames
                starts[chunk.ver] = min(starts.get(chunk.ver, chunk.pos), chunk.pos)
        return 0

    async def heard_onsets(self, cid: str, seconds: float, page: int = 64
                           ) -> tuple[list[tuple[float, NoteOn]], float]:
        """The note-ons in the audio of the last ``seconds``, each at the second it sounds
        from the window's start, and the window's length: the notes as they were heard,
        with the BPM and instrument each was rendered with."""
        onsets, first, end = [], None, 0
        async for chunk in self.heard(cid, seconds, page):
            first = chunk if first is None else first
            onsets += [((chunk.pos + n.offset - first.pos) / first.rate, n) for n in chunk.notes]
            end = chunk.pos + chunk.frames
        if first is None:
            return [], 0.0
        return onsets, (end - first.pos) / first.rate

    async def heard_pcm(self, cid: str, seconds: float, page: int = 64
                        ) -> tuple[AudioChunk, int, AsyncIterator[bytes]] | None:
        """The first chunk heard in the last ``seconds``, the frames from its start to now, and
        their PCM a page at a time: gaps in the timeline are silence, as a listener hears.
        None if there is no audio."""
        chunks = self.heard(cid, seconds, page)
        first = await anext(chunks, None)
        if first is None:
            return None
        start, width = first.pos, 2 * first.channels
        end = start + min(round(seconds * first.rate) + first.frames,
                          max(await self._heard_end(cid) - start, first.frames))

        async def pcm() -> AsyncIterator[bytes]:
            at = start
            async for chunk in _chain(first, chunks):
                if at >= end:
                    break
                if chunk.pos > at:
                    yield bytes(width * min(chunk.pos - at, end - at))
                    at = min(chunk.pos, end)
                data = chunk.pcm[(at - chunk.pos) * width:][:(end - at) * width]
                if data:
                    yield data
                    at += len(data) // width
            if at < end:  # the stream was trimmed meanwhile: keep the promised length
                yield bytes(width * (end - at))

        return first, end - start, pcm()

    async def count_underruns(self, cid: str, count: int) -> None:
        await self.redis.hincrby(streams.stats(cid), "underruns", count)

    # --- models and instruments --------------------------------------------------------------

    def model_names(self) -> list[str]:
        return list_models(self.models_dir)

    def model_meta(self, name: str) -> dict[str, Any]:
        """Raises ModelError (unknown or unreadable)."""
        path = model_dir(self.models_dir, name)
        if name not in self.model_names():
            raise ModelError(f"unknown model {name!r}; available: {', '.join(self.model_names())}")
        return read_meta(path)

    def model_summary(self, name: str) -> dict[str, Any]:
        meta = self.model_meta(name)
        m = meta.get("metrics", {})
        test = m.get("network", {}).get("test", {})
        ngram = m.get("ngram", {}).get("test", {})
        return {
            "name": name, "created": meta.get("created"),
            "corpus": meta.get("corpus", {}).get("source"),
            "pieces": meta.get("corpus", {}).get("pieces"),
            "parameters": meta.get("model", {}).get("parameters"),
            "test_accuracy": {h: v.get("accuracy") for h, v in test.items()},
            "test_perplexity": {h: v.get("perplexity") for h, v in test.items()},
            "ngram_accuracy": {h: v.get("accuracy") for h, v in ngram.items()},
        }

    async def instruments(self) -> list[dict[str, Any]]:
        """The SoundFont's names as the synth published them, else the GM standard names."""
        names = {int(streams.text(k)): streams.text(v) for k, v in
                 (await self.redis.hgetall(streams.INSTRUMENTS)).items()}
        return [{"program": p, "name": names.get(p, PROGRAMS[p]), "gm_name": PROGRAMS[p]}
                for p in range(128)]
