"""`make up`: the whole system from one command, stopped together by Ctrl-C or SIGTERM."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port, run
from tests.live.client import listen

STOP_SECONDS = 5.0  # the promise: every child gone and every port free within this


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (the services run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Up:
    """A real `make up` on free ports, in a process group of its own like a terminal's job."""

    def __init__(self) -> None:
        self.ports = {"gateway": free_port(), "redis": free_port(), "ui": free_port()}
        env = {**os.environ, "PORT": str(self.ports["gateway"]), "UI_PORT": str(self.ports["ui"]),
               "REDIS_URL": f"redis://127.0.0.1:{self.ports['redis']}/0"}
        env.pop("ADMIN_PASSWORD", None)
        env.pop("MAKEFLAGS", None)
        self.url = f"http://127.0.0.1:{self.ports['gateway']}"
        self.proc = subprocess.Popen(["make", "--no-print-directory", "up"], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if (httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200 and
                        httpx.get(f"http://127.0.0.1:{self.ports['ui']}/_stcore/health",
                                  timeout=1).text == "ok"):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("make up did not become ready in 60 s")

    def stop(self, sig: signal.Signals, group: bool) -> tuple[float, str]:
        """Send ``sig`` (to the whole group, as a terminal does, or to make alone, as `kill`
        does); the seconds until every process and port is gone, and the output."""
        tree = descendants(self.proc.pid) | {self.proc.pid}
        assert len(tree) >= 8, f"make up runs too few processes: {tree}"
        sent = time.monotonic()
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        while time.monotonic() - sent < 30:
            if not any(alive(p) for p in tree - {self.proc.pid}) and self.proc.poll() is not None \
                    and all(port_free(p) for p in self.ports.values()):
                break
            time.sleep(0.05)
        took = time.monotonic() - sent
        out, _ = self.proc.communicate(timeout=30)
        left = [p for p in tree - {self.proc.pid} if alive(p)]
        for pid in left:  # never leave them to the next test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"still running after {took:.1f} s: {left}\n{out[-2000:]}"
        return took, out

    def kill(self) -> None:
        for pid in descendants(self.proc.pid) | {self.proc.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_make_up_runs_everything_and_ctrl_c_stops_everything():
    up = Up()
    try:
        up.wait_ready()
        heard = run(listen(up.url, "radio", 4.0))
        assert heard.seconds() > 2 and heard.rms() > 100
    except BaseException:
        up.kill()
        raise
    took, out = up.stop(signal.SIGINT, group=True)
    assert took < STOP_SECONDS, f"Ctrl-C took {took:.1f} s\n{out[-2000:]}"
    assert up.proc.returncode in (0, 2, -signal.SIGINT), out[-2000:]
    assert "log in as admin / " in out and f"http://127.0.0.1:{up.ports['ui']}/" in out
    # the password is in up's block of links, printed once everything started (Redis first)
    assert re.search(r"log in as admin / \S+\n  Ctrl-C stops everything", out), out[:3000]
    assert out.index("log in as admin / ") > out.find("    redis |") >= 0
    assert "_._" not in out, "Redis's ASCII-art banner is back"
    for name in ("inference", "synth", "gateway", "ui"):
        assert f"{name:>9} |" in out, f"no labelled log lines from {name}"
    assert "trainer | " in out and "waiting for jobs" in out, "no trainer worker"


@pytest.mark.parametrize("group", [True, False], ids=["to-the-group", "to-make-alone"])
def test_make_up_stops_on_sigterm(group):
    up = Up()
    try:
        up.wait_ready()
    except BaseException:
        up.kill()
        raise
    took, out = up.stop(signal.SIGTERM, group=group)
    assert took < STOP_SECONDS, f"SIGTERM took {took:.1f} s\n{out[-2000:]}"
