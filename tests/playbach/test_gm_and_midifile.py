from fractions import Fraction

import mido
import pytest

from playbach.gm import PROGRAMS, program_number
from playbach.midifile import TICKS_PER_BEAT, to_midi
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
