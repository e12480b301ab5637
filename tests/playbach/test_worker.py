"""The worker skeleton inference and synth share, against a real redis-server."""

import asyncio

from playbach import service, streams
from playbach.schemas import ChannelParams
from playbach.settings import WorkerSettings
from playbach.worker import ChannelWorker
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
