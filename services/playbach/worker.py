"""The skeleton inference and synth share: leases, a tick loop that outlives Redis outages,
re-publishing after Redis lost its data, and health probes.

A subclass says how to ``adopt`` a channel (build its state, from Redis), ``release`` it,
``serve`` it each tick, and what to ``republish`` when Redis comes back empty."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Generic, TypeVar

from redis.asyncio import Redis

from playbach import service, streams
from playbach.leases import Leases, Ownership, still_active
from playbach.settings import WorkerSettings

C = TypeVar("C")  # a subclass's per-channel state
log = logging.getLogger("playbach")


class ChannelWorker(Generic[C]):
    role = "worker"
    wakes: tuple[str, ...] = (streams.CONTROL,)  # streams whose every entry means: tick now

    def __init__(self, redis: Redis, settings: WorkerSettings,
                 watch: service.RedisWatch | None = None) -> None:
        self.redis, self.settings = redis, settings
        self.watch = watch or service.RedisWatch(self.role, settings.redis_url)
        leases = Leases(redis, self.role, settings.replica_id, settings.lease_ms)
        self.ownership = Ownership(leases, settings.idle_ms)
        self.health = service.Health(self.watch)
        self.channels: dict[str, C] = {}
        self.epoch = service.Epoch()
        self.hold_until = 0.0  # no new channels before this (monotonic), after a data loss
        self.wake = asyncio.Event()  # a tick now, not at the next interval

    # --- what a subclass provides ----------------------------------------------------------

    async def adopt(self, cid: str) -> C | None:
        """The state to serve a channel we just leased, or None to give it back."""
        raise NotImplementedError

    async def serve(self, cid: str, state: C) -> None:
        raise NotImplementedError

    def release(self, cid: str, state: C) -> None:
        """Free what ``adopt`` built (the lease is already gone)."""

    async def republish(self) -> None:
        """Redis lost its data: write back what this replica holds."""

    async def starting(self) -> None:
        """Once, before the loop (Redis may be down: nothing here may need it)."""

    async def before_serving(self) -> None:
        """Each tick, before the channels are served."""

    def heard(self, key: str, entries: list[tuple]) -> None:
        """Entries just written to stream ``key`` (one of ``wakes``), before the tick they
        wake: (id, fields) pairs."""

    # --- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        server = await self.health.serve(s.health_host, s.health_port) if s.health_port else None
        await self.starting()
        log.info("%s replica %s serving channels", self.role, s.replica_id)
        changes = [asyncio.create_task(self.wake_on_changes(key)) for key in self.wakes]
        try:
            await service.tick_until(stop, s.tick_ms / 1000, self.tick, self.watch, self.wake)
        finally:
            for task in changes:
                task.cancel()
            with contextlib.suppress(*service.REDIS_DOWN):
                await self.ownership.release_all()
            for cid, state in self.channels.items():
                self.release(cid, state)
            if server:
                server.close()

    async def wake_on_changes(self, key: str) -> None:
        """Tick as soon as anything is written to stream ``key`` (``pb:control``: a parameter
        change, a tone): a listener's change then waits for no poll (up to a tick). The ticks
        read the parameters themselves (a change missed here is served at the next one);
        what a subclass takes in ``heard`` (the synth's tones) comes from here only, from
        where it stopped reading (a Redis outage loses none)."""
        while True:
            try:  # while Redis is down the tick loop says so and backs off: just wait here
                async for entries in service.follow(self.redis, key, lambda exc: 1.0):
                    self.heard(key, entries)
                    self.wake.set()
            except Exception:  # never silently: without wake-ups, changes wait for the poll
                log.exception("reading %s failed", key)
                await asyncio.sleep(1.0)

    async def tick(self) -> None:
        self.health.beat = time.monotonic()  # alive, whether or not Redis answers
        await self.check_epoch()
        lost, gained = await self.ownership.reconcile(acquire=time.monotonic() >= self.hold_until)
        for cid in lost:
            log.info("channel %s: released (idle, or lease lost)", cid)
            state = self.channels.pop(cid, None)
            if state is not None:
                self.release(cid, state)
        if lost:
            service.give_back_memory()
        for cid in gained:
            state = await self.adopt(cid)
            if state is None:
                await self.ownership.drop(cid)
            else:
                self.channels[cid] = state
        await self.before_serving()
        for cid, state in list(self.channels.items()):
            await self.serve(cid, state)

    async def check_epoch(self) -> None:
        if not await self.epoch.changed(self.redis):
            return
        if self.epoch.lost:
            log.warning("Redis lost its data (restarted empty?): re-publishing %d channel(s)",
                        len(self.channels))
            # Owners re-claim their leases first; others wait one lease before taking any.
            self.hold_until = time.monotonic() + self.settings.lease_ms / 1000
            # Who listens went too, until the gateways' next heartbeat: without this, the
            # next reconcile would drop our channels as idle and a later owner would start
            # them over (the synth replaying notes already heard).
            await still_active(self.redis, list(self.channels))
        await self.republish()

    async def drop(self, cid: str) -> None:
        """Stop serving a channel and give its lease back."""
        state = self.channels.pop(cid, None)
        if state is not None:
            self.release(cid, state)
            service.give_back_memory()
        await self.ownership.drop(cid)
