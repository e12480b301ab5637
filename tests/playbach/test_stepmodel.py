"""Improvising with the shipped model through LiteRT."""

import itertools

import numpy as np
import pytest

from playbach.schemas import DEFAULT_MODEL
from playbach.stepmodel import REPEAT_REACH, Improviser, StepModel, repeat_bans, sample
from playbach.vocab import JOIN_ID
from tests.conftest import SHIPPED


def test_sample_never_draws_banned_and_follows_temperature():
    rng = np.random.default_rng(0)
    logits = np.array([10.0, 9.0, 1.0, 0.0])
    draws = [sample(logits, 1.0, rng, banned=(0,)) for _ in range(500)]
    assert 0 not in draws and draws.count(1) > 450
    hot = [sample(logits, 100.0, rng, banned=(0,)) for _ in range(600)]
    assert 150 < hot.count(3) < 250  # nearly uniform over the three allowed


def test_top_p_keeps_only_the_likeliest_choices_that_reach_it():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([1e-9, 0.5, 0.3, 0.15, 0.05]))
    assert {sample(logits, 1.0, rng, top_p=0.5) for _ in range(300)} == {1}
    assert {sample(logits, 1.0, rng, top_p=0.7) for _ in range(300)} == {1, 2}
    assert {sample(logits, 1.0, rng, top_p=0.81) for _ in range(600)} == {1, 2, 3}
    assert 4 in {sample(logits, 1.0, rng, top_p=1.0) for _ in range(600)}


def test_improviser_is_reproducible_and_continues_after_a_model_swap():
    model = StepModel(SHIPPED / DEFAULT_MODEL)
    a = Improviser(model, 1.0, seed=42)
    b = Improviser(model, 1.0, seed=42)
    first = [a.next() for _ in range(30)]
    assert first == [b.next() for _ in range(30)]
    # a second model primed with the history continues from the same state
    other = StepModel(SHIPPED / DEFAULT_MODEL)
    b.use(other)
    assert [a.next() for _ in range(10)] == [b.next() for _ in range(10)]
    fresh = Improviser(other, 1.0, seed=7, history=first)
    assert list(fresh.history) == first
    # a swap while playing primes with the last whole events within a few steps (a listener
    # waits for them), and keeps the whole history
    fed = Recording(SHIPPED / DEFAULT_MODEL)
    fresh.use(fed, prime=6)
    assert list(fresh.history) == first
    steps = [fed.vocab.steps(ev) for ev in first]
    k = next(k for k in range(len(first), 0, -1) if sum(map(len, steps[-k:])) <= 6)
    assert fed.fed[1:] == [s for ev_steps in steps[-k:] for s in ev_steps]
    assert k >= 3 and sum(map(len, steps[-k - 1:])) > 6


class Recording(StepModel):
    """The real step model, keeping every step it is fed."""

    def step(self, ids, state):
        self.fed = [*getattr(self, "fed", []), ids]
        return super().step(ids, state)


def test_a_note_joins_a_chord_only_above_the_note_before():
    # chords are read lowest note first; sampling would otherwise join some notes below
    model = Recording(SHIPPED / "chorales")
    list(Improviser(model, 1.0, seed=0).notes(150))
    joins = [(a, b) for a, b in itertools.pairwise(model.fed) if b[1] == JOIN_ID]
    assert len(joins) > 100 and all(b[0] > a[0] for a, b in joins)


def longest_repeat(steps: list) -> int:
    """The most consecutive steps that occur twice (overlapping allowed)."""
    k = 0
    while len({tuple(steps[i:i + k + 1]) for i in range(len(steps) - k)}) < len(steps) - k:
        k += 1
    return k


def test_repeat_bans_are_what_followed_the_last_steps_before():
    rng = np.random.default_rng(0)
    for _ in range(200):
        steps = rng.integers(0, 3, (40, 2))
        length = int(rng.integers(1, 4))
        tail = steps[len(steps) - length:].tolist()
        expected = {int(steps[i + length, 0]) for i in range(len(steps) - length)
                    if steps[i:i + length].tolist() == tail}
        assert repeat_bans(steps, length) == expected
    assert repeat_bans(steps, 0) == set() == repeat_bans(steps[:3], 3)


def test_an_improvisation_repeats_itself_no_longer_than_max_repeat():
    # cold, the suites' model goes round a figure (284 steps of 300 events, measured); the
    # rule must break it at max_repeat steps, within the steps it looks back over
    lengths = {}
    for most in (0, 12):
        model = Recording(SHIPPED / DEFAULT_MODEL)
        list(Improviser(model, 0.2, seed=1, max_repeat=most).notes(300))
        steps = [s[:2] for s in model.fed[1:]]
        assert len(steps) <= REPEAT_REACH
        lengths[most] = longest_repeat(steps)
    assert lengths[0] > 100 and lengths[12] <= 12, lengths


class Fixed:
    """A stand-in step model with fixed logits: a new event's pitch is mostly id 50, a joined
    note's mostly id 70, and p(+) is one half. Only the sampler's arithmetic is under test."""

    def __init__(self) -> None:
        from playbach.vocab import Vocabulary

        self.vocab, self.keys, self.outside = Vocabulary(), None, ()
        self.rhythm_temperature = 1.0
        rows = np.full((2, 130), -20.0)
        rows[0, 50], rows[1, 70], rows[1, 40] = 0.0, 0.0, -1.0  # a joined note below: banned
        duration = np.full(16, -20.0)
        duration[JOIN_ID] = duration[10] = 0.0
        self.logits = (rows, duration, np.zeros(9))

    def initial_state(self, key=None):
        return np.zeros((1, 1), np.float32)

    def step(self, ids, state):
        return self.logits, state


def test_joining_is_drawn_from_both_heads_before_the_pitch():
    imp = Improviser(Fixed(), 1.0, seed=0)
    draws = [imp._draw(True, join_above=60) for _ in range(4000)]
    joined = [p for p, d, _ in draws if d == JOIN_ID]
    # p(+) times the joined row's mass above 60 (1 / (1 + e^-1), id 40 is below), against
    # 1 - p(+): the model's joint restricted to what the grammar allows
    above = 1 / (1 + np.exp(-1))
    assert len(joined) / len(draws) == pytest.approx(above / (above + 1), abs=0.025)
    assert set(joined) == {70}  # the joined row, and only notes above the chord's last
    assert {p for p, d, _ in draws if d != JOIN_ID} == {50}  # a new event: its own row
    alone = {imp._draw(True, join_above=None)[1] for _ in range(200)}
    assert alone == {10}  # nothing to join: never +
    # top-p keeping only + (p(+) 0.99): a new event still gets a duration, never an index past
    # the table (the step model's gather failed on one, killing the channel's sampling)
    imp.model.logits[1][JOIN_ID] = 5.0
    imp.top_p = 0.5
    assert {imp._draw(True, join_above=None)[1] for _ in range(200)} == {10}


def test_the_improviser_keeps_to_the_range_of_its_corpus(tmp_path):
    import json
    import shutil

    from playbach.modeldir import ModelError

    model = StepModel(SHIPPED / DEFAULT_MODEL)
    low, high = model.range  # the suites' training movements: C2 to G4
    notes = [m for ev in Improviser(model, 1.5, seed=3, top_p=1.0).notes(400) for m in ev.midi]
    assert low <= min(notes) and max(notes) <= high
    assert high - low > 12 and max(notes) - min(notes) >= 12  # kept within, not squeezed
    # a range that is not [lowest, highest] is refused when the model loads
    broken = tmp_path / "broken"
    shutil.copytree(SHIPPED / DEFAULT_MODEL, broken)
    meta = json.loads((broken / "meta.json").read_text())
    meta["range"] = [70, 40]
    (broken / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"range \[70, 40\] is not \[lowest, highest\]"):
        StepModel(broken)


def test_the_durations_are_drawn_at_the_models_rhythm_temperature(tmp_path):
    import json
    import shutil

    from playbach.modeldir import ModelError

    model = StepModel(SHIPPED / DEFAULT_MODEL)

    def spread(warmth: float) -> int:  # distinct durations over the same seeds
        imp = Improviser(model, 1.0, seed=5, top_p=0.95, rhythm_temperature=warmth)
        return len({ev.duration for ev in imp.notes(300)})

    assert spread(3.0) > spread(0.5)
    # a model asks for its own (meta.json -> sampling); out of range it is refused
    warm = tmp_path / "warm"
    shutil.copytree(SHIPPED / DEFAULT_MODEL, warm)
    meta = json.loads((warm / "meta.json").read_text())
    meta["sampling"] = {"rhythm_temperature": 3.0}
    (warm / "meta.json").write_text(json.dumps(meta))
    assert StepModel(warm).rhythm_temperature == 3.0
    cold = Improviser(StepModel(warm), 1.0, seed=5, top_p=0.95, rhythm_temperature=0.5)
    own = Improviser(StepModel(warm), 1.0, seed=5, top_p=0.95)
    assert len({e.duration for e in own.notes(300)}) > len({e.duration for e in cold.notes(300)})
    for bad in (7, "warm", True):
        meta["sampling"] = {"rhythm_temperature": bad}
        (warm / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(ModelError, match=r"sampling\.rhythm_temperature .* is not a "
                                             r"number from 0\.5 to 3\.0"):
            StepModel(warm)
