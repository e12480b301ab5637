"""Listeners per process, side by side in one run on this machine: Play Bach's gateway, a bare
`websockets.broadcast` server sending the same frames, and Icecast 2 sending the same MP3.

For each server and each crowd size, bench/loadgen.c (C, epoll, one thread) opens the
listeners, holds them through a warm-up and measures a window. Printed for each: the server
process's CPU (of one core) and memory per listener over the window, listeners streaming at
its end, messages a listener got a second, frames later than the player's 250 ms jitter
buffer, and the load generator's own CPU, which must stay well under one core for the rest to
mean anything.

    gateway opus   /ws/radio?codec=opus: what the web player takes (Opus, note events)
    broadcast      bench/anchors/broadcast.py: the same messages, recorded from the gateway
    icecast mp3    Icecast 2 relaying the gateway's /stream/radio.mp3 (96 kbps)
    gateway mp3    /stream/radio.mp3 itself, for the same bytes as Icecast

Usage: python bench/fanout.py [--listeners 1000,2000,3000,5000] [--seconds 10]
Needs icecast2 (make bench-fanout installs it) and a C compiler.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pickle
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import Services, free_port, start_redis  # noqa: E402

MP3_KBPS = 96  # the gateway's MP3 (encode.py)
LATE_MS, TICK_MS = 250, 50  # the player's jitter buffer; the generator's timing resolution
ICECAST_PASSWORD = "bench-source"


@dataclass
class Target:
    name: str
    port: int
    path: str
    mode: str  # ws or http
    pid: int


def build_loadgen(folder: Path) -> Path:
    binary = folder / "loadgen"
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-o", str(binary),
                    str(REPO / "bench" / "loadgen.c"), "-lm"], check=True)
    return binary


def process(pid: int) -> tuple[float, int]:
    """CPU seconds (all threads) and resident bytes of a process."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, int(stat[21]) * os.sysconf("SC_PAGE_SIZE")


def measure(loadgen: Path, t: Target, n: int, seconds: float) -> dict:
    """One crowd: the generator's figures, and the server's CPU and memory over its window."""
    rss0 = process(t.pid)[1]
    proc = subprocess.Popen(
        [str(loadgen), "--port", str(t.port), "--path", t.path, "--mode", t.mode,
         "--clients", str(n), "--seconds", str(seconds), "--warmup", "3", "--ramp", "1000",
         "--pos-rate", "48000", "--late-ms", str(LATE_MS), "--tick-ms", str(TICK_MS),
         "--expect-kbps", str(MP3_KBPS if t.mode == "http" else 0)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marks = {}
    for line in proc.stderr:  # the generator says when its window starts and ends
        if line.startswith("window"):
            marks[line.split()[1]] = (time.time(), *process(t.pid))
    out = json.loads(proc.stdout.read())
    proc.wait()
    (t0, cpu0, _), (t1, cpu1, rss1) = marks["start"], marks["end"]
    out["server_cpu"] = (cpu1 - cpu0) / (t1 - t0)
    out["kb_per_listener"] = (rss1 - rss0) / 1024 / max(out["streaming"], 1)
    return out


def record(url: str, seconds: float, into: Path) -> None:
    """What a player gets from the gateway for ``seconds``: the anchor sends the same."""
    messages, start = [], None
    with connect(f"{url.replace('http', 'ws')}/ws/radio?codec=opus", max_size=2**22) as ws:
        ws.recv()  # hello
        while start is None or time.time() - start < seconds:
            message = ws.recv()
            if isinstance(message, bytes) and start is None:
                start = time.time()
            if start is not None:
                messages.append((time.time() - start, message))
    into.write_bytes(pickle.dumps(messages))


def start_icecast(folder: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    logs = folder / "icecast"
    logs.mkdir()
    folder.chmod(0o755)  # icecast drops root for nobody, who must reach its logs
    logs.chmod(0o777)
    config = folder / "icecast.xml"
    config.write_text(f"""<icecast>
  <limits><clients>20000</clients><sources>2</sources><queue-size>524288</queue-size>
    <client-timeout>30</client-timeout><header-timeout>15</header-timeout>
    <source-timeout>10</source-timeout><burst-on-connect>1</burst-on-connect>
    <burst-size>65535</burst-size></limits>
  <authentication><source-password>{ICECAST_PASSWORD}</source-password>
    <admin-user>admin</admin-user><admin-password>{ICECAST_PASSWORD}</admin-password>
  </authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>0</fileserve>
  <paths><basedir>/usr/share/icecast2</basedir><logdir>{logs}</logdir>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>
  </paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog>
    <loglevel>1</loglevel></logging>
  <security><chroot>0</chroot>{"<changeowner><user>nobody</user><group>nogroup</group>"
                                 "</changeowner>" if os.geteuid() == 0 else ""}</security>
</icecast>""")
    proc = subprocess.Popen(["icecast2", "-c", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"icecast2 did not start: {(logs / 'error.log').read_text()}")


def record_mp3(gateway: str, seconds: float) -> bytes:
    """The gateway's MP3 stream for ``seconds``: Icecast's source replays it, so that Icecast
    does not depend on the gateway keeping up while the gateway is measured."""
    got, start = b"", time.time()
    with httpx.stream("GET", f"{gateway}/stream/radio.mp3", timeout=30) as res:
        for chunk in res.iter_bytes():
            got += chunk
            if time.time() - start > seconds:
                return got
    return got


def feed_icecast(port: int, mp3: bytes, stop: threading.Event) -> None:
    """The recorded MP3, looped at its bit rate, as Icecast's source (HTTP PUT, as ffmpeg or
    butt would send it)."""
    auth = base64.b64encode(f"source:{ICECAST_PASSWORD}".encode()).decode()
    rate = MP3_KBPS * 1000 // 8 // 10  # bytes per 100 ms
    with socket.create_connection(("127.0.0.1", port)) as sink:
        sink.sendall(f"PUT /radio.mp3 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Authorization: Basic {auth}\r\nContent-Type: audio/mpeg\r\n"
                     "Ice-Public: 0\r\n\r\n".encode())
        start, sent = time.time(), 0
        while not stop.is_set():
            at = sent % len(mp3)
            piece = mp3[at:at + rate]
            sink.sendall(piece)
            sent += len(piece)
            time.sleep(max(0.0, start + sent / (rate * 10) - time.time()))


def main(args: argparse.Namespace) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    if not shutil.which("icecast2"):
        raise SystemExit("icecast2 is not installed: make bench-fanout installs it")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        loadgen = build_loadgen(folder)
        redis, redis_url = start_redis(folder)
        svc = Services(redis_url, folder)
        stop = threading.Event()
        procs: list[subprocess.Popen] = []
        try:
            url = svc.gateway(LOG_LEVEL="WARNING", CLIENT_QUEUE="64")
            svc.start("inference", "inference", LOG_LEVEL="WARNING")
            svc.start("synth", "synth", LOG_LEVEL="WARNING")
            record(url, 10, folder / "recording.pickle")
            mp3 = record_mp3(url, 10)
            anchor_port = free_port()
            anchor = subprocess.Popen([sys.executable, str(REPO / "bench/anchors/broadcast.py"),
                                       str(anchor_port), str(folder / "recording.pickle")],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True)
            procs.append(anchor)
            anchor.stdout.readline()  # ready
            icecast, ice_port = start_icecast(folder)
            procs.append(icecast)
            threading.Thread(target=feed_icecast, args=(ice_port, mp3, stop),
                             daemon=True).start()
            time.sleep(3)  # the source connected, its burst buffer filled
            gw_port, gw_pid = int(url.rsplit(":", 1)[1]), svc.procs["gw"].pid
            targets = {
                "gateway-opus": Target("gateway opus", gw_port, "/ws/radio?codec=opus", "ws",
                                       gw_pid),
                "broadcast": Target("broadcast", anchor_port, "/", "ws", anchor.pid),
                "icecast": Target("icecast mp3", ice_port, "/radio.mp3", "http", icecast.pid),
                "gateway-mp3": Target("gateway mp3", gw_port, "/stream/radio.mp3", "http",
                                      gw_pid)}
            print(f"{args.seconds:.0f} s windows; late: over {LATE_MS} ms behind the earliest "
                  f"delivery (measured at {TICK_MS} ms resolution)")
            print("server        listeners  connect s  streaming  server CPU  CPU/1000  "
                  "kB/listener  msgs/s  kbit/s  late frames  p99 ms  generator CPU")
            for n in args.listeners:
                for key in args.targets:
                    t = targets[key]
                    r = measure(loadgen, t, n, args.seconds)
                    if args.raw:
                        print(json.dumps(r))
                    late = f"{r['late'] / max(r['frames'], 1):.2%}" if t.mode == "ws" else \
                        f"{r['behind']} behind"
                    p99 = f"{r['late_p99_ms']:6.0f}" if t.mode == "ws" else "     -"
                    per = r["server_cpu"] / max(r["streaming"], 1) * 1000
                    print(f"{t.name:13s} {n:9d}  {r['connect_s']:9.1f}  {r['streaming']:9d}"
                          f"  {r['server_cpu']:10.0%}"
                          f"  {per:8.1%}  {r['kb_per_listener']:11.1f}  "
                          f"{r['frames_per_client_s']:6.1f}  {r['kbps_per_client']:6.1f}  "
                          f"{late:>11s}  {p99}  {r['generator_cpu']:13.0%}", flush=True)
                    time.sleep(3)  # the crowd gone before the next
        finally:
            stop.set()
            for proc in procs:
                proc.terminate()
            svc.stop()
            redis.terminate()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listeners", default="1000,2000,3000,5000",
                   type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--raw", action="store_true", help="print the generator's figures too")
    p.add_argument("--targets", default="gateway-opus,broadcast,icecast,gateway-mp3",
                   type=lambda s: s.split(","))
    main(p.parse_args())
