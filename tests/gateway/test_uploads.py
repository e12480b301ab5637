"""Training uploads: MIDI kept under safe unique names, zips opened, everything else skipped
and named, and an upload over a limit refused whole (a zip bomb by its table, unpacked never)."""

from __future__ import annotations

import io
import zipfile

import pytest

from gateway.uploads import Refused, UploadLimits, collect, safe_name
from tests.conftest import CELLO

LIMITS = UploadLimits(max_files=5, max_mb=0.1, file_mb=0.03)
MIDI = (CELLO / "cs1-1pre.mid").read_bytes()


def zipped(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_midi_is_kept_everything_else_is_named_with_why():
    got = collect([("a.mid", MIDI), ("../../etc/a.mid", MIDI), ("notes.txt", b"hello"),
                   ("big.mid", b"MThd" + bytes(40_000))], LIMITS)
    assert sorted(got.files) == ["a-2.mid", "a.mid"]  # no folders, no overwriting
    assert {s.file: s.reason for s in got.skipped} == {
        "notes.txt": "not a MIDI file (no MThd header)",
        "big.mid": "0.04 MB, over the 0.03 MB limit per file"}


def test_a_zip_is_opened_and_its_odd_members_named():
    got = collect([("suite.zip", zipped(**{"x/cs1.mid": MIDI, "x/readme.md": b"#",
                                           "x/cs2.MIDI": MIDI}))], LIMITS)
    assert sorted(got.files) == ["cs1.mid", "cs2.MIDI"]
    assert [s.file for s in got.skipped] == ["suite.zip/x/readme.md"]


@pytest.mark.parametrize(("parts", "status", "said"), [
    ([("a.mid", MIDI)] * 6, 413, "6 files sent; the limit is at most 5 MIDI files"),
    ([("s.zip", zipped(**{f"{i}.mid": MIDI for i in range(6)}))], 413, "holds 6 files"),
    ([(f"{i}.mid", b"MThd" + bytes(25_000)) for i in range(5)], 413, "over 0.1 MB of MIDI"),
    ([("bomb.zip", zipped(**{f"{i}.mid": b"MThd" + bytes(29_000) for i in range(5)}))], 413,
     "bomb.zip unpacks to 0.145 MB"),
    ([("notes.txt", b"hi"), ("x.zip", b"PK\x03\x04broken")], 422,
     "no MIDI file to train on (notes.txt: not a MIDI file (no MThd header); x.zip: not a "
     "readable zip"),
])
def test_an_upload_over_a_limit_is_refused_whole(parts, status, said):
    with pytest.raises(Refused) as refused:
        collect(parts, LIMITS)
    assert refused.value.status == status and said in refused.value.detail


def test_safe_names():
    assert safe_name("C:\\music\\Suite No 1.mid") == "Suite No 1.mid"
    assert safe_name("../..") == "unnamed.mid" and safe_name("a;rm -rf.mid") == "a_rm -rf.mid"
