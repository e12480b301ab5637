"""Improvising with the shipped model through LiteRT."""

import itertools

import numpy as np

from playbach.schemas import DEFAULT_MODEL
from playbach.stepmodel import Improviser, StepModel, sample
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
