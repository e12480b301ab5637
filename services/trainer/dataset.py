"""Pieces -> training arrays: splits by whole pieces, the context channels the network reads
beside the tokens (the piece's key among them), windows, per-head target weights, and
transposition of windows into other keys (augmentation)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from playbach.keys import Key, KeyTable, hypotheses, key_of
from playbach.stepmodel import HEADS
from playbach.vocab import BOS_ID, DURATION_OFFSET, JOIN_ID, MAX_CHORD, PITCH_OFFSET, Vocabulary
from trainer.config import TrainConfig
from trainer.corpus import Piece

KEYS = (-6, 5)  # transpositions tried: the twelve keys, up to a tritone either way
CONTEXT = ("last", "interval", "onset")  # channels 3-5 (0-2: the tokens), from context()
ONSET = len(HEADS) + CONTEXT.index("onset")  # the onset channel
PROFILE = slice(6, 18)  # channels 6-17: the notes of each pitch class so far (context())
VOICES = slice(18, 21)  # channels 18-20: CHORD_CONTEXT, from voices()
CHORD_CONTEXT = ("voice", "join", "bass")
KEY = slice(21, 23)  # channels 21-22: the piece's key (KEY_CONTEXT), the same at every step
KEY_CONTEXT = ("anchor", "mode")
WIDTH = 23
MOVING = (3, VOICES.start + 1, VOICES.start + 2, KEY.start)  # MIDI notes (last, join, bass,
# the key's anchor): transposed with the notes
INTERVALS = 24  # intervals up to two octaves either way are told apart; wider ones are clipped
CYCLE = 12 * 24  # onsets in 24ths of a quarter, counted round 12 quarters (every metre fits)


def duration_ticks(vocab: Vocabulary) -> np.ndarray:
    """Per duration id, its length in 24ths of a quarter (0 for the start and a chord's +)."""
    lengths = [int(Fraction(d) * 24) for d in vocab.duration[DURATION_OFFSET:]]
    return np.array([0] * DURATION_OFFSET + lengths, np.int32)


def context(seq: np.ndarray, ticks: np.ndarray, key: Key) -> np.ndarray:
    """[T, 3] -> [T, WIDTH]: the tokens and, per step, what the network should not have to count:
    ``last``, the MIDI note last sounded (this step's, or the latest before; -1 before any);
    ``interval``, this note's step from the note before (0 for none, else 25 + semitones,
    clipped to two octaves); ``onset``, where the next step begins in the bar cycle; and the
    piece's pitch-class profile, how many notes of each class from its start to this step
    (the key, from further back than a training window reaches); the voices (voices()); and
    ``key``, the piece's (anchor and mode, see playbach.keys)."""
    pitch = seq[:, 0]
    is_note = pitch >= PITCH_OFFSET
    where = np.maximum.accumulate(np.where(is_note, np.arange(len(seq)), -1))
    last = np.where(where >= 0, pitch[np.maximum(where, 0)] - PITCH_OFFSET, -1)
    before = np.concatenate([[-1], last[:-1]])
    step = np.clip(pitch - PITCH_OFFSET - before, -INTERVALS, INTERVALS) + INTERVALS + 1
    interval = np.where(is_note & (before >= 0), step, 0)
    onset = np.cumsum(ticks[seq[:, 1]]) % CYCLE
    classes = np.eye(12, dtype=np.int32)[np.maximum(pitch - PITCH_OFFSET, 0) % 12]
    profile = np.cumsum(classes * is_note[:, None], 0)
    keys = np.broadcast_to(np.array(key.as_list()), (len(seq), 2))
    return np.concatenate([seq, np.stack([last, interval, onset], 1), profile, voices(seq),
                           keys], 1).astype(np.int32)


def with_key(seq: np.ndarray, key: Key) -> np.ndarray:
    """The same steps told another key (scoring tries every key the model knows)."""
    out = seq.copy()
    out[:, KEY] = key.as_list()
    return out


def voices(seq: np.ndarray) -> np.ndarray:
    """[T, 3] -> [T, 3]: where each step stands among the notes sounding together (a chord is
    its notes lowest first, the further ones joined by ``+``), and the two notes the next one
    most likely moves from: ``voice``, this note's place in its chord (0: the lowest, or a
    single note); ``join``, the note of the chord before one place higher (where the next note
    goes if it joins this chord: the same voice, one chord earlier); ``bass``, this chord's
    lowest note once it has two (where the next chord's lowest goes from). MIDI, -1 for none.
    Voice leading then is an interval, as a melody's step is from the last note; a single line
    has neither (its last note is already ``last``)."""
    pitch = seq[:, 0]
    fresh = seq[:, 1] != JOIN_ID
    chord = np.cumsum(fresh) - 1
    start = np.maximum.accumulate(np.where(fresh, np.arange(len(seq)), 0))
    voice = np.minimum(np.arange(len(seq)) - start, MAX_CHORD - 1)
    notes = np.full((chord[-1] + 2, MAX_CHORD + 1), -1)  # a row for "no chord before"
    notes[chord, voice] = np.where(pitch >= PITCH_OFFSET, pitch - PITCH_OFFSET, -1)
    join = notes[chord - 1, voice + 1]  # chord - 1 = -1 is the empty last row
    return np.stack([voice, join, np.where(voice > 0, notes[chord, 0], -1)], 1)


def split_pieces(pieces: list[Piece], cfg: TrainConfig) -> tuple[list[Piece], ...]:
    """Train / validation / test by whole pieces, so no window of a held-out piece is seen."""
    order = np.random.default_rng(cfg.seed).permutation(len(pieces))
    n_val = max(1, round(len(pieces) * cfg.val_fraction))
    n_test = max(1, round(len(pieces) * cfg.test_fraction))
    val = [pieces[i] for i in order[:n_val]]
    test = [pieces[i] for i in order[n_val:n_val + n_test]]
    train = [pieces[i] for i in order[n_val + n_test:]]
    return train, val, test


def encode(pieces: list[Piece], vocab: Vocabulary) -> list[np.ndarray]:
    """Each piece as int32 [1 + steps, WIDTH]: the start step, then (pitch, duration,
    velocity) and the context channels."""
    ticks = duration_ticks(vocab)
    octaves = vocab.options.octaves
    return [context(np.array(vocab.encode_piece(p.events), np.int32), ticks,
                    key_of(p.events, octaves)) for p in pieces]


def note_range(seqs: list[np.ndarray]) -> list[int]:
    """The lowest and highest MIDI note of ``seqs`` as written (``meta.json`` → ``range``)."""
    pitch = np.concatenate([s[:, 0] for s in seqs])
    notes = pitch[pitch >= PITCH_OFFSET] - PITCH_OFFSET
    return [int(notes.min()), int(notes.max())]


def piece_key(seq: np.ndarray) -> Key:
    return Key(*(int(v) for v in seq[0, KEY]))


def key_table(train: list[np.ndarray], offset: int, octaves: bool) -> KeyTable:
    """The keys of the training pieces as written, and every key scoring considers: those moved
    as far as augmentation moves a window (KEYS), in both modes."""
    counts: dict[Key, int] = {}
    for seq in train:
        counts[piece_key(seq)] = counts.get(piece_key(seq), 0) + 1
    return KeyTable(offset, tuple(sorted(counts.items())),
                    hypotheses(counts, KEYS[0], KEYS[1], octaves))


def windows(seqs: list[np.ndarray], length: int, stride: int, pad: bool = True) -> np.ndarray:
    """Windows of ``length`` steps; a piece's tail gets a last window aligned to its end.
    Shorter pieces are zero-padded (id 0, never a target) unless ``pad`` is off."""
    out = []
    for seq in seqs:
        if len(seq) < length:
            if pad:
                out.append(np.pad(seq, ((0, length - len(seq)), (0, 0))))
            continue
        starts = list(range(0, len(seq) - length + 1, stride))
        if starts[-1] != len(seq) - length:
            starts.append(len(seq) - length)
        out.extend(seq[s:s + length] for s in starts)
    width = seqs[0].shape[1] if seqs else WIDTH
    return np.stack(out) if out else np.zeros((0, length, width), np.int32)


def inputs(win: np.ndarray) -> dict[str, np.ndarray]:
    """The network's inputs from encoded steps [..., T, WIDTH], by input name."""
    x = {h: win[..., i] for i, h in enumerate((*HEADS, *CONTEXT))}
    x["profile"] = win[..., PROFILE]
    x.update({v: win[..., VOICES.start + i] for i, v in enumerate(CHORD_CONTEXT)})
    x.update({v: win[..., KEY.start + i] for i, v in enumerate(KEY_CONTEXT)})
    return x


def xy(win: np.ndarray, objective: str) -> tuple[dict, dict, dict]:
    """Inputs, targets and target weights of each head. Every step is a target but padding;
    the `last` objective (the original project's) weighs only the final step."""
    x = inputs(win[:, :-1])
    y = {h: win[:, 1:, i] for i, h in enumerate(HEADS)}
    # the pitch is predicted knowing whether its step joins a chord (duration +), which the
    # duration head predicts: p(pitch, duration) = p(duration) p(pitch | joins)
    x["joins"] = (y["duration"] == JOIN_ID).astype(np.int32)
    valid = (y["duration"] != BOS_ID).astype(np.float32)  # padding
    if objective == "last":
        valid[:, :-1] = 0
    return x, y, {h: valid for h in HEADS}


def transpose(win: np.ndarray, rng: np.random.Generator, low: int, high: int,
              octaves: bool = True) -> np.ndarray:
    """Each window moved by a random number of semitones in KEYS that keeps its notes within
    MIDI ``low``..``high`` (a window already outside stays where it is). Without octaves the
    pitch classes turn round the circle instead."""
    out = win.copy()
    pitch = out[..., 0]
    notes = pitch >= PITCH_OFFSET
    if not octaves:
        shift = rng.integers(0, 12, size=(len(win), 1))
        pitch[notes] = ((pitch - PITCH_OFFSET + shift) % 12 + PITCH_OFFSET)[notes]
        for c in MOVING:
            ref = out[..., c]
            ref[ref >= 0] = ((ref + shift) % 12)[ref >= 0]
        return _turn_profile(out, shift[:, 0])
    big = np.iinfo(np.int32).max
    lo = np.where(notes, pitch, big).min(1) - PITCH_OFFSET
    hi = np.where(notes, pitch, -1).max(1) - PITCH_OFFSET
    k_min = np.clip(low - lo, KEYS[0], 0)
    k_max = np.clip(high - hi, 0, KEYS[1])
    shift = (k_min + np.floor(rng.random(len(win)) * (k_max - k_min + 1))).astype(np.int32)
    pitch += np.where(notes, shift[:, None], 0)
    for c in MOVING:
        ref = out[..., c]
        ref += np.where(ref >= 0, shift[:, None], 0)
    return _turn_profile(out, shift)


def stretch_table(vocab: Vocabulary, factors: tuple[Fraction, ...]) -> np.ndarray:
    """[len(factors), duration ids]: each id's duration times each factor (the start and a
    chord's ``+`` unchanged), -1 where the product is not on the grid."""
    lengths = [None] * DURATION_OFFSET + [Fraction(d) for d in vocab.duration[DURATION_OFFSET:]]
    ids = {d: i for i, d in enumerate(lengths) if d is not None}
    return np.array([[i if d is None else ids.get(d * f, -1) for i, d in enumerate(lengths)]
                     for f in factors], np.int32)


def stretch(win: np.ndarray, rng: np.random.Generator, table: np.ndarray,
            ticks: np.ndarray, factors: tuple[Fraction, ...]) -> np.ndarray:
    """Each window at another tempo: every duration times one of ``factors`` (the rows of
    ``table``), drawn among those that keep all of the window's durations and its first
    onset on the grid (a window none keeps stays as it is), its onsets counted again from
    there. Each dance of the suites comes four times; its rhythms at half or twice the speed
    are other dances'. (Times 2/3 and 3/2 too, the straight rhythms became triplets and
    dotted ones as often: the network then played triplets a corpus nearly without them
    never has: docs/music.md.)"""
    out = win.copy()
    dur = out[..., 1]
    before = (out[:, 0, ONSET] - ticks[dur[:, 0]]) % CYCLE  # where each window's first step begins
    for w in range(len(out)):
        begins = int(before[w])
        fits = [k for k, f in enumerate(factors)
                if (table[k][dur[w]] >= 0).all() and (begins * f).denominator == 1]
        if not fits:
            continue
        k = fits[rng.integers(len(fits))]
        dur[w] = table[k][dur[w]]
        out[w, :, ONSET] = (int(begins * factors[k]) + np.cumsum(ticks[dur[w]])) % CYCLE
    return out


def _turn_profile(win: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The pitch-class counts follow the notes: class c now counts what class c - shift did."""
    source = (np.arange(12)[None, :] - shift[:, None]) % 12  # [windows, 12]
    profile = win[..., PROFILE]
    win[..., PROFILE] = np.take_along_axis(profile, source[:, None, :], axis=-1)
    return win


def training_windows(train: list[np.ndarray], val: list[np.ndarray], cfg: TrainConfig
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Windows for training and validation, by the configured split and objective."""
    length = cfg.seq_len + 1
    stride = cfg.stride
    pad = cfg.objective != "last"
    if cfg.split == "windows":  # the original protocol: shuffle all windows, then split
        every = windows(train + val, length, stride, pad)
        order = np.random.default_rng(cfg.seed).permutation(len(every))
        n_val = max(1, round(len(every) * cfg.val_fraction))
        return every[order[n_val:]], every[order[:n_val]]
    return windows(train, length, stride, pad), windows(val, length, stride, pad)
