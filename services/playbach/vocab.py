"""The note vocabulary: how one musical event becomes three token ids, and back.

An event is one step of the melody the model writes: a pitch token, a duration and a velocity.
Each has its own table (one softmax head each in the model).

Index tables (``vocab.json`` carries them with the model, so a model is never read with another
model's table):

========  ==========================================================================
head      indices
========  ==========================================================================
pitch     0 ``<s>`` (start of a piece), 1 ``<unk>`` (a chord too rare to learn), 2 ``R``
          (rest), then the corpus's notes by MIDI number (``C4``), then its chords
          (``C3.E3.G3``, notes ascending), both ordered by their MIDI numbers.
duration  0 ``<s>``, then :data:`DURATIONS` in order: ``1/8 1/6 1/4 1/3 3/8 1/2 2/3 3/4 1 4/3
          3/2 2 3 4`` quarter lengths (straight and triplet values, capped at a whole note).
velocity  0 ``<s>``, then :data:`DYNAMICS`: ``ppp pp p mp mf f ff fff``.
========  ==========================================================================

Pitch tokens are spelled from MIDI numbers with sharps (``A#3``, never ``B-3``), so one sound is
one token. With ``octaves=False`` (the original project's ``normal`` flag) notes lose their octave
(``C#``) and chords become their pitch classes in normal order (``A.C#.E``); such tokens sound from
octave 4 upwards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction

BOS, UNK, REST = "<s>", "<unk>", "R"
SPECIALS = (BOS, UNK)
NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_NOTE = re.compile(r"^([A-G]#?)(-?\d+)?$")  # canonical spelling only: sharps, as note_name writes

DURATIONS: tuple[Fraction, ...] = tuple(Fraction(x) for x in (
    "1/8", "1/6", "1/4", "1/3", "3/8", "1/2", "2/3", "3/4", "1", "4/3", "3/2", "2", "3", "4"))
DYNAMICS: tuple[tuple[str, int], ...] = (
    ("ppp", 16), ("pp", 33), ("p", 49), ("mp", 64), ("mf", 80), ("f", 96), ("ff", 112), ("fff", 127)
)
DEFAULT_DYNAMIC = "mf"  # scores without velocities (the chorales) are heard mezzo-forte
PARTS_HELP = "chordify | flatten | part:<name or number>"


class VocabError(ValueError):
    """A token, table or option that the vocabulary cannot accept."""


@dataclass(frozen=True)
class EncodingOptions:
    """How a score becomes events. Part of the cache key and of ``vocab.json``."""

    octaves: bool = True  # False: the original project's `normal` (pitch classes, normal order)
    parts: str = "chordify"  # chordify all voices | flatten them | one part:<name or number>
    min_count: int = 5  # chords heard fewer times in training become <unk> (never sampled)
    transpose: bool = False  # each piece moved to C major / A minor, so keys share statistics

    def __post_init__(self) -> None:
        if self.parts not in ("chordify", "flatten") and not (
            self.parts.startswith("part:") and len(self.parts) > 5
        ):
            raise VocabError(f"parts must be {PARTS_HELP}, not {self.parts!r}")
        if self.min_count < 1:
            raise VocabError(f"min_count must be at least 1, not {self.min_count}")

    def key(self) -> str:
        """What changes the parsed events (min_count only filters the table)."""
        return f"octaves={self.octaves};parts={self.parts};transpose={self.transpose}"


# --- tokens ----------------------------------------------------------------------------------


def note_name(midi: int, octaves: bool = True) -> str:
    """MIDI number -> note token: 61 -> ``C#4`` (or ``C#`` without octaves)."""
    if not 0 <= midi <= 127:
        raise VocabError(f"MIDI note {midi} is outside 0-127")
    return NAMES[midi % 12] + (str(midi // 12 - 1) if octaves else "")


def pitch_token(midis: Iterable[int], octaves: bool = True) -> str:
    """The token of a sounding event: one note, or a chord of its distinct notes ascending."""
    notes = sorted(set(midis))
    if not notes:
        return REST
    if octaves:
        return ".".join(note_name(m) for m in notes)
    classes = sorted({m % 12 for m in notes})
    return ".".join(NAMES[pc] for pc in normal_order(classes))


def normal_order(classes: Sequence[int]) -> list[int]:
    """The most compact rotation of a pitch-class set (Forte's normal order, simplified:
    smallest span first, then smallest intervals from the bottom)."""
    pcs = sorted(set(classes))
    rotations = [pcs[i:] + pcs[:i] for i in range(len(pcs))]

    def spans(rot: list[int]) -> tuple[int, ...]:
        return tuple((rot[-k] - rot[0]) % 12 for k in range(1, len(rot)))

    return min(rotations, key=spans)


def parse_note(name: str) -> tuple[int, int | None]:
    """``C#4`` -> (pitch class 1, octave 4); ``A#`` -> (10, None)."""
    m = _NOTE.match(name)
    if not m or m.group(1) not in NAMES:
        raise VocabError(f"not a note name: {name!r} (e.g. C4, F#3, or F# without octave)")
    pc, octave = m.groups()
    return NAMES.index(pc), int(octave) if octave is not None else None


def token_midi(token: str) -> tuple[int, ...]:
    """Pitch token -> MIDI numbers to sound (empty for a rest).

    Tokens without octaves sound from octave 4 upwards, each note above the one before."""
    if token == REST:
        return ()
    if token in SPECIALS:
        raise VocabError(f"{token} is not a sounding token")
    midis: list[int] = []
    for part in token.split("."):
        pc, octave = parse_note(part)
        if octave is not None:
            midi = (octave + 1) * 12 + pc
        else:
            midi = 60 + pc
            while midis and midi <= midis[-1]:
                midi += 12
        if not 0 <= midi <= 127:
            raise VocabError(f"{token!r} leaves the MIDI range 0-127")
        midis.append(midi)
    return tuple(midis)


def quantize_duration(quarter_length: float | Fraction) -> Fraction:
    """Nearest grid duration (ties to the shorter); longer than a whole note is capped."""
    q = Fraction(quarter_length).limit_denominator(96)
    if q <= 0:
        raise VocabError(f"duration must be positive, not {quarter_length}")
    return min(DURATIONS, key=lambda d: (abs(d - q), d))


def duration_token(d: Fraction) -> str:
    return str(d)


def dynamic(velocity: int | None) -> str:
    """MIDI velocity (1-127, or None for scores without one) -> dynamics bucket."""
    if velocity is None:
        return DEFAULT_DYNAMIC
    return min(DYNAMICS, key=lambda kv: (abs(kv[1] - velocity), kv[1]))[0]


DYNAMIC_VELOCITY = dict(DYNAMICS)


@dataclass(frozen=True)
class Event:
    """One step of music: what sounds, for how long, how loud."""

    pitch: str
    duration: Fraction
    velocity: str = DEFAULT_DYNAMIC

    @property
    def midi(self) -> tuple[int, ...]:
        return token_midi(self.pitch)

    @property
    def midi_velocity(self) -> int:
        return DYNAMIC_VELOCITY[self.velocity]

    @property
    def is_rest(self) -> bool:
        return self.pitch == REST


# --- the tables ------------------------------------------------------------------------------


def _pitch_sort_key(token: str) -> tuple[int, tuple[int, ...]]:
    midis = token_midi(token)
    return (len(midis), midis)


@dataclass(frozen=True)
class Vocabulary:
    """The three token tables of a model, validated on construction."""

    pitch: tuple[str, ...]
    options: EncodingOptions = field(default_factory=EncodingOptions)
    duration: tuple[str, ...] = (BOS, *(duration_token(d) for d in DURATIONS))
    velocity: tuple[str, ...] = (BOS, *(name for name, _ in DYNAMICS))

    def __post_init__(self) -> None:
        if self.pitch[:3] != (BOS, UNK, REST):
            raise VocabError(f"pitch table must start with {BOS}, {UNK}, {REST}")
        for name, table in self.tables.items():
            if table[0] != BOS:
                raise VocabError(f"{name} table must start with {BOS}")
            if len(set(table)) != len(table):
                raise VocabError(f"{name} table has duplicate tokens")
        for token in self.pitch[3:]:
            if len(token_midi(token)) == 0:
                raise VocabError(f"pitch table has a second rest {token!r}")
        for token in self.duration[1:]:
            Fraction(token)
        unknown = set(self.velocity[1:]) - set(DYNAMIC_VELOCITY)
        if unknown:
            raise VocabError(f"unknown dynamics {sorted(unknown)}")
        object.__setattr__(self, "_index", {k: {t: i for i, t in enumerate(v)}
                                            for k, v in self.tables.items()})

    @property
    def tables(self) -> dict[str, tuple[str, ...]]:
        return {"pitch": self.pitch, "duration": self.duration, "velocity": self.velocity}

    @property
    def sizes(self) -> tuple[int, int, int]:
        return len(self.pitch), len(self.duration), len(self.velocity)

    @classmethod
    def build(cls, pieces: Iterable[Sequence[Event]], options: EncodingOptions) -> Vocabulary:
        """Pitch table from a training corpus: every note and rest, chords heard min_count times."""
        counts: dict[str, int] = {}
        for piece in pieces:
            for ev in piece:
                counts[ev.pitch] = counts.get(ev.pitch, 0) + 1
        keep = [t for t, c in counts.items() if t != REST and (
            "." not in t or c >= options.min_count)]
        return cls((BOS, UNK, REST, *sorted(keep, key=_pitch_sort_key)), options)

    def encode(self, ev: Event) -> tuple[int, int, int]:
        idx = self._index  # type: ignore[attr-defined]
        return (
            idx["pitch"].get(ev.pitch, 1),
            idx["duration"][duration_token(ev.duration)],
            idx["velocity"][ev.velocity],
        )

    def decode(self, ids: Sequence[int]) -> Event:
        p, d, v = (int(i) for i in ids)
        if min(p, d, v) == 0 or p == 1:
            raise VocabError(f"ids {tuple(ids)} name a special token, not an event")
        return Event(self.pitch[p], Fraction(self.duration[d]), self.velocity[v])

    def encode_piece(self, piece: Sequence[Event]) -> list[tuple[int, int, int]]:
        """A piece as model input: the start token, then its events."""
        return [(0, 0, 0), *(self.encode(ev) for ev in piece)]

    def to_json(self) -> str:
        return json.dumps({"format": 1, "options": asdict(self.options), **{
            k: list(v) for k, v in self.tables.items()}}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        try:
            data = json.loads(text)
            if data.get("format") != 1:
                raise VocabError(f"vocab format {data.get('format')!r} is not 1")
            return cls(
                pitch=tuple(data["pitch"]),
                options=EncodingOptions(**data["options"]),
                duration=tuple(data["duration"]),
                velocity=tuple(data["velocity"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, VocabError):
                raise
            raise VocabError(f"vocab.json is malformed: {exc}") from exc
