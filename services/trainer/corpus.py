"""Corpora -> pieces of events: parsed in parallel, cached by file contents, bad files named."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from playbach.vocab import REST, EncodingOptions, Event, dynamic, pitch_token, quantize_duration
from trainer.config import UserError

ENCODER_VERSION = 1  # bump when parsing changes, to invalidate caches
MIN_PIECES = 3  # one each for training, validation and test
MIDI_SUFFIXES = (".mid", ".midi")


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
    """Rests merged, zero-length (grace) notes dropped, leading and trailing rests trimmed."""
    events: list[Event] = []
    shift = key_shift(score) if options.transpose else 0
    for el in _stream(score, options.parts):
        if float(el.quarterLength) <= 0:
            continue
        midis = [] if el.isRest else [p.midi + shift for p in el.pitches]
        token = pitch_token(midis, options.octaves)
        if token == REST and events and events[-1].pitch == REST:
            prev = events.pop()
            el_len = prev.duration + quantize_duration(el.quarterLength)
            events.append(Event(REST, quantize_duration(el_len)))
            continue
        if token == REST and not events:
            continue
        velocity = None if token == REST else _velocity(el)
        events.append(Event(token, quantize_duration(el.quarterLength), dynamic(velocity)))
    while events and events[-1].pitch == REST:
        events.pop()
    return events


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


def _parse_cached(args: tuple[Path, EncodingOptions, Path]) -> dict:
    """Worker: one file -> {"events": [...]} or {"error": reason}, remembered by content hash."""
    path, options, cache_dir = args
    try:
        content = path.read_bytes()
    except OSError as exc:
        return {"error": f"unreadable: {exc.strerror or exc}", "sha": ""}
    sha = hashlib.sha256(content).hexdigest()
    cached = cache_dir / f"{_cache_key(content, options)}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    try:
        events = parse_file(path, options)
        result = {"sha": sha, "events": [[e.pitch, str(e.duration), e.velocity] for e in events]}
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        result = {"sha": sha, "error": f"{type(exc).__name__}: {reason}"}
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, cached)
    return result


def load_corpus(source: str, paths: list[Path], options: EncodingOptions, cache_dir: Path,
                workers: int | None = None, progress: bool = True) -> Corpus:
    """Parse ``paths`` (cached), skipping and naming the files that fail."""
    from fractions import Fraction

    from tqdm import tqdm

    cache_dir = Path(cache_dir) / "events"
    cache_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(p, options, cache_dir) for p in paths]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    bar = dict(total=len(jobs), desc="parsing", unit="file", disable=not progress, leave=False)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(_parse_cached, jobs, chunksize=2), **bar))
    else:
        results = [_parse_cached(j) for j in tqdm(jobs, **bar)]
    pieces, skipped, digest = [], [], hashlib.sha256(options.key().encode())
    for path, res in zip(paths, results, strict=True):
        digest.update(f"{path.name}:{res['sha']}\n".encode())
        if "error" in res:
            skipped.append({"file": path.name, "reason": res["error"]})
            continue
        events = [Event(p, Fraction(d), v) for p, d, v in res["events"]]
        pieces.append(Piece(path.stem, events))
    return Corpus(source, pieces, len(paths), digest.hexdigest()[:16], skipped)


def check_size(corpus: Corpus, seq_len: int) -> None:
    """Stop with one line when there is too little music to split and train on."""
    if len(corpus.pieces) < MIN_PIECES or corpus.events < 2 * seq_len:
        raise UserError(
            f"corpus {corpus.source} is too small: {len(corpus.pieces)} usable pieces, "
            f"{corpus.events} events (need at least {MIN_PIECES} pieces and {2 * seq_len} events)"
            + (f"; {len(corpus.skipped)} files skipped" if corpus.skipped else "")
        )
