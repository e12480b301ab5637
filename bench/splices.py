"""The live engine's promises, measured: no silence when an owner replica dies, every control
heard within 0.3 s, clean splices. Prints distributions (the README quotes them).

1. Failover: ``--failovers`` trials per role; each SIGKILLs the inference or synth replica that
   owns the radio while a listener listens; the silence a player with the default buffer
   would hear, gaps in the timeline, notes lost or repeated.
2. Controls: ``--trials`` PATCHes of each control; seconds from the call to the arrival of
   the first audio carrying it (the gateway sends on loopback: arrival = leaving the gateway).
3. Splices: the largest sample-to-sample step at the splices heard in 2, and inside chunks.

Usage: python bench/splices.py [--trials 20] [--failovers 10]
Starts its own redis-server and services on free loopback ports, and stops them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
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
            for role in ("inference", "synth"):
                r = await failovers(svc, url, redis, role, args.failovers)
                print(f"  {role:9s} silence (ms): {spread(r['silence'])}; timeline gaps "
                      f"{sum(r['gaps'])}, notes lost {sum(r['lost'])}, repeated "
                      f"{sum(r['repeated'])}")
            print("2. a control changed -> first audio carrying it, at the listener (ms)")
            all_jumps = []
            for control in timing.CONTROLS:
                lat = await timing.control_latencies(url, auth, control, args.trials)
                print(f"  {control:11s} {spread(lat)}", flush=True)
            print("3. splices")
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
        finally:
            svc.stop()
            redis_proc.terminate()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--failovers", type=int, default=10)
    asyncio.run(main(p.parse_args()))
