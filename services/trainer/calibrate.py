"""The rhythm temperature: how warm a model's durations are drawn, fitted to its training pieces.

Running free, a network feeds on its own notes: a rhythm it drew becomes the likeliest
continuation, is drawn again, and at the channel's temperature one inter-onset interval
took over whole excerpts (docs/music.md). Drawing the durations a little warmer than the
pitches can undo that lock-in. How much warmer (1.0: not at all) is fitted per model,
never by hand: among
CANDIDATES, the rhythm temperature whose improvisations' rhythm (most common inter-onset
share, onsets per beat) is closest, by the Kolmogorov-Smirnov distance, to the excerpts of
the model's own *training* pieces. The held-out pieces the judge compares with stay unseen.
The result goes into ``meta.json`` → ``sampling``, which every channel then follows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from playbach.schemas import DEFAULT_TOP_P
from playbach.stepmodel import Improviser, StepModel
from playbach.vocab import Event
from trainer import musicstats as ms
from trainer.improvise import corpus_pieces, default_length
from trainer.judge import ks

CANDIDATES = (1.0, 1.1, 1.2, 1.3, 1.4)
RHYTHM = ("top_ioi_share", "onsets_per_beat")  # what the fit compares
NOTES = 100  # excerpt length: short enough for many excerpts from a few pieces
RUN = 3  # excerpts per improvisation


def distance(improvised: list[list[Event]], target: list[list[Event]]) -> float:
    """The sum over RHYTHM of the KS distances between the two sets of excerpts."""
    def values(name: str, excerpts: list[list[Event]]) -> np.ndarray:
        return np.array([ms.STATISTICS_ALL[name](e) for e in excerpts])

    return sum(ks(values(s, improvised), values(s, target))[0] for s in RHYTHM)


def fit(folder: Path, pieces: int = 16, seed: int = 0) -> dict:
    """Try every candidate on ``pieces`` improvisations of ``NOTES`` (fewer where a typical
    training piece is shorter); the best and what each scored, for meta.json → sampling."""
    pieces_ = corpus_pieces(folder, ("train",))
    notes = min(NOTES, default_length(pieces_))  # a chorale has ~50 events
    target = ms.excerpts(pieces_, notes)
    if len(target) < 2:
        return {"rhythm_temperature": 1.0, "fitted": "too few training excerpts"}
    model = StepModel(folder)
    tried = {}
    for warmth in CANDIDATES:
        # long enough to lock in: each cut into RUN excerpts
        played = ms.excerpts([list(Improviser(model, 1.0, seed + i, top_p=DEFAULT_TOP_P,
                                              rhythm_temperature=warmth).notes(notes * RUN))
                              for i in range(pieces)], notes)
        tried[str(warmth)] = round(distance(played, target), 4)
    best = min(CANDIDATES, key=lambda w: tried[str(w)])
    return {"rhythm_temperature": best, "fitted": {"against": "training pieces",
                                                   "statistics": list(RHYTHM),
                                                   "pieces": pieces, "notes": notes * RUN,
                                                   "ks_sum": tried}}
