"""Events -> a standard MIDI file (type 1, one track), byte-for-byte deterministic: from an
improvisation's events (one tempo, one program), or from what a channel played, as it was
heard (its tempo map and program changes where they happened)."""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction

import mido

from playbach.schemas import NoteOn
from playbach.vocab import Event

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


def _save(track: mido.MidiTrack) -> bytes:
    out = io.BytesIO()
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    midi.save(file=out)
    return out.getvalue()
