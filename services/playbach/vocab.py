"""The note vocabulary: how music becomes token ids, and back.

An :class:`Event` is one step of the music as it sounds: a pitch token (a note ``C4``, a chord
``C3.E3.G3``, a rest ``R``), a duration and a velocity. The model reads and writes *steps*: one
per note. A chord is its notes in sequence, lowest first; every note after the first carries
the duration token ``+`` ("sounds with the note before, as long"), which is the same-onset
flag. So every note and every chord of any instrument can be written, and nothing is ever
out of vocabulary.

Index tables (fixed: the same for every model; ``vocab.json`` carries them with the model):

========  ==========================================================================
head      indices
========  ==========================================================================
pitch     0 ``<s>`` (start of a piece), 1 ``R`` (rest), then ``2 + m`` for MIDI note ``m``
          (2 ``C-1`` ... 62 ``C4`` ... 129 ``G9``); with ``octaves=False`` (the original
          project's ``normal`` flag) ``2 + pitch class`` (2 ``C`` ... 13 ``B``).
duration  0 ``<s>``, 1 ``+`` (a further note of the chord begun by the step before), then
          :data:`DURATIONS` in order: ``1/8 1/6 1/4 1/3 3/8 1/2 2/3 3/4 1 4/3 3/2 2 3 4``
          quarter lengths (straight and triplet values, capped at a whole note).
velocity  0 ``<s>``, then :data:`DYNAMICS`: ``ppp pp p mp mf f ff fff``.
========  ==========================================================================

The special ids have names, used everywhere instead of numbers: ``BOS_ID`` (0, also padding),
``REST_ID`` (1), ``PITCH_OFFSET`` (2), ``JOIN_ID`` (1), ``DURATION_OFFSET`` (2),
``VELOCITY_OFFSET`` (1).

A transposition by ``k`` semitones is ``+k`` on every pitch id from 2 on (notes keep their
order), which is how training augments pieces into other keys. Pitch tokens are spelled from
MIDI numbers with sharps (``A#3``, never ``B-3``), so one sound is one token. Without octaves,
chords are their pitch classes in normal order (``A.C#.E``) and sound from octave 4 upwards.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction

BOS, REST, JOIN = "<s>", "R", "+"
SPECIALS = (BOS,)
FORMAT = 2  # of vocab.json: 1 had corpus-made tables of chord tokens and <unk>
MAX_CHORD = 6  # notes one event may sound at once (a step may join at most this many)
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
    transpose: bool = False  # each piece moved to C major / A minor, so keys share statistics

    def __post_init__(self) -> None:
        if self.parts not in ("chordify", "flatten") and not (
            self.parts.startswith("part:") and len(self.parts) > 5
        ):
            raise VocabError(f"parts must be {PARTS_HELP}, not {self.parts!r}")

    def key(self) -> str:
        """What changes the parsed events."""
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


@functools.cache
def grid_lengths(length: Fraction) -> tuple[Fraction, ...]:
    """``length`` (quarters) as grid durations that add up to it exactly, so what follows
    keeps its onset: itself, or the fewest grid durations, longest first (5/4, a quarter tied
    to a sixteenth, is 1 + 1/4; 23/12 is 3/2 + 1/4 + 1/6; 10 is 4 + 4 + 2); when none add up
    to it, the nearest, as :func:`quantize_duration`. A note sounds for the first; rests fill
    the others."""
    if length > 2 * DURATIONS[-1]:
        return (DURATIONS[-1], *grid_lengths(length - DURATIONS[-1]))
    ways = [(length,)] if length in DURATIONS else []
    for parts in (2, 3, 4):
        if ways:
            break
        ways = [c for c in itertools.combinations_with_replacement(reversed(DURATIONS), parts)
                if sum(c) == length]
    return max(ways) if ways else (quantize_duration(length),)


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

BOS_ID = 0  # id of ``<s>`` in every table: a piece's start step, and padding
PITCH_OFFSET = 2  # pitch id of MIDI note 0 (or pitch class 0)
REST_ID = 1  # pitch id of ``R``
JOIN_ID = 1  # duration id of ``+``: the step sounds with the one before (a chord's next note)
DURATION_OFFSET = 2  # duration id of the first length (after ``<s>`` and ``+``)
VELOCITY_OFFSET = 1  # velocity id of the first dynamic (after ``<s>``)
Step = tuple[int, int, int]  # (pitch, duration, velocity) ids


def pitch_table(octaves: bool = True) -> tuple[str, ...]:
    notes = [note_name(m) for m in range(128)] if octaves else list(NAMES)
    return (BOS, REST, *notes)


@dataclass(frozen=True)
class Vocabulary:
    """The three token tables of a model, validated on construction; events <-> steps."""

    options: EncodingOptions = field(default_factory=EncodingOptions)
    pitch: tuple[str, ...] = ()
    duration: tuple[str, ...] = (BOS, JOIN, *(duration_token(d) for d in DURATIONS))
    velocity: tuple[str, ...] = (BOS, *(name for name, _ in DYNAMICS))

    def __post_init__(self) -> None:
        expected = pitch_table(self.options.octaves)
        if not self.pitch:
            object.__setattr__(self, "pitch", expected)
        if self.pitch != expected:
            raise VocabError("pitch table is not the fixed note table of format 2 "
                             f"({len(self.pitch)} tokens, expected {len(expected)})")
        if self.duration[:DURATION_OFFSET] != (BOS, JOIN):
            raise VocabError(f"duration table must start with {BOS}, {JOIN}")
        if self.velocity[:VELOCITY_OFFSET] != (BOS,):
            raise VocabError(f"velocity table must start with {BOS}")
        for name, table in self.tables.items():
            if len(set(table)) != len(table):
                raise VocabError(f"{name} table has duplicate tokens")
        for token in self.duration[DURATION_OFFSET:]:
            Fraction(token)
        unknown = set(self.velocity[VELOCITY_OFFSET:]) - set(DYNAMIC_VELOCITY)
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

    def steps(self, ev: Event) -> list[Step]:
        """An event as model steps: a rest, or its notes lowest first (without octaves, in the
        token's normal order), the later ones joined."""
        idx = self._index  # type: ignore[attr-defined]
        dur, vel = idx["duration"][duration_token(ev.duration)], idx["velocity"][ev.velocity]
        if ev.is_rest:
            return [(REST_ID, dur, vel)]
        octaves = self.options.octaves
        notes = sorted(ev.midi) if octaves else list(dict.fromkeys(m % 12 for m in ev.midi))
        return [(PITCH_OFFSET + n, dur if i == 0 else JOIN_ID, vel) for i, n in enumerate(notes)]

    def encode_piece(self, piece: Sequence[Event]) -> list[Step]:
        """A piece as model input: the start step, then every event's steps."""
        return [(BOS_ID, BOS_ID, BOS_ID), *(s for ev in piece for s in self.steps(ev))]

    def decode_piece(self, steps: Iterable[Sequence[int]]) -> list[Event]:
        """The inverse of :meth:`encode_piece`: steps grouped into events (start steps and
        padding skipped)."""
        events: list[Event] = []
        chord: list[Step] = []
        for p, d, v in steps:
            if p == BOS_ID:
                continue
            if chord and d != JOIN_ID:
                events.append(self.event(chord))
                chord = []
            chord.append((int(p), int(d), int(v)))
        if chord:
            events.append(self.event(chord))
        return events

    def note(self, pitch_id: int) -> int:
        """The MIDI number a pitch id sounds (pitch classes from octave 4)."""
        if not PITCH_OFFSET <= pitch_id < len(self.pitch):
            raise VocabError(f"pitch id {pitch_id} is not a note")
        n = pitch_id - PITCH_OFFSET
        return n if self.options.octaves else 60 + n

    def event(self, steps: Sequence[Step]) -> Event:
        """The event that steps make: a rest, or a note or chord (the first step's duration)."""
        (p, d, v), *rest = steps
        if p == BOS_ID or d <= JOIN_ID or v == BOS_ID or any(ds != JOIN_ID for _, ds, _ in rest):
            raise VocabError(f"steps {list(steps)} do not make an event")
        duration, velocity = Fraction(self.duration[d]), self.velocity[v]
        if p == REST_ID:
            return Event(REST, duration, velocity)
        midis = [self.note(p)]
        for pj, _, _ in rest:  # in a chord without octaves, each note above the one before
            m = self.note(pj)
            while not self.options.octaves and m <= midis[-1]:
                m += 12
            midis.append(m)
        return Event(pitch_token(midis, self.options.octaves), duration, velocity)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "options": asdict(self.options), **{
            k: list(v) for k, v in self.tables.items()}}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise VocabError(f"vocab format {data.get('format')!r} is not {FORMAT} "
                                 "(retrain the model with this version)")
            return cls(
                options=EncodingOptions(**data["options"]),
                pitch=tuple(data["pitch"]),
                duration=tuple(data["duration"]),
                velocity=tuple(data["velocity"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, VocabError):
                raise
            raise VocabError(f"vocab.json is malformed: {exc}") from exc
