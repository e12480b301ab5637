"""The control room with Streamlit's AppTest against a real gateway and redis-server: every
control sends the right request, and refused values show the gateway's own message."""

from __future__ import annotations

import sys

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from playbach.schemas import DEFAULT_TOP_P
from tests.conftest import PASSWORD, REPO, login

APP = str(REPO / "services" / "ui" / "app.py")


@pytest.fixture(autouse=True)
def main_module_kept() -> None:
    """AppTest runs the app as ``__main__`` and leaves it there; a multiprocessing fork
    server started later in this pytest process (the trainer's isolate) would then run the
    app again in each child. Put pytest's ``__main__`` back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture
def gateway(services, monkeypatch) -> str:
    url = services.gateway()
    monkeypatch.setenv("GATEWAY_URL", url)
    return url


def start(logged_in: bool = True) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception, at.exception
    if logged_in:
        at.text_input(key="password").input(PASSWORD)
        at.button(key="login-submit").click().run()
        assert not at.exception
        said = [s.value for s in at.success if "logged in" in s.value]
        assert len(said) == 1, said  # once, on the page (a phone folds the sidebar away)
        assert not at.sidebar.success
    return at


def toasts(at: AppTest, kind: str = "success") -> list[str]:
    """What the last run said in toasts (where the user is, wherever on the page)."""
    icon = ":material/error:" if kind == "error" else ":material/check_circle:"
    return [t.value for t in at.toast if t.icon == icon]


def params(url: str, cid: str = "radio") -> dict:
    return httpx.get(f"{url}/api/channels/{cid}").json()["params"]


def test_every_control_changes_the_channel(gateway):
    at = start()
    assert at.selectbox(key="channel").options == ["Radio (shared radio)"]  # names, not ids
    at.slider(key="bpm-radio").set_value(132).run()
    assert params(gateway)["bpm"] == 132
    assert toasts(at)[-1] == "BPM is now 132 on Radio (shared radio)"
    at.slider(key="temperature-radio").set_value(0.55).run()
    assert params(gateway)["temperature"] == 0.55
    at.selectbox(key="instrument-radio").set_value("41: Viola").run()
    assert params(gateway)["instrument"] == 41
    assert toasts(at)[-1] == "Instrument is now Viola on Radio (shared radio)"
    at.selectbox(key="model-radio").set_value("chorales").run()
    assert params(gateway)["model"] == "chorales"
    at.text_input(key="seed-radio").input("1234").run()
    at.button(key="apply-seed-radio").click().run()
    assert params(gateway)["seed"] == 1234
    assert not at.exception and not at.error


def test_refused_values_show_the_gateways_message(gateway):
    at = start()
    at.text_input(key="seed-radio").input("99999999999").run()
    at.button(key="apply-seed-radio").click().run()
    assert toasts(at, "error") == [
        "seed: Input should be less than or equal to 4294967295 (got 99999999999)"]
    assert params(gateway)["seed"] is None  # nothing changed
    at.text_input(key="seed-radio").input("twelve").run()
    at.button(key="apply-seed-radio").click().run()
    assert "is not a whole number" in toasts(at, "error")[0]


def test_login_is_required_to_change_and_a_bad_password_says_so(gateway):
    at = start(logged_in=False)
    assert at.slider(key="bpm-radio").disabled
    assert any("Log in" in i.value for i in at.info)
    at.text_input(key="password").input("wrong").run()
    at.button(key="login-submit").click().run()
    assert toasts(at, "error") == ["wrong user name or password"]


def test_new_channel_server_test_and_audio_test(gateway):
    at = start()
    httpx.patch(f"{gateway}/api/channels/radio", headers=login(gateway),
                json={"temperature": 3.0, "seed": 42})
    at.button(key="new-channel").click().run()
    mine = at.session_state["channel"]
    made = httpx.get(f"{gateway}/api/channels/{mine}").json()
    assert mine.startswith("ch-")
    said = toasts(at)[-1]  # what it copied, said in names
    assert f"just for you, “{made['params']['name']}”" in said
    assert "settings of Radio (shared radio): model cello-suites, Cello, 84 BPM, " \
        f"temperature 3, top-p {DEFAULT_TOP_P:g}, seed 42." in said
    assert made["params"]["name"] in at.selectbox(key="channel").options
    at.button(key="ping").click().run()  # answered under its button, in the sidebar
    assert [s.value[:13] for s in at.sidebar.success] == ["Server test: "]
    at.button(key="tone").click().run()  # and under its own
    assert any("440 Hz" in s.value for s in at.main.success)


def test_a_visitor_makes_a_private_channel_and_may_change_only_it(gateway):
    """Without logging in: the radio's controls stay locked; "New channel just for me" makes
    a guest's private channel, whose controls work, and which no one else sees listed."""
    at = start(logged_in=False)
    assert at.slider(key="bpm-radio").disabled
    at.button(key="new-channel").click().run()
    assert not at.exception
    mine = at.session_state["channel"]
    assert mine.startswith("ch-") and not at.slider(key=f"bpm-{mine}").disabled
    at.slider(key=f"bpm-{mine}").set_value(150).run()
    assert params(gateway, mine)["bpm"] == 150
    listed = [c["id"] for c in httpx.get(f"{gateway}/api/channels").json()]
    assert listed == ["radio"]  # private: its link is its key


def test_an_unreachable_gateway_is_a_sentence_not_a_traceback(monkeypatch):
    monkeypatch.setenv("GATEWAY_URL", "http://127.0.0.1:9")
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert "is unreachable" in at.error[0].value and "make up" in at.error[0].value


def test_counted_stats_have_whole_numbers_on_their_axis(gateway):
    import json

    at = start(logged_in=False)
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    axes = {s["encoding"]["y"]["field"]: s["encoding"]["y"].get("axis", {}) for s in specs}
    assert axes["listeners"]["format"] == "d" and axes["listeners"]["tickMinStep"] == 1
    assert axes["underruns"]["format"] == "d"  # no 0.5 listeners, no half an underrun
    assert "format" not in axes["lead_ms"]
