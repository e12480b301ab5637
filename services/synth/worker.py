"""The synth loop: take channels by lease, render each in real time, a short lead ahead.

A channel's audio timeline is in samples; its wall clock starts when a replica adopts it, so a
replica that takes over continues at the sample where the last one stopped. After Redis was
away the clock is re-anchored at the next sample: the timeline continues, with no burst of
catch-up audio and no jump."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from pydantic import ValidationError

from playbach import streams
from playbach.schemas import AudioChunk, ChannelParams, ControlEntry, NoteEvent, SynthPosition
from playbach.worker import ChannelWorker
from synth.render import Pending, Renderer, instrument_names
from synth.settings import SynthSettings

log = logging.getLogger("synth")
MAX_BEHIND_S = 1.0  # further behind the wall clock than this (Redis was away): re-anchor


@dataclass
class Voice:
    cid: str
    params: ChannelParams
    renderer: Renderer
    pos: int  # next sample to render
    origin: float  # monotonic time of sample 0
    outbox: list[AudioChunk] = field(default_factory=list)  # rendered, not yet in Redis


class SynthWorker(ChannelWorker[Voice]):
    role = streams.SYNTH

    def __init__(self, redis, settings: SynthSettings, watch=None) -> None:
        super().__init__(redis, settings, watch)
        self.settings: SynthSettings = settings
        self.control_id = "$"
        self.chunks_written = 0
        self.render_seconds = 0.0
        self.instruments: dict[str, str] = {}

    async def starting(self) -> None:
        names = instrument_names(self.settings.soundfont)
        self.instruments = {str(k): v for k, v in names.items()}
        log.info("rendering with %s", self.settings.soundfont.name)

    async def republish(self) -> None:
        """The SoundFont's instrument names, and our channels with their parameters."""
        await self.redis.hset(streams.INSTRUMENTS, mapping=self.instruments)
        for cid, voice in self.channels.items():
            await voice.params.restore(self.redis, cid)

    async def adopt(self, cid: str) -> Voice | None:
        try:
            params = await ChannelParams.read(self.redis, cid)
        except ValidationError as exc:
            log.error("channel %s: cannot render: %s", cid, exc)
            return None
        if params is None:
            return None
        s = self.settings
        renderer = Renderer(s.soundfont, s.sample_rate, s.gain, params.instrument)
        saved = await SynthPosition.read(self.redis, cid)
        pos = saved.pos
        renderer.beat = renderer.next_beat = saved.beat
        renderer.last_seq, renderer.last_id = saved.seq, saved.id
        log.info("channel %s: adopted at sample %d (note %d)", cid, pos, renderer.last_seq)
        return Voice(cid, params, renderer, pos, time.monotonic() - pos / s.sample_rate)

    def release(self, cid: str, state: Voice) -> None:
        state.renderer.close()

    async def read_control(self) -> None:
        """Audio-test requests for the channels we own."""
        entries = await self.redis.xread({streams.CONTROL: self.control_id}, count=100)
        for _, items in entries:
            for entry_id, fields in items:
                self.control_id = streams.text(entry_id)
                try:
                    entry = ControlEntry.from_fields(fields)
                except (ValueError, TypeError, KeyError):
                    continue  # malformed: the gateway logs it
                voice = self.channels.get(entry.channel)
                if entry.type == "tone" and voice:
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
            last = r.pending[-1].note.seq if r.pending else r.last_seq
            if note.seq > last:  # a note re-published after Redis lost its data is skipped
                r.pending.append(Pending(note, streams.text(entry_id)))

    async def before_serving(self) -> None:
        await self.read_control()

    async def serve(self, cid: str, voice: Voice) -> None:
        params = await ChannelParams.read(self.redis, cid)
        if params is None:
            return
        voice.params = params
        voice.renderer.set_program(voice.params.instrument)
        await self.fetch_notes(voice)
        self.render(voice)
        await self.flush(voice)

    def render(self, voice: Voice) -> None:
        """Render up to the wall clock plus the lead (at most 32 chunks, and nothing while
        earlier chunks still wait for Redis)."""
        s = self.settings
        behind = time.monotonic() - voice.origin - voice.pos / s.sample_rate
        if behind > MAX_BEHIND_S:
            log.warning("channel %s: %.1f s behind the clock (Redis was away?); the timeline "
                        "continues from sample %d", voice.cid, behind, voice.pos)
            voice.origin = time.monotonic() - voice.pos / s.sample_rate
        target = (time.monotonic() - voice.origin + s.lead_seconds) * s.sample_rate
        while voice.pos + s.chunk_frames <= target and len(voice.outbox) < 32:
            t, tone = time.perf_counter(), voice.renderer.tone_left > 0
            pcm, ons = voice.renderer.render(voice.pos, s.chunk_frames, voice.params.bpm)
            self.render_seconds += time.perf_counter() - t
            voice.outbox.append(AudioChunk(pos=voice.pos, rate=s.sample_rate, pcm=pcm.tobytes(),
                                           notes=ons, tone=tone))
            voice.pos += s.chunk_frames

    async def flush(self, voice: Voice) -> None:
        """Write the rendered chunks and our position; kept for the next tick if Redis fails."""
        if not voice.outbox:
            return
        s, r = self.settings, voice.renderer
        pipe = self.redis.pipeline(transaction=False)
        for chunk in voice.outbox:
            pipe.xadd(streams.audio(voice.cid), chunk.to_fields(), maxlen=s.audio_maxlen,
                      approximate=True)
        lead_ms = (voice.pos / s.sample_rate - (time.monotonic() - voice.origin)) * 1000
        SynthPosition(pos=voice.pos, beat=r.beat, seq=r.last_seq, id=r.last_id,
                      into=r.beat - r.last_start, lead_ms=round(lead_ms, 1),
                      starved=r.starved_chunks, replica=s.replica_id).write(pipe, voice.cid)
        await pipe.execute()
        self.chunks_written += len(voice.outbox)
        voice.outbox.clear()
