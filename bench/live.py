"""The live stream's speed goals, measured side by side in one run on this machine.

1. Time to first audio: joining a channel that plays; starting a new one.
2. Time from a parameter change to the first audio that carries it (instrument, temperature).
3. Listeners one gateway process holds: N WebSocket clients on loopback, for N = 100 ... 2000:
   the gateway's CPU, frames that came late, clients dropped.
4. The synth's real-time factor; the inference's notes per second per core.

Usage: python bench/live.py [--listeners 100,500,1000,2000] [--seconds 10]
Starts its own redis-server and services on free loopback ports, and stops them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import websockets

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playbach.schemas import DEFAULT_MODEL  # noqa: E402
from tests.conftest import SHIPPED, Services, login, start_redis  # noqa: E402

RATE, CHUNK, BACKLOG = 44100, 2048, 0.6


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def first_frame(url: str, cid: str, sounding: bool = False) -> float:
    return await asyncio.wait_for(_first_frame(url, cid, sounding), 20)


async def _first_frame(url: str, cid: str, sounding: bool = False) -> float:
    """Seconds from connecting to the first binary frame (with ``sounding``: the first frame
    in which a note starts)."""
    t = time.perf_counter()
    async with websockets.connect(f"{url.replace('http', 'ws')}/ws/{cid}", max_size=2**22) as ws:
        notes_seen = False
        while True:
            msg = await ws.recv()
            if isinstance(msg, str):
                notes_seen |= '"type": "notes"' in msg
                continue
            if not sounding or notes_seen:
                return time.perf_counter() - t


async def change_latency(url: str, auth: dict, field: str, value, key: str) -> float:
    return await asyncio.wait_for(_change_latency(url, auth, field, value, key), 30)


async def _change_latency(url: str, auth: dict, field: str, value, key: str) -> float:
    """Seconds from PATCH to the arrival of the first note-on that carries the new value."""
    async with websockets.connect(f"{url.replace('http', 'ws')}/ws/radio", max_size=2**22) as ws:
        await asyncio.sleep(2.0)
        async with httpx.AsyncClient() as client:
            t = time.perf_counter()
            await client.patch(f"{url}/api/channels/radio", json={field: value}, headers=auth)
        import json

        while True:
            msg = await ws.recv()
            if isinstance(msg, str):
                event = json.loads(msg)
                if event["type"] == "notes" and any(n[key] == value for n in event["notes"]):
                    return time.perf_counter() - t


async def crowd(url: str, n: int, seconds: float, gateway_pid: int,
                codec: str = "pcm") -> dict[str, float]:
    """N listeners of ``codec`` frames for ``seconds``: the gateway's CPU share, late frames,
    dropped clients, bytes a listener gets, and this load generator's own CPU share (it must
    not be the limit)."""
    frames_per_s = RATE / CHUNK
    stats = {"frames": 0, "late": 0, "dropped": 0, "connected": 0, "bytes": 0}
    reasons: Counter[str] = Counter()

    async def one(i: int) -> None:
        try:
            async with websockets.connect(f"{url.replace('http', 'ws')}/ws/radio?codec={codec}",
                                          max_size=2**22, open_timeout=30) as ws:
                stats["connected"] += 1
                start, got = None, 0
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    msg = await asyncio.wait_for(ws.recv(), timeout=5)
                    if isinstance(msg, str):
                        continue
                    now = time.perf_counter()
                    start = start or now
                    got += 1
                    stats["bytes"] += len(msg)
                    # late: more than 0.5 s behind the stream's real-time cadence (the
                    # backlog, BACKLOG s of audio, comes at once and is never late)
                    if now - start > (got - 1) / frames_per_s - BACKLOG + 0.5:
                        stats["late"] += 1
                stats["frames"] += got
        except (TimeoutError, OSError, websockets.WebSocketException) as exc:
            stats["dropped"] += 1
            response = getattr(exc, "response", None)
            reasons[type(exc).__name__ + (f" {response.status_code}" if response else "")] += 1

    cpu0, own0, t0 = cpu_seconds(gateway_pid), time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t0
    cpu = (cpu_seconds(gateway_pid) - cpu0) / wall
    expected = n * (seconds + BACKLOG) * frames_per_s
    if reasons:
        print(f"    dropped because: {dict(reasons)}")
    return {"listeners": n, "gateway_cpu": cpu, "delivered": stats["frames"] / expected,
            "late_frames": stats["late"] / max(stats["frames"], 1), "dropped": stats["dropped"],
            "kbps": stats["bytes"] * 8 / 1000 / max(n, 1) / seconds,
            "generator_cpu": (time.process_time() - own0) / wall}


def synth_rtf(seconds: float = 30.0) -> float:
    from playbach.schemas import ChannelParams, NoteEvent
    from playbach.stepmodel import Improviser, StepModel
    from synth.render import Pending, Renderer
    from synth.settings import FLUID_R3

    imp = Improviser(StepModel(SHIPPED / DEFAULT_MODEL), 1.0, seed=1)
    renderer = Renderer(FLUID_R3, RATE, 0.5, 19)
    for i, ev in enumerate(imp.notes(400)):
        renderer.pending.append(Pending(NoteEvent.of(ev, i, 0, ChannelParams()), f"{i}-0"))
    t, pos = time.process_time(), 0
    while pos < seconds * RATE:
        renderer.render(pos, CHUNK, 84)
        pos += CHUNK
    return (pos / RATE) / (time.process_time() - t)


def inference_rate(notes: int = 3000) -> float:
    from playbach.stepmodel import Improviser, StepModel

    imp = Improviser(StepModel(SHIPPED / DEFAULT_MODEL), 1.0, seed=1)
    t = time.process_time()
    for _ in range(notes):
        imp.next()
    return notes / (time.process_time() - t)


async def main(args) -> None:
    import faulthandler

    faulthandler.dump_traceback_later(1800, exit=True)  # a hung run says where, and ends
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        redis, url_r = start_redis(Path(tmp))
        svc = Services(url_r, Path(tmp))
        try:
            url = svc.gateway(CLIENT_QUEUE="64", LOG_LEVEL="WARNING")
            svc.start("inference", "inference", LOG_LEVEL="WARNING")
            svc.start("synth", "synth", LOG_LEVEL="WARNING")
            auth = login(url)
            print("1. time to first audio")
            cold = await first_frame(url, "radio", sounding=True)
            await asyncio.sleep(1.0)
            warm = [await first_frame(url, "radio") for _ in range(5)]
            print(f"  joining a live channel          {min(warm) * 1000:7.0f} ms "
                  f"(best of 5; median {sorted(warm)[2] * 1000:.0f} ms)")
            print(f"  starting a channel (first note) {cold * 1000:7.0f} ms")
            print("2. parameter change -> first audio carrying it (arrival at the listener)")
            inst = await change_latency(url, auth, "instrument", 42, "program")
            temp = await change_latency(url, auth, "temperature", 0.7, "temperature")
            print(f"  instrument (synth)              {inst * 1000:7.0f} ms")
            print(f"  temperature (inference)         {temp * 1000:7.0f} ms")
            print(f"3. listeners on one gateway process, {args.seconds:.0f} s each")
            print("  codec  listeners  gateway CPU  delivered  late frames  dropped  "
                  "kbit/s each  generator CPU")
            pid = svc.procs["gw"].pid
            for n in args.listeners:
                for codec in args.codecs:
                    r = await crowd(url, n, args.seconds, pid, codec)
                    print(f"  {codec:5s}  {n:9d}  {r['gateway_cpu']:10.0%}  {r['delivered']:9.1%}"
                          f"  {r['late_frames']:11.1%}  {r['dropped']:7d}  {r['kbps']:11.0f}"
                          f"  {r['generator_cpu']:13.0%}", flush=True)
                    await asyncio.sleep(2)
        finally:
            svc.stop()
            redis.terminate()
    print("4. throughput, one core")
    print(f"  synth real-time factor          {synth_rtf():7.0f}x  (seconds of audio per CPU s)")
    print(f"  inference notes per second      {inference_rate():7.0f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listeners", default="100,500,1000,2000",
                   type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--codecs", default="pcm,opus", type=lambda s: s.split(","))
    asyncio.run(main(p.parse_args()))
