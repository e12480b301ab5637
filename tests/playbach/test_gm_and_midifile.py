from fractions import Fraction

import mido
import pytest

from playbach.gm import PROGRAMS, program_number
from playbach.midifile import TICKS_PER_BEAT, heard_midi, to_midi
from playbach.schemas import NoteOn
from playbach.vocab import REST, Event


def test_program_numbers():
    assert program_number("Cello") == 42 and program_number("  church   ORGAN ") == 19
    assert program_number(0) == 0 and program_number("127") == 127
    assert PROGRAMS[40] == "Violin"
    with pytest.raises(ValueError, match="did you mean"):
        program_number("organ")
    with pytest.raises(ValueError, match="0-127"):
        program_number(128)


def test_midi_file_has_tempo_program_and_timed_notes(tmp_path):
    events = [Event("C4", Fraction(1)), Event(REST, Fraction(1, 2)),
              Event("E3.G3", Fraction(1, 3), "f")]
    data = to_midi(events, bpm=120, program=42)
    assert data == to_midi(events, bpm=120, program=42)  # deterministic
    path = tmp_path / "x.mid"
    path.write_bytes(data)
    msgs = list(mido.MidiFile(path).tracks[0])
    assert any(m.type == "set_tempo" and m.tempo == 500_000 for m in msgs)
    assert any(m.type == "program_change" and m.program == 42 for m in msgs)
    ons = [m for m in msgs if m.type == "note_on"]
    assert [m.note for m in ons] == [60, 52, 55]
    assert ons[2].velocity == 96
    # second event starts after the first note (480) and the rest (240)
    assert ons[1].time == TICKS_PER_BEAT // 2


def heard(beats: float, bpm: float, program: int, midi: list[int]) -> NoteOn:
    return NoteOn(offset=0, seq=0, pitch="x", midi=midi, velocity=80,
                  duration=beats * 60 / bpm, beats=beats, program=program,
                  model="m", temperature=1.0)


def test_heard_midi_keeps_tempo_and_program_changes_where_they_were_heard(tmp_path):
    """Two beats at 120 BPM on a cello (1 s), then at 60 BPM on a violin: the file has both
    tempi and both programs at the second note, and lasts as long as the audio did."""
    onsets = [(0.0, heard(2, 120, 42, [48])), (1.0, heard(1, 60, 40, [67, 71])),
              (2.0, heard(1, 60, 40, [69]))]
    data = heard_midi(onsets, end_s=3.5)
    assert data == heard_midi(onsets, end_s=3.5)  # deterministic
    path = tmp_path / "heard.mid"
    path.write_bytes(data)
    midi = mido.MidiFile(path)
    assert abs(midi.length - 3.5) < 0.01  # seconds, through the tempo map: matches the WAV
    msgs, tick, at = list(midi.tracks[0]), 0, []
    for m in msgs:
        tick += m.time
        at.append((tick, m))
    tempi = [(t, round(mido.tempo2bpm(m.tempo))) for t, m in at if m.type == "set_tempo"]
    programs = [(t, m.program) for t, m in at if m.type == "program_change"]
    assert tempi == [(0, 120), (2 * TICKS_PER_BEAT, 60)]
    assert programs == [(0, 42), (2 * TICKS_PER_BEAT, 40)]
    ons = [(t, m.note) for t, m in at if m.type == "note_on"]
    assert ons == [(0, 48), (960, 67), (960, 71), (1440, 69)]
    # a note still sounding when the audio ends stops with it
    short = tmp_path / "short.mid"
    short.write_bytes(heard_midi(onsets, end_s=2.25))
    assert abs(mido.MidiFile(short).length - 2.25) < 0.01
