"""Leases on a real redis-server, and the message schemas' round trips."""

import asyncio
from fractions import Fraction

from redis.crc import key_slot

from playbach import service, streams
from playbach.leases import Leases, Ownership
from playbach.schemas import (
    AudioChunk,
    ChannelParams,
    ControlEntry,
    NoteEvent,
    NoteOn,
    SynthPosition,
)
from playbach.vocab import Event
from tests.conftest import BOTH

pytestmark = BOTH  # on a single Redis and on a three-master cluster
CHANNEL_KEYS = (streams.channel, streams.notes, streams.audio, streams.synth_position,
                streams.listeners, streams.stats)


def test_a_channels_keys_share_one_slot_and_channels_spread_over_the_shards():
    """Redis Cluster runs a transaction or a multi-key command only within one slot: every
    key of a channel carries its hash tag, and 100 channels land in many slots."""
    def slots(cid: str) -> set[int]:
        keys = [key(cid) for key in CHANNEL_KEYS]
        keys += [streams.lease(role, cid) for role in (streams.INFERENCE, streams.SYNTH)]
        return {key_slot(k.encode()) for k in keys}

    assert all(len(slots(f"ch-{i}")) == 1 for i in range(100))
    spread = {slots(f"ch-{i}").pop() * 3 // 16384 for i in range(100)}
    assert spread == {0, 1, 2}  # each of three equal shards gets some



def test_leases_are_exclusive_renewable_and_expire(redis_url, redis):
    async def scenario():
        r = service.client(redis_url)
        a, b = Leases(r, "inference", "a", 300), Leases(r, "inference", "b", 300)
        assert await a.acquire("x") and not await b.acquire("x")
        assert await a.renew("x") and not await b.renew("x")
        await b.release("x")  # not b's to release
        assert await a.holder("x") == "a"
        await asyncio.sleep(0.45)  # a stops renewing, as if it died
        assert await b.acquire("x") and not await a.renew("x")
        await r.aclose()

    asyncio.run(scenario())


def test_fair_share_splits_active_channels(redis_url, redis):
    async def scenario():
        r = service.client(redis_url)
        for cid in "abcd":
            await r.sadd(streams.CHANNELS, cid)
        await r.zadd(streams.ACTIVE, dict.fromkeys("abc", 10**13))  # d: nobody listens
        one = Ownership(Leases(r, "synth", "one", 2000), 5000)
        two = Ownership(Leases(r, "synth", "two", 2000), 5000)
        await two.share(0)  # `two` is alive
        _, gained = await one.reconcile()
        assert gained == ["a", "b"]  # its share of 3 channels between 2 replicas
        _, gained = await two.reconcile()
        assert gained == ["c"]
        await one.release_all()
        _, gained = await two.reconcile()
        assert sorted(two.owned) == ["a", "b", "c"]  # alone now: it takes them all
        await r.aclose()

    asyncio.run(scenario())


def test_schemas_round_trip_through_stream_fields():
    params = ChannelParams(model="chorales", instrument=42, bpm=100, temperature=0.7)
    assert ChannelParams.from_fields(
        {k.encode(): v.encode() for k, v in params.to_fields().items()}) == params
    assert ChannelParams.from_fields(ChannelParams(seed=7).to_fields()).seed == 7
    ev = Event("C4.E4", Fraction(3, 2), "f")
    note = NoteEvent.of(ev, 5, 12.5, params, "r1")
    again = NoteEvent.from_fields({b"json": note.to_fields()["json"].encode()})
    assert again == note and again.event() == ev and again.midi == [60, 64]
    chunk = AudioChunk(pos=4096, pcm=b"\x01\x00" * 2048, notes=[NoteOn(
        offset=10, seq=5, pitch="C4", midi=[60], velocity=96, duration=0.5, beats=1,
        program=42, model="chorales", temperature=0.7)])
    raw = {k.encode(): (v if isinstance(v, bytes) else str(v).encode())
           for k, v in chunk.to_fields().items()}
    assert AudioChunk.from_fields(raw) == chunk and chunk.frames == 2048


def test_control_entries_and_the_synth_position_round_trip_through_redis(redis_url, redis):
    """Everything that crosses Redis has one schema: control entries (every writer, one shape)
    and the synth's position hash, read back from a real redis-server."""

    async def trip() -> tuple[list[ControlEntry], SynthPosition, SynthPosition]:
        client = service.client(redis_url)
        await ControlEntry(type="params", channel="a", data={"params": {"bpm": 90}}).post(client)
        await ControlEntry(type="error", channel="a",
                           data={"message": "refused", "source": "inference"}).post(client)
        entries = [ControlEntry.from_fields(f) for _, f in await client.xrange(streams.CONTROL)]
        empty = await SynthPosition.read(client, "a")
        await SynthPosition(pos=4096, beat=2.5, seq=7, id="5-0", into=0.25, lead_ms=512.5,
                            starved=1, replica="synth-1").write(client, "a")
        stored = await SynthPosition.read(client, "a")
        await client.aclose()
        return entries, empty, stored

    entries, empty, stored = asyncio.run(trip())
    assert [e.type for e in entries] == ["params", "error"]
    assert entries[1].event() == {"type": "error", "channel": "a", "message": "refused",
                                  "source": "inference"}
    assert empty == SynthPosition()  # no position yet: the start of a timeline
    assert stored == SynthPosition(pos=4096, beat=2.5, seq=7, id="5-0", into=0.25,
                                   lead_ms=512.5, starved=1, replica="synth-1")


def test_a_newer_take_replaces_notes_and_audio_from_where_it_begins():
    """Streams hold every take; readers keep the newest from where it begins, skip a stale
    take written late and the same take written twice."""
    def n(seq, ver):
        return NoteEvent(seq=seq, beat=seq, pitch="C4", midi=[60], duration=1, velocity=80,
                         model="m", temperature=1.0, ver=ver)

    notes = [n(0, 0), n(1, 0), n(2, 0), n(3, 0), n(2, 1), n(3, 1), n(3, 0), n(3, 1), n(4, 1)]
    assert [(x.seq, x.ver) for x in NoteEvent.current(notes)] == [
        (0, 0), (1, 0), (2, 1), (3, 1), (4, 1)]

    def c(pos, ver):
        return AudioChunk(pos=pos, pcm=b"\0\0" * 4, ver=ver)

    chunks = [c(0, 0), c(4, 0), c(8, 0), c(4, 1), c(8, 0), c(8, 1), c(8, 1), c(12, 1)]
    assert [(x.pos, x.ver) for x in AudioChunk.current(chunks)] == [
        (0, 0), (4, 1), (8, 1), (12, 1)]
