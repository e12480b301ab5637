"""The live engine: a deep lead that covers a killed owner, changes spliced in at once, and
splices without clicks. Real processes: redis-server, two replicas of each role, SIGKILL.
``bench/splices.py`` prints the same measurements with more trials."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import numpy as np
import pytest

from playbach import streams
from playbach.schemas import Take
from tests.conftest import login, run
from tests.live import timing
from tests.live.client import Heard

TRIALS = 6  # kills per role (the bench makes 10)
# changes per control, as many as the bench makes: the p95 of 8 is 0.35 of the 7th and 0.65
# of the slowest, so one change heard late failed it, and on a machine as busy as make test's
# one change in ~20-30 is heard a write (93 ms) or three later than the rest (a fresh clone
# here: 159-164 ms and one 437); the p95 of 20 lets one of them be late, not two
CONTROL_TRIALS = 20


@pytest.fixture
def pairs(services):
    """A gateway and two replicas of each role; a killed replica is replaced by a spare."""
    services.gateway()
    for role in ("inference", "synth"):
        services.start(f"{role}-a", role)
        services.start(f"{role}-b", role)
    return services


@pytest.mark.parametrize("role", ["inference", "synth"])
def test_killing_the_owner_costs_a_listener_no_silence(pairs, redis, role):
    """In each trial the replica that owns the radio is SIGKILLed while a listener listens:
    a player with the default buffer hears no silence, the timeline has no gap, and no note
    is lost or played twice."""
    url, spares = pairs.gateway_url, itertools.count()

    def kill(name: str) -> None:
        pairs.kill(name)
        pairs.start(f"{role}-{next(spares)}", role)

    async def trials() -> list:
        async with timing.Listening(url) as warm:  # the radio plays before the first kill
            await warm.wait(lambda: warm.heard.frames[-1][2] if len(warm.heard.frames) > 40
                            else None, timeout=20)
        out = []
        for _ in range(TRIALS):
            # after the kill: the lease (1.5 s) moves, and the new owner's audio follows
            heard = await timing.failover(url, redis, role, kill, before=0.8, after=2.3,
                                          min_notes=2)
            out.append((timing.silence(heard, heard.hello["rate"]), timing.gaps(heard),
                        timing.note_faults(heard), len(heard.notes)))
            await asyncio.sleep(0.3)
        return out

    results = run(trials())
    silences = [r[0] for r in results]
    print(f"\n{role}: silence per kill (s) {[round(s, 3) for s in silences]}; notes heard "
          f"{[r[3] for r in results]}")
    assert all(s == 0 for s in silences), silences
    assert all(r[1] == 0 for r in results), "a gap in the timeline"
    assert all(r[2] == (0, 0) for r in results), "notes lost or repeated"
    assert all(r[3] >= 2 for r in results), "too few notes heard to tell"


def test_every_control_is_heard_within_0_3_s(live, redis):
    """For each control, the first audio carrying a change reaches a listener within 0.3 s of
    the API call (p95), although the synth renders seconds ahead. Each change of the notes
    began a take that inference announced on pb:takes (the synth wakes on it)."""
    url, auth, slow = live.gateway_url, login(live.gateway_url), {}
    for control in timing.CONTROLS:
        latencies = run(timing.control_latencies(url, auth, control, CONTROL_TRIALS,
                                                 pause=0.3))
        print(f"\n{control}: {[round(x * 1000) for x in latencies]} ms", end="")
        if np.percentile(latencies, 95) > 0.3:
            slow[control] = latencies
    assert not slow, slow
    takes = [Take.from_fields(f) for _, f in redis.xrange(streams.TAKES)]
    vers = [t.ver for t in takes if t.channel == "radio"]
    # temperature, top-p, model, seed: each change (and the uncounted first) a take
    assert len(vers) >= 4 * (CONTROL_TRIALS + 1) and vers == sorted(set(vers)), vers


def test_splices_are_clean(live):
    """Where a change, a new take of the notes or the test tone is spliced in, the largest
    sample-to-sample step is no larger than the largest inside chunks."""
    url, auth = live.gateway_url, login(live.gateway_url)

    async def scenario() -> Heard:
        async with timing.Listening(url) as listening, httpx.AsyncClient() as client:
            await asyncio.sleep(2.0)
            for i in range(8):
                change = [{"instrument": 40}, {"bpm": 120}, {"temperature": 0.7},
                          {"instrument": 42, "bpm": 84, "temperature": 1.0}][i % 4]
                await client.patch(f"{url}/api/channels/radio", json=change, headers=auth)
                if i in (2, 5):
                    await client.post(f"{url}/api/channels/radio/tone", headers=auth)
                await asyncio.sleep(0.6)
            await asyncio.sleep(1.5)
            return listening.heard

    heard = run(scenario())
    at, inside = timing.jumps(heard)
    print(f"\n{len(heard.splices)} splices: largest step {at:.0f} at splices, "
          f"{inside:.0f} inside chunks")
    assert len(heard.splices) >= 6  # 8 changes and 2 tones; a tone with a change is one
    assert timing.gaps(heard) == 0
    assert at <= inside, (at, inside)
