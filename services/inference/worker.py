"""The inference loop: take channels by lease, keep each a short lead of notes ahead of its synth.

Flow control is in beats on the channel's note timeline: the synth publishes the beat of the
last note it started; we write while our next note starts less than ``lead_seconds`` (at the
channel's BPM) after it. So a change of temperature or model is heard within about a second."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError
from redis.asyncio import Redis

from inference.models import ModelCache
from inference.settings import InferenceSettings
from playbach import streams
from playbach.leases import Leases, Ownership
from playbach.modeldir import ModelError
from playbach.schemas import ChannelParams, NoteEvent
from playbach.service import tick_until
from playbach.stepmodel import HISTORY, Improviser

log = logging.getLogger("inference")


@dataclass
class Owned:
    """A channel this replica generates."""

    cid: str
    params: ChannelParams
    improviser: Improviser
    seq: int  # of the next note
    beat: float  # where the next note starts
    beats: dict[int, float] = field(default_factory=dict)  # seq -> start beat, recent notes


class InferenceWorker:
    def __init__(self, redis: Redis, settings: InferenceSettings) -> None:
        self.redis, self.settings = redis, settings
        leases = Leases(redis, streams.INFERENCE, settings.replica_id, settings.lease_ms)
        self.ownership = Ownership(leases, settings.idle_ms)
        self.models = ModelCache(settings.models_dir, settings.model_cache)
        self.owned: dict[str, Owned] = {}
        self.notes_written = 0

    async def run(self, stop: asyncio.Event) -> None:
        log.info("replica %s serving channels", self.settings.replica_id)
        try:
            await tick_until(stop, self.settings.tick_ms / 1000, self.tick)
        finally:
            await self.ownership.release_all()

    async def tick(self) -> None:
        lost, gained = await self.ownership.reconcile()
        for cid in lost:
            log.info("channel %s: released (idle, or lease lost)", cid)
            self.owned.pop(cid, None)
        for cid in gained:
            try:
                await self.adopt(cid)
            except (ModelError, ValidationError) as exc:
                log.error("channel %s: cannot start: %s", cid, exc)
                await self.report(cid, "error", f"channel cannot start: {exc}")
                await self.ownership.drop(cid)
        for owned in list(self.owned.values()):
            await self.serve(owned)

    async def params(self, cid: str) -> ChannelParams | None:
        return await ChannelParams.read(self.redis, cid)

    async def adopt(self, cid: str) -> None:
        """Take a channel over, continuing from the last notes in its stream."""
        params = await self.params(cid)
        if params is None:
            await self.ownership.drop(cid)
            return
        entries = await self.redis.xrevrange(streams.notes(cid), count=HISTORY)
        recent = [NoteEvent.from_fields(f) for _, f in reversed(entries)]
        model = self.models.get(params.model)
        improviser = Improviser(model, params.temperature, params.seed,
                                history=[n.event() for n in recent])
        last = recent[-1] if recent else None
        owned = Owned(cid, params, improviser,
                      seq=last.seq + 1 if last else 0,
                      beat=last.beat + last.duration if last else 0.0,
                      beats={n.seq: n.beat for n in recent})
        self.owned[cid] = owned
        log.info("channel %s: adopted at note %d (model %s)", cid, owned.seq, params.model)

    async def apply(self, owned: Owned, new: ChannelParams) -> None:
        """Parameter changes take effect on the next note; a model that fails keeps the old."""
        old = owned.params
        if new.model != old.model:
            try:
                owned.improviser.use(self.models.get(new.model))
                log.info("channel %s: model %s -> %s", owned.cid, old.model, new.model)
            except ModelError as exc:
                await self.redis.hset(streams.channel(owned.cid), "model", old.model)
                await self.report(owned.cid, "error", f"model {new.model!r} refused, "
                                  f"still playing {old.model!r}: {exc}")
                new = new.model_copy(update={"model": old.model})
        if new.temperature != old.temperature:
            owned.improviser.temperature = new.temperature
        if new.seed != old.seed and new.seed is not None:
            owned.improviser.rng = np.random.default_rng(new.seed)
        owned.params = new

    async def serve(self, owned: Owned) -> None:
        new = await self.params(owned.cid)
        if new is None:  # deleted
            await self.ownership.drop(owned.cid)
            del self.owned[owned.cid]
            return
        if new != owned.params:
            await self.apply(owned, new)
        # Where the synth is, on our timeline: the start of the note it last began, plus how
        # far past that start it has rendered (a long note must not stall the next one).
        seq, into = await self.redis.hmget(streams.synth_position(owned.cid), "seq", "into")
        heard = owned.beats.get(int(seq)) if seq is not None else None
        if heard is not None:
            start = heard + float(into or 0)
        else:  # the synth has not started this channel yet: count from our first note
            start = owned.beats[min(owned.beats)] if owned.beats else owned.beat
        lead_beats = self.settings.lead_seconds * owned.params.bpm / 60
        pipe = self.redis.pipeline(transaction=False)
        written = 0
        while owned.beat < start + lead_beats and written < 64:
            ev = owned.improviser.next()
            note = NoteEvent.of(ev, owned.seq, owned.beat, owned.params,
                                self.settings.replica_id)
            pipe.xadd(streams.notes(owned.cid), note.to_fields(),
                      maxlen=self.settings.notes_maxlen, approximate=True)
            owned.beats[owned.seq] = owned.beat
            owned.seq += 1
            owned.beat += note.duration
            written += 1
        if written:
            await pipe.execute()
            self.notes_written += written
            for old in [s for s in owned.beats if s < owned.seq - 4 * HISTORY]:
                del owned.beats[old]

    async def report(self, cid: str, kind: str, message: str) -> None:
        await self.redis.xadd(streams.CONTROL, {"type": kind, "channel": cid,
                                                "message": message, "source": "inference"},
                              maxlen=1000, approximate=True)
