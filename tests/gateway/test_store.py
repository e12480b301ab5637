"""The gateway's Store against a real redis-server."""

import asyncio

import pytest

from gateway.hub import ChannelHub
from gateway.store import Caps, Refused, Store
from playbach import service, streams
from playbach.schemas import ChannelAccess, ChannelParams, ChannelUpdate, ControlEntry
from tests.conftest import BOTH, SHIPPED

pytestmark = BOTH  # on a single Redis and on a three-master cluster
CAPS = Caps(total=100, per_user=20)


def test_racing_changes_announce_last_what_is_stored_last(redis, redis_url):
    """A slider dragged fast sends changes that overlap: whichever is stored last must also be
    the last one listeners hear of, or the player shows a tempo the channel does not have.
    Announcements may land out of order (the transaction holds only the channel's slot); a
    gateway's hub passes on only newer ones, in the order pb:control has them."""

    async def race() -> list[tuple[int, int, int]]:
        client = service.client(redis_url)
        store = Store(client, SHIPPED)
        await store.create("race", ChannelParams(), ChannelAccess(), CAPS)
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
        await store.create("both", ChannelParams(), ChannelAccess(), CAPS)
        changes = [ChannelUpdate(bpm=111), ChannelUpdate(temperature=0.7),
                   ChannelUpdate(top_p=0.8), ChannelUpdate(instrument=73)]
        await asyncio.gather(*(store.update("both", c) for c in changes * 5))
        params = await store.params("both")
        await client.aclose()
        return params

    params = asyncio.run(race())
    assert (params.bpm, params.temperature, params.top_p, params.instrument) == (
        111, 0.7, 0.8, 73)


def test_channels_are_listed_by_access_and_capped_exactly(redis, redis_url):
    """Anonymous callers see the public channels; a guest, those and its own; the admin, all.
    The caps hold exactly under a burst (never passed, never refused short of them), and
    the access survives Redis losing its data (``restore``)."""

    async def scenario() -> None:
        client = service.client(redis_url)
        store = Store(client, SHIPPED)
        caps = Caps(total=6, per_user=3)
        await store.create("radio", ChannelParams(), ChannelAccess(public=True), caps)
        made = await asyncio.gather(*(
            store.create(f"ch-{i}", ChannelParams(), ChannelAccess(owner="guest-a"), caps)
            for i in range(8)), return_exceptions=True)
        refused = [m for m in made if isinstance(m, Refused)]
        assert len(refused) == 5 and {r.status for r in refused} == {429}
        assert "you have 3 channels" in refused[0].detail
        await store.create("b1", ChannelParams(), ChannelAccess(owner="guest-b"), caps)
        await store.create("b2", ChannelParams(), ChannelAccess(owner="guest-b"), caps)
        with pytest.raises(Refused, match="the server holds its most channels"):
            await store.create("b3", ChannelParams(), ChannelAccess(owner="guest-b"), caps)
        with pytest.raises(Refused, match="exists already"):
            await store.create("radio", ChannelParams(), ChannelAccess(), caps)
        mine = {c for c in await store.visible_ids("guest-a", admin=False) if c != "radio"}
        assert len(mine) == 3 and await store.visible_ids(None, admin=False) == ["radio"]
        assert len(await store.visible_ids("admin", admin=True)) == 6
        await store.set_public("b1", True)
        assert await store.visible_ids(None, admin=False) == ["b1", "radio"]
        records = await store.all_records()
        await client.flushall()  # Redis lost its data: the keeper puts it back
        for cid, (params, access) in records.items():
            await params.restore(client, cid)
            await access.restore(client, cid)
        assert await store.visible_ids(None, admin=False) == ["b1", "radio"]
        assert set(await store.visible_ids("guest-a", admin=False)) == {"b1", "radio", *mine}
        await store.delete(sorted(mine)[0])
        await store.create("a4", ChannelParams(), ChannelAccess(owner="guest-a"), caps)
        await client.aclose()

    asyncio.run(scenario())
