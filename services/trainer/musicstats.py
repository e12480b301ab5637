"""Musical statistics of excerpts, to compare improvisations with the corpus like with like:
excerpts of the same number of sounding events on both sides, each statistic shown beside the
corpus excerpts' 10th-90th percentile band.

Plain numpy, no TensorFlow: `evaluate` runs on the exported model only."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np

from playbach.vocab import Event

MAJOR = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
SCALES = [frozenset((root + s) % 12 for s in steps)
          for steps in (MAJOR, HARMONIC_MINOR) for root in range(12)]
BAND = (10, 90)  # percentiles of the corpus excerpts that make "like Bach"


def _notes(piece: Sequence[Event]) -> list[int]:
    return [m for ev in piece for m in ev.midi]


def _entropy(counts: Counter) -> float:
    p = np.array(list(counts.values()), float)
    p = p[p > 0] / p.sum() if p.sum() else p
    return float(-(p * np.log2(p)).sum()) if len(p) else float("nan")


def pitch_class_entropy(piece: Sequence[Event]) -> float:
    """Bits: 0 for one pitch class, log2(12) = 3.58 for all twelve equally."""
    return _entropy(Counter(m % 12 for m in _notes(piece)))


def scale_consistency(piece: Sequence[Event]) -> float:
    """Share of notes in the best-fitting major or harmonic-minor scale (1.0: all in one key)."""
    notes = _notes(piece)
    if not notes:
        return float("nan")
    return max(sum(m % 12 in scale for m in notes) for scale in SCALES) / len(notes)


def pitch_range(piece: Sequence[Event]) -> float:
    notes = _notes(piece)
    return float(max(notes) - min(notes)) if notes else float("nan")


def highest_note(piece: Sequence[Event]) -> float:
    notes = _notes(piece)
    return float(max(notes)) if notes else float("nan")


def chord_rate(piece: Sequence[Event]) -> float:
    """Share of sounding events with more than one note."""
    sounding = [ev for ev in piece if not ev.is_rest]
    return sum(len(ev.midi) > 1 for ev in sounding) / len(sounding) if sounding else float("nan")


def mean_abs_interval(piece: Sequence[Event]) -> float:
    """Mean leap, in semitones, between the top notes of consecutive sounding events."""
    tops = [max(ev.midi) for ev in piece if not ev.is_rest]
    return float(np.mean(np.abs(np.diff(tops)))) if len(tops) > 1 else float("nan")


def duration_entropy(piece: Sequence[Event]) -> float:
    """Bits of the durations' distribution: 0 when every event lasts as long."""
    return _entropy(Counter(ev.duration for ev in piece))


def mean_duration(piece: Sequence[Event]) -> float:
    """Quarter lengths per event."""
    return float(np.mean([float(ev.duration) for ev in piece])) if piece else float("nan")


def longest_repeat(tokens: Sequence) -> int:
    """Length of the longest run of tokens that occurs twice (overlaps allowed): for each
    distance d, the longest run of positions where the sequence agrees with itself d later."""
    ids = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    a = np.array([ids[t] for t in tokens], np.int64)
    best = 0
    for d in range(1, len(a) - best):  # a run at distance d is at most len - d long
        same = np.concatenate([[0], (a[:-d] == a[d:]).astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(same))  # starts and ends of runs of agreement
        if len(edges):
            best = max(best, int((edges[1::2] - edges[::2]).max()))
    return best


def longest_exact_repeat(piece: Sequence[Event]) -> float:
    """Events (pitch and duration both) in the longest passage heard twice."""
    return float(longest_repeat([(ev.pitch, ev.duration) for ev in piece]))


def onsets(piece: Sequence[Event]) -> tuple[list[Fraction], Fraction]:
    """Where each sounding event starts (quarter lengths from the excerpt's start; rests take
    time, chords are one onset), and where the excerpt ends."""
    at, starts = Fraction(0), []
    for ev in piece:
        if not ev.is_rest:
            starts.append(at)
        at += ev.duration
    return starts, at


def iois(piece: Sequence[Event]) -> list[Fraction]:
    """Inter-onset intervals: from each sounding event's start to the next's (a rest between
    them lengthens the interval), the last to the excerpt's end."""
    starts, end = onsets(piece)
    return [b - a for a, b in zip(starts, [*starts[1:], end], strict=True)]


def onsets_per_beat(piece: Sequence[Event]) -> float:
    """Sounding events per quarter note: 1 for quarters throughout, 4 for sixteenths."""
    starts, end = onsets(piece)
    return len(starts) / float(end) if end else float("nan")


def top_ioi_share(piece: Sequence[Event]) -> float:
    """The share of the commonest inter-onset interval: near 1, one rhythm throughout."""
    found = Counter(iois(piece))
    return max(found.values()) / sum(found.values()) if found else float("nan")


def ioi_entropy(piece: Sequence[Event]) -> float:
    """Bits of the inter-onset intervals' distribution."""
    return _entropy(Counter(iois(piece)))


def triplet_share(piece: Sequence[Event]) -> float:
    """Share of sounding events lasting a triplet value (1/6, 1/3, 2/3, 4/3...)."""
    sounding = [ev for ev in piece if not ev.is_rest]
    if not sounding:
        return float("nan")
    return sum(Fraction(ev.duration).denominator % 3 == 0 for ev in sounding) / len(sounding)


def moves(piece: Sequence[Event]) -> np.ndarray:
    """Semitones from each sounding event's top note to the next's."""
    tops = [max(ev.midi) for ev in piece if not ev.is_rest]
    return np.diff(tops) if len(tops) > 1 else np.zeros(0)


def step_share(piece: Sequence[Event]) -> float:
    """Share of moves between consecutive top notes of a whole tone or less (repeats too)."""
    found = moves(piece)
    return float(np.mean(np.abs(found) <= 2)) if len(found) else float("nan")


def leap_share(piece: Sequence[Event]) -> float:
    """Share of moves of a fourth or more."""
    found = moves(piece)
    return float(np.mean(np.abs(found) >= 5)) if len(found) else float("nan")


def contour_turns(piece: Sequence[Event]) -> float:
    """Share of moves that turn the line's direction (repeated notes skipped): Bach's
    figuration turns often, a scale run never, a line that wanders without a shape at
    random (about half)."""
    found = [m for m in moves(piece) if m]
    if len(found) < 2:
        return float("nan")
    return float(np.mean([(a > 0) != (b > 0) for a, b in itertools.pairwise(found)]))


def register_drift(piece: Sequence[Event]) -> float:
    """Semitones between the mean top note of the excerpt's last quarter and its first: a
    line that descends or climbs over the excerpt, against one that stays put."""
    tops = [max(ev.midi) for ev in piece if not ev.is_rest]
    if len(tops) < 8:
        return float("nan")
    q = len(tops) // 4
    return float(abs(np.mean(tops[-q:]) - np.mean(tops[:q])))


def long_note_rate(piece: Sequence[Event]) -> float:
    """Share of sounding events that last at least twice the excerpt's typical
    inter-onset interval: where a phrase comes to rest (a cadence, a held note, a rest
    after it). A rhythm locked in one value has none."""
    found = iois(piece)
    if not found:
        return float("nan")
    typical = float(np.median([float(x) for x in found]))
    return float(np.mean([float(x) >= 2 * typical for x in found]))


STATISTICS: dict[str, Callable[[Sequence[Event]], float]] = {
    "pitch_class_entropy": pitch_class_entropy,
    "scale_consistency": scale_consistency,
    "pitch_range": pitch_range,
    "highest_note": highest_note,
    "chord_rate": chord_rate,
    "mean_abs_interval": mean_abs_interval,
    "duration_entropy": duration_entropy,
    "mean_duration": mean_duration,
    "longest_exact_repeat": longest_exact_repeat,
}


# Everything `judge` looks at: `evaluate`'s, and rhythm, contour and phrase ends.
STATISTICS_ALL: dict[str, Callable[[Sequence[Event]], float]] = {
    **STATISTICS,
    "onsets_per_beat": onsets_per_beat, "top_ioi_share": top_ioi_share,
    "ioi_entropy": ioi_entropy, "triplet_share": triplet_share, "step_share": step_share,
    "leap_share": leap_share, "contour_turns": contour_turns, "register_drift": register_drift,
    "long_note_rate": long_note_rate,
}


def excerpts(pieces: Sequence[Sequence[Event]], sounding: int) -> list[list[Event]]:
    """Consecutive, non-overlapping excerpts of each piece, each ending at its ``sounding``-th
    sounding event (rests come on top, as in an improvisation); shorter remainders dropped."""
    out = []
    for piece in pieces:
        current: list[Event] = []
        count = 0
        for ev in piece:
            current.append(ev)
            count += not ev.is_rest
            if count == sounding:
                out.append(current)
                current, count = [], 0
    return out


def table(excerpts_: Sequence[Sequence[Event]]) -> dict[str, np.ndarray]:
    return {name: np.array([f(e) for e in excerpts_], float) for name, f in STATISTICS.items()}


def compare(generated: Sequence[Sequence[Event]], corpus: Sequence[Sequence[Event]]
            ) -> dict[str, dict[str, float | bool | None]]:
    """Per statistic: the improvisations' median (a typical improvised excerpt, what the band
    of single corpus excerpts describes) beside the corpus excerpts' band, whether it lies
    inside, the improvisations' mean and the share of them inside the band. (Judged by the
    mean, Bach's own unseen chorales would fail: 6% of chorale excerpts hold a single note,
    so the chord rate's band is exactly 1.0 while its mean is 0.997.)"""
    gen, ref = table(generated), table(corpus)
    out: dict[str, dict[str, float | bool | None]] = {}
    for name in STATISTICS:
        g, r = gen[name][~np.isnan(gen[name])], ref[name][~np.isnan(ref[name])]
        if not len(g) or not len(r):
            out[name] = {"generated": None, "mean": None, "share_inside": None, "low": None,
                         "median": None, "high": None, "inside": None}
            continue
        low, median, high = np.percentile(r, [BAND[0], 50, BAND[1]])
        typical, low, high = (round(float(v), 3) for v in (np.median(g), low, high))
        out[name] = {"generated": typical, "mean": round(float(g.mean()), 3),
                     "share_inside": round(float(np.mean((g >= low) & (g <= high))), 3),
                     "low": low, "median": round(float(median), 3), "high": high,
                     "inside": bool(low <= typical <= high)}
    return out
