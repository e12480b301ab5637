"""The key a piece is in, as a model is conditioned on it: its tonic, its mode and its register.

A network that must work out the key from the notes alone drifts when it improvises: every
note it samples out of key is, to it, evidence of a new key (sampled at temperature 1 right
after real Bach, 30-43% of its notes left the key; Bach's own 64-note excerpts keep 93% in
one scale). So a model is trained knowing each piece's key, and improvises in one key drawn
from its corpus' own. Scoring never tells it the key: it is inferred from the notes so far,
as a posterior over every key the model knows (``trainer.heldout``).

The key is found with the Krumhansl-Kessler profiles (duration-weighted pitch classes against
each of the 24 rotated profiles, the best correlation wins). Its *anchor* is the tonic nearest
the piece's median note, so the same key an octave higher is another condition: the register
travels with the key. Without octaves (pitch classes only) the anchor is the tonic's class."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from playbach.vocab import NAMES, Event

MODES = ("major", "minor")
# Krumhansl & Kessler (1982), probe-tone ratings from the tonic up
PROFILES = np.array([
    (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88),
    (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17),
])
KEY_SLOTS = 2  # floats of a step model's state that hold its key: anchor, mode


@dataclass(frozen=True, order=True)
class Key:
    anchor: int  # the tonic: a MIDI note near the piece's middle (a pitch class without octaves)
    mode: int  # index in MODES

    def __post_init__(self) -> None:
        if not 0 <= self.anchor <= 127 or self.mode not in range(len(MODES)):
            raise ValueError(f"not a key: anchor {self.anchor}, mode {self.mode}")

    @property
    def name(self) -> str:
        """``G major`` (the register is the anchor's, not part of the name)."""
        return f"{NAMES[self.anchor % 12]} {MODES[self.mode]}"

    def moved(self, semitones: int, octaves: bool = True) -> Key:
        anchor = self.anchor + semitones if octaves else (self.anchor + semitones) % 12
        return Key(anchor, self.mode)

    def as_list(self) -> list[int]:
        return [self.anchor, self.mode]


def find_key(notes: Sequence[int], weights: Sequence[float], octaves: bool = True) -> Key:
    """The key of MIDI ``notes`` sounding for ``weights`` (durations). No notes: C major."""
    notes_a, w = np.asarray(notes, int), np.asarray(weights, float)
    if not len(notes_a) or w.sum() <= 0:
        return Key(60 if octaves else 0, 0)
    hist = np.bincount(notes_a % 12, weights=w, minlength=12)
    best, tonic, mode = -2.0, 0, 0
    for m, profile in enumerate(PROFILES):
        for t in range(12):
            r = np.corrcoef(hist, np.roll(profile, t))[0, 1] if hist.std() > 0 else 0.0
            if r > best + 1e-12:
                best, tonic, mode = r, t, m
    if not octaves:
        return Key(tonic, mode)
    order = np.argsort(notes_a, kind="stable")
    cum = np.cumsum(w[order])
    median = notes_a[order][np.searchsorted(cum, cum[-1] / 2)]
    anchor = tonic + 12 * round((median - tonic) / 12)  # the tonic nearest the median
    while anchor > 127:
        anchor -= 12
    return Key(int(anchor), mode)


def key_of(events: Iterable[Event], octaves: bool = True) -> Key:
    """The key of a piece (or of the last events heard), each note weighed by its length."""
    notes, weights = [], []
    for ev in events:
        for m in ev.midi:
            notes.append(m)
            weights.append(float(ev.duration))
    return find_key(notes, weights, octaves)


@dataclass(frozen=True)
class KeyTable:
    """What a conditioned model knows of keys (``meta.json`` → ``keys``): where its state holds
    the key, the keys of its training pieces as Bach wrote them (what it improvises in, drawn
    by how often each occurs) and every key scoring considers (the corpus' keys moved as far
    as training moved them, in both modes)."""

    offset: int
    corpus: tuple[tuple[Key, int], ...]
    hypotheses: tuple[Key, ...]

    @classmethod
    def from_meta(cls, meta: dict) -> KeyTable | None:
        block = meta.get("keys")
        if not block:
            return None
        try:
            return cls(int(block["offset"]),
                       tuple((Key(a, m), int(n)) for a, m, n in block["corpus"]),
                       tuple(Key(a, m) for a, m in block["hypotheses"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"meta.json keys are malformed: {exc}") from None

    def to_meta(self) -> dict:
        return {"offset": self.offset,
                "corpus": [[*k.as_list(), n] for k, n in self.corpus],
                "hypotheses": [k.as_list() for k in self.hypotheses]}

    def draw(self, rng: np.random.Generator) -> Key:
        counts = np.array([n for _, n in self.corpus], float)
        return self.corpus[int(rng.choice(len(counts), p=counts / counts.sum()))][0]

    def nearest(self, key: Key) -> Key:
        """``key`` if scoring knows it, else the known key of its tonic and mode nearest in
        register (another model's key, or one heard in a register this model never read)."""
        if key in self.hypotheses:
            return key
        same = [k for k in self.hypotheses if k.mode == key.mode
                and k.anchor % 12 == key.anchor % 12] or list(self.hypotheses)
        return min(same, key=lambda k: (abs(k.anchor - key.anchor), k))

    @property
    def commonest(self) -> Key:
        return max(self.corpus, key=lambda kn: kn[1])[0]


def hypotheses(keys: Iterable[Key], low: int, high: int, octaves: bool = True
               ) -> tuple[Key, ...]:
    """Every anchor the corpus' keys reach moved by ``low``..``high`` semitones, in both modes
    (a test piece may be in a mode its key never had in training)."""
    top = 127 if octaves else 11
    anchors = sorted({a for k in keys for s in range(low, high + 1)
                      if 0 <= (a := k.anchor + s if octaves else (k.anchor + s) % 12) <= top})
    return tuple(Key(a, m) for a in anchors for m in range(len(MODES)))
