"""One channel's sound: a FluidSynth instance and a timeline in beats.

Notes are played back to back in the order of their sequence numbers: each starts where the one
before it ends, on the synth's own beat clock. BPM converts beats to samples chunk by chunk, so
a tempo change applies from the next chunk on; if the next note has not arrived in time it
starts late rather than being skipped.

The renderer can go back: it marks its state at every chunk boundary it renders, and
:meth:`Renderer.rewind` returns to one, puts the notes started since back in line, and
re-plays the notes still sounding there (into nothing) so the new take starts with the same
sound and fades in from the old one."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import fluidsynth
import numpy as np

from playbach.schemas import NoteEvent, NoteOn

TONE_HZ, TONE_SECONDS, TONE_LEVEL = 440.0, 1.0, 0.25  # the audio test: A4 at -12 dBFS
SPLICE_SECONDS = 0.01  # a 10 ms raised-cosine crossfade at every splice, never a click
PREROLL_SECONDS = (1.0, 6.0)  # re-played before a rewind: at least (reverb), at most


@dataclass(frozen=True)
class Mark:
    """The renderer's state at a chunk boundary: where a rewind can start again."""

    beat: float
    next_beat: float
    sounding: tuple[tuple[float, tuple[int, ...]], ...]
    last_seq: int
    last_id: str
    last_start: float
    tone_left: int
    playing_tone: bool
    last_sample: float


@dataclass
class Pending:
    note: NoteEvent
    stream_id: str


def load_soundfont(synth: fluidsynth.Synth, path: Path) -> int:
    sfid = synth.sfload(str(path))
    if sfid < 0:
        raise ValueError(f"FluidSynth could not load the SoundFont {path}")
    return sfid


def instrument_names(path: Path) -> dict[int, str]:
    """Program -> preset name of bank 0, as the SoundFont names them."""
    synth = fluidsynth.Synth()
    try:
        sfid = load_soundfont(synth, path)
        return {p: (synth.sfpreset_name(sfid, 0, p) or f"Program {p}") for p in range(128)}
    finally:
        synth.delete()


KNEE = 0.7  # of full scale: above it the limiter bends the wave, so nothing ever clips


def limit(x: np.ndarray) -> np.ndarray:
    """A soft limiter without memory (a rewind or splice renders the same samples again):
    the identity up to KNEE, then a tanh curve that approaches full scale and never reaches
    it (in floating point), so a loud chord is rounded off instead of clipped."""
    over = np.abs(x) > KNEE
    if over.any():
        a = np.abs(x[over])
        x[over] = np.sign(x[over]) * (KNEE + (1 - KNEE) * np.tanh((a - KNEE) / (1 - KNEE)))
    return x


class Renderer:
    def __init__(self, soundfont: Path, rate: int, gain: float, program: int,
                 loudness_db: float = 0.0) -> None:
        self.rate = rate
        # FluidSynth renders with headroom (its own clipping is hard); the level a listener
        # expects from a radio comes after it, through the limiter
        self.makeup = 10 ** (loudness_db / 20) / 2 / 32768  # the mean of two channels too
        self.synth = fluidsynth.Synth(samplerate=float(rate), gain=gain)
        self.sfid = load_soundfont(self.synth, soundfont)
        self.program = -1
        self.set_program(program)
        self.pending: deque[Pending] = deque()
        self.sounding: list[tuple[float, tuple[int, ...]]] = []  # (end beat, notes)
        self.beat = 0.0  # the synth's beat clock at the next frame to render
        self.next_beat = 0.0  # where the next pending note starts
        self.last_seq = -1  # last note started
        self.last_start = 0.0  # and where, on this beat clock
        self.last_id = "0-0"  # its stream id: a new owner reads the notes after it
        self.starved_chunks = 0  # chunks with no note to start in time (inference behind)
        self.tone_left = 0  # frames of test tone still to play
        self.playing_tone = False  # what the last chunk was: a switch is a splice
        self.last_sample = 0.0  # the last sample rendered, to splice from
        self.marks: dict[int, Mark] = {}  # chunk start -> state there
        self.rendered: dict[int, np.ndarray] = {}  # chunk start -> its PCM (to fade from)
        self.log: deque[tuple[int, int, tuple[int, ...], int]] = deque()  # (sample, on, midi,
        self.started: deque[tuple[int, Pending]] = deque()  # velocity); (sample, note)
        self.fade_from: np.ndarray | None = None  # the old take where the new one starts

    def close(self) -> None:
        self.synth.delete()

    def set_program(self, program: int) -> None:
        if program != self.program:
            self.synth.program_select(0, self.sfid, 0, program)
            self.program = program

    def _segment(self, frames: int) -> np.ndarray:
        if frames <= 0:
            return np.zeros(0, np.int16)
        stereo = np.asarray(self.synth.get_samples(frames), np.float64).reshape(-1, 2)
        return np.round(limit(stereo.sum(axis=1) * self.makeup) * 32767).astype(np.int16)

    def tone(self) -> None:
        self.tone_left = int(TONE_SECONDS * self.rate)

    def known_until(self) -> float:
        """The beat where the notes known so far end: rendering past it would starve."""
        end = self.next_beat
        for item in self.pending:
            end += item.note.duration
        return end

    def render(self, pos: int, frames: int, bpm: float) -> tuple[np.ndarray, list[NoteOn]]:
        """``frames`` of mono PCM from sample ``pos``, and the note-ons inside them. Where the
        audio test tone starts or stops, and where a new take starts, the new sound fades in
        from the old."""
        self.marks[pos] = Mark(self.beat, self.next_beat, tuple(self.sounding), self.last_seq,
                               self.last_id, self.last_start, self.tone_left,
                               self.playing_tone, self.last_sample)
        tone = self.tone_left > 0
        pcm, ons = (self._tone(pos, frames), []) if tone else self._music(pos, frames, bpm)
        if self.fade_from is not None:
            pcm = self._splice(pcm, self.fade_from)
        elif tone != self.playing_tone:
            pcm = self._splice(pcm, np.full(len(pcm), self.last_sample))
        self.fade_from = None
        self.playing_tone = tone
        if len(pcm):
            self.last_sample = float(pcm[-1])
        self.rendered[pos] = pcm
        return pcm, ons

    def _splice(self, pcm: np.ndarray, before: np.ndarray) -> np.ndarray:
        n = min(len(pcm), len(before), max(1, round(SPLICE_SECONDS * self.rate)))
        w = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 1) / n)  # 0 -> 1, smoothly
        out = pcm.astype(np.float64)
        out[:n] = before[:n] * (1 - w) + out[:n] * w
        return np.round(out).astype(np.int16)

    def can_rewind(self, pos: int) -> bool:
        return pos in self.marks

    def rewind(self, pos: int) -> None:
        """Go back to the chunk boundary ``pos`` (see :meth:`can_rewind`): the notes started
        from there on wait again, the next chunk rendered fades in from the old one, and the
        program set now sounds from ``pos`` on, held notes included."""
        mark = self.marks[pos]
        again = [item for start, item in self.started if start >= pos]
        self.started = deque((start, item) for start, item in self.started if start < pos)
        self.pending.extendleft(reversed(again))
        self.fade_from = self.rendered.get(pos)
        self.marks = {p: m for p, m in self.marks.items() if p < pos}
        self.rendered = {p: a for p, a in self.rendered.items() if p < pos}
        self.log = deque(e for e in self.log if e[0] < pos)
        self.beat, self.next_beat = mark.beat, mark.next_beat
        self.sounding = list(mark.sounding)
        self.last_seq, self.last_id, self.last_start = mark.last_seq, mark.last_id, mark.last_start
        self.tone_left, self.playing_tone = mark.tone_left, mark.playing_tone
        self.last_sample = mark.last_sample
        self._preroll(pos)

    def cut(self) -> None:
        """The next note starts now, and what sounds ends now (a take begun mid-note)."""
        self.next_beat = self.beat
        self.sounding = [(min(end, self.beat), midis) for end, midis in self.sounding]

    def resume(self, pos: int, beat: float, into: float, played: list[NoteEvent],
               bpm: float) -> None:
        """Take over at sample ``pos`` (beat ``beat``) from another renderer, whose last note
        (``played[-1]``) began ``into`` beats before: the notes still sounding there sound
        on (pre-rolled), and the next note starts where that one ends."""
        per_beat = 60 / bpm * self.rate  # samples

        def sample(b: float) -> int:
            return pos - round((beat - b) * per_beat)

        self.beat, start = beat, beat - into
        events: list[tuple[int, int, tuple[int, ...], int]] = []
        for i, note in enumerate(reversed(played)):
            start -= note.duration if i else 0  # back to back, from the last one started
            end, midis = start + note.duration, tuple(note.midi)
            if sample(end) <= pos - round(PREROLL_SECONDS[1] * self.rate):
                break
            events.append((sample(start), 1, midis, note.velocity))
            if sample(end) <= pos:
                events.append((sample(end), 0, midis, 0))
            else:
                self.sounding.append((end, midis))
        self.log = deque(sorted(events, key=lambda e: (e[0], e[1])))
        last = played[-1] if played else None
        self.next_beat = max(beat, beat - into + last.duration) if last else beat
        self._preroll(pos)

    def _preroll(self, pos: int) -> None:
        """Silence the synth, then play what sounds at ``pos`` (from the earliest start of a
        held note, at least a reverb's length before) into nothing."""
        program, self.program = self.program, -1
        self.synth.system_reset()
        self.set_program(program)
        held: dict[int, int] = {}  # midi -> its start
        for sample, on, midis, _ in self.log:
            for m in midis:
                if on:
                    held[m] = sample
                else:
                    held.pop(m, None)
        least, most = (round(s * self.rate) for s in PREROLL_SECONDS)
        start = max(pos - most, min([pos - least, *held.values()]))
        at = start
        for sample, on, midis, velocity in self.log:
            if sample < start:
                continue
            self.synth.get_samples(sample - at)
            at = sample
            for m in midis:
                if on:
                    self.synth.noteon(0, m, velocity)
                else:
                    self.synth.noteoff(0, m)
        self.synth.get_samples(pos - at)

    def forget(self, before: int) -> None:
        """Drop what no rewind can reach: marks and audio before ``before``, and the log of
        notes older than a pre-roll."""
        self.marks = {p: m for p, m in self.marks.items() if p >= before}
        self.rendered = {p: a for p, a in self.rendered.items() if p >= before}
        oldest = before - round(PREROLL_SECONDS[1] * self.rate)
        while self.log and self.log[0][0] < oldest:
            self.log.popleft()
        while self.started and self.started[0][0] < oldest:
            self.started.popleft()

    def _music(self, pos: int, frames: int, bpm: float) -> tuple[np.ndarray, list[NoteOn]]:
        per_frame = bpm / 60 / self.rate  # beats per frame
        end = self.beat + frames * per_frame
        if not self.pending and self.next_beat < end:
            self.next_beat = end  # nothing to play yet: the next note starts late
            self.starved_chunks += 1
        actions: list[tuple[int, int, object]] = []  # (frame offset, 0 off / 1 on, payload)
        for end_beat, midis in self.sounding:
            if end_beat < end:
                actions.append((max(0, round((end_beat - self.beat) / per_frame)), 0, midis))
        self.sounding = [s for s in self.sounding if s[0] >= end]
        while self.pending and self.next_beat < end:
            item = self.pending.popleft()
            offset = max(0, min(frames - 1, round((self.next_beat - self.beat) / per_frame)))
            actions.append((offset, 1, item))
            note_end = self.next_beat + item.note.duration
            if note_end < end:
                actions.append((round((note_end - self.beat) / per_frame), 0,
                                tuple(item.note.midi)))
            else:
                self.sounding.append((note_end, tuple(item.note.midi)))
            self.next_beat = note_end
        actions.sort(key=lambda a: (a[0], a[1]))
        out, ons, done = [], [], 0
        for offset, kind, payload in actions:
            offset = min(offset, frames)
            out.append(self._segment(offset - done))
            done = max(done, offset)
            if kind == 0:
                for m in payload:  # type: ignore[union-attr]
                    self.synth.noteoff(0, m)
                self.log.append((pos + offset, 0, tuple(payload), 0))  # type: ignore[arg-type]
                continue
            note = payload.note  # type: ignore[union-attr]
            for m in note.midi:
                self.synth.noteon(0, m, note.velocity)
            self.log.append((pos + offset, 1, tuple(note.midi), note.velocity))
            self.started.append((pos + offset, payload))  # type: ignore[arg-type]
            ons.append(NoteOn(offset=offset, seq=note.seq, pitch=note.pitch, midi=note.midi,
                              velocity=note.velocity, duration=note.duration * 60 / bpm,
                              beats=note.duration, program=self.program, model=note.model,
                              temperature=note.temperature, top_p=note.top_p,
                              key=k.name if (k := note.the_key()) else ""))
            self.last_seq, self.last_id = note.seq, payload.stream_id  # type: ignore[union-attr]
            self.last_start = self.beat + offset * per_frame
        out.append(self._segment(frames - done))
        self.beat = end
        return np.concatenate(out), ons

    def _tone(self, pos: int, frames: int) -> np.ndarray:
        t = (np.arange(frames) + pos) / self.rate
        self.tone_left = max(0, self.tone_left - frames)
        return (np.sin(2 * np.pi * TONE_HZ * t) * TONE_LEVEL * 32767).astype(np.int16)
