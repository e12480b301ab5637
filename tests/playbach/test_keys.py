"""The key a piece is in, and what a conditioned model knows of keys."""

from fractions import Fraction

import numpy as np
import pytest

from playbach.keys import Key, KeyTable, find_key, hypotheses, key_of
from playbach.vocab import Event


def _events(names: str, length: str = "1") -> list[Event]:
    return [Event(n, Fraction(length)) for n in names.split()]


def test_a_scale_and_its_cadence_name_their_key_and_register():
    c_major = key_of(_events("C4 D4 E4 F4 G4 A4 B4 C5 G4 C4"))
    assert c_major == Key(60, 0) and c_major.name == "C major"
    a_minor = key_of(_events("A3 B3 C4 D4 E4 F4 G#4 A4 E4 A3"))
    assert a_minor == Key(57, 1) and a_minor.name == "A minor"
    # the anchor is the tonic nearest the middle note: the same tune an octave down moves it
    assert key_of(_events("C3 D3 E3 F3 G3 A3 B3 C4 G3 C3")) == Key(48, 0)
    assert key_of(_events("C4 D4 E4 F4 G4 A4 B4 C5 G4 C4"), octaves=False) == Key(0, 0)
    assert find_key([], []) == Key(60, 0)  # nothing heard yet


def test_long_notes_weigh_more():
    # the same notes; held Gs and Ds make it G major, held Cs and Es C major
    notes = [60, 62, 64, 66, 67, 71, 74]
    assert find_key(notes, [1, 4, 1, 2, 8, 2, 4]).name == "G major"
    assert find_key(notes, [8, 1, 4, 0.2, 4, 1, 1]).name == "C major"


def test_keys_move_with_transposition_and_are_checked():
    assert Key(55, 0).moved(-5) == Key(50, 0)
    assert Key(10, 1).moved(5, octaves=False) == Key(3, 1)
    with pytest.raises(ValueError):
        Key(128, 0)
    with pytest.raises(ValueError):
        Key(60, 2)


def test_scoring_considers_every_key_training_could_have_shown():
    known = hypotheses([Key(55, 0), Key(50, 1)], -6, 5)
    anchors = sorted({k.anchor for k in known})
    assert anchors == list(range(44, 61))  # D3 - 6 .. G3 + 5
    assert len(known) == 2 * len(anchors)  # both modes, whatever the corpus had
    assert {k.anchor for k in hypotheses([Key(3, 0)], -6, 5, octaves=False)} == set(range(12))


def test_key_table_round_trip_draw_and_nearest():
    table = KeyTable(7, ((Key(55, 0), 3), (Key(50, 1), 1)),
                     hypotheses([Key(55, 0), Key(50, 1)], -6, 5))
    assert KeyTable.from_meta({"keys": table.to_meta()}) == table
    assert KeyTable.from_meta({}) is None
    with pytest.raises(ValueError, match="malformed"):
        KeyTable.from_meta({"keys": {"offset": 1, "corpus": [[200, 0, 1]], "hypotheses": []}})
    rng = np.random.default_rng(0)
    drawn = [table.draw(rng) for _ in range(2000)]
    assert drawn.count(Key(55, 0)) / 2000 == pytest.approx(0.75, abs=0.03)  # by the counts
    assert table.commonest == Key(55, 0)
    assert table.nearest(Key(53, 0)) == Key(53, 0)  # known as it is
    assert table.nearest(Key(79, 0)) == Key(55, 0)  # G major two octaves up: its register
    assert table.nearest(Key(7, 1)) == Key(55, 1)  # a pitch-class model's G minor
