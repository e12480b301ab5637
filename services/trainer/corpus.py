"""Corpora -> pieces of events: parsed in parallel, cached by file contents, bad files named.

Every file is bounded (see :class:`Limits`): anything that is not a regular file is never
opened, and a file too large, with too many notes or too slow to parse is skipped and named."""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path

from playbach.training import CORPORA, MAX_FILE_MB
from playbach.vocab import (
    DURATIONS,
    REST,
    EncodingOptions,
    Event,
    dynamic,
    grid_lengths,
    pitch_token,
)
from trainer import isolate
from trainer.config import UserError

ENCODER_VERSION = 2  # bump when parsing changes, to invalidate caches
MIN_PIECES = 3  # one each for training, validation and test
MIDI_SUFFIXES = (".mid", ".midi")
MB = 1_000_000
PRELOAD = ("music21.converter", "mido", "trainer.corpus")  # imported once, by the fork server


@dataclass(frozen=True)
class Limits:
    """Bounds on one file, so that one odd file costs seconds and megabytes, never the run."""

    # cello-suite movements are 3-10 KB; 2 MB of MIDI is ~250,000 notes
    max_file_mb: float = MAX_FILE_MB
    max_parse_seconds: float = 60.0  # music21 takes ~5 s for 10,000 notes, more than linearly
    max_notes: int = 30_000  # 20x the longest cello movement; music21 holds ~9 KB per note

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"--{f.name.replace('_', '-')} must be a number above 0, "
                                f"not {value!r}")

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * MB)


@dataclass
class Piece:
    name: str
    events: list[Event]


@dataclass
class Corpus:
    source: str
    pieces: list[Piece]
    files: int
    fingerprint: str
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(len(p.events) for p in self.pieces)


def chorale_paths(limit: int | None = None) -> list[Path]:
    """The Bach chorales shipped inside music21's corpus (no download)."""
    from music21 import corpus

    paths = sorted(Path(p) for p in corpus.getComposer("bach")
                   if Path(p).suffix in (".mxl", ".xml") and Path(p).name.startswith("bwv"))
    return paths[:limit] if limit else paths


SCORE_SUFFIXES = (".mxl", ".xml", ".krn")  # scores, not music21's analyses (.rntxt)


def corpus_paths(name: str, limit: int | None = None) -> list[Path]:
    """A corpus music21 ships (see playbach.training.CORPORA), by name."""
    from music21 import corpus

    if name not in CORPORA:
        raise UserError(f"unknown corpus {name!r}; choose one of {', '.join(CORPORA)}")
    if name == "bach-chorales":
        return chorale_paths(limit)
    paths = sorted(Path(p) for p in corpus.getComposer(name) if Path(p).suffix in SCORE_SUFFIXES)
    return paths[:limit] if limit else paths


def midi_paths(folder: Path, limit: int | None = None) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--midi-dir {folder}: no such folder")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES)
    if not paths:
        raise UserError(f"--midi-dir {folder}: no .mid or .midi files in it")
    return paths[:limit] if limit else paths


def _velocity(element) -> int | None:  # music21 note, chord or rest
    notes = getattr(element, "notes", None) or [element]
    found = [n.volume.velocity for n in notes if n.volume.velocity is not None]
    return max(found) if found else None


def _stream(score, parts: str):
    """The elements to read, in time order, for one `parts` option."""
    if parts == "chordify":
        return score.chordify().flatten().notesAndRests
    if parts == "flatten":  # the original project's reading: every voice's notes, no rests
        return score.flatten().notes
    wanted = parts.removeprefix("part:")
    candidates = list(score.parts)
    for i, part in enumerate(candidates):
        if wanted in (str(i), str(part.partName or "").strip(), str(part.id)):
            return part.chordify().flatten().notesAndRests
    names = [str(p.partName or p.id) for p in candidates]
    raise ValueError(f"no part {wanted!r} (parts: {', '.join(names) or 'none'})")


def key_shift(score) -> int:
    """Semitones (-6..5) that move the piece's key to C major or A minor."""
    key = score.analyze("key")
    target = 0 if key.mode == "major" else 9
    return (target - key.tonic.pitchClass + 6) % 12 - 6


def events_from_score(score, options: EncodingOptions) -> list[Event]:
    """Rests merged, zero-length (grace) notes dropped, leading and trailing rests trimmed.

    Every event keeps its onset: a length the grid lacks is written as grid lengths that add
    up to it (:func:`grid_lengths`: the note, then a rest), and a note shorter than the
    grid's shortest (an ornament's 1/12) lends its time to the event before. Rounded
    instead, one 5/4 moved every later onset off the beat: the metric position the network
    reads was wrong from there on for 5-99% of the notes of 8 of the 24 suites' movements."""
    raw: list[list] = []  # [token, exact length in quarters, dynamic]
    shift = key_shift(score) if options.transpose else 0
    for el in _stream(score, options.parts):
        length = Fraction(el.quarterLength).limit_denominator(96)
        if length <= 0:
            continue
        midis = [] if el.isRest else [p.midi + shift for p in el.pitches]
        token = pitch_token(midis, options.octaves)
        if token == REST and not raw:
            continue
        if raw and ((token == REST and raw[-1][0] == REST) or length < DURATIONS[0]):
            raw[-1][1] += length
            continue
        raw.append([token, length, dynamic(None if token == REST else _velocity(el))])
    events: list[Event] = []
    for token, length, velocity in raw:
        first, *rest = grid_lengths(length)
        events.append(Event(token, first, velocity))
        events.extend(Event(REST, d) for d in rest)
    while events and events[-1].pitch == REST:
        events.pop()
    return events


def count_midi_notes(path: Path) -> int | None:
    """Notes in a MIDI file, read with mido (fast, light); None when mido cannot read it, so
    music21, which is more lenient, still decides whether it is usable."""
    import mido

    try:
        midi = mido.MidiFile(path, clip=True)
    except Exception:
        return None
    return sum(m.type == "note_on" and m.velocity > 0 for track in midi.tracks for m in track)


def parse_file(path: Path, options: EncodingOptions) -> list[Event]:
    from music21 import converter

    score = converter.parse(str(path))
    events = events_from_score(score, options)
    if not events:
        raise ValueError("no notes in it")
    return events


def _cache_key(content: bytes, options: EncodingOptions) -> str:
    h = hashlib.sha256(content)
    h.update(f"|{options.key()}|v{ENCODER_VERSION}".encode())
    return h.hexdigest()


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    return next((name for test, name in kinds if test(mode)), "not a file")


def _refusal(path: Path, limits: Limits) -> str | None:
    """Why ``path`` is not even read, from its metadata: a FIFO or device is never opened."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return f"not a regular file ({_kind(info.st_mode)})"
    if info.st_size > limits.max_bytes:
        return (f"{info.st_size / MB:.3g} MB, over the {limits.max_file_mb:g} MB limit "
                "(--max-file-mb)")
    return None


def _read(path: Path, max_bytes: int) -> bytes:
    # Non-blocking and bounded: a file swapped for a FIFO or grown since the stat cannot hang us.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as f:
        content = f.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise OSError(f"grew over the {max_bytes / MB:g} MB limit while being read")
    return content


def _known(path: Path, options: EncodingOptions, cache_dir: Path, limits: Limits) -> dict:
    """The result without parsing (refused, unreadable or cached), or ``{"cache": file}``."""
    reason = _refusal(path, limits)
    if reason:
        return {"sha": "", "error": reason}
    try:
        content = _read(path, limits.max_bytes)
    except OSError as exc:
        return {"sha": "", "error": f"unreadable: {exc.strerror or exc}"}
    cached = cache_dir / f"{_cache_key(content, options)}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    return {"sha": hashlib.sha256(content).hexdigest(), "cache": str(cached)}


def parse_job(job: tuple[Path, EncodingOptions, int]) -> dict:
    """In a worker process: one file -> ``{"events": [...]}`` or ``{"error": why}``, plus
    ``"limit": True`` when only a setting refused it (so that is not cached)."""
    path, options, max_notes = job
    try:
        notes = count_midi_notes(path) if path.suffix.lower() in MIDI_SUFFIXES else None
        if notes is not None and notes > max_notes:
            return {"error": f"{notes} notes, over the limit of {max_notes} (--max-notes)",
                    "limit": True}
        events = parse_file(path, options)
        return {"events": [[e.pitch, str(e.duration), e.velocity] for e in events]}
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        return {"error": f"{type(exc).__name__}: {reason}"}


def _settle(pending: dict, outcome: isolate.Outcome, limits: Limits) -> dict:
    """A worker's outcome as a result; cached only when it depends on the file alone."""
    if outcome.timed_out:
        return {"sha": "", "error": f"took longer than {limits.max_parse_seconds:g} s to parse "
                                    "(--max-parse-seconds)"}
    if outcome.error or outcome.value.get("limit"):
        return {"sha": "", "error": outcome.error or outcome.value["error"]}
    result = {"sha": pending["sha"], **outcome.value}
    cached = Path(pending["cache"])
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, cached)
    return result


def _assemble(source: str, paths: list[Path], results: list[dict],
              options: EncodingOptions) -> Corpus:
    pieces, skipped, digest = [], [], hashlib.sha256(options.key().encode())
    for path, res in zip(paths, results, strict=True):
        digest.update(f"{path.name}:{res['sha']}\n".encode())
        if "error" in res:
            skipped.append({"file": path.name, "reason": res["error"]})
            continue
        events = [Event(p, Fraction(d), v) for p, d, v in res["events"]]
        pieces.append(Piece(path.stem, events))
    return Corpus(source, pieces, len(paths), digest.hexdigest()[:16], skipped)


def load_corpus(source: str, paths: list[Path], options: EncodingOptions, cache_dir: Path,
                workers: int | None = None, progress: bool = True,
                limits: Limits = Limits(), on_file=None) -> Corpus:
    """Parse ``paths`` (cached), skipping and naming the files that fail or exceed ``limits``;
    ``on_file(done, total)`` after each (the worker reports it).

    Each file is parsed in its own process, killed when it takes longer than allowed."""
    from tqdm import tqdm

    cache_dir = Path(cache_dir) / "events"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(paths), desc="parsing", unit="file", disable=not progress,
              leave=False) as bar:
        results = [_known(p, options, cache_dir, limits) for p in paths]
        todo = [i for i, res in enumerate(results) if "cache" in res]
        bar.update(len(paths) - len(todo))
        done = len(paths) - len(todo)
        if on_file:
            on_file(done, len(paths))
        jobs = [(paths[i], options, limits.max_notes) for i in todo]
        workers = workers or min(len(jobs), os.cpu_count() or 1)
        for j, outcome in isolate.run_each(parse_job, jobs, workers, limits.max_parse_seconds,
                                           PRELOAD):
            results[todo[j]] = _settle(results[todo[j]], outcome, limits)
            bar.update()
            done += 1
            if on_file:
                on_file(done, len(paths))
    return _assemble(source, paths, results, options)


def check_size(corpus: Corpus, seq_len: int) -> None:
    """Stop with one line when there is too little music to split and train on."""
    if len(corpus.pieces) < MIN_PIECES or corpus.events < 2 * seq_len:
        raise UserError(
            f"corpus {corpus.source} is too small: {len(corpus.pieces)} usable pieces, "
            f"{corpus.events} events (need at least {MIN_PIECES} pieces and {2 * seq_len} events)"
            + (f"; {len(corpus.skipped)} files skipped" if corpus.skipped else "")
        )
