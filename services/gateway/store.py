"""Channels, models and instruments as the REST API sees them (Redis and MODELS_DIR)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import WatchError

from playbach import streams
from playbach.gm import PROGRAMS
from playbach.modeldir import ModelError, list_models, model_dir, read_meta
from playbach.schemas import (
    AudioChunk,
    ChannelParams,
    ChannelUpdate,
    ControlEntry,
    NoteOn,
    SynthPosition,
)


class Store:
    def __init__(self, redis: Redis, models_dir: Path) -> None:
        self.redis, self.models_dir = redis, Path(models_dir)

    # --- channels --------------------------------------------------------------------------

    async def exists(self, cid: str) -> bool:
        return bool(await self.redis.sismember(streams.CHANNELS, cid))

    async def params(self, cid: str) -> ChannelParams | None:
        return await ChannelParams.read(self.redis, cid)

    async def ids(self) -> list[str]:
        return sorted(streams.text(c) for c in await self.redis.smembers(streams.CHANNELS))

    async def all_params(self) -> dict[str, ChannelParams]:
        """Every channel's parameters, in one round trip after the list."""
        ids = await self.ids()
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hgetall(streams.channel(cid))
        out = {}
        for cid, fields in zip(ids, await pipe.execute(), strict=True):
            with contextlib.suppress(ValidationError):  # a hand-edited bad hash: not ours
                if fields:
                    out[cid] = ChannelParams.from_fields(fields)
        return out

    async def create(self, cid: str, params: ChannelParams) -> bool:
        """False if the channel exists already."""
        if not await self.redis.sadd(streams.CHANNELS, cid):
            return False
        await self.redis.hset(streams.channel(cid), mapping=params.to_fields())
        return True

    async def update(self, cid: str, change: ChannelUpdate) -> ChannelParams:
        """Read, change and store the parameters, and announce them, as one transaction
        (retried if another change came between): changes racing from a dragged slider or
        two gateways lose nothing, and the last one stored is the last one announced."""
        key, values = streams.channel(cid), change.model_dump(exclude_unset=True)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    fields = await pipe.hgetall(key)
                    current = ChannelParams.from_fields(fields) if fields else ChannelParams()
                    new = ChannelParams(**{**current.model_dump(), **values})
                    pipe.multi()
                    pipe.hset(key, mapping=new.to_fields())
                    self._announce(pipe, cid, "params", params=new.model_dump())
                    await pipe.execute()
                    return new
                except WatchError:
                    continue

    async def delete(self, cid: str) -> None:
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

    async def audio_span(self, cid: str, seconds: float) -> tuple[str, AudioChunk, int] | None:
        """The first chunk of the last ``seconds`` (its stream id and itself) and the frames
        from its start to the end of the newest chunk; None if there is no audio."""
        since = int((time.time() - seconds) * 1000)
        first = await self.redis.xrange(streams.audio(cid), min=f"{since}-0", count=1)
        last = await self.redis.xrevrange(streams.audio(cid), count=1)
        if not first or not last:
            return None
        head, tail = AudioChunk.from_fields(first[0][1]), AudioChunk.from_fields(last[0][1])
        limit = int(seconds * head.rate) + tail.frames
        return streams.text(first[0][0]), head, max(0, min(tail.pos + tail.frames - head.pos,
                                                           limit))

    async def heard_onsets(self, cid: str, seconds: float, page: int = 64
                           ) -> tuple[list[tuple[float, NoteOn]], float]:
        """The note-ons in the audio of the last ``seconds``, each at the second it sounds
        from the window's start, and the window's length: the notes as they were heard,
        with the BPM and instrument each was rendered with."""
        span = await self.audio_span(cid, seconds)
        if span is None:
            return [], 0.0
        first_id, head, frames = span
        onsets, end = [], head.pos + frames
        async for chunk in self._chunks(cid, first_id, page):
            if chunk.pos >= end:  # written since the span was measured
                break
            onsets += [((chunk.pos + n.offset - head.pos) / head.rate, n)
                       for n in chunk.notes if chunk.pos + n.offset < end]
        return onsets, frames / head.rate

    async def _chunks(self, cid: str, first_id: str, page: int) -> AsyncIterator[AudioChunk]:
        """The channel's audio chunks from entry ``first_id`` on, read a page at a time."""
        after = first_id
        while entries := await self.redis.xrange(streams.audio(cid), min=after, count=page):
            after = f"({streams.text(entries[-1][0])}"
            for _, fields in entries:
                yield AudioChunk.from_fields(fields)

    async def audio_pcm(self, cid: str, first_id: str, start: int, frames: int,
                        page: int = 64) -> AsyncIterator[bytes]:
        """Exactly ``frames`` of the channel's PCM from sample ``start``, a page of chunks at a
        time: gaps in the timeline are silence, overlaps are skipped, as a listener hears."""
        at, end, width = start, start + frames, 2  # width: bytes a frame
        async for chunk in self._chunks(cid, first_id, page):
            if at >= end:
                break
            width = 2 * chunk.channels
            if chunk.pos > at:
                yield bytes(width * min(chunk.pos - at, end - at))
                at = min(chunk.pos, end)
            data = chunk.pcm[(at - chunk.pos) * width:][:(end - at) * width]
            if data:
                yield data
                at += len(data) // width
        if at < end:  # the stream was trimmed meanwhile: keep the promised length
            yield bytes(width * (end - at))

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
