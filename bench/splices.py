"""The live engine's promises, measured: no silence when an owner replica dies, every control
heard within 0.3 s, clean splices. Prints distributions (the README quotes them).

1. Failover: ``--failovers`` trials per role; each SIGKILLs the inference or synth replica that
   owns the radio while a listener listens; the silence a player with the default buffer
   would hear, gaps in the timeline, notes lost or repeated.
2. Controls: ``--trials`` PATCHes of each control; seconds from the call to the arrival of
   the first audio carrying it (the gateway sends on loopback: arrival = leaving the gateway).
3. Splices: the largest sample-to-sample step at the splices heard in 2, and inside chunks;
   the same in the player's Opus stream, decoded by libopus.

Usage: python bench/splices.py [--trials 20] [--failovers 10] [--parts 1,2,3]
Starts its own redis-server and services on free loopback ports, and stops them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import Services, login, start_redis  # noqa: E402
from tests.live import timing  # noqa: E402


def spread(values: list[float], unit: float = 1000) -> str:
    v = np.array(values) * unit
    return (f"median {np.median(v):5.0f}  p95 {np.percentile(v, 95):5.0f}  "
            f"max {v.max():5.0f}  (n={len(v)})")


async def failovers(svc: Services, url: str, redis, role: str, trials: int) -> dict:
    spares = iter(range(100))
    out: dict[str, list] = {"silence": [], "gaps": [], "lost": [], "repeated": []}

    def kill(name: str) -> None:
        svc.kill(name)
        svc.start(f"{role}-{next(spares)}", role, LOG_LEVEL="WARNING")  # the next spare

    for _ in range(trials):
        heard = await timing.failover(url, redis, role, kill)
        out["silence"].append(timing.silence(heard, heard.hello["rate"]))
        out["gaps"].append(timing.gaps(heard))
        lost, repeated = timing.note_faults(heard)
        out["lost"].append(lost)
        out["repeated"].append(repeated)
        await asyncio.sleep(1.0)  # the spare is up before the next kill
    return out


async def opus_frames(url: str, seconds: float) -> list[bytes]:
    """The player's Opus frames (?codec=opus) for ``seconds``."""
    import websockets

    frames, end = [], time.monotonic() + seconds
    async with websockets.connect(url.replace("http://", "ws://") + "/ws/radio?codec=opus",
                                  max_size=2**22) as ws:
        while time.monotonic() < end:
            msg = await ws.recv()
            if isinstance(msg, bytes):
                frames.append(msg)
    return frames


def opus_jumps(frames: list[bytes], splices: list[int], rate: int = 44100
               ) -> tuple[float, float, float]:
    """Decode the Opus frames as the player does (packets in order, one libopus decoder) and
    take the largest sample-to-sample step near the splices (their stream positions at 48 kHz,
    with room for the codec's and the resampler's delay) and elsewhere."""
    import av
    import numpy as np

    decoder = av.CodecContext.create("libopus", "r")
    first, pcm = struct.unpack_from("<Q", frames[0])[0], []
    for f in frames:
        off = 12
        while off < len(f):
            (size,) = struct.unpack_from("<H", f, off)
            for out in decoder.decode(av.Packet(f[off + 2:off + 2 + size])):
                pcm.append(out.to_ndarray().reshape(-1))
            off += 2 + size
    audio = np.concatenate(pcm).astype(np.float64)
    audio = audio * 32768 if np.abs(audio).max() <= 1.0 else audio  # float or s16, as decoded
    step = np.abs(np.diff(audio))
    near = np.zeros(len(step), bool)
    window = round(timing.SPLICE_WINDOW * 48000 / rate) + 480  # 10 ms more for the delays
    for at in splices:
        i = round(at * 48000 / rate) - first
        near[max(0, i - window):max(0, i + window)] = True
    return (float(step[near].max()) if near.any() else 0.0,
            float(step[~near].max()) if (~near).any() else 0.0, len(audio) / 48000)


async def main(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc, url_r = start_redis(Path(tmp))
        svc = Services(url_r, Path(tmp))
        import redis as redis_lib

        redis = redis_lib.Redis.from_url(url_r)
        try:
            url = svc.gateway(LOG_LEVEL="WARNING")
            for role in ("inference", "synth"):
                svc.start(f"{role}-a", role, LOG_LEVEL="WARNING")
                svc.start(f"{role}-b", role, LOG_LEVEL="WARNING")
            auth = login(url)
            time.sleep(3)
            print("1. SIGKILL of the replica that owns the radio, a listener listening")
            for role in ("inference", "synth") if 1 in args.parts else ():
                r = await failovers(svc, url, redis, role, args.failovers)
                print(f"  {role:9s} silence (ms): {spread(r['silence'])}; timeline gaps "
                      f"{sum(r['gaps'])}, notes lost {sum(r['lost'])}, repeated "
                      f"{sum(r['repeated'])}")
            print("2. a control changed -> first audio carrying it, at the listener (ms)")
            all_jumps = []
            for control in timing.CONTROLS if 2 in args.parts else ():
                lat = await timing.control_latencies(url, auth, control, args.trials)
                print(f"  {control:11s} {spread(lat)}", flush=True)
            print("3. splices")
            opus = asyncio.create_task(opus_frames(url, 3 + args.trials * 0.75))
            async with timing.Listening(url) as listening:
                await asyncio.sleep(2)
                async with __import__("httpx").AsyncClient() as client:
                    for i in range(args.trials):
                        body = {"bpm": 84 + 16 * (i % 2), "instrument": [42, 40][i % 2]}
                        await client.patch(f"{url}/api/channels/radio", json=body,
                                           headers=auth)
                        await client.post(f"{url}/api/channels/radio/tone",
                                          headers=auth) if i % 5 == 0 else None
                        await asyncio.sleep(0.7)
                await asyncio.sleep(1)
                all_jumps.append(timing.jumps(listening.heard))
                splices = len(listening.heard.splices)
            at, inside = all_jumps[0]
            print(f"  {splices} splices: largest step at a splice {at:.0f}, inside chunks "
                  f"{inside:.0f} (ratio {at / max(inside, 1):.2f})")
            at, inside, seconds = opus_jumps(await opus, listening.heard.splices)
            print(f"  the same through the player's Opus stream ({seconds:.1f} s decoded by "
                  f"libopus): largest step at a splice {at:.0f}, elsewhere {inside:.0f} (ratio "
                  f"{at / max(inside, 1):.2f})")
        finally:
            svc.stop()
            redis_proc.terminate()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--failovers", type=int, default=10)
    p.add_argument("--parts", default="1,2,3", type=lambda v: {int(x) for x in v.split(",")},
                   help="which measurements (3, the splices, always runs)")
    asyncio.run(main(p.parse_args()))
