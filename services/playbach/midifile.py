"""Events -> a standard MIDI file (type 1, one track), byte-for-byte deterministic."""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction

import mido

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
    out = io.BytesIO()
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    midi.save(file=out)
    return out.getvalue()
