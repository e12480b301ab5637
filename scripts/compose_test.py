"""make compose-test: the Compose deployment booted for real, as an operator would, and tried.

Builds the images and boots docker-compose.yml with `docker compose` where a Docker engine
answers and `podman-compose` otherwise (../shared/tools/podman-setup.sh prepares one), with
no .env and no secrets. Then: waits for health, listens to the radio over the gateway's
WebSocket (PCM not silent), scales inference to 3 (every note made once), SIGKILLs an
inference and a synth container (the silence a listener hears) and one of the gateway's
two processes (another connection is served at once), restarts Redis (recovery, the
channels kept), uploads three cello movements for the trainer-worker to train with the tiny
preset (as the control room's Train page does) and plays the model, and tears everything
down. Prints each figure; exits non-zero on the first failed check. Needs root
and minutes: not part of `make test`."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from playbach import streams  # noqa: E402 (the key names)
from playbach.training import FINAL  # noqa: E402 (a job's end states)
from tests.live import timing  # noqa: E402 (the tests' measurements)
from tests.live.client import Heard, listen  # noqa: E402 (the tests' WebSocket listener)

PROJECT = "playbach-compose-test"
RATE = 44100


def tool() -> tuple[list[str], list[str], str]:
    """The compose command, its extra build arguments and the container engine."""
    docker = shutil.which("docker")
    def answers(*args: str) -> bool:
        return subprocess.run([docker, *args], capture_output=True).returncode == 0

    if docker and answers("compose", "version") and answers("info"):
        return [docker, "compose"], [], docker
    if shutil.which("podman-compose") and shutil.which("podman"):
        # podman builds here have no network of their own; host networking reaches PyPI
        return ["podman-compose"], ["--podman-build-args=--network host"], "podman"
    raise SystemExit("compose-test: neither docker compose (with an engine) nor podman-compose "
                     "(run ../shared/tools/podman-setup.sh as root)")


class Stack:
    def __init__(self) -> None:
        self.compose, self.build_args, self.engine = tool()
        self.env_file = Path(tempfile.mkstemp(suffix=".env")[1])  # empty: no .env
        self.gateway_port, self.ui_port = free_port(), free_port()
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("ADMIN_PASSWORD", "TOKEN_SECRET", "ADMIN_USER")}
        self.env.update(GATEWAY_PORT=str(self.gateway_port), UI_PORT=str(self.ui_port))
        self.url = f"http://127.0.0.1:{self.gateway_port}"

    def run(self, *args: str, check: bool = True, timeout: float = 1800,
            quiet: bool = True) -> subprocess.CompletedProcess:
        cmd = [*self.compose, "-p", PROJECT, "--env-file", str(self.env_file), *args]
        res = subprocess.run(cmd, cwd=REPO, env=self.env, text=True, timeout=timeout,
                             capture_output=quiet)
        if check and res.returncode != 0:
            raise SystemExit(f"compose-test: {' '.join(args)} failed:\n"
                             f"{(res.stdout or '')[-3000:]}{(res.stderr or '')[-3000:]}")
        return res

    def containers(self, service: str, stopped: bool = False) -> list[str]:
        out = subprocess.run([self.engine, "ps", *(["-a"] if stopped else []),
                              "--format", "{{.Names}}", "--filter",
                              f"label=com.docker.compose.project={PROJECT}", "--filter",
                              f"label=com.docker.compose.service={service}"],
                             capture_output=True, text=True, check=True).stdout
        return sorted(out.split())

    def healthy(self, name: str) -> bool:
        """Podman runs no health checks by itself here (no systemd timers): run one now."""
        if self.engine == "podman":
            return subprocess.run([self.engine, "healthcheck", "run", name],
                                  capture_output=True).returncode == 0
        out = subprocess.run([self.engine, "inspect", "-f", "{{.State.Health.Status}}", name],
                             capture_output=True, text=True).stdout.strip()
        return out == "healthy"

    def wait_healthy(self, services: list[str], seconds: float = 180) -> float:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            names = [n for s in services for n in self.containers(s)]
            if names and all(self.healthy(n) for n in names) and \
                    all(self.containers(s) for s in services):
                return time.monotonic() - start
            time.sleep(2)
        raise SystemExit(f"compose-test: not healthy within {seconds:.0f} s: {services}\n"
                         f"{self.run('ps', check=False).stdout}")

    def logs(self, service: str) -> str:
        """Every container's output, one-shot ones too, without the compose tool's colours."""
        out = ""
        for name in self.containers(service, stopped=True):
            res = subprocess.run([self.engine, "logs", name], capture_output=True, text=True)
            out += res.stdout + res.stderr
        return out

    def owner(self, role: str, cid: str) -> str:
        """The container whose replica holds the channel's lease (REPLICA_ID is unset in
        compose: hostname-pid, and a container's hostname is its short id)."""
        res = subprocess.run([self.engine, "exec", self.containers("redis")[0], "redis-cli",
                              "--raw", "GET", streams.lease(role, cid)],
                             capture_output=True, text=True, check=True)
        host = res.stdout.strip().rsplit("-", 1)[0]
        for name in self.containers(role):
            out = subprocess.run([self.engine, "inspect", "-f", "{{.Config.Hostname}}", name],
                                 capture_output=True, text=True).stdout.strip()
            if out and out == host:
                return name
        raise SystemExit(f"compose-test: no {role} container holds {cid} ({res.stdout!r})")

    def kill(self, name: str) -> None:
        subprocess.run([self.engine, "kill", "-s", "KILL", name], check=True,
                       capture_output=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"compose-test: FAILED: {what}")
    print(f"  ok  {what}", flush=True)


def longest_gap(heard: Heard, after: float, end: float) -> float:
    """Seconds of audio a listener went without, beyond what the frames carried: the
    longest wait between two frames (or the last one and the end) minus its length."""
    times = [(when, len(pcm) / RATE) for _, pcm, when in heard.chunks if when >= after]
    times.append((end, 0.0))
    gaps = [b[0] - a[0] - a[1] for a, b in itertools.pairwise(times)]
    return max(gaps) if gaps else float("inf")  # no audio at all: never back


def unique_notes(heard: Heard) -> bool:
    seqs = [n["seq"] for n in heard.notes]
    return bool(seqs) and seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def during(seconds: float, action: Callable[[], None], at: float, cid: str,
           base: str) -> tuple[Heard, float, float]:
    """Listen for ``seconds``; run ``action`` ``at`` seconds in; (heard, when it ran, end)."""
    async def scenario() -> tuple[Heard, float, float]:
        heard = Heard()
        task = asyncio.create_task(listen(base, cid, seconds, heard))
        await asyncio.sleep(at)
        await asyncio.to_thread(action)
        when = time.monotonic()
        await task
        return heard, when, time.monotonic()

    return asyncio.run(scenario())


def main() -> int:
    stack = Stack()
    figures: dict[str, str] = {}
    print(f"compose-test with {' '.join(stack.compose)}", flush=True)
    try:
        start = time.monotonic()
        stack.run("--profile", "train", *stack.build_args, "build", quiet=False)
        figures["build"] = f"{time.monotonic() - start:.0f} s"

        start = time.monotonic()
        stack.run("up", "-d")
        ready = stack.wait_healthy(["redis", "inference", "synth", "gateway", "ui",
                                    "trainer-worker"])
        figures["up to healthy"] = f"{time.monotonic() - start:.0f} s"
        check(ready >= 0, f"every service healthy ({figures['up to healthy']})")
        seeded = re.findall(r"seed: /models: copied (?!nothing)[^;]*", stack.logs("models"))
        check(len(seeded) == 1, f"the shipped models seeded once: {seeded}")

        found = re.findall(r"log in as admin / (\S+) ", stack.logs("gateway"))
        check(len(found) == 1, "no ADMIN_PASSWORD: one generated and printed once")
        password = found[0]
        res = httpx.post(f"{stack.url}/api/login",
                         json={"username": "admin", "password": password})
        check(res.status_code == 200, "the printed password logs in")
        auth = {"Authorization": f"Bearer {res.json()['token']}"}
        check(httpx.post(f"{stack.url}/api/login", json={"username": "admin", "password": ""}
                         ).status_code in (401, 422), "an empty password does not")
        check(httpx.get(f"http://127.0.0.1:{stack.ui_port}/_stcore/health").status_code == 200,
              "the control room answers")

        heard = asyncio.run(listen(stack.url, "radio", 8.0))
        rms = heard.rms()
        figures["radio"] = f"{heard.seconds():.1f} s heard in 8 s, RMS {rms:.0f}"
        check(heard.seconds() > 5 and rms > 100, f"the radio plays: {figures['radio']}")

        check(len(stack.containers("synth")) == 2 and len(stack.containers("inference")) == 2,
              "two inference and two synth replicas, as the file says")
        stack.run("up", "-d", "--scale", "inference=3")
        stack.wait_healthy(["inference"])
        inference = stack.containers("inference")
        check(len(inference) == 3, f"inference scaled to 3: {inference}")
        heard = asyncio.run(listen(stack.url, "radio", 8.0))
        check(unique_notes(heard) and heard.rms() > 100,
              f"3 replicas, each note made once ({len(heard.notes)} notes, no repeat)")

        for service in ("inference", "synth"):
            victim = stack.owner(service, "radio")  # the replica making the radio's audio
            heard, when, end = during(14.0, lambda v=victim: stack.kill(v), 4.0, "radio",
                                      stack.url)
            gap = longest_gap(heard, when - 1.0, end)
            quiet = timing.silence(heard, RATE)
            lost, repeated = timing.note_faults(heard)
            figures[f"kill -9 {service}"] = (
                f"silence for a player with the default buffer {quiet:.2f} s, longest wait "
                f"between frames {gap:.2f} s, notes lost {lost}, repeated {repeated}")
            check(heard.closed is None and quiet == 0 and timing.gaps(heard) == 0
                  and (lost, repeated) == (0, 0),
                  f"{victim} SIGKILLed: {figures[f'kill -9 {service}']}, same WebSocket")

        # The gateway runs two processes on its port: one killed, the other serves at once
        # (the player's own reconnect is measured in tests/live/test_faults.py).
        gateway = stack.containers("gateway")[0]
        first = asyncio.run(listen(stack.url, "radio", 4.0, until=lambda h: bool(h.hello)))
        worker = first.hello["replica"].rsplit("-", 1)[1]  # hostname-pid
        subprocess.run([stack.engine, "exec", gateway, "python", "-c",  # (no kill(1) there)
                        f"import os; os.kill({int(worker)}, 9)"], check=True)
        killed = time.monotonic()
        heard = asyncio.run(listen(stack.url, "radio", 30.0, until=lambda h: h.seconds() > 1))
        figures["kill -9 a gateway worker"] = (
            f"a new connection heard 1 s of audio {time.monotonic() - killed:.2f} s later, "
            f"from worker {heard.hello.get('replica')}")
        check(heard.seconds() > 1 and heard.hello["replica"] != first.hello["replica"],
              figures["kill -9 a gateway worker"])
        deadline = time.monotonic() + 20
        while ("ended (signal 9); starting it again" not in stack.logs("gateway")
               and time.monotonic() < deadline):
            time.sleep(0.5)
        check("ended (signal 9); starting it again" in stack.logs("gateway"),
              "the supervisor started the killed worker again")

        res = httpx.patch(f"{stack.url}/api/channels/radio", json={"bpm": 123}, headers=auth)
        check(res.status_code == 200, "radio set to 123 BPM before the Redis restart")
        heard, when, _ = during(25.0, lambda: stack.run("restart", "redis"), 4.0, "radio",
                                stack.url)
        after = [c for c in heard.chunks if c[2] > when]
        back = after[0][2] - when if after else float("inf")
        figures["Redis restart"] = f"audio again {back:.2f} s after the restart returned"
        check(heard.closed is None and back < 10, figures["Redis restart"])
        params = httpx.get(f"{stack.url}/api/channels/radio").json()["params"]
        check(params["bpm"] == 123, "the channel's parameters survived (appendonly volume)")
        res = httpx.post(f"{stack.url}/api/login", json={"username": "admin",
                                                          "password": password})
        check(res.status_code == 200, "the generated password survived too")

        # The Train page's way: three cello movements uploaded, the trainer-worker trains them.
        start = time.monotonic()
        files = [("files", (n, (REPO / "data" / "cello-suites" / n).read_bytes(), "audio/midi"))
                 for n in ("cs1-1pre.mid", "cs1-2all.mid", "cs2-1pre.mid")]
        res = httpx.post(f"{stack.url}/api/train/jobs", headers=auth, files=files,
                         data={"name": "compose-tiny", "preset": "tiny"}, timeout=30)
        check(res.status_code == 201, f"an upload queued a training job ({res.status_code})")
        jid, job = res.json()["id"], {}
        while time.monotonic() - start < 1800 and job.get("state") not in FINAL:
            time.sleep(2)
            job = httpx.get(f"{stack.url}/api/train/jobs/{jid}", headers=auth).json()["job"]
        figures["trainer worker (tiny, 3 movements)"] = f"{time.monotonic() - start:.0f} s"
        check(job.get("state") == "done", f"the trainer-worker trained it: {job.get('state')} "
              f"{job.get('reason') or ''}({figures['trainer worker (tiny, 3 movements)']})")
        models = httpx.get(f"{stack.url}/api/models").json()
        check("compose-tiny" in json.dumps(models), "the trained model is listed, nothing "
                                                    "restarted")
        res = httpx.patch(f"{stack.url}/api/channels/radio", json={"model": "compose-tiny"},
                          headers=auth)
        check(res.status_code == 200, "the radio switched to it")
        heard = asyncio.run(listen(stack.url, "radio", 10.0))
        params = httpx.get(f"{stack.url}/api/channels/radio").json()["params"]
        check(heard.rms() > 100 and params["model"] == "compose-tiny",
              f"it plays (RMS {heard.rms():.0f})")
    finally:
        if os.environ.get("KEEP") != "1":
            stack.run("--profile", "train", "down", "-v", "--remove-orphans", check=False)
        stack.env_file.unlink(missing_ok=True)
    print("\ncompose-test figures:")
    for key, value in figures.items():
        print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
