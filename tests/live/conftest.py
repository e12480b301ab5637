"""Real parts for the live tests: a redis-server, and the services as real processes playing
the shipped model through real FluidSynth."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, SHIPPED, free_port

PASSWORD = "test-password-123"


class Services:
    """Service processes of one test; each can be killed like a crashed replica."""

    def __init__(self, redis_url: str, logs: Path) -> None:
        self.env = {**os.environ, "REDIS_URL": redis_url, "MODELS_DIR": str(SHIPPED),
                    "ADMIN_PASSWORD": PASSWORD, "LOG_LEVEL": "INFO", "IDLE_MS": "3000"}
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.gateway_url: str | None = None

    def start(self, name: str, module: str, **env: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", module], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT,
                                env={**self.env, "REPLICA_ID": name, **env})
        self.procs[name] = proc
        return proc

    def gateway(self, name: str = "gw", **env: str) -> str:
        port = free_port()
        self.start(name, "gateway", PORT=str(port), **env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    self.gateway_url = url
                    return url
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"gateway did not start: {self.log(name)}")

    def kill(self, name: str) -> None:
        """SIGKILL: no goodbye, no lease released, as in a crash."""
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(5)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def services(redis, redis_url, tmp_path) -> Iterator[Services]:
    svc = Services(redis_url, tmp_path)
    yield svc
    svc.stop()


@pytest.fixture
def live(services) -> Services:
    """A gateway, an inference replica and a synth replica."""
    services.gateway()
    services.start("inference-1", "inference")
    services.start("synth-1", "synth")
    return services


def login(url: str) -> dict[str, str]:
    res = httpx.post(f"{url}/api/login", json={"username": "admin", "password": PASSWORD})
    res.raise_for_status()
    return {"Authorization": f"Bearer {res.json()['token']}"}


def run(coro):
    return asyncio.run(coro)
