"""`judge --radio`: what a running stack's channels played, downloaded as each channel's
recent.mid and judged against the model's held-out pieces."""

from __future__ import annotations

import json

import httpx

from playbach.schemas import DEFAULT_MODEL
from tests.conftest import SHIPPED, login, run_cli


def test_the_judge_listens_to_live_channels_and_judges_what_they_played(live, tmp_path):
    url = live.gateway_url
    out = tmp_path / "radio.json"
    res = run_cli("judge", "--radio", url, "--model", DEFAULT_MODEL, "--minutes", "0.3",
                  "--channels", "2", "--notes", "16", "--seed", "5", "--out", str(out),
                  env={"MODELS_DIR": str(SHIPPED)}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(out.read_text())
    judged = result["lengths"]["16"]["network"]
    print(f"\nlive: {result['notes_heard']} notes heard on 2 channels in 18 s; "
          f"{judged['excerpts']} excerpts of 16 against {judged['bach_excerpts']} of Bach's")
    assert result["radio"] == url and result["notes_heard"] >= 32
    assert judged["excerpts"] >= 2 and judged["bach_excerpts"] > 10
    assert "onsets_per_beat" in judged["statistics"]
    listed = [c["id"] for c in httpx.get(f"{url}/api/channels", headers=login(url)).json()]
    assert listed == ["radio"], "the judge's channels were left behind"
