"""Odd corpus files cost seconds, never the run: each is skipped and named, nothing hangs.

Every CLI run here stops at "corpus too small" (two real movements), so none trains."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CELLO, run_cli

TOO_SMALL = "is too small: 2 usable pieces"


def write_midi(path: Path, notes: int) -> Path:
    """A valid one-track MIDI file of ``notes`` sixteenths (music21: ~5 s per 10,000 notes)."""
    track = bytearray()
    for i in range(notes):
        pitch = 48 + i * 7 % 36
        track += bytes([0, 0x90, pitch, 80, 120, 0x80, pitch, 0])  # on now, off 120 ticks later
    track += b"\x00\xff\x2f\x00"  # end of track
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480)
    path.write_bytes(header + b"MTrk" + struct.pack(">I", len(track)) + track)
    return path


@pytest.fixture
def two_movements(tmp_path: Path) -> Path:
    """Two real cello movements: too few to train on, so a run ends right after parsing."""
    folder = tmp_path / "midi"
    folder.mkdir()
    for name in ("cs1-1pre.mid", "cs1-4sar.mid"):
        shutil.copy(CELLO / name, folder / name)
    return folder


@pytest.fixture
def fresh(tmp_path: Path) -> dict[str, str]:
    """Folders of this test alone: nothing parsed before, nothing cached."""
    return {name: str(tmp_path / name.lower()) for name in ("MODELS_DIR", "RUNS_DIR", "CACHE_DIR")}


def train(folder: Path, env: dict[str, str], *flags: str, timeout: float = 300):
    return run_cli("train", "--preset", "tiny", "--midi-dir", str(folder), "--no-progress",
                   *flags, env=env, timeout=timeout)


def skipped_and_too_small(res, count: int) -> str:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert TOO_SMALL in res.stderr, res.stderr
    assert (f"; {count} files skipped" in res.stderr) if count else ("skipped" not in res.stderr)
    return res.stderr


def test_named_pipe_and_folder_are_skipped_unopened(two_movements, fresh):
    os.mkfifo(two_movements / "x.mid")  # opening it would block until someone writes
    (two_movements / "folder.mid").mkdir()
    err = skipped_and_too_small(train(two_movements, fresh, timeout=120), 2)
    assert "skipped x.mid: not a regular file (a named pipe)" in err
    assert "skipped folder.mid: not a regular file (a folder)" in err


def test_oversized_file_is_skipped(two_movements, fresh):
    (two_movements / "huge.mid").write_bytes(b"MThd" + bytes(3_000_000))
    err = skipped_and_too_small(train(two_movements, fresh), 1)
    assert "skipped huge.mid: 3 MB, over the 2 MB limit (--max-file-mb)" in err


def test_file_with_too_many_notes_is_skipped_before_parsing(two_movements, fresh):
    # Under 2 MB, but music21 would need minutes and gigabytes: mido counts it in a second.
    write_midi(two_movements / "long.mid", 60_000)
    err = skipped_and_too_small(train(two_movements, fresh, timeout=120), 1)
    assert "skipped long.mid: 60000 notes, over the limit of 30000 (--max-notes)" in err


def test_slow_file_is_killed_at_the_time_limit(two_movements, fresh):
    started = time.monotonic()
    skipped_and_too_small(train(two_movements, fresh), 0)
    baseline = time.monotonic() - started  # start-up and parsing two movements, on this machine
    # Under --max-notes, but music21 needs most of a minute for it (it slows down with length).
    write_midi(two_movements / "slow.mid", 25_000)
    started = time.monotonic()
    res = train(two_movements, fresh, "--max-parse-seconds", "1")  # the movements are cached
    elapsed = time.monotonic() - started
    err = skipped_and_too_small(res, 1)
    assert "skipped slow.mid: took longer than 1 s to parse (--max-parse-seconds)" in err
    assert elapsed < baseline + 15, (elapsed, baseline)


def _job(arg: object) -> object:
    """Runs in a worker process of :func:`trainer.isolate.run_each`."""
    if arg == "die":
        os._exit(3)
    if isinstance(arg, str):  # a pid file: say who we are, then never finish
        Path(arg).write_text(str(os.getpid()))
        time.sleep(600)
    return arg * 2


def test_worker_over_the_time_limit_is_killed_not_abandoned(tmp_path):
    from trainer import isolate

    pid_file = tmp_path / "pid"
    started = time.monotonic()
    outcomes = dict(isolate.run_each(_job, [str(pid_file), "die", 21], workers=2, seconds=5))
    assert time.monotonic() - started < 30
    assert outcomes[0].timed_out
    assert outcomes[1].error == "the process died (exit code 3)"
    assert outcomes[2].value == 42 and not outcomes[2].timed_out
    with pytest.raises(ProcessLookupError):  # reaped, not left sleeping (or burning CPU)
        os.kill(int(pid_file.read_text()), 0)


@pytest.fixture
def without_tensorflow(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """PYTHONPATH with stand-ins for TensorFlow and Keras that leave a mark and fail."""
    marker, shadow = tmp_path / "tensorflow-was-imported", tmp_path / "shadow"
    for package in ("tensorflow", "keras"):
        (shadow / package).mkdir(parents=True)
        (shadow / package / "__init__.py").write_text(
            f"open({str(marker)!r}, 'a').write({package!r})\n"
            f"raise ImportError('{package} is blocked by the test')\n")
    path = os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}, marker


def test_too_small_is_reported_before_tensorflow_loads(two_movements, fresh, without_tensorflow):
    env, marker = without_tensorflow
    env = {**fresh, **env}
    check = subprocess.run([sys.executable, "-c", "import keras"], capture_output=True,
                           text=True, env={**os.environ, **env}, timeout=60)
    assert check.returncode != 0 and marker.exists(), check.stderr  # the stand-ins do shadow
    marker.unlink()
    res = train(two_movements, env)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: corpus {two_movements} {TOO_SMALL}"), res.stderr
    assert not marker.exists()
