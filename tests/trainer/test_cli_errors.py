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
    (["crossval", "--preset", "tiny", "--resume"], "--resume needs --out"),
    (["crossval", "--preset", "tiny", "--folds", "3", "--only", "2,4"],
     "--only takes fold numbers from 1 to 3, comma-separated, not '2,4'"),
])
def test_bad_arguments(args, message, dirs):
    assert message in one_line_error(run_cli(*args, env=dirs))


def test_bad_setting_is_one_line(dirs):
    line = one_line_error(run_cli("generate", env={**dirs, "LOG_LEVEL": "LOUD"}))
    assert line.startswith("trainer: bad setting: LOG_LEVEL='LOUD'")


@pytest.mark.parametrize(("args", "message"), [
    (["--name", "../evil"], "error: model name '../evil' must be 1-64 of a-z 0-9 . _ -"),
    (["--name", "Bad Name"], "error: model name 'Bad Name' must be"),
    (["--limit", "0"], "error: --limit must be at least 1"),
    (["--max-file-mb", "0"], "error: --max-file-mb must be a number above 0, not 0.0"),
    (["--max-parse-seconds", "nan"], "error: --max-parse-seconds must be a number above 0"),
    (["--max-notes", "-5"], "error: --max-notes must be a number above 0, not -5"),
    (["--name", "never-trained", "--resume"], "error: --resume: nothing to resume in"),
    (["--rhythm=-1"], "error: rhythm must be at least 0 (off) and duration_weight above 0"),
    (["--duration-weight=0"], "error: rhythm must be at least 0 (off)"),
    (["--duration-weight=nan"], "error: rhythm must be at least 0 (off)"),
])
def test_train_arguments_are_checked_before_any_work(args, message, tmp_path, cello_dir):
    """Even with a real corpus to parse: nothing is read, cached or trained first."""
    cache = tmp_path / "cache"
    env = {"MODELS_DIR": str(tmp_path / "models"), "RUNS_DIR": str(tmp_path / "runs"),
           "CACHE_DIR": str(cache)}
    # The timeout is far above start-up (about a second) and far below parsing plus training.
    res = run_cli("train", "--preset", "tiny", "--midi-dir", str(cello_dir), *args, env=env,
                  timeout=60)
    assert one_line_error(res).startswith(message)
    assert not cache.exists()  # not a single file parsed


@pytest.mark.parametrize(("env", "message"), [
    ({"MAX_PARSE_SECONDS": "0"}, "trainer: bad setting: MAX_PARSE_SECONDS='0': Input should be "
                                 "greater than 0"),
    ({"MAX_FILE_MB": "inf"}, "trainer: bad setting: MAX_FILE_MB='inf': Input should be a finite"),
])
def test_bad_limit_setting_is_one_line(env, message, dirs):
    assert one_line_error(run_cli("generate", env={**dirs, **env})).startswith(message)


@pytest.mark.parametrize("variable, what", [("CACHE_DIR", "CACHE_DIR"),
                                            ("MODELS_DIR", "--models-dir")])
def test_an_unwritable_folder_is_found_before_parsing(variable, what, tmp_path, cello_dir):
    """Found before training, not at publishing after it (the compose trainer, as nobody on
    a root-owned ./models, trained for minutes, then failed)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {"MODELS_DIR": str(tmp_path / "m"), "RUNS_DIR": str(tmp_path / "r"),
           "CACHE_DIR": str(tmp_path / "c"), variable: str(blocker / "sub")}
    res = run_cli("train", "--midi-dir", str(cello_dir), timeout=60, env=env)
    assert res.returncode == 2
    assert one_line_error(res) == f"error: {what} {blocker / 'sub'}: not a writable folder"


def test_the_worker_with_a_bad_setting_says_it_in_one_line():
    res = run_cli("worker", env={"REDIS_URL": "nonsense"}, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("trainer: bad setting: REDIS_URL='nonsense'")
    assert len(res.stderr.strip().splitlines()) == 1
    extra = run_cli("worker", "--now", timeout=60)
    assert extra.returncode == 2 and "unknown arguments: --now" in extra.stderr
