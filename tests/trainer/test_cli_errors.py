"""Bad input: one clear line on stderr, exit code 2, never a traceback."""

import pytest

from tests.conftest import run_cli


def one_line_error(res) -> str:
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_empty_midi_folder(tmp_path, dirs):
    line = one_line_error(run_cli("train", "--midi-dir", str(tmp_path), env=dirs))
    assert line == f"error: --midi-dir {tmp_path}: no .mid or .midi files in it"


def test_folder_of_only_corrupt_files(tmp_path, dirs):
    for i in range(3):
        (tmp_path / f"bad{i}.mid").write_bytes(b"not a midi file")
    res = run_cli("train", "--preset", "tiny", "--midi-dir", str(tmp_path), "--no-progress",
                  env=dirs)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "too small: 0 usable pieces" in res.stderr and "3 files skipped" in res.stderr
    for i in range(3):
        assert f"skipped bad{i}.mid" in res.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--units=abc"], "--units takes a int, not 'abc'"),
    (["train", "--colour=blue"], "unknown option '--colour=blue'"),
    (["train", "--preset", "tiny", "--objective=random"], "objective must be seq2seq or last"),
    (["train", "--parts", "voices"], "parts must be chordify | flatten | part:"),
    (["generate", "--temperature", "9"], "--temperature must be between 0.1 and 3.0"),
    (["generate", "--model", "no-such-model"], "has no meta.json"),
    (["generate", "--model", "../etc"], "model name '../etc' must be"),
    (["generate", "--instrument", "kazoo"], "unknown instrument 'kazoo'"),
])
def test_bad_arguments(args, message, dirs):
    assert message in one_line_error(run_cli(*args, env=dirs))


def test_bad_setting_is_one_line(dirs):
    line = one_line_error(run_cli("generate", env={**dirs, "LOG_LEVEL": "LOUD"}))
    assert line.startswith("trainer: bad setting: LOG_LEVEL='LOUD'")
