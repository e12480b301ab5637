"""The gateway's Store against a real redis-server."""

import asyncio
import json

from redis.asyncio import Redis

from gateway.store import Store
from playbach import streams
from playbach.schemas import ChannelParams, ChannelUpdate
from tests.conftest import SHIPPED


def test_racing_changes_announce_last_what_is_stored_last(redis, redis_url):
    """A slider dragged fast sends changes that overlap: whichever is stored last must also be
    the last one listeners hear of, or the player shows a tempo the channel does not have."""

    async def race() -> list[tuple[float, float]]:
        client = Redis.from_url(redis_url)
        store = Store(client, SHIPPED)
        await store.create("race", ChannelParams())
        seen = []
        for _ in range(10):
            await asyncio.gather(*(store.update("race", ChannelUpdate(bpm=bpm))
                                   for bpm in range(60, 100)))
            [(_, fields)] = await client.xrevrange(streams.CONTROL, count=1)
            announced = json.loads(fields[b"json"])["params"]["bpm"]
            seen.append(((await store.params("race")).bpm, announced))
        await client.aclose()
        return seen

    for stored, announced in asyncio.run(race()):
        assert stored == announced


def test_racing_changes_of_different_parameters_lose_none(redis, redis_url):
    async def race() -> ChannelParams:
        client = Redis.from_url(redis_url)
        store = Store(client, SHIPPED)
        await store.create("both", ChannelParams())
        changes = [ChannelUpdate(bpm=111), ChannelUpdate(temperature=0.7),
                   ChannelUpdate(top_p=0.8), ChannelUpdate(instrument=73)]
        await asyncio.gather(*(store.update("both", c) for c in changes * 5))
        params = await store.params("both")
        await client.aclose()
        return params

    params = asyncio.run(race())
    assert (params.bpm, params.temperature, params.top_p, params.instrument) == (
        111, 0.7, 0.8, 73)
