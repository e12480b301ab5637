"""The worker skeleton inference and synth share, against a real redis-server."""

import asyncio
import time

import pytest

from playbach import service, streams
from playbach.schemas import ChannelParams, ControlEntry, Take
from playbach.settings import WorkerSettings
from playbach.worker import ChannelWorker
from synth.worker import SynthWorker
from tests.conftest import BOTH


class Counting(ChannelWorker[list[int]]):
    """A worker whose per-channel state counts the ticks it served: a channel started over
    begins again at zero."""

    role = streams.SYNTH

    async def adopt(self, cid: str) -> list[int] | None:
        return [0]

    async def serve(self, cid: str, state: list[int]) -> None:
        state[0] += 1

    async def republish(self) -> None:
        for cid in self.channels:
            await ChannelParams().restore(self.redis, cid)


@BOTH
def test_an_owner_keeps_its_channel_when_redis_comes_back_empty(redis_url, redis):
    """Redis restarted without persistence: who listens is lost with the rest until a gateway
    beats again. The owner's next tick must not take that for silence, drop the channel and
    start it over (the synth would replay notes already heard)."""
    async def scenario() -> None:
        r = service.client(redis_url)
        worker = Counting(r, WorkerSettings(redis_url=redis_url, replica_id="one"))
        await ChannelParams().restore(r, "x")
        await r.zadd(streams.ACTIVE, {"x": int(1e13)})
        await worker.tick()
        await worker.tick()
        state = worker.channels["x"]
        assert state == [2]
        await r.flushall()  # as a restart without persistence leaves it
        await worker.tick()
        assert worker.channels.get("x") is state and state == [3]
        assert await r.zscore(streams.ACTIVE, "x")  # vouched for until the gateways beat
        await worker.ownership.release_all()
        await r.aclose()

    asyncio.run(scenario())


class Rendering(Counting):
    wakes = SynthWorker.wakes  # the synth's: it renders a new take of the notes at once


@pytest.mark.parametrize("worker_class, entry", [
    (Counting, ControlEntry(type="params", channel="x")),  # every owner, on a change
    (Rendering, Take(channel="x", ver=1)),  # the synth, on a new take of the notes
], ids=["control", "take"])
def test_an_entry_it_wakes_on_is_served_without_waiting_for_the_tick(redis_url, redis,
                                                                      worker_class, entry):
    """With a tick of a second, each of three entries written is served well within it (with
    the poll alone, all three within half a tick would happen one time in eight)."""
    async def scenario() -> list[float]:
        r = service.client(redis_url)
        worker = worker_class(r, WorkerSettings(redis_url=redis_url, replica_id="one",
                                                tick_ms=1000))
        await ChannelParams().restore(r, "x")
        await r.zadd(streams.ACTIVE, {"x": int(1e13)})
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        while "x" not in worker.channels:
            await asyncio.sleep(0.01)
        waits = []
        for _ in range(3):
            await asyncio.sleep(0.3)  # mid-tick
            served, t = worker.channels["x"][0], time.monotonic()
            await entry.post(r)
            while worker.channels["x"][0] == served:
                await asyncio.sleep(0.005)
            waits.append(time.monotonic() - t)
        stop.set()
        await running
        await r.aclose()
        return waits

    waits = asyncio.run(scenario())
    assert max(waits) < 0.5, waits
