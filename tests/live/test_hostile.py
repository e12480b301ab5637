"""Slow and hostile listeners: never reading, oversized or malformed messages, floods of
reports, crowds that come and go. The gateway cuts what it must and returns to its baseline."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time

import httpx
import pytest
import websockets

from tests.conftest import run

RATE = 44100


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def holds_connection(pid: int, client_port: int) -> bool:
    """Whether process ``pid`` still has a socket open to the client at ``client_port``: the
    socket's inode from the kernel's TCP table, looked for among the process's files.
    (Counting the process's files instead failed twice in one CI run and once locally, one
    file over; which file was not caught. This asks about the client's socket itself.)"""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == client_port:
                    inodes.add(f"socket:[{fields[9]}]")
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            pass  # closed while we looked
    return False


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def listeners(url: str) -> float:
    """This gateway's listeners on the radio, from its own Prometheus gauge."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith('playbach_listeners{channel="radio"}'):
            return float(line.split()[-1])
    return 0.0


def stalled_socket(url: str, request: bytes) -> socket.socket:
    """A client that sends ``request`` and then never reads a byte (a tiny receive window)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(request)
    return sock


def ws_handshake(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


@pytest.mark.parametrize("kind", ["websocket", "wav"])
def test_a_client_that_never_reads_is_cut_and_its_slot_freed(live, kind):
    url = live.gateway_url
    pid = live.procs["gw"].pid
    request = ws_handshake("/ws/radio") if kind == "websocket" else \
        b"GET /stream/radio.wav HTTP/1.1\r\nHost: x\r\n\r\n"
    before = fds(pid)
    sock = stalled_socket(url, request)
    t = time.monotonic()
    deadline = t + 40
    while listeners(url) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert listeners(url) == 1
    assert holds_connection(pid, sock.getsockname()[1])  # what the check below looks for
    while listeners(url) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    cut_after = time.monotonic() - t
    print(f"\na {kind} client that never reads was cut after {cut_after:.1f} s")
    assert listeners(url) == 0, "the stalled client was never cut"
    assert cut_after < 20
    time.sleep(0.5)
    assert not holds_connection(pid, sock.getsockname()[1]), (
        f"the stalled client's socket is still open in the gateway ({before} -> {fds(pid)} "
        "files)")
    sock.close()


def test_inbound_messages_are_capped_and_malformed_ones_ignored(live):
    url = live.gateway_url.replace("http://", "ws://") + "/ws/radio"
    pid = live.procs["gw"].pid

    async def scenario() -> tuple[str, float]:
        async with websockets.connect(url, max_size=2**22) as ws:
            for bad in (b"\x00binary", "[1, 2]", '{"type":"underrun","count":1e400}',
                        '{"type":"underrun","count":"many"}', "not json", '{"type": 5}'):
                await ws.send(bad)
            for _ in range(2000):  # a flood of reports on one connection
                await ws.send(json.dumps({"type": "underrun", "count": 1000}))
            await ws.send("ok?")
            await asyncio.wait_for(ws.recv(), 5)  # still served
        async with websockets.connect(url, max_size=2**22) as ws:
            await ws.send("x" * 5000)  # one message over the 4 KiB cap
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        rss = rss_mb(pid)
        closes = []
        for _ in range(30):  # unfinished fragmented messages, 64 KiB a fragment
            ws = await websockets.connect(url, max_size=2**22)

            async def fragments():
                for _ in range(240):  # would be 15 MB
                    yield b"x" * 65536

            try:
                await asyncio.wait_for(ws.send(fragments()), 10)
                await asyncio.wait_for(ws.recv(), 5)
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            except websockets.ConnectionClosed as exc:
                closes.append(exc.rcvd.code if exc.rcvd else 0)
            except TimeoutError:
                closes.append(-1)
        return closes, rss_mb(pid) - rss

    closes, grown = run(scenario())
    print(f"\n30 oversized fragmented messages: closed with {set(closes)}, gateway RSS "
          f"{grown:+.1f} MB")
    # each closed by the server ("message too big", often before the client could read it)
    assert set(closes) <= {0, 1009}, closes
    assert grown < 20
    stats = httpx.get(f"{live.gateway_url}/api/stats").json()["channels"]["radio"]
    assert stats["underruns"] <= 10, stats  # a bucket of 5 refilled once a second
    log = live.log("gw")
    assert "Traceback" not in log, log[-3000:]


def test_memory_and_open_files_return_to_baseline_after_a_crowd(live):
    url = live.gateway_url.replace("http://", "ws://") + "/ws/radio"
    pid = live.procs["gw"].pid

    peaks = [0]

    async def crowd(size: int) -> int:
        async def sample() -> None:
            while True:
                peaks[0] = max(peaks[0], fds(pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())

        async def one() -> bool:
            async with websockets.connect(url, max_size=2**22) as ws:
                got = 0
                while got < 3:  # hello, then audio
                    await asyncio.wait_for(ws.recv(), 20)
                    got += 1
                return True
        done = await asyncio.gather(*(one() for _ in range(size)), return_exceptions=True)
        sampler.cancel()
        return sum(d is True for d in done)

    # A small crowd fills the bounded Redis pool (16 connections): that is the baseline. Two
    # crowds of 200 must leave nothing behind (an unbounded pool kept ~200 connections open).
    assert run(crowd(20)) == 20
    time.sleep(3)
    base_fds, base_rss = fds(pid), rss_mb(pid)
    seen = []
    for _ in range(2):
        peaks[0] = 0
        served = run(crowd(200))
        peak = peaks[0]
        time.sleep(3)
        seen.append((served, peak, fds(pid), rss_mb(pid)))
    print(f"\ncrowds of 200: gateway open files {base_fds} at rest, "
          f"{', '.join(f'{p} at peak -> {f} after' for _, p, f, _ in seen)}; RSS "
          f"{base_rss:.0f} MB -> {', '.join(f'{r:.0f}' for *_, r in seen)} MB")
    assert all(served == 200 for served, *_ in seen)
    assert all(after <= base_fds + 2 for _, _, after, _ in seen), (base_fds, seen)
    assert all(peak > base_fds + 50 for _, peak, _, _ in seen)  # the crowd was really there
    assert seen[-1][3] < base_rss + 15, (base_rss, seen)
