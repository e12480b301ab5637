"""The trainer's pure parts: n-gram baseline, musical statistics, splits and windows, config."""

from fractions import Fraction

import numpy as np
import pytest

from playbach.vocab import REST, Event
from trainer import musicstats
from trainer.config import TrainConfig, UserError, make_config
from trainer.corpus import Piece
from trainer.dataset import split_pieces, windows, xy
from trainer.ngram import NGram


def test_ngram_is_a_distribution_and_learns_a_cycle():
    seqs = [[0, *([2, 3, 4] * 20)] for _ in range(3)]
    model = NGram(4, 6).fit(seqs)
    for ctx in ([0], [0, 2], [2, 3, 4], [5, 5, 5]):
        p = model.probs(ctx)
        assert p[0] == 0 and p.sum() == pytest.approx(1)
    assert np.argmax(model.probs([2, 3])) == 4
    score = model.score(seqs)
    assert score["accuracy"] > 0.95 and score["perplexity"] < 1.3
    unseen = NGram(4, 6).fit(seqs).score([[0, 5, 5, 5]])
    assert unseen["accuracy"] < 0.5 and unseen["perplexity"] > 5


def test_longest_repeat_and_scale_consistency():
    assert musicstats.longest_repeat(list("abcabcab")) == 5
    assert musicstats.longest_repeat(list("abcd")) == 0
    c_major = [Event(n, Fraction(1)) for n in ("C4", "D4", "E4", "F4", "G4", "A4", "B4")]
    assert musicstats.scale_consistency(c_major) == 1
    assert musicstats.scale_consistency([*c_major, Event("C#4", Fraction(1))]) == 7 / 8
    assert musicstats.pitch_range(c_major) == 11
    assert musicstats.mean_abs_interval([Event("C4", 1), Event(REST, 1), Event("E4", 1)]) == 4
    prof = musicstats.profile([c_major])
    assert musicstats.compare(prof, prof)["pitch_class_distance"] == 0


def test_splits_are_by_whole_pieces():
    pieces = [Piece(f"p{i}", [Event("C4", Fraction(1))] * 10) for i in range(20)]
    train, val, test = split_pieces(pieces, TrainConfig())
    names = [{p.name for p in s} for s in (train, val, test)]
    assert len(names[1]) == 2 and len(names[2]) == 2 and len(names[0]) == 16
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert split_pieces(pieces, TrainConfig()) == (train, val, test)  # seeded


def test_windows_cover_the_tail_and_pad_short_pieces():
    seq = np.arange(10).repeat(3).reshape(10, 3)
    win = windows([seq], 4, 3)
    assert [w[0, 0] for w in win] == [0, 3, 6]  # 0..3, 3..6, 6..9: the tail is covered
    short = windows([seq[:2]], 4, 3)
    assert short.shape == (1, 4, 3) and (short[0, 2:] == 0).all()
    assert len(windows([seq[:2]], 4, 3, pad=False)) == 0


def test_target_weights_skip_padding_and_unknown_pitches():
    win = np.array([[[0, 0, 0], [5, 3, 2], [1, 4, 2], [0, 0, 0]]])
    _, _, w = xy(win, "seq2seq")
    assert w["pitch"].tolist() == [[1, 0, 0]] and w["duration"].tolist() == [[1, 1, 0]]
    _, _, last = xy(np.array([[[0, 0, 0], [5, 3, 2], [6, 4, 2]]]), "last")
    assert last["pitch"].tolist() == [[0, 1]]


def test_config_overrides():
    cfg = make_config("tiny", ["--units=48", "--attention=yes", "--learning-rate=0.01"])
    assert cfg.units == 48 and cfg.attention and cfg.learning_rate == 0.01
    with pytest.raises(UserError, match="takes true or false"):
        make_config("tiny", ["--attention=maybe"])
    with pytest.raises(UserError, match="unknown preset"):
        make_config("huge", [])
    with pytest.raises(UserError, match="multiple of attention_heads"):
        make_config("tiny", ["--attention=true", "--units=33"])


def test_transpose_moves_pieces_to_c_major_or_a_minor():
    from music21 import note as m21note
    from music21 import stream

    from playbach.vocab import EncodingOptions
    from trainer.corpus import events_from_score, key_shift

    d_major = stream.Score([stream.Part([m21note.Note(n, quarterLength=1) for n in
                                         ("D4", "F#4", "A4", "D5", "E4", "C#5", "D4")])])
    assert key_shift(d_major) == -2
    plain = events_from_score(d_major, EncodingOptions())
    moved = events_from_score(d_major, EncodingOptions(transpose=True))
    assert plain[0].pitch == "D4" and moved[0].pitch == "C4"
    assert [e.midi[0] - 2 for e in plain] == [e.midi[0] for e in moved]
