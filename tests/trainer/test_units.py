"""The trainer's pure parts: n-gram baseline, musical statistics, splits and windows, config."""

from fractions import Fraction

import numpy as np
import pytest

from playbach.keys import Key
from playbach.vocab import REST, Event, Vocabulary
from trainer import musicstats
from trainer.config import TrainConfig, UserError, make_config
from trainer.corpus import Piece
from trainer.crossval import evenness, fold_indices, summarise
from trainer.dataset import (
    INTERVALS,
    KEY,
    PROFILE,
    VOICES,
    WIDTH,
    context,
    duration_ticks,
    split_pieces,
    transpose,
    windows,
    xy,
)
from trainer.ngram import NGram, RepeatPrevious, Unigram, best_ngram

C_MAJOR = Key(60, 0)


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


def test_musical_statistics():
    assert musicstats.longest_repeat(list("abcabcab")) == 5
    assert musicstats.longest_repeat(list("abcd")) == 0
    c_major = [Event(n, Fraction(1)) for n in ("C4", "D4", "E4", "F4", "G4", "A4", "B4")]
    assert musicstats.scale_consistency(c_major) == 1
    assert musicstats.scale_consistency([*c_major, Event("C#4", Fraction(1))]) == 7 / 8
    assert musicstats.pitch_range(c_major) == 11 and musicstats.highest_note(c_major) == 71
    assert musicstats.mean_abs_interval([Event("C4", 1), Event(REST, 1), Event("E4", 1)]) == 4
    assert musicstats.pitch_class_entropy(c_major) == pytest.approx(np.log2(7))
    assert musicstats.chord_rate([Event("C4.E4", 1), Event("C4", 1), Event(REST, 1)]) == 0.5
    assert musicstats.duration_entropy(c_major) == 0
    assert musicstats.longest_exact_repeat([*c_major[:3], *c_major[:3]]) == 3


def test_excerpts_have_equal_sounding_length_and_bands_judge_the_typical_excerpt():
    piece = [Event("C4", 1), Event(REST, 1), Event("D4", 1), Event("E4", 1), Event("F4", 1)]
    parts = musicstats.excerpts([piece, piece[:2]], 2)
    assert parts == [piece[:3], piece[3:5]]  # rests come on top; the short remainder dropped
    corpus = [[Event(n, Fraction(1)) for n in ("C4", "E4", "G4", "C5")]] * 10
    wild = [[Event(n, Fraction(1, 8)) for n in ("C2", "C#6", "G9", "F#1")]] * 3
    same = musicstats.compare(corpus[:3], corpus)
    assert all(s["inside"] for s in same.values())
    far = musicstats.compare(wild, corpus)
    assert not far["highest_note"]["inside"] and not far["mean_duration"]["inside"]
    assert far["highest_note"]["generated"] == 127 and far["highest_note"]["high"] == 72
    # the median excerpt is judged: one wild excerpt in five moves the mean out, not it
    some = musicstats.compare([*corpus[:4], wild[0]], corpus)["highest_note"]
    assert some["inside"] and some["mean"] > 72 and some["share_inside"] == 0.8


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


def test_every_step_is_a_target_but_padding():
    def steps(*ids):  # tokens, context channels zero
        return np.array([[[*i, *[0] * (WIDTH - 3)] for i in ids]])

    x, _, w = xy(steps((0, 0, 0), (5, 3, 2), (1, 4, 2), (0, 0, 0)), "seq2seq")
    assert w["pitch"].tolist() == [[1, 1, 0]] and w["duration"].tolist() == [[1, 1, 0]]
    assert set(x) == {"pitch", "duration", "velocity", "last", "interval", "onset", "profile",
                      "voice", "join", "bass", "anchor", "mode", "joins"}
    assert x["joins"].tolist() == [[0, 0, 0]]  # whether each target step joins a chord
    assert x["profile"].shape == (1, 3, 12)
    _, _, last = xy(steps((0, 0, 0), (5, 3, 2), (6, 4, 2)), "last")
    assert last["pitch"].tolist() == [[0, 1]]


def test_context_channels_count_last_note_interval_and_onset():
    vocab = Vocabulary()
    piece = [Event("C4", Fraction(1)), Event("E3.G3", Fraction(1, 2)), Event(REST, Fraction(1)),
             Event("C5", Fraction(1, 4))]
    seq = context(np.array(vocab.encode_piece(piece)), duration_ticks(vocab), C_MAJOR)
    assert seq[:, 3].tolist() == [-1, 60, 52, 55, 55, 72]  # the last note sounded
    assert seq[:, 4].tolist() == [0, 0, 25 - 8, 25 + 3, 0, 25 + 17]  # 0: none (first, rest)
    assert seq[:, 5].tolist() == [0, 24, 36, 36, 60, 66]  # where the next step begins
    far = context(np.array(vocab.encode_piece([Event("C2", 1), Event("C6", 1)])),
                  duration_ticks(vocab), C_MAJOR)
    assert far[2, 4] == 25 + INTERVALS  # wider than two octaves: clipped


def test_voices_place_each_note_in_its_chord_and_find_where_the_next_moves_from():
    vocab = Vocabulary()
    piece = [Event("C3.E3.G3", Fraction(1)), Event("D3.F3.B3", Fraction(1)),
             Event(REST, Fraction(1)), Event("C4", Fraction(1))]
    seq = context(np.array(vocab.encode_piece(piece)), duration_ticks(vocab), C_MAJOR)
    voice, join, bass = (seq[:, VOICES.start + i] for i in range(3))
    # steps: <s> C3 E3+ G3+ D3 F3+ B3+ R C4
    assert voice.tolist() == [0, 0, 1, 2, 0, 1, 2, 0, 0]
    assert join.tolist() == [-1, -1, -1, -1, 52, 55, -1, 53, -1]  # a voice up, a chord before
    assert bass.tolist() == [-1, -1, 48, 48, -1, 50, 50, -1, -1]  # a chord's, from its second
    moved = transpose(np.stack([seq] * 20), np.random.default_rng(0), low=36, high=84)
    shift = moved[:, 1, 0] - seq[1, 0]
    for c in (VOICES.start + 1, VOICES.start + 2):
        assert (moved[:, :, c] == np.where(seq[:, c] >= 0, seq[:, c] + shift[:, None],
                                           -1)).all()


def test_transposition_moves_notes_and_last_note_within_range():
    vocab = Vocabulary()
    piece = [Event(n, Fraction(1)) for n in ("C3", "G3", "E4", "C4")]
    seq = context(np.array(vocab.encode_piece(piece)), duration_ticks(vocab), C_MAJOR)
    win = np.stack([seq] * 200)
    moved = transpose(win, np.random.default_rng(0), low=36, high=84)
    shift = moved[:, 1, 0] - win[:, 1, 0]
    assert set(shift.tolist()) == set(range(-6, 6))  # every key that fits C2-C6
    assert (moved[:, 1:, 3] - win[:, 1:, 3] == shift[:, None]).all()  # last note moves along
    assert (moved[:, :, KEY.start] - 60 == shift[:, None]).all()  # so does the key's tonic
    assert (moved[:, :, KEY.start + 1] == 0).all()  # in the same mode
    assert (moved[:, :, 4:6] == win[:, :, 4:6]).all()
    assert (moved[:, 0, :KEY.start] == win[:, 0, :KEY.start]).all()  # the start step stays
    tight = transpose(win, np.random.default_rng(0), low=48, high=65)
    assert set((tight[:, 1, 0] - win[:, 1, 0]).tolist()) == {0, 1}  # C3..E4 fits C3..F4 only


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_augment_share_is_the_share_of_windows_moved(share):
    from trainer.fit import Augmented

    vocab = Vocabulary()
    piece = [Event(n, Fraction(1)) for n in ("C3", "G3", "E4", "C4")]
    seq = context(np.array(vocab.encode_piece(piece)), duration_ticks(vocab), C_MAJOR)
    epoch = Augmented(np.stack([seq] * 2000), TrainConfig(augment_share=share), vocab).epoch
    moved = (epoch[:, 1, 0] != seq[1, 0]).mean()
    assert moved == pytest.approx(share * 11 / 12, abs=0.04)  # a twelfth moves by 0


def test_stretch_moves_a_window_to_another_tempo_with_its_onsets_counted_again():
    from trainer.config import TrainConfig, stretches
    from trainer.dataset import ONSET, stretch, stretch_table
    from trainer.fit import Augmented

    factors = stretches(TrainConfig.stretch_factors)
    vocab = Vocabulary()
    ticks = duration_ticks(vocab)
    F = Fraction
    lengths = [F(1, 4), F(1, 4), F(1, 2), F(1), F(3, 4), F(1, 4)]
    names = ("C3", "D3", "E3", "F3", "G3", "A3")
    piece = [Event(n, d) for n, d in zip(names, lengths, strict=True)]
    seq = context(np.array(vocab.encode_piece(piece)), ticks, C_MAJOR)
    win = np.stack([seq[2:]] * 400)  # from the third step: its first onset is off the start
    out = stretch(win, np.random.default_rng(0), stretch_table(vocab, factors), ticks, factors)
    seen = set()
    for w in out:
        got = [F(vocab.duration[i]) for i in w[:, 1]]
        factor = got[0] / lengths[1]
        seen.add(factor)
        assert factor in factors and got == [d * factor for d in lengths[1:]]
        start = int(F(6) * factor)  # the window began a sixteenth in
        assert w[:, ONSET].tolist() == (start + np.cumsum(ticks[w[:, 1]])).tolist()
        assert (w[:, [0, 2, 3, 4]] == seq[2:, [0, 2, 3, 4]]).all()  # only time moves
    assert seen == {F(1, 2), F(2, 3), 2}  # x 3/2 would make the 3/4 a 9/8, off the grid
    odd = np.stack([seq[1:]] * 5)
    odd[:, 3, 1] = vocab.duration.index("4")  # only x 1/2 keeps a whole note on the grid
    kept = stretch(odd, np.random.default_rng(1), stretch_table(vocab, factors), ticks, factors)
    assert {F(vocab.duration[w[3, 1]]) for w in kept} == {2}
    epoch = Augmented(np.stack([seq] * 1000), TrainConfig(augment_share=0, stretch_share=0.5),
                      vocab).epoch
    assert (epoch[:, 1, 1] != seq[1, 1]).mean() == pytest.approx(0.5, abs=0.05)


def test_kneser_ney_order_is_chosen_on_validation_and_baselines_are_distributions():
    rng = np.random.default_rng(0)
    train = [[0, *rng.permutation([2, 3, 4, 5, 6]).tolist() * 30] for _ in range(4)]
    cycle = [[0, *([2, 3, 4, 5, 6] * 30)]]
    best, nats = best_ngram(cycle, cycle, 8)
    assert best.order > 1 and nats[best.order] == min(nats.values())
    for model in (best, Unigram(8).fit(train), RepeatPrevious(8).fit(train)):
        for ctx in ([0], [0, 2], [2, 3, 4, 5]):
            p = model.probs(ctx)
            assert p[0] == 0 and p.sum() == pytest.approx(1)
    assert RepeatPrevious(8).fit([[0, 2, 2, 2, 3]]).probs([0, 3]).argmax() == 3


def test_cross_validation_folds_test_every_piece_once():
    folds = fold_indices(24, 6, seed=1, val_fraction=0.1)
    tested = [i for _, _, test in folds for i in test]
    assert sorted(tested) == list(range(24))
    for train, val, test in folds:
        assert len(test) == 4 and len(val) == 2 and len(train) == 18
        assert not set(train) & set(test) and not set(val) & set(test)
    with pytest.raises(UserError, match="--folds"):
        fold_indices(4, 5, seed=1, val_fraction=0.1)
    # stratified: each fold one piece of every run of 6 ranks (here the index is the rank)
    strata = [float(i) for i in range(24)]
    folds = fold_indices(24, 6, seed=1, val_fraction=0.1, strata=strata)
    assert sorted(i for _, _, test in folds for i in test) == list(range(24))
    for _, _, test in folds:
        assert sorted(i // 6 for i in test) == [0, 1, 2, 3]
    assert fold_indices(24, 6, 1, 0.1, strata) == folds  # seeded
    assert evenness(np.array([[0, 0, 0], [60, 10, 5], [62, 10, 5], [64, 8, 5],
                              [67, 1, 5]])) == pytest.approx(2 / 3)  # + is no duration


def test_cross_validation_gap_is_against_the_best_rival_per_fold():
    def row(net: float, ngram: float, repeat: float) -> dict:
        def cell(acc: float) -> dict:
            return {"accuracy": acc, "nats": 1 - acc, "bits": 1.0}

        return {m: {h: cell(a) for h in ("pitch", "duration", "velocity")}
                for m, a in (("network", net), ("ngram", ngram), ("unigram", 0.0),
                             ("repeat", repeat))}

    s = summarise([row(0.5, 0.3, 0.2), row(0.6, 0.3, 0.45), row(0.55, 0.4, 0.3)])
    gap = s["gaps"]["pitch"]["accuracy"]
    assert gap["mean"] == pytest.approx((0.2 + 0.15 + 0.15) / 3) and s["gaps"]["pitch"]["clear"]
    close = summarise([row(0.5, 0.45, 0), row(0.5, 0.55, 0)])
    assert not close["gaps"]["pitch"]["clear"]


def test_config_overrides():
    cfg = make_config("tiny", ["--units=48", "--copy=no", "--learning-rate=0.01"])
    assert cfg.units == 48 and not cfg.copy and cfg.learning_rate == 0.01
    with pytest.raises(UserError, match="takes true or false"):
        make_config("tiny", ["--copy=maybe"])
    with pytest.raises(UserError, match="unknown preset"):
        make_config("huge", [])
    with pytest.raises(UserError, match="copy_window"):
        make_config("tiny", ["--copy-window=0"])
    with pytest.raises(UserError, match=r"augment_share must be in \[0, 1\]"):
        make_config("tiny", ["--augment-share=1.5"])
    with pytest.raises(UserError, match=r"stretch_share must be in \[0, 1\]"):
        make_config("tiny", ["--stretch-share=-0.1"])


def test_a_run_recorded_before_a_config_field_existed_is_still_the_same_run(tmp_path):
    import json
    from dataclasses import asdict

    from trainer.config import with_defaults
    from trainer.crossval import CrossVal, earlier_folds

    now = asdict(make_config("tiny", []))
    older = {k: v for k, v in now.items() if k != "stretch_share"}  # recorded before it was
    assert with_defaults(older) == now
    assert with_defaults({**older, "epochs": 9}) != now
    out = tmp_path / "cv.json"
    ident = {"corpus": {"pieces": 3}, "config": now, "k": 2}
    out.write_text(json.dumps({**ident, "config": older, "folds": [{"fold": 1}]}))
    cv = CrossVal(make_config("tiny", []), Vocabulary(), None, 2, tmp_path, out=out, resume=True)
    assert earlier_folds(cv, ident) == {1: {"fold": 1}}
    out.write_text(json.dumps({**ident, "config": {**older, "epochs": 9}, "folds": []}))
    with pytest.raises(UserError, match="differs in config"):
        earlier_folds(cv, ident)


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


def test_parsing_keeps_every_onset_where_the_score_has_it():
    from music21 import note as m21note
    from music21 import stream

    from playbach.vocab import EncodingOptions
    from trainer.corpus import events_from_score

    F = Fraction
    written = [("C3", F(1, 4)), ("C2", F(5, 4)), ("D2", F(1, 4)), ("E2", F(1, 12)),
               (None, F(1, 2)), (None, F(5, 12)), ("F2", F(1, 4)), ("G2", F(6))]
    part = stream.Part([m21note.Rest(quarterLength=ql) if n is None else
                        m21note.Note(n, quarterLength=ql) for n, ql in written])
    events = events_from_score(stream.Score([part]), EncodingOptions())
    assert [(e.pitch, e.duration) for e in events] == [
        ("C3", F(1, 4)), ("C2", 1), (REST, F(1, 4)),  # 5/4: the note, then a rest
        ("D2", F(1, 3)),  # the ornament's 1/12 joins the note before
        (REST, F(3, 4)), (REST, F(1, 6)),  # the two rests as one, 11/12
        ("F2", F(1, 4)), ("G2", 4)]  # the last note's rest is trimmed
    onset_of_f2 = sum(e.duration for e in events[:-2])
    assert onset_of_f2 == sum(ql for _, ql in written[:-2])  # where the score has it


def test_key_profile_counts_the_pieces_pitch_classes_and_turns_with_it():
    from trainer.layers import KeyProfile

    vocab = Vocabulary()
    piece = [Event(n, Fraction(1)) for n in ("C4", "E4", REST, "C5", "G4")]
    seq = context(np.array(vocab.encode_piece(piece)), duration_ticks(vocab), C_MAJOR)
    counts = seq[:, PROFILE]
    assert counts[0].sum() == 0 and counts[1].tolist() == [1] + [0] * 11  # the start; C4
    assert counts[-1, [0, 4, 7]].tolist() == [2, 1, 1] and counts[-1].sum() == 4  # no rest
    features = np.asarray(KeyProfile()(counts[None]))[0]
    assert np.allclose(features[1:, :12].sum(-1), 1) and features[-1, 0] == 0.5
    assert features[-1, 12] > features[1, 12] > features[0, 12] == 0  # evidence grows
    moved = transpose(np.stack([seq] * 50), np.random.default_rng(0), low=36, high=84)
    for win in moved:
        shift = int(win[1, 0] - seq[1, 0])
        assert (win[:, PROFILE] == np.roll(counts, shift, axis=1)).all()


def test_scoring_infers_the_key_from_the_steps_before_never_from_the_future(monkeypatch):
    from trainer import heldout
    from trainer.heldout import Hidden, piece_log_probs

    def sure(model, x):  # a stand-in network sure of one note: its key's tonic
        pitch = np.full((*x["anchor"].shape, 130), -5.0)
        np.put_along_axis(pitch, x["anchor"][..., None] + 2, 5.0, -1)
        return {"pitch": pitch, "duration": np.zeros((*x["anchor"].shape, 16)),
                "velocity": np.zeros((*x["anchor"].shape, 9))}

    monkeypatch.setattr(heldout, "predict", sure)  # the network: the stand-in above
    model = None

    vocab = Vocabulary()
    piece = [Event("A3", Fraction(1))] * 6  # MIDI 57, over and over
    seq = context(np.array(vocab.encode_piece(piece)), duration_ticks(vocab), C_MAJOR)
    keys = tuple(Key(a, m) for a in range(55, 61) for m in (0, 1))
    logp = piece_log_probs(model, seq, Hidden(keys))
    assert np.allclose(np.logaddexp.reduce(logp["pitch"], -1), 0)  # distributions
    sure = 10 - np.log(np.exp(10) + 129)  # log p of the tonic under its own key
    first = np.log(np.mean([np.exp(sure if k.anchor == 57 else -np.log(np.exp(10) + 129))
                            for k in keys]))
    assert logp["pitch"][0, 59] == pytest.approx(first)  # before any note: the prior
    assert logp["pitch"][-1, 59] == pytest.approx(sure, abs=1e-6)  # then the posterior
    # the key written into the steps is never read: scoring is told none
    told = seq.copy()
    told[:, KEY] = [57, 0]
    assert np.allclose(piece_log_probs(model, told, Hidden(keys))["pitch"], logp["pitch"])


def test_keys_left_behind_leave_the_mixture_and_batching_changes_nothing(monkeypatch):
    from trainer import heldout
    from trainer.heldout import PREFIX, Hidden, log_probs

    def tonic(model, x):  # sure of its key's tonic, and it sees each step at its own place
        shape = x["anchor"].shape
        pitch = np.full((*shape, 130), -5.0)
        np.put_along_axis(pitch, x["anchor"][..., None] + 2, 5.0, -1)
        pitch += 0.01 * x["pitch"][..., None]  # what came before matters a little
        return {"pitch": pitch, "duration": np.zeros((*shape, 16)),
                "velocity": np.zeros((*shape, 9))}

    monkeypatch.setattr(heldout, "predict", tonic)  # the network: the stand-in above

    vocab = Vocabulary()
    long = [Event(n, Fraction(1)) for n in ["A3", "C4"] * 60]  # A3 is every other note
    short = [Event("A3", Fraction(1))] * 10
    seqs = [context(np.array(vocab.encode_piece(p)), duration_ticks(vocab), C_MAJOR)
            for p in (long, short)]
    keys = tuple(Key(a, m) for a in range(55, 61) for m in (0, 1))
    both = log_probs(None, seqs, Hidden(keys))
    alone = [log_probs(None, [s], Hidden(keys))[0] for s in seqs]
    for a, b in zip(both, alone, strict=True):  # padding a shorter piece changes nothing
        assert all(np.allclose(a[h], b[h]) for h in a)
    assert len(both[0]["pitch"]) == len(seqs[0]) - 1 > PREFIX  # beyond the first keys' run
    # A3 (57) and C4 (60) both keys' tonics: the other ten fall behind and leave for good
    assert np.allclose(np.logaddexp.reduce(both[0]["pitch"], -1), 0)
    two = log_probs(None, seqs[:1], Hidden(tuple(k for k in keys if k.anchor in (57, 60))))
    assert np.allclose(both[0]["pitch"][PREFIX:], two[0]["pitch"][PREFIX:], atol=1e-9)
    assert not np.allclose(both[0]["pitch"][:1], two[0]["pitch"][:1])  # at first all count


def test_checkpoints_save_the_last_epoch_and_copy_the_best(tmp_path):
    import keras

    from trainer.fit import Checkpoints

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    last, best = tmp_path / "last.keras", tmp_path / "best.keras"

    def kernel(path):
        return float(keras.models.load_model(path).layers[0].kernel.numpy()[0, 0])

    saver = Checkpoints(last, best, None)
    saver.set_model(model)
    for epoch, loss in enumerate([3.0, 2.0, 2.5]):  # the second epoch is the best
        model.layers[0].kernel.assign(np.full((2, 1), float(epoch)))
        saver.on_epoch_end(epoch, {"val_loss": loss})
    assert kernel(last) == 2.0 and kernel(best) == 1.0
    resumed = Checkpoints(last, best, 2.0)  # a resumed run keeps its best unless beaten
    resumed.set_model(model)
    resumed.on_epoch_end(3, {"val_loss": 2.2})
    assert kernel(best) == 1.0 and not list(tmp_path.glob("*.tmp"))
