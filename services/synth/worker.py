"""The synth loop: take channels by lease, render each a deep lead (seconds) ahead of its clock.

A channel's audio timeline is in samples, and its clock (``origin_ms``, when sample 0 plays) is
kept in Redis: a replica that takes over continues at the sample where the last one stopped,
on the same clock, while the gateways still play the lead the last one rendered. So a replica
that dies costs no silence. A change is not queued behind that lead: the instrument, the BPM, a
test tone and a new take of the notes are spliced in (a rewind, a new take number, a 10 ms
crossfade) at the first chunk that has not yet left a gateway. After Redis was away the clock
is re-anchored at the next sample: the timeline continues, with no burst of catch-up audio."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from pydantic import ValidationError

from playbach import streams
from playbach.schemas import (
    LEAD_S,
    NOTE_WAIT_S,
    NOTES_SPLICE_S,
    SPLICE_S,
    AudioChunk,
    ChannelParams,
    ControlEntry,
    NoteEvent,
    SynthPosition,
)
from playbach.worker import ChannelWorker
from synth.render import Pending, Renderer, instrument_names
from synth.settings import SynthSettings

log = logging.getLogger("synth")
MAX_BEHIND_S = 1.0  # further behind the wall clock than this (Redis was away): re-anchor
MIN_LEAD_S = 0.6  # below this the synth renders on without notes (it starves) rather than wait
BATCH = 4  # chunks written at a time: the first chunk of a splice goes out at once


def now_ms() -> float:
    return time.time() * 1000


@dataclass
class Voice:
    cid: str
    params: ChannelParams
    renderer: Renderer
    pos: int  # next sample to render
    origin_ms: float  # the channel's clock: when sample 0 plays (epoch ms)
    ver: int = 0  # the take being rendered
    notes_ver: int = 0  # the newest take of the notes seen
    read_id: str = "0-0"  # the last entry read from pb:notes:<id>
    outbox: list[AudioChunk] = field(default_factory=list)  # rendered, not yet in Redis

    def clock(self, rate: int) -> float:
        """The sample playing now."""
        return (now_ms() - self.origin_ms) * rate / 1000


class SynthWorker(ChannelWorker[Voice]):
    role = streams.SYNTH
    # a new take of the notes is spliced in NOTES_SPLICE_S after the clock: waiting for the
    # next tick (20 ms, 50 under load) spent a third of what inference leaves of that
    wakes = (streams.CONTROL, streams.TAKES)

    def __init__(self, redis, settings: SynthSettings, watch=None) -> None:
        super().__init__(redis, settings, watch)
        self.settings: SynthSettings = settings
        self.tones: set[str] = set()  # channels whose audio test was asked for
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
        renderer = Renderer(s.soundfont, s.sample_rate, s.gain, params.instrument,
                            s.loudness_db)
        saved = await SynthPosition.read(self.redis, cid)
        pos = saved.pos
        renderer.last_seq, renderer.last_id = saved.seq, saved.id
        renderer.last_start = saved.beat - saved.into
        played = await self.played(cid, saved)
        renderer.resume(pos, saved.beat, saved.into, played, params.bpm)
        # the same clock, if the lead the last owner rendered still plays; else a new one
        origin = saved.origin_ms
        ahead = (pos - (now_ms() - origin) * s.sample_rate / 1000) / s.sample_rate
        if not origin or not -MAX_BEHIND_S < ahead <= LEAD_S + 1:
            origin, ahead = now_ms() - pos * 1000 / s.sample_rate, 0.0
        log.info("channel %s: adopted at sample %d (note %d), %.2f s ahead of its clock",
                 cid, pos, renderer.last_seq, ahead)
        return Voice(cid, params, renderer, pos, origin, ver=saved.ver, read_id=saved.id,
                     notes_ver=played[-1].ver if played else 0)

    async def played(self, cid: str, saved: SynthPosition) -> list[NoteEvent]:
        """The last notes the previous owner started (the newest take of each), to pick up
        those still sounding."""
        if saved.seq < 0:
            return []
        entries = await self.redis.xrevrange(streams.notes(cid), max=saved.id, count=32)
        notes = NoteEvent.current([NoteEvent.from_fields(f) for _, f in reversed(entries)])
        return [n for n in notes if n.seq <= saved.seq]

    def release(self, cid: str, state: Voice) -> None:
        state.renderer.close()

    def heard(self, key: str, entries: list[tuple]) -> None:
        """Audio tests asked for (``tone`` on pb:control): played from the next tick."""
        if key != streams.CONTROL:
            return
        for _, fields in entries:
            try:
                entry = ControlEntry.from_fields(fields)
            except (ValueError, TypeError, KeyError):
                continue  # malformed: the gateway logs it
            if entry.type == "tone":
                self.tones.add(entry.channel)

    async def fetch_notes(self, voice: Voice) -> None:
        r = voice.renderer
        entries = await self.redis.xrange(streams.notes(voice.cid), min=f"({voice.read_id}",
                                          count=256)
        for entry_id, fields in entries:
            voice.read_id = streams.text(entry_id)
            note = NoteEvent.from_fields(fields)
            if note.ver < voice.notes_ver:
                continue  # an old take, written late
            if note.ver > voice.notes_ver:
                voice.notes_ver = note.ver
                self.retake(voice, note)
            last = r.pending[-1].note.seq if r.pending else r.last_seq
            if note.seq > last:  # a note re-published after Redis lost its data is skipped
                r.pending.append(Pending(note, voice.read_id))

    def retake(self, voice: Voice, first: NoteEvent) -> None:
        """Inference wrote the notes from ``first`` on again: forget the old ones, and if the
        old note is already rendered, go back to it (or as near as is still safe). A take
        that begins mid-note starts at the chunk boundary nearest its cut, ending the note
        that sounds there. So does a take whose first note would begin more than NOTE_WAIT_S
        after NOTES_SPLICE_S from now, where inference meant it to begin at the latest: its
        timeline had drifted from ours (measured: a chorale note 0.39 s out that inference
        saw at its cut, and the change was heard two writes late)."""
        r, seq, chunk = voice.renderer, first.seq, self.settings.chunk_frames
        rate = self.settings.sample_rate
        starts = {item.note.seq: at for at, item in r.started}
        if first.cut is not None and seq - 1 in starts:
            at = starts[seq - 1] + first.cut * 60 / voice.params.bpm * rate
            if self.splice(voice, math.ceil(at / chunk) * chunk) and r.last_seq == seq - 1:
                r.cut()
        elif seq in starts:
            at, meant = starts[seq] // chunk * chunk, self.boundary(voice, NOTES_SPLICE_S)
            if at - meant <= NOTE_WAIT_S * rate or not self.splice(voice, meant):
                self.splice(voice, at)
            elif r.last_seq == seq - 1:
                r.cut()
        while r.pending and r.pending[-1].note.seq >= seq:
            r.pending.pop()

    def boundary(self, voice: Voice, ahead_s: float = SPLICE_S) -> int:
        """The first chunk boundary ``ahead_s`` after the clock (SPLICE_S: the first whose
        audio has not left a gateway)."""
        s = self.settings
        return math.ceil((voice.clock(s.sample_rate) + ahead_s * s.sample_rate)
                         / s.chunk_frames) * s.chunk_frames

    def splice(self, voice: Voice, at: int = 0) -> bool:
        """Render again from the chunk boundary ``at``, or the first that has not left a
        gateway, whichever is later, as a new take. False if nothing is rendered there."""
        at = max(at, self.boundary(voice))
        if at >= voice.pos or not voice.renderer.can_rewind(at):
            return False  # nothing rendered there yet: the change applies from the next chunk
        voice.renderer.rewind(at)
        voice.outbox = [c for c in voice.outbox if c.pos < at]
        voice.pos, voice.ver = at, voice.ver + 1
        return True

    async def before_serving(self) -> None:
        for cid in self.tones & self.channels.keys():  # the others are their owners' to play
            self.splice(self.channels[cid])
            self.channels[cid].renderer.tone()
        self.tones.clear()

    async def serve(self, cid: str, voice: Voice) -> None:
        params = await ChannelParams.read(self.redis, cid)
        if params is None:
            return
        if (params.instrument, params.bpm) != (voice.params.instrument, voice.params.bpm):
            voice.renderer.set_program(params.instrument)
            self.splice(voice)
        voice.params = params
        await self.fetch_notes(voice)
        wrote = False
        for _ in range(32 // BATCH):  # at most 32 chunks a tick, written BATCH at a time
            if wrote and self.wake.is_set():
                break  # a change came: the rest of a re-rendered lead waits for it, not it
            if not self.render(voice, BATCH):
                break
            await self.flush(voice)
            wrote = True
        if not wrote:
            await self.flush(voice)  # our position, even with nothing new (inference reads it)

    def render(self, voice: Voice, most: int) -> bool:
        """Render up to ``most`` chunks towards the clock plus the lead, no further than the
        notes known (unless the lead runs low: then it starves, as late notes start late),
        and nothing while earlier chunks still wait for Redis. True if it rendered any."""
        s, r = self.settings, voice.renderer
        clock = voice.clock(s.sample_rate)
        if clock - voice.pos > MAX_BEHIND_S * s.sample_rate:
            log.warning("channel %s: %.1f s behind the clock (Redis was away?); the timeline "
                        "continues from sample %d", voice.cid,
                        (clock - voice.pos) / s.sample_rate, voice.pos)
            voice.origin_ms = now_ms() - voice.pos * 1000 / s.sample_rate
            clock = voice.pos
        r.forget(int(clock) - s.chunk_frames)
        beats_per_chunk = s.chunk_frames * voice.params.bpm / 60 / s.sample_rate
        count = 0
        while (count < most and len(voice.outbox) < 32
               and voice.pos + s.chunk_frames <= clock + s.lead_seconds * s.sample_rate):
            low = voice.pos - clock < MIN_LEAD_S * s.sample_rate
            if not low and r.tone_left <= 0 and r.beat + beats_per_chunk > r.known_until():
                break  # wait for notes while the lead lasts
            t, tone = time.perf_counter(), r.tone_left > 0
            pcm, ons = r.render(voice.pos, s.chunk_frames, voice.params.bpm)
            self.render_seconds += time.perf_counter() - t
            voice.outbox.append(AudioChunk(
                pos=voice.pos, rate=s.sample_rate, pcm=pcm.tobytes(), notes=ons, tone=tone,
                ver=voice.ver, due=round(voice.origin_ms + voice.pos * 1000 / s.sample_rate, 1)))
            voice.pos += s.chunk_frames
            count += 1
        return count > 0

    def playing(self, voice: Voice) -> tuple[int, float]:
        """What plays now: a note's seq and the beats since it started (from the mark of the
        chunk that holds the clock; the note started last before that chunk)."""
        s, r = self.settings, voice.renderer
        clock = voice.clock(s.sample_rate)
        before = [p for p in r.marks if p <= clock]
        if not before:
            return r.last_seq, r.beat - r.last_start
        mark = r.marks[max(before)]
        beat = mark.beat + (clock - max(before)) * voice.params.bpm / 60 / s.sample_rate
        return mark.last_seq, beat - mark.last_start

    async def flush(self, voice: Voice) -> None:
        """Write the rendered chunks and our position; kept for the next tick if Redis fails."""
        s, r = self.settings, voice.renderer
        pipe = self.redis.pipeline(transaction=False)
        for chunk in voice.outbox:
            pipe.xadd(streams.audio(voice.cid), chunk.to_fields(), maxlen=s.audio_maxlen,
                      approximate=True)
        lead_ms = (voice.pos - voice.clock(s.sample_rate)) * 1000 / s.sample_rate
        seq, into = self.playing(voice)
        SynthPosition(pos=voice.pos, beat=r.beat, seq=r.last_seq, id=r.last_id,
                      into=r.beat - r.last_start, lead_ms=round(lead_ms, 1),
                      starved=r.starved_chunks, replica=s.replica_id,
                      origin_ms=voice.origin_ms, ver=voice.ver,
                      clock_seq=seq, clock_into=round(into, 4),
                      clock_ms=round(now_ms(), 1)).write(pipe, voice.cid)
        await pipe.execute()
        self.chunks_written += len(voice.outbox)
        voice.outbox.clear()
