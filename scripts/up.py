"""`make up`: the whole system as local processes, logs labelled, stopped together by Ctrl-C.

A local redis-server is started unless one answers at REDIS_URL already. Without an
ADMIN_PASSWORD (environment or .env) one is made up for this run and printed."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from redis import Redis
from redis.exceptions import RedisError

from playbach.settings import cluster_seed

REPO = Path(__file__).resolve().parents[1]
STOP_SECONDS = 3.5  # then SIGKILL: `make up` promises to be gone within 5 s
SERVICES = {"inference": ["inference"], "synth": ["synth"], "gateway": ["gateway"],
            "trainer": ["trainer", "worker"],  # the Train page's jobs
            "ui": ["ui"]}
COLOURS = {"redis": 90, "inference": 36, "synth": 35, "gateway": 32, "trainer": 34, "ui": 33}


def dotenv() -> dict[str, str]:
    """`.env` values, for the few this script itself needs (the services read it themselves)."""
    path = REPO / ".env"
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def setting(name: str, default: str) -> str:
    return os.environ.get(name) or dotenv().get(name) or default


def pump(name: str, stream, tty: bool) -> None:
    label = f"\033[{COLOURS.get(name, 37)}m{name:>9}\033[0m |" if tty else f"{name:>9} |"
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"{label} {line.decode(errors='replace').rstrip()}\n")
        sys.stdout.flush()


def redis_answers(url: str) -> bool:
    """Whether a Redis (or any node of a cluster, for redis+cluster://) answers at ``url``."""
    url = cluster_seed(url) or url
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (RedisError, OSError):
        return False


def stop(procs: dict[str, subprocess.Popen]) -> None:
    """SIGTERM to every child's group at once, SIGKILL to what is left after STOP_SECONDS."""
    for proc in reversed(list(procs.values())):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for proc in procs.values():
        try:
            proc.wait(max(deadline - time.monotonic(), 0.05))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    tty = sys.stdout.isatty()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    redis_url = setting("REDIS_URL", "redis://127.0.0.1:6379/0")
    port = setting("PORT", "8000")
    host = setting("HOST", "127.0.0.1")
    ui_port = setting("UI_PORT", "8501")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    env.update(REDIS_URL=redis_url, PORT=port, HOST=host,
               GATEWAY_URL=setting("GATEWAY_URL", f"http://{shown}:{port}"))
    login = ""
    if not setting("ADMIN_PASSWORD", "") and not setting("ADMIN_PASSWORD_FILE", ""):
        env["ADMIN_PASSWORD"] = secrets.token_urlsafe(9)
        login = (f"  No ADMIN_PASSWORD set: for this run, log in as admin / "
                 f"{env['ADMIN_PASSWORD']}\n")
    procs: dict[str, subprocess.Popen] = {}
    # A flag, not a threading.Event: a handler that takes the Event's lock while the main
    # thread holds it (inside Event.wait) never returns, and nothing stops.
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))

    def start(name: str, cmd: list[str]) -> None:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        procs[name] = proc
        threading.Thread(target=pump, args=(name, proc.stdout, tty), daemon=True).start()

    answers = redis_answers(redis_url)
    if not answers and cluster_seed(redis_url):
        print("up: no Redis Cluster answers at REDIS_URL (up starts a single Redis only)")
        return 2
    if not answers:
        server = shutil.which("redis-server")
        if server is None:
            print("up: no Redis at REDIS_URL and no redis-server here (make setup installs it)")
            return 2
        where = urlsplit(redis_url)
        # warnings only: its banner buried the lines that matter
        start("redis", [server, "--port", str(where.port or 6379), "--bind",
                        where.hostname or "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--loglevel", "warning"])
        deadline = time.time() + 10
        while not stopping and not redis_answers(redis_url) and time.time() < deadline:
            time.sleep(0.1)
    env.update(UI_PORT=ui_port, UI_HOST=host)
    for name, args in SERVICES.items():
        if not stopping:  # Ctrl-C while starting stops what started
            start(name, [sys.executable, "-m", *args])
    print(f"\n  Play Bach is starting. The control room: http://{shown}:{ui_port}/ · the player "
          f"alone: http://{shown}:{port}/ · API docs: http://{shown}:{port}/docs\n"
          f"{login}  Ctrl-C stops everything.\n", flush=True)

    failed = None
    while not stopping:
        failed = next((n for n, p in procs.items() if p.poll() is not None), None)
        if failed:
            print(f"up: {failed} exited with code {procs[failed].returncode}; stopping all")
            break
        time.sleep(0.2)
    stop(procs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
