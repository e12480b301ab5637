"""The synth loop: take channels by lease, render each in real time, a short lead ahead.

A channel's audio timeline is in samples; its wall clock starts when a replica adopts it, so a
replica that takes over continues at the sample where the last one stopped."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from pydantic import ValidationError
from redis.asyncio import Redis

from playbach import streams
from playbach.leases import Leases, Ownership
from playbach.schemas import AudioChunk, ChannelParams, NoteEvent
from playbach.service import tick_until
from synth.render import Pending, Renderer, instrument_names
from synth.settings import SynthSettings

log = logging.getLogger("synth")


@dataclass
class Voice:
    cid: str
    params: ChannelParams
    renderer: Renderer
    pos: int  # next sample to render
    origin: float  # monotonic time of sample 0


class SynthWorker:
    def __init__(self, redis: Redis, settings: SynthSettings) -> None:
        self.redis, self.settings = redis, settings
        leases = Leases(redis, streams.SYNTH, settings.replica_id, settings.lease_ms)
        self.ownership = Ownership(leases, settings.idle_ms)
        self.voices: dict[str, Voice] = {}
        self.control_id = "$"
        self.chunks_written = 0
        self.render_seconds = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        names = instrument_names(self.settings.soundfont)
        await self.redis.hset(streams.INSTRUMENTS, mapping={str(k): v for k, v in names.items()})
        log.info("replica %s rendering with %s", self.settings.replica_id,
                 self.settings.soundfont.name)
        try:
            await tick_until(stop, self.settings.tick_ms / 1000, self.tick)
        finally:
            await self.ownership.release_all()
            for voice in self.voices.values():
                voice.renderer.close()

    async def tick(self) -> None:
        lost, gained = await self.ownership.reconcile()
        for cid in lost:
            log.info("channel %s: released (idle, or lease lost)", cid)
            voice = self.voices.pop(cid, None)
            if voice:
                voice.renderer.close()
        for cid in gained:
            try:
                await self.adopt(cid)
            except (ValidationError, ValueError) as exc:
                log.error("channel %s: cannot render: %s", cid, exc)
                await self.ownership.drop(cid)
        await self.read_control()
        for voice in list(self.voices.values()):
            await self.serve(voice)

    async def adopt(self, cid: str) -> None:
        params = await ChannelParams.read(self.redis, cid)
        if params is None:
            await self.ownership.drop(cid)
            return
        s = self.settings
        renderer = Renderer(s.soundfont, s.sample_rate, s.gain, params.instrument)
        saved = {streams.text(k): streams.text(v) for k, v in
                 (await self.redis.hgetall(streams.synth_position(cid))).items()}
        pos = int(saved.get("pos", 0))
        renderer.beat = renderer.next_beat = float(saved.get("beat", 0.0))
        renderer.last_seq = int(saved.get("seq", -1))
        renderer.last_id = saved.get("id", "0-0")
        self.voices[cid] = Voice(cid, params, renderer, pos, time.monotonic() - pos / s.sample_rate)
        log.info("channel %s: adopted at sample %d (note %d)", cid, pos, renderer.last_seq)

    async def read_control(self) -> None:
        """Audio-test requests for the channels we own."""
        entries = await self.redis.xread({streams.CONTROL: self.control_id}, count=100)
        for _, items in entries:
            for entry_id, fields in items:
                self.control_id = streams.text(entry_id)
                f = {streams.text(k): streams.text(v) for k, v in fields.items()}
                voice = self.voices.get(f.get("channel", ""))
                if f.get("type") == "tone" and voice:
                    voice.renderer.tone()
        if self.control_id == "$":
            last = await self.redis.xrevrange(streams.CONTROL, count=1)
            self.control_id = streams.text(last[0][0]) if last else "0-0"

    async def fetch_notes(self, voice: Voice) -> None:
        r = voice.renderer
        after = r.pending[-1].stream_id if r.pending else r.last_id
        entries = await self.redis.xrange(streams.notes(voice.cid), min=f"({after}", count=256)
        for entry_id, fields in entries:
            note = NoteEvent.from_fields(fields)
            if note.seq > r.last_seq:
                r.pending.append(Pending(note, streams.text(entry_id)))

    async def serve(self, voice: Voice) -> None:
        params = await ChannelParams.read(self.redis, voice.cid)
        if params is None:
            return
        voice.params = params
        voice.renderer.set_program(voice.params.instrument)
        await self.fetch_notes(voice)
        s = self.settings
        target = (time.monotonic() - voice.origin + s.lead_seconds) * s.sample_rate
        pipe = self.redis.pipeline(transaction=False)
        wrote = 0
        while voice.pos + s.chunk_frames <= target and wrote < 32:
            t, tone = time.perf_counter(), voice.renderer.tone_left > 0
            pcm, ons = voice.renderer.render(voice.pos, s.chunk_frames, voice.params.bpm)
            self.render_seconds += time.perf_counter() - t
            chunk = AudioChunk(pos=voice.pos, rate=s.sample_rate, pcm=pcm.tobytes(), notes=ons,
                               tone=tone)
            pipe.xadd(streams.audio(voice.cid), chunk.to_fields(), maxlen=s.audio_maxlen,
                      approximate=True)
            voice.pos += s.chunk_frames
            wrote += 1
        if wrote:
            r = voice.renderer
            lead_ms = (voice.pos / s.sample_rate - (time.monotonic() - voice.origin)) * 1000
            pipe.hset(streams.synth_position(voice.cid), mapping={
                "pos": voice.pos, "beat": r.beat, "seq": r.last_seq, "id": r.last_id,
                "into": r.beat - r.last_start,  # beats past the start of note `seq`
                "lead_ms": round(lead_ms, 1), "starved": r.starved_chunks,
                "replica": s.replica_id})
            await pipe.execute()
            self.chunks_written += wrote
