"""Every service started with a bad setting says so in one line and exits 2."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, free_port


@pytest.mark.parametrize(("module", "env", "expected"), [
    ("synth", {"SOUNDFONT": "/nope.sf2"}, "synth: bad setting: SOUNDFONT='/nope.sf2': Value "
                                          "error, no SoundFont at /nope.sf2"),
    ("synth", {"LEAD_SECONDS": "-1"}, "synth: bad setting: LEAD_SECONDS='-1': Input should be"),
    ("gateway", {"PORT": "99999"}, "gateway: bad setting: PORT='99999': Input should be less "
                                   "than or equal to 65535"),
    ("gateway", {"PUBLIC_LISTENING": "maybe"}, "gateway: bad setting: PUBLIC_LISTENING='maybe'"),
    ("inference", {"LEASE_MS": "abc"}, "inference: bad setting: LEASE_MS='abc': Input should be "
                                       "a valid integer"),
    ("inference", {"LOG_LEVEL": "LOUD"}, "inference: bad setting: LOG_LEVEL='LOUD'"),
    ("inference", {"REDIS_URL": "redis://127.0.0.1:{port}/0"},
     "inference: cannot reach Redis at redis://127.0.0.1:"),
    ("gateway", {"REDIS_URL": "redis://127.0.0.1:{port}/0"},
     "gateway: cannot reach Redis at redis://127.0.0.1:"),
])
def test_bad_setting_one_line(module, env, expected):
    env = {k: v.format(port=free_port()) for k, v in env.items()}
    res = subprocess.run([sys.executable, "-m", module], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env={**os.environ, **env})
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), res.stderr
