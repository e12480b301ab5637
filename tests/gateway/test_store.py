"""The gateway's Store against a real redis-server."""

import asyncio

from gateway.hub import ChannelHub
from gateway.store import Store
from playbach import service, streams
from playbach.schemas import ChannelParams, ChannelUpdate, ControlEntry
from tests.conftest import BOTH, SHIPPED

pytestmark = BOTH  # on a single Redis and on a three-master cluster


def test_racing_changes_announce_last_what_is_stored_last(redis, redis_url):
    """A slider dragged fast sends changes that overlap: whichever is stored last must also be
    the last one listeners hear of, or the player shows a tempo the channel does not have.
    Announcements may land out of order (the transaction holds only the channel's slot); a
    gateway's hub passes on only newer ones, in the order pb:control has them."""

    async def race() -> list[tuple[int, int, int]]:
        client = service.client(redis_url)
        store = Store(client, SHIPPED)
        await store.create("race", ChannelParams())
        hub = ChannelHub(client, "race", 0, None, None)
        seen, last = [], "0-0"
        for _ in range(10):
            await asyncio.gather(*(store.update("race", ChannelUpdate(bpm=bpm))
                                   for bpm in range(60, 80)))
            passed = []
            for entry_id, fields in await client.xrange(streams.CONTROL, min=f"({last}"):
                last, entry = entry_id.decode(), ControlEntry.from_fields(fields)
                if hub.newer(entry):
                    passed.append(entry.data["params"]["bpm"])
            seen.append(((await store.params("race")).bpm, passed[-1], len(passed)))
        await client.aclose()
        return seen

    for stored, heard_last, passed in asyncio.run(race()):
        assert stored == heard_last and passed >= 1


def test_racing_changes_of_different_parameters_lose_none(redis, redis_url):
    async def race() -> ChannelParams:
        client = service.client(redis_url)
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
