"""`make up`'s runner: the whole system from one command, stopped together by Ctrl-C."""

import os
import re
import signal
import subprocess
import sys
import time

import httpx

from tests.conftest import REPO, free_port, run
from tests.live.client import listen


def test_up_runs_everything_and_ctrl_c_stops_everything(tmp_path):
    port, redis_port, ui_port = free_port(), free_port(), free_port()
    env = {**os.environ, "PORT": str(port), "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "UI_PORT": str(ui_port)}
    env.pop("ADMIN_PASSWORD", None)
    proc = subprocess.Popen([sys.executable, "scripts/up.py"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        heard = run(listen(url, "radio", 4.0))
        assert heard.seconds() > 2 and heard.rms() > 100
        ui = httpx.get(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=10)
        assert ui.text == "ok"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out[-2000:]
    assert "log in as admin / " in out and f"http://127.0.0.1:{ui_port}/" in out
    # the password is in up's block of links, printed once everything started (Redis first)
    assert re.search(r"log in as admin / \S+\n  Ctrl-C stops everything", out), out[:3000]
    assert out.index("log in as admin / ") > out.find("    redis |") >= 0
    assert "_._" not in out, "Redis's ASCII-art banner is back"
    for name in ("inference", "synth", "gateway", "ui"):
        assert f"{name:>9} |" in out, f"no labelled log lines from {name}"
    assert "trainer | " in out and "waiting for jobs" in out, "no trainer worker"
    children = subprocess.run(["pgrep", "-f", f"redis-server.*{redis_port}"],
                              capture_output=True, text=True)
    assert children.stdout.strip() == "", "redis-server was left running"
