"""Every service started with a bad setting says so in one line and exits 2."""

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from tests.conftest import REPO, free_port

REDIS_FORMS = "expected redis://host[:port][/db], rediss://host[:port][/db], unix:///path"


@pytest.mark.parametrize(("module", "env", "expected"), [
    ("synth", {"SOUNDFONT": "/nope.sf2"}, "synth: bad setting: SOUNDFONT='/nope.sf2': Value "
                                          "error, no SoundFont at /nope.sf2"),
    ("synth", {"SOUNDFONT": "/etc/passwd"}, "synth: bad setting: SOUNDFONT='/etc/passwd': Value "
                                            "error, not a SoundFont (.sf2) file"),
    ("synth", {"LEAD_SECONDS": "-1"}, "synth: bad setting: LEAD_SECONDS='-1': Input should be"),
    ("gateway", {"PORT": "99999"}, "gateway: bad setting: PORT='99999': Input should be less "
                                   "than or equal to 65535"),
    ("gateway", {"PUBLIC_LISTENING": "maybe"}, "gateway: bad setting: PUBLIC_LISTENING='maybe'"),
    ("gateway", {"REDIS_URL": "nonsense"}, "gateway: bad setting: REDIS_URL='nonsense': Value "
                                           f"error, not a Redis URL; {REDIS_FORMS}"),
    ("gateway", {"ALLOWED_ORIGINS": '["http://a.example"'},
     "gateway: bad setting: ALLOWED_ORIGINS='[\"http://a.example\"': Value error, not a JSON list"),
    ("gateway", {"ALLOWED_ORIGINS": "a.example"}, "gateway: bad setting: ALLOWED_ORIGINS="
                                                  "'a.example': Value error, 'a.example' is not "
                                                  "an origin; expected scheme://host[:port]"),
    ("gateway", {"ADMIN_PASSWORD": "Password1234"}, "gateway: bad setting: ADMIN_PASSWORD="
                                                    "'<hidden>': Value error, too easy to guess: "
                                                    "this is similar to a commonly used password"),
    ("gateway", {"WORKERS": "2", "PORT": "0x"}, "gateway: bad setting: PORT='0x'"),
    ("gateway", {"MODELS_DIR": "/nonexistent"}, "gateway: bad setting: MODELS_DIR='/nonexistent'"
                                                ": Value error, no such directory"),
    ("inference", {"MODELS_DIR": "/nonexistent"}, "inference: bad setting: MODELS_DIR="
                                                  "'/nonexistent': Value error, no such directory"),
    ("inference", {"LEASE_MS": "abc"}, "inference: bad setting: LEASE_MS='abc': Input should be "
                                       "a valid integer"),
    ("inference", {"LOG_LEVEL": "LOUD"}, "inference: bad setting: LOG_LEVEL='LOUD'"),
    ("synth", {"MODELS_DIR": "/nonexistent"}, "synth: bad setting: MODELS_DIR="
                                              "'/nonexistent': Value error, no such directory"),
    # An unreachable Redis is no bad setting: the services wait for it (tests/live/test_faults).
])
def test_bad_setting_one_line(module, env, expected):
    env = {k: v.format(port=free_port()) for k, v in env.items()}
    res = subprocess.run([sys.executable, "-m", module], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env={**os.environ, **env})
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), res.stderr


# --- the same checks in process (fast, and for the values that must still be accepted) -------

@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment with an existing MODELS_DIR; returns monkeypatch.setenv."""
    for name in ("REDIS_URL", "MODELS_DIR", "ALLOWED_ORIGINS", "SOUNDFONT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    return monkeypatch.setenv


@pytest.mark.parametrize("value", [
    "http://a.example, http://b.example", '["http://a.example", "http://b.example"]',
    ' http://a.example/ ,http://b.example,, '])
def test_allowed_origins_as_json_or_a_comma_separated_list(env, value):
    from gateway.settings import GatewaySettings

    env("ALLOWED_ORIGINS", value)
    settings = GatewaySettings(_env_file=None)
    assert settings.allowed_origins == ["http://a.example", "http://b.example"]


@pytest.mark.parametrize(("value", "origins"), [
    ("http://a.example", ["http://a.example"]), ("*", ["*"]), ('["*"]', ["*"]),
    ("[]", []), ("", [])])
def test_allowed_origins_single_and_empty(env, value, origins):
    from gateway.settings import GatewaySettings

    env("ALLOWED_ORIGINS", value)
    assert GatewaySettings(_env_file=None).allowed_origins == origins


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0", "redis://redis", "rediss://user:pw@cache.example:6380/2",
    "unix:///run/redis/redis.sock", "unix:///run/redis.sock?db=1", "redis://h/0?socket_timeout=3",
    "redis+cluster://node-1:7000", "rediss+cluster://u:pw@node-1:7000/0"])
def test_redis_urls_accepted(env, url):
    from playbach.settings import LiveSettings

    env("REDIS_URL", url)
    assert LiveSettings(_env_file=None).redis_url == url


@pytest.mark.parametrize(("url", "problem"), [
    ("nonsense", "not a Redis URL"), ("http://h:6379", "not a Redis URL"),
    ("redis-cluster://h", "not a Redis URL"), ("REDIS://h", "not a Redis URL"),
    ("redis+cluster://h:7000/1", "a Redis Cluster has only database 0"),
    ("redis://:6379/0", "no host"), ("unix://", "no socket path"),
    ("redis://h:abc/0", "Port could not be cast"), ("redis://h:99999", "Port out of range"),
    ("redis://h/zero", "database 'zero' is not a number"),
    ("redis://h/0?socket_timeout=x", "Invalid value for 'socket_timeout'")])
def test_redis_urls_refused(env, url, problem):
    from playbach.settings import LiveSettings

    env("REDIS_URL", url)
    with pytest.raises(ValidationError) as info:
        LiveSettings(_env_file=None)
    assert problem in str(info.value) and "expected redis://host" in str(info.value)


def test_a_real_soundfont_header_is_enough(env, tmp_path):
    from synth.settings import SynthSettings

    sf2 = tmp_path / "tiny.sf2"
    sf2.write_bytes(b"RIFF\x04\x00\x00\x00sfbk")
    env("SOUNDFONT", str(sf2))
    assert SynthSettings(_env_file=None).soundfont == sf2
    sf2.write_bytes(b"RIFF\x04\x00\x00\x00WAVE")  # RIFF, but a WAV file
    with pytest.raises(ValidationError, match="not a SoundFont"):
        SynthSettings(_env_file=None)


def test_models_dir_refused_only_where_it_is_read(env, tmp_path):
    from gateway.settings import GatewaySettings
    from inference.settings import InferenceSettings
    from synth.settings import SynthSettings
    from trainer.settings import TrainerSettings

    env("MODELS_DIR", str(tmp_path / "missing"))
    for cls in (GatewaySettings, InferenceSettings, SynthSettings):
        with pytest.raises(ValidationError, match="no such directory"):
            cls(_env_file=None)
    env("MODELS_DIR", __file__)
    with pytest.raises(ValidationError, match="not a directory"):
        InferenceSettings(_env_file=None)
    env("MODELS_DIR", str(tmp_path / "missing"))
    # The trainer creates it.
    assert TrainerSettings(_env_file=None).models_dir == tmp_path / "missing"


def test_trainer_ignores_redis_url(env):
    from trainer.settings import TrainerSettings

    env("REDIS_URL", "nonsense")  # the trainer never talks to Redis
    assert TrainerSettings(_env_file=None).redis_url == "nonsense"


class _Listy(BaseSettings):
    numbers: list[int] = []  # decoded as JSON by pydantic-settings: a SettingsError if not


@pytest.mark.parametrize(("env_value", "expected"), [
    ("not json", 'demo: bad setting: error parsing value for field "numbers" from source '
                 '"EnvSettingsSource": Expecting value'),
    ('["x"]', "demo: bad setting: NUMBERS_0='x': Input should be a valid integer")])
def test_load_reports_source_errors_in_one_line(monkeypatch, capsys, env_value, expected):
    from playbach.settings import load

    monkeypatch.setenv("NUMBERS", env_value)
    with pytest.raises(SystemExit) as info:
        load(_Listy, "demo")
    assert info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_unreadable_password_file_one_line_without_secrets(tmp_path, monkeypatch, capsys):
    from gateway.settings import GatewaySettings
    from playbach.settings import load

    secret = tmp_path / "password"
    secret.write_bytes(b"\xff\xfe not text")  # read by a model validator: UnicodeDecodeError
    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("ADMIN_PASSWORD_FILE", str(secret))
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("TOKEN_SECRET", "do-not-print-me")
    with pytest.raises(SystemExit):
        load(GatewaySettings, "gateway")
    err = capsys.readouterr().err
    assert err.startswith("gateway: bad setting: ADMIN_PASSWORD_FILE="), err
    assert "do-not-print-me" not in err and "not text" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_redis_password_stays_out_of_log_lines(tmp_path, monkeypatch, capsys):
    """Kubernetes gives REDIS_URL a password: neither a bad-setting line nor the
    Redis-down warning shows it."""
    from playbach.service import RedisWatch
    from playbach.settings import LiveSettings, load, redacted

    assert redacted("redis://:pw-x@host:6379/0") == "redis://:***@host:6379/0"
    assert redacted("redis://host:6379/0") == "redis://host:6379/0"
    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", "redis://:pw-x@host:6379/zero")
    with pytest.raises(SystemExit):
        load(LiveSettings, "inference")
    err = capsys.readouterr().err
    assert "REDIS_URL='redis://:***@host:6379/zero'" in err and "pw-x" not in err
    assert "pw-x" not in RedisWatch("inference", "redis://:pw-x@host:6379/0").url
