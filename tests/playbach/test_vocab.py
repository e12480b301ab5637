from fractions import Fraction

import pytest

from playbach.vocab import (
    BOS,
    DURATIONS,
    JOIN,
    MAX_CHORD,
    PITCH_OFFSET,
    REST,
    EncodingOptions,
    Event,
    VocabError,
    Vocabulary,
    dynamic,
    grid_lengths,
    normal_order,
    note_name,
    pitch_token,
    quantize_duration,
    token_midi,
)


def test_note_names_round_trip_every_midi_number():
    for midi in range(128):
        assert token_midi(note_name(midi)) == (midi,)
    assert note_name(60) == "C4" and note_name(61) == "C#4" and note_name(21) == "A0"
    assert note_name(0) == "C-1" and token_midi("C-1") == (0,)


def test_chords_are_sorted_deduplicated_and_round_trip():
    assert pitch_token([57, 45, 54, 45]) == "A2.F#3.A3"
    assert token_midi("A2.F#3.A3") == (45, 54, 57)
    assert pitch_token([]) == REST and token_midi(REST) == ()


def test_normal_order_without_octaves():
    # C major triad in any inversion and octave is one token; it sounds from C4 upwards.
    assert pitch_token([64, 67, 72], octaves=False) == "C.E.G"
    assert pitch_token([52, 60, 67], octaves=False) == "C.E.G"
    assert token_midi("C.E.G") == (60, 64, 67)
    assert normal_order([0, 4, 9]) == [9, 0, 4]  # A minor: A C E is the most compact
    assert token_midi("A.C.E") == (69, 72, 76)
    assert pitch_token([61], octaves=False) == "C#" and token_midi("C#") == (61,)


@pytest.mark.parametrize("bad", ["H4", "C#", "Cb4", "E#4", "C4.X", "", "<s>"])
def test_bad_tokens_are_refused(bad):
    if bad == "C#":  # a note without octave is a valid `normal` token
        assert token_midi(bad) == (61,)
        return
    with pytest.raises(VocabError):
        token_midi(bad)


def test_duration_grid_and_quantization():
    assert DURATIONS[0] == Fraction(1, 8) and DURATIONS[-1] == 4
    assert quantize_duration(0.5) == Fraction(1, 2)
    assert quantize_duration(1 / 3) == Fraction(1, 3)  # triplet eighth
    assert quantize_duration(0.33) == Fraction(1, 3)
    assert quantize_duration(7) == 4  # capped at a whole note
    assert quantize_duration(0.01) == Fraction(1, 8)
    with pytest.raises(VocabError):
        quantize_duration(0)


def test_lengths_off_the_grid_become_grid_lengths_that_keep_the_next_onset():
    F = Fraction
    assert grid_lengths(F(1, 2)) == (F(1, 2),)
    assert grid_lengths(F(5, 4)) == (1, F(1, 4))  # a quarter tied to a sixteenth
    assert grid_lengths(F(5, 2)) == (2, F(1, 2))
    assert grid_lengths(F(6)) == (4, 2) and grid_lengths(F(10)) == (4, 4, 2)
    assert grid_lengths(F(23, 12)) == (F(3, 2), F(1, 4), F(1, 6))
    for n in range(2, 12 * 12 + 1):  # every length music21 reads from MIDI (1/12 grid)
        parts = grid_lengths(F(n, 12))
        assert sum(parts) == F(n, 12) and all(p in DURATIONS for p in parts)
        assert list(parts[:1]) == sorted(parts, reverse=True)[:1]  # the note the longest
    assert grid_lengths(F(1, 12)) == (F(1, 8),)  # shorter than the grid: the nearest
    assert sum(grid_lengths(F(7, 12))) == F(7, 12)  # 1/3 + 1/4


def test_dynamics():
    assert dynamic(None) == "mf" and dynamic(100) == "f" and dynamic(1) == "ppp"
    assert dynamic(127) == "fff"


def test_vocabulary_index_table_is_exact():
    vocab = Vocabulary()
    assert vocab.pitch[:3] == (BOS, REST, "C-1") and vocab.pitch[62] == "C4"
    assert vocab.pitch[-1] == "G9" and len(vocab.pitch) == 130 and PITCH_OFFSET == 2
    assert vocab.duration[:5] == (BOS, JOIN, "1/8", "1/6", "1/4") and len(vocab.duration) == 16
    assert vocab.velocity == (BOS, "ppp", "pp", "p", "mp", "mf", "f", "ff", "fff")
    piece = [Event("C4", Fraction(1)), Event("E3.C4", Fraction(1, 2)), Event(REST, Fraction(1)),
             Event("A3", Fraction(1, 4), "f")]
    # a chord is its notes lowest first; the later ones carry the "+" (same onset) duration
    assert vocab.encode_piece(piece) == [(0, 0, 0), (62, 10, 5), (54, 7, 5), (62, 1, 5),
                                         (1, 10, 5), (59, 4, 6)]


def test_any_note_and_chord_round_trips_nothing_is_out_of_vocabulary():
    vocab = Vocabulary()
    rng = __import__("random").Random(7)
    for _ in range(300):
        size = rng.randint(1, MAX_CHORD)
        notes = rng.sample(range(128), size)
        ev = Event(pitch_token(notes), rng.choice(DURATIONS), rng.choice(["p", "mf", "fff"]))
        assert vocab.decode_piece(vocab.steps(ev)) == [ev]
    piece = [Event("G9", Fraction(4)), Event("C-1.G9", Fraction(1, 8)), Event(REST, 1)]
    assert vocab.decode_piece(vocab.encode_piece(piece)) == piece
    with pytest.raises(VocabError):
        vocab.event([(1, 1, 5)])  # a rest never joins a chord
    with pytest.raises(VocabError):
        vocab.event([(0, 9, 5)])  # the start step is no event


def test_without_octaves_notes_are_pitch_classes():
    vocab = Vocabulary(EncodingOptions(octaves=False))
    assert len(vocab.pitch) == 14 and vocab.pitch[2] == "C"
    ev = Event("A.C.E", Fraction(1))
    assert vocab.steps(ev) == [(11, 10, 5), (2, 1, 5), (6, 1, 5)]
    assert vocab.decode_piece(vocab.steps(ev)) == [ev]


def test_vocabulary_json_round_trip_and_validation():
    vocab = Vocabulary(EncodingOptions(octaves=False, parts="part:Soprano"))
    again = Vocabulary.from_json(vocab.to_json())
    assert again == vocab and again.options.parts == "part:Soprano"
    with pytest.raises(VocabError, match="fixed note table"):
        Vocabulary(pitch=("C4", BOS))
    with pytest.raises(VocabError, match="start with"):
        Vocabulary(duration=("1/4", BOS))
    with pytest.raises(VocabError, match="duplicate"):
        Vocabulary(velocity=(BOS, "p", "p"))
    with pytest.raises(VocabError, match="format 1 is not 2"):
        Vocabulary.from_json('{"format": 1}')
    with pytest.raises(VocabError, match="malformed"):
        Vocabulary.from_json('{"format": 2}')
    with pytest.raises(VocabError, match="parts must be"):
        EncodingOptions(parts="voices")
