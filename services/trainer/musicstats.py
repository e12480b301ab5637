"""Musical statistics of event sequences, to compare improvisations with the corpus.

Plain numpy, no TensorFlow: `evaluate` runs on the exported model only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from playbach.vocab import DURATIONS, Event

MAJOR = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
SCALES = [frozenset((root + s) % 12 for s in steps)
          for steps in (MAJOR, HARMONIC_MINOR) for root in range(12)]
DUR_INDEX = {d: i for i, d in enumerate(DURATIONS)}


def _notes(piece: Sequence[Event]) -> list[int]:
    return [m for ev in piece for m in ev.midi]


def pitch_class_histogram(pieces: Sequence[Sequence[Event]]) -> np.ndarray:
    h = np.zeros(12)
    for piece in pieces:
        for m in _notes(piece):
            h[m % 12] += 1
    return h / max(h.sum(), 1)


def duration_histogram(pieces: Sequence[Sequence[Event]]) -> np.ndarray:
    h = np.zeros(len(DURATIONS))
    for piece in pieces:
        for ev in piece:
            h[DUR_INDEX[ev.duration]] += 1
    return h / max(h.sum(), 1)


def scale_consistency(piece: Sequence[Event]) -> float:
    """Share of notes in the best-fitting major or harmonic-minor scale (1.0: all in one key)."""
    notes = _notes(piece)
    if not notes:
        return float("nan")
    return max(sum(m % 12 in scale for m in notes) for scale in SCALES) / len(notes)


def pitch_range(piece: Sequence[Event]) -> float:
    notes = _notes(piece)
    return float(max(notes) - min(notes)) if notes else float("nan")


def mean_abs_interval(piece: Sequence[Event]) -> float:
    """Mean leap, in semitones, between the top notes of consecutive sounding events."""
    tops = [max(ev.midi) for ev in piece if not ev.is_rest]
    return float(np.mean(np.abs(np.diff(tops)))) if len(tops) > 1 else float("nan")


def longest_repeat(tokens: Sequence[str]) -> int:
    """Length of the longest run of tokens that occurs twice (a loop detector)."""

    def repeats(n: int) -> bool:
        seen: set[tuple[str, ...]] = set()
        for i in range(len(tokens) - n + 1):
            gram = tuple(tokens[i:i + n])
            if gram in seen:
                return True
            seen.add(gram)
        return False

    lo, hi = 0, max(len(tokens) - 1, 0)
    while lo < hi:  # repeats(n) implies repeats(n - 1): binary search the largest n
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if repeats(mid) else (lo, mid - 1)
    return lo


def profile(pieces: Sequence[Sequence[Event]], window: int = 256) -> dict[str, object]:
    """Per-piece means (the loop detector on each piece's first ``window`` events, so long and
    short pieces compare) and the histograms."""

    def mean(values: list[float]) -> float:
        vals = [v for v in values if not np.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")

    return {
        "pitch_classes": pitch_class_histogram(pieces).round(4).tolist(),
        "durations": duration_histogram(pieces).round(4).tolist(),
        "scale_consistency": mean([scale_consistency(p) for p in pieces]),
        "pitch_range": mean([pitch_range(p) for p in pieces]),
        "mean_abs_interval": mean([mean_abs_interval(p) for p in pieces]),
        "longest_repeat": mean([longest_repeat([e.pitch for e in p[:window]]) for p in pieces]),
    }


def total_variation(a: Sequence[float], b: Sequence[float]) -> float:
    """Half the L1 distance of two histograms: 0 identical, 1 disjoint."""
    return float(0.5 * np.abs(np.asarray(a) - np.asarray(b)).sum())


def compare(generated: dict[str, object], corpus: dict[str, object]) -> dict[str, object]:
    """Generated beside corpus, with the two histogram distances."""
    keys = ("scale_consistency", "pitch_range", "mean_abs_interval", "longest_repeat")
    return {
        "pitch_class_distance": total_variation(generated["pitch_classes"],
                                                corpus["pitch_classes"]),
        "duration_distance": total_variation(generated["durations"], corpus["durations"]),
        **{k: {"generated": round(float(generated[k]), 3), "corpus": round(float(corpus[k]), 3)}
           for k in keys},
    }
