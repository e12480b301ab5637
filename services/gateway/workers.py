"""Several gateway processes on one port (``WORKERS``): each binds it with ``SO_REUSEPORT``,
so the kernel spreads new connections over the live ones and stops sending any to one that
died. They share nothing but Redis: each reads and encodes the channels its own listeners
hear. A supervisor starts them, starts again one that dies (a player cut off by it has
already reconnected to another and resumed where it was), and stops them all on SIGINT or
SIGTERM.

Prometheus counters of every worker are summed at ``/metrics`` whichever worker answers
(prometheus_client's multiprocess mode, in a folder the supervisor makes)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

WORKER_ENV = "GATEWAY_WORKER"  # set in a worker: its index
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for the folder
BAD_SETTING = 2  # the exit code of a service that refused its settings (playbach.settings)
PR_SET_PDEATHSIG = 1


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """The port, bound so that other workers may bind it too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def die_with_parent() -> None:
    """A worker ends when its supervisor does, even a supervisor killed with -9 (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    delay: float = 0.2  # before the next start, doubling while it keeps dying young
    due: float = 0.0  # when to start it again (monotonic), if it died


@dataclass
class Supervisor:
    count: int
    grace_s: float
    workers: list[Worker] = field(default_factory=list)
    stopping: int | None = None  # the signal that asked us to stop

    def run(self) -> int:
        folder = tempfile.mkdtemp(prefix="playbach-gateway-metrics-")
        self.env = {**os.environ, METRICS_ENV: folder}
        for sig in (signal.SIGINT, signal.SIGTERM):  # a flag: nothing here may block on it
            signal.signal(sig, lambda number, _: setattr(self, "stopping", number))
        self.workers = [Worker(i) for i in range(self.count)]
        try:
            for worker in self.workers:
                self.start(worker)
            return self.watch()
        finally:
            self.stop_all()
            shutil.rmtree(folder, ignore_errors=True)

    def start(self, worker: Worker) -> None:
        worker.proc = subprocess.Popen([sys.executable, "-m", "gateway"],
                                       env={**self.env, WORKER_ENV: str(worker.index)},
                                       preexec_fn=die_with_parent)
        worker.started = time.monotonic()

    def watch(self) -> int:
        while self.stopping is None:
            now = time.monotonic()
            for worker in self.workers:
                code = worker.proc.poll() if worker.proc else None
                if worker.proc is not None and code is not None:
                    if code == BAD_SETTING:  # it said why; every worker would say the same
                        return BAD_SETTING
                    self.died(worker, code, now)
                if worker.proc is None and now >= worker.due:
                    self.start(worker)
            time.sleep(0.05)
        return 0

    def died(self, worker: Worker, code: int, now: float) -> None:
        from prometheus_client import multiprocess

        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        young = now - worker.started < 10
        worker.delay = min(worker.delay * 2, 5.0) if young else 0.2
        print(f"gateway: worker {worker.index} (pid {worker.proc.pid}) ended ({how}); starting "
              f"it again in {worker.delay:g} s", file=sys.stderr, flush=True)
        multiprocess.mark_process_dead(worker.proc.pid, self.env[METRICS_ENV])
        worker.proc, worker.due = None, now + worker.delay

    def stop_all(self) -> None:
        live = [w.proc for w in self.workers if w.proc and w.proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s + 2
        for proc in live:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
