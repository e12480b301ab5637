"""Shared fixtures: the trainer's CLI run as a user would, in isolated folders."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis
from redis.cluster import RedisCluster

from playbach.settings import cluster_seed

REPO = Path(__file__).resolve().parents[1]
CELLO = REPO / "data" / "cello-suites"
SHIPPED = REPO / "models"


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600
            ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="session")
def dirs(tmp_path_factory) -> dict[str, str]:
    """MODELS_DIR, RUNS_DIR and CACHE_DIR of the test session."""
    root = tmp_path_factory.mktemp("trainer")
    return {"MODELS_DIR": str(root / "models"), "RUNS_DIR": str(root / "runs"),
            "CACHE_DIR": str(root / "cache")}


@pytest.fixture(scope="session")
def cello_dir(tmp_path_factory) -> Path:
    """Five cello-suite movements and one corrupt file."""
    if not CELLO.is_dir():
        pytest.fail(f"test data missing: {CELLO}")
    folder = tmp_path_factory.mktemp("cello")
    for name in ("cs1-1pre.mid", "cs1-2all.mid", "cs1-4sar.mid", "cs2-1pre.mid", "cs3-5bou.mid"):
        shutil.copy(CELLO / name, folder / name)
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage" + os.urandom(64))
    return folder


@pytest.fixture(scope="session")
def chorale_model(dirs) -> Path:
    """The tiny preset trained end to end on a few real chorales, with the leaky original
    protocol's twin too."""
    res = run_cli("train", "--preset", "tiny", "--name", "tiny-chorales", "--limit", "12",
                  "--original-protocol=true", env=dirs)
    assert res.returncode == 0, res.stderr[-3000:]
    return Path(dirs["MODELS_DIR"]) / "tiny-chorales"


@pytest.fixture(scope="session")
def cello_run(dirs, cello_dir) -> subprocess.CompletedProcess:
    # the key profile on: its step model is checked against Keras like the default's
    res = run_cli("train", "--preset", "tiny", "--name", "tiny-cello", "--midi-dir",
                  str(cello_dir), "--key-profile=true", env=dirs)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def wait_for_value(check, seconds: float, what: str, every: float = 0.2):
    """What ``check()`` gives once it is truthy; fails naming ``what`` after ``seconds``. For
    what a busy machine may take longer to reach: a fixed sleep would be a timing bet."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"waited {seconds:g} s for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(folder: Path, port: int | None = None, persist: bool = False
                ) -> tuple[subprocess.Popen, str]:
    """A throwaway redis-server on a loopback port (a free one unless given), answering PING;
    with ``persist``, an append-only file that survives a kill."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (make test installs it)")
    port = port or free_port()
    keep = ["--appendonly", "yes", "--appendfsync", "always"] if persist else \
        ["--appendonly", "no"]
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             *keep, "--dir", str(folder)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_ping(url)
    return proc, url


def start_cluster(folder: Path, masters: int = 3) -> tuple[list[subprocess.Popen], str]:
    """A throwaway Redis Cluster of ``masters`` redis-servers on loopback ports, its slots
    split by redis-cli as an operator would; its URL names one node, as REDIS_URL would."""
    ports = [cluster_port() for _ in range(masters)]
    procs = []
    for port in ports:
        node = folder / str(port)
        node.mkdir()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(node), "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"],
            stdout=subprocess.DEVNULL))
    for port in ports:
        wait_for_ping(f"redis://127.0.0.1:{port}/0")
    subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                    "--cluster-replicas", "0", "--cluster-yes"], check=True,
                   capture_output=True, timeout=60)
    deadline = time.time() + 30
    for port in ports:  # every node must agree that all slots are served
        node = Redis(port=port)
        while node.cluster("info")["cluster_state"] != "ok":
            assert time.time() < deadline, f"cluster node {port} never became ok"
            time.sleep(0.1)
    return procs, f"redis+cluster://127.0.0.1:{ports[0]}"


def cluster_port() -> int:
    """A free port whose cluster bus port (10000 above it) is free too."""
    while True:
        port = free_port()
        if port > 55000:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def wait_for_ping(url: str) -> None:
    client = Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            return
        except Exception:
            time.sleep(0.05)
    raise AssertionError(f"redis-server did not start at {url}")


def sync_client(url: str) -> Redis | RedisCluster:
    """A test's own client to a single Redis or a cluster URL (redis+cluster://)."""
    seed = cluster_seed(url)
    return RedisCluster.from_url(seed) if seed else Redis.from_url(url)


BOTH = pytest.mark.backends("single", "cluster")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that use Redis run against a single redis-server; those marked ``BOTH`` (or in
    a module with ``pytestmark = BOTH``) against a three-master Redis Cluster as well."""
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        kinds = marker.args if marker else ("single",)
        metafunc.parametrize("backend", kinds, indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def redis_url(backend, tmp_path_factory) -> Iterator[str]:
    if backend == "cluster":
        procs, url = start_cluster(tmp_path_factory.mktemp("cluster"))
    else:
        proc, url = start_redis(tmp_path_factory.mktemp("redis"))
        procs = [proc]
    yield url
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(5)


@pytest.fixture
def redis(redis_url) -> Redis | RedisCluster:
    client = sync_client(redis_url)
    client.flushall()
    return client


# --- the live system -----------------------------------------------------------------

PASSWORD = "test-password-123"


class Services:
    """Service processes of one test; each can be killed like a crashed replica."""

    def __init__(self, redis_url: str, logs: Path) -> None:
        self.env = {**os.environ, "REDIS_URL": redis_url, "MODELS_DIR": str(SHIPPED),
                    "ADMIN_PASSWORD": PASSWORD, "LOG_LEVEL": "INFO", "IDLE_MS": "3000"}
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.gateway_url: str | None = None

    def start(self, name: str, module: str, *args: str, **env: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("a")  # a restarted replica's log follows on
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT,
                                env={**self.env, "REPLICA_ID": name, **env})
        self.procs[name] = proc
        return proc

    def gateway(self, name: str = "gw", port: int | None = None, **env: str) -> str:
        port = port or free_port()
        self.start(name, "gateway", PORT=str(port), **env)
        url = f"http://127.0.0.1:{port}"
        deadline, body = time.time() + 30, "no answer"
        while time.time() < deadline:  # ready: the default channel made, the login keys read
            try:
                res = httpx.get(f"{url}/readyz", timeout=1)
                if res.status_code == 200:
                    self.gateway_url = url
                    return url
                body = res.text
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gateway not ready: {body}\n{self.log(name)}")

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


def own_models(services: Services, folder: Path) -> dict[str, str]:
    """Services from here on use a models folder of their own (the shipped models linked in),
    so a model trained in a test is published there, not into the repository."""
    models = folder / "models"
    models.mkdir()
    for shipped in SHIPPED.iterdir():
        (models / shipped.name).symlink_to(shipped)
    env = {"MODELS_DIR": str(models), "RUNS_DIR": str(folder / "runs"),
           "CACHE_DIR": str(folder / "cache"), "POLL_S": "0.2"}  # a trainer worker's
    services.env.update(env)
    return env


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


def guest(url: str) -> dict[str, str]:
    """A guest session's header (a listener's own, no password)."""
    res = httpx.post(f"{url}/api/guest")
    res.raise_for_status()
    return {"Authorization": f"Bearer {res.json()['token']}"}


def run(coro):
    return asyncio.run(coro)
