"""Events -> a standard MIDI file (type 1, one track), byte-for-byte deterministic: from an
improvisation's events (one tempo, one program), or from what a channel played, as it was
heard (its tempo map and program changes where they happened). And back: a file's notes as
events (``file_events``), for judging what a channel played."""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction

import mido

from playbach.schemas import NoteOn
from playbach.vocab import REST, Event, dynamic, pitch_token

TICKS_PER_BEAT = 480  # every grid duration (1/8 .. 4 quarters, triplets too) is whole ticks


def to_midi(events: Iterable[Event], bpm: float, program: int, channel: int = 0) -> bytes:
    """One track: tempo, program, then each event's notes on and off; rests only advance time."""
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name="Play Bach", time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.Message("program_change", program=program, channel=channel, time=0))
    wait = 0  # ticks since the last message
    for ev in events:
        ticks = int(Fraction(ev.duration) * TICKS_PER_BEAT)
        notes = ev.midi
        if not notes:
            wait += ticks
            continue
        for i, note in enumerate(notes):
            track.append(mido.Message("note_on", note=note, velocity=ev.midi_velocity,
                                      channel=channel, time=wait if i == 0 else 0))
        for i, note in enumerate(notes):
            track.append(mido.Message("note_off", note=note, velocity=0, channel=channel,
                                      time=ticks if i == 0 else 0))
        wait = 0
    track.append(mido.MetaMessage("end_of_track", time=wait))
    return _save(track)


def heard_midi(onsets: Iterable[tuple[float, NoteOn]], end_s: float, channel: int = 0) -> bytes:
    """What a channel played: each note-on at the second it sounded (``(start_s, note)``, in
    order), held its length in beats. A ``set_tempo`` wherever the BPM changed (a note's BPM
    is its beats over its seconds) and a ``program_change`` wherever the instrument did, so
    the file lasts as long as the audio (``end_s``) and sounds as it did."""
    messages: list[tuple[int, int, mido.Message | mido.MetaMessage]] = []  # tick, order, msg
    tick, at_s, bpm, program = 0, None, None, None
    for start_s, note in onsets:
        note_bpm = round(60 * note.beats / note.duration, 3) if note.duration > 0 else bpm
        if at_s is not None:
            tick += round((start_s - at_s) * (bpm or note_bpm) / 60 * TICKS_PER_BEAT)
        at_s = start_s
        if note_bpm != bpm:
            bpm = note_bpm
            messages.append((tick, 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))))
        if note.program != program:
            program = note.program
            messages.append((tick, 1, mido.Message("program_change", program=program,
                                                   channel=channel)))
        off = tick + max(1, round(note.beats * TICKS_PER_BEAT))
        for m in note.midi:
            messages.append((tick, 3, mido.Message("note_on", note=m, velocity=note.velocity,
                                                   channel=channel)))
            messages.append((off, 2, mido.Message("note_off", note=m, velocity=0,
                                                  channel=channel)))
    if at_s is not None:  # the silence after the last onset, to the end of the audio
        tick += max(0, round((end_s - at_s) * bpm / 60 * TICKS_PER_BEAT))
    track = mido.MidiTrack([mido.MetaMessage("track_name", name="Play Bach", time=0)])
    now = 0
    # offs before ons at one tick; a note still sounding at the end stops there, as the WAV
    for when, _, msg in sorted(messages, key=lambda m: (m[0], m[1])):
        when = min(when, tick)
        track.append(msg.copy(time=when - now))
        now = when
    track.append(mido.MetaMessage("end_of_track", time=tick - now))
    return _save(track)


SNAP = Fraction(1, 24)  # a heard note's onset may be a tick or two off the grid: snapped


def file_events(data: bytes) -> list[Event]:
    """The notes of a MIDI file as events, in quarter notes whatever the tempo (as the music
    was written, not as fast as it was played): the notes that start together are one event,
    lasting until the next event starts, or until they end followed by a rest."""
    midi = mido.MidiFile(file=io.BytesIO(data))
    starts: dict[int, list[tuple[int, int]]] = {}  # tick -> (note, velocity)
    ends: dict[int, int] = {}  # tick a note started -> when the first of them ended
    sounding: dict[int, int] = {}
    tick = 0
    for msg in mido.merge_tracks(midi.tracks):
        tick += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            starts.setdefault(tick, []).append((msg.note, msg.velocity))
            sounding[msg.note] = tick
        elif msg.type in ("note_off", "note_on") and msg.note in sounding:
            began = sounding.pop(msg.note)
            ends[began] = min(ends.get(began, tick), tick)
    per = Fraction(1, midi.ticks_per_beat)

    def snap(ticks: int) -> Fraction:
        return round(Fraction(ticks) * per / SNAP) * SNAP

    onsets = sorted(starts)
    out = []
    for at, after in zip(onsets, [*onsets[1:], None], strict=True):
        notes = sorted(starts[at])
        held = snap(ends.get(at, at) - at)
        gap = snap(after - at) if after is not None else held
        sounds = min(held, gap) if held > 0 else gap
        if sounds <= 0:
            continue
        out.append(Event(pitch_token(n for n, _ in notes), sounds,
                         dynamic(max(v for _, v in notes))))
        if gap > sounds:
            out.append(Event(REST, gap - sounds))
    return out


def _save(track: mido.MidiTrack) -> bytes:
    out = io.BytesIO()
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    midi.save(file=out)
    return out.getvalue()
