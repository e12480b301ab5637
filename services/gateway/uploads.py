"""Training uploads: MIDI files, or zips of them, checked against the limits before anything
is stored. An upload over a limit is refused whole; a file that is not MIDI (or too large)
is skipped and named, with why."""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from playbach.training import MIDI_MAGIC, Skipped, is_midi

MB = 1_000_000
ZIP_MAGIC = b"PK\x03\x04"


class Refused(Exception):
    """The whole upload is refused: ``status`` and a sentence naming the limit."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass(frozen=True)
class UploadLimits:
    max_files: int
    max_mb: float  # all files, a zip's unpacked
    file_mb: float  # one file

    def describe(self) -> str:
        return (f"at most {self.max_files} MIDI files, {self.max_mb:g} MB in all (zips "
                f"unpacked), {self.file_mb:g} MB each")


@dataclass
class Collected:
    files: dict[str, bytes] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    total: int = 0  # bytes kept


def safe_name(name: str) -> str:
    """A plain file name (no folders, no odd characters) that keeps the user's recognisable."""
    base = PurePosixPath(name.replace("\\", "/")).name
    clean = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" .")[:100]
    return clean or "unnamed.mid"


def collect(parts: list[tuple[str, bytes]], limits: UploadLimits) -> Collected:
    """The MIDI files among the uploaded ``(name, data)`` parts (zips opened), or Refused."""
    out = Collected()
    if len(parts) > limits.max_files:
        raise Refused(413, f"{len(parts)} files sent; the limit is {limits.describe()}")
    for name, data in parts:
        if data[:4] == ZIP_MAGIC:
            _unzip(name, data, limits, out)
        else:
            _add(name, data, limits, out)
    if not out.files:
        why = "; ".join(f"{s.file}: {s.reason}" for s in out.skipped[:10]) or "nothing sent"
        raise Refused(422, f"no MIDI file to train on ({why}). Send .mid files (Standard MIDI "
                           f"Files, beginning with {MIDI_MAGIC.decode()}) or a zip of them")
    return out


def _add(name: str, data: bytes, limits: UploadLimits, out: Collected) -> None:
    shown = name or "unnamed"
    if len(data) > limits.file_mb * MB:
        out.skipped.append(Skipped(file=shown, reason=f"{len(data) / MB:.3g} MB, over the "
                                                      f"{limits.file_mb:g} MB limit per file"))
        return
    if not is_midi(data):
        out.skipped.append(Skipped(file=shown, reason="not a MIDI file (no MThd header)"))
        return
    if len(out.files) >= limits.max_files:
        raise Refused(413, f"more than {limits.max_files} MIDI files; the limit is "
                           f"{limits.describe()}")
    out.total += len(data)
    if out.total > limits.max_mb * MB:
        raise Refused(413, f"over {limits.max_mb:g} MB of MIDI; the limit is "
                           f"{limits.describe()}")
    out.files[_unique(safe_name(name), out.files)] = data


def _unique(name: str, taken: dict[str, bytes]) -> str:
    if not name.lower().endswith((".mid", ".midi")):
        name += ".mid"
    stem, dot, suffix = name.rpartition(".")
    n, candidate = 1, name
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}{dot}{suffix}"
    return candidate


def _unzip(name: str, data: bytes, limits: UploadLimits, out: Collected) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        out.skipped.append(Skipped(file=name, reason=f"not a readable zip ({exc})"))
        return
    if len(members) > limits.max_files:
        raise Refused(413, f"{name} holds {len(members)} files; the limit is "
                           f"{limits.describe()}")
    declared = sum(m.file_size for m in members if m.file_size <= limits.file_mb * MB)
    if declared > limits.max_mb * MB:  # a zip bomb is refused by its table, never unpacked
        raise Refused(413, f"{name} unpacks to {declared / MB:.3g} MB; the limit is "
                           f"{limits.describe()}")
    for member in members:
        shown = f"{name}/{member.filename}"
        if member.file_size > limits.file_mb * MB:
            out.skipped.append(Skipped(file=shown, reason=f"{member.file_size / MB:.3g} MB, over "
                                                          f"the {limits.file_mb:g} MB limit per "
                                                          "file"))
            continue
        try:
            with archive.open(member) as f:
                content = f.read(int(limits.file_mb * MB) + 1)  # a lying table reads no more
        except (zipfile.BadZipFile, RuntimeError, ValueError, OSError, EOFError) as exc:
            out.skipped.append(Skipped(file=shown, reason=f"unreadable in the zip ({exc})"))
            continue
        _add(shown, content, limits, out)
