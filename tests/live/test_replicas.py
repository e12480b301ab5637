"""Channels shared among replicas by lease: each generated once, taken over when a replica dies."""

from __future__ import annotations

import itertools
import threading
import time

from playbach import streams
from playbach.schemas import AudioChunk, ChannelParams, NoteEvent
from tests.conftest import BOTH, wait_for_value

pytestmark = BOTH  # on a single Redis and on a three-master cluster

CHANNELS = ("a", "b", "c", "d")


class Listening:
    """Keeps channels active as a gateway with listeners would (pb:active heartbeat)."""

    def __init__(self, redis, channels) -> None:
        self.redis, self.channels = redis, channels
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.is_set():
            now = int(time.time() * 1000)
            self.redis.zadd(streams.ACTIVE, dict.fromkeys(self.channels, now))
            time.sleep(0.3)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def make_channels(redis, ids) -> None:
    for cid in ids:
        redis.sadd(streams.CHANNELS, cid)
        redis.hset(streams.channel(cid), mapping=ChannelParams(bpm=200).to_fields())


def notes(redis, cid) -> list[tuple[int, NoteEvent]]:
    """(ms timestamp of writing, note) for every note of a channel."""
    return [(int(i.split(b"-")[0]), NoteEvent.from_fields(f))
            for i, f in redis.xrange(streams.notes(cid))]


def test_two_replicas_four_channels_each_generated_once_and_taken_over(redis, services):
    services.start("inf-1", "inference")
    services.start("inf-2", "inference")
    services.start("synth-1", "synth")
    # both replicas announce themselves before there is anything to share (one that comes
    # later takes only what is free: owners keep their channels)
    wait_for_value(lambda: redis.zcard(streams.replicas(streams.INFERENCE)) == 2, 60,
                   "both inference replicas to announce themselves")
    make_channels(redis, CHANNELS)
    with Listening(redis, CHANNELS):
        wait_for_value(lambda: all(redis.xlen(streams.notes(c)) > 8 for c in CHANNELS), 30,
                       "notes on every channel")
        owners = {cid: redis.get(streams.lease(streams.INFERENCE, cid)).decode()
                  for cid in CHANNELS}
        assert sorted(owners.values()) == ["inf-1", "inf-1", "inf-2", "inf-2"]  # fair shares
        for cid in CHANNELS:
            seqs = [n.seq for _, n in notes(redis, cid)]
            assert seqs == list(range(len(seqs))) and len(seqs) > 8  # once each, no gap
            assert {n.replica for _, n in notes(redis, cid)} == {owners[cid]}
        victim = owners["a"]
        survivor = "inf-2" if victim == "inf-1" else "inf-1"
        killed_at = time.time() * 1000
        services.kill(victim)
        wait_for_value(lambda: all(
            redis.get(streams.lease(streams.INFERENCE, c)) == survivor.encode()
            for c in CHANNELS), 30, f"{survivor} to take over every channel")
        time.sleep(2)  # and to write on them
        # the music went on: the synth plays notes the survivor wrote on a taken-over channel
        # (waited for: on a busy machine the synth's position trails the writing by a lead)
        first = min(n.seq for _, n in notes(redis, "a") if n.replica == survivor)
        wait_for_value(lambda: int(redis.hget(streams.synth_position("a"), "seq")) > first + 8,
                       30, f"the synth to play {survivor}'s notes on channel a")
    for cid in CHANNELS:
        written = notes(redis, cid)
        seqs = [n.seq for _, n in written]
        assert seqs == list(range(len(seqs))), f"channel {cid}: duplicate or missing notes"
        if owners[cid] == victim:
            after = [(t, n) for t, n in written if n.replica == survivor]
            assert after, f"channel {cid} was not taken over"
            before = [t for t, n in written if n.replica == victim]
            gap = after[0][0] - max(before)
            print(f"\nchannel {cid}: taken over by {survivor}; {gap / 1000:.2f} s between the "
                  f"last note of {victim} and the first of {survivor} "
                  f"(killed {(after[0][0] - killed_at) / 1000:.2f} s before it)")
            assert gap < 4000


def test_a_synth_replica_that_dies_is_replaced_without_losing_the_timeline(redis, services):
    make_channels(redis, ["a"])
    services.start("inf-1", "inference")
    services.start("synth-1", "synth")
    services.start("synth-2", "synth")
    with Listening(redis, ["a"]):
        owner = wait_for_value(lambda: redis.xlen(streams.audio("a")) > 2 and redis.get(
            streams.lease(streams.SYNTH, "a")), 30, "a synth to render channel a").decode()
        services.kill(owner)
        wait_for_value(lambda: (redis.hget(streams.synth_position("a"), "replica") or b"")
                       not in (b"", owner.encode()), 30, "the other synth to take over")
        time.sleep(2)  # and to render on
    chunks = [AudioChunk.from_fields(f) for _, f in redis.xrange(streams.audio("a"))]
    positions = [c.pos for c in chunks]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    # one timeline with no gap in samples: the new owner went on where the dead one stopped
    assert all(b.pos == a.pos + a.frames for a, b in itertools.pairwise(chunks))
    new_owner = redis.hget(streams.synth_position("a"), "replica").decode()
    assert new_owner != owner
    seqs = [n.seq for c in chunks for n in c.notes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # no note played twice


def test_nobody_listening_costs_nothing(redis, services):
    make_channels(redis, ["quiet"])
    services.start("inf-1", "inference")
    services.start("synth-1", "synth")
    time.sleep(3)
    assert redis.xlen(streams.notes("quiet")) == 0 and redis.xlen(streams.audio("quiet")) == 0
