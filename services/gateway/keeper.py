"""Channels outlive Redis restarts: the default channel always exists, and when Redis comes
back empty (restarted without persistence) every channel this gateway has seen is put back
with its parameters. Inference and synth put back the channels they own the same way; HSETNX
makes the copies agree (the first one written wins, none overwrites a newer change). The
shared token key and generated admin password are re-read here too (gateway/credentials.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway import metrics
from gateway.credentials import Credentials
from gateway.store import Store
from playbach import service
from playbach.schemas import ChannelAccess, ChannelParams
from playbach.service import RedisWatch

log = logging.getLogger("gateway")
DEFAULT_NAME = "Radio"  # the shared channel's name, given to it when it is (re)created


class Keeper:
    def __init__(self, store: Store, default: str | None, watch: RedisWatch,
                 credentials: Credentials, listeners: Callable[[], dict[str, int]],
                 interval_s: float = 1.0) -> None:
        self.store, self.default, self.watch, self.interval_s = store, default, watch, interval_s
        self.credentials, self.listeners = credentials, listeners
        # every channel, as last read
        self.known: dict[str, tuple[ChannelParams, ChannelAccess]] = {}
        self.epoch = service.Epoch()

    async def run(self) -> None:
        while True:
            pause = await self.watch.guard(self.step)
            metrics.count_listeners(self.listeners())  # Redis or not
            await asyncio.sleep(max(pause, self.interval_s))

    async def step(self) -> None:
        await self.credentials.refresh(self.store.redis)
        if await self.epoch.changed(self.store.redis) and self.epoch.lost:
            log.warning("Redis lost its data (restarted empty?): putting back %d channel(s)",
                        len(self.known))
            for cid, (params, access) in self.known.items():
                await params.restore(self.store.redis, cid)
                await access.restore(self.store.redis, cid)
        if self.default:
            params, _ = self.known.get(self.default) or (ChannelParams(), None)
            if params.name is None:  # the radio of a version without names gets one too
                params = params.model_copy(update={"name": DEFAULT_NAME})
            await params.restore(self.store.redis, self.default)
            if self.default not in self.known:  # the shared radio is listed to everyone
                await ChannelAccess(public=True).restore(self.store.redis, self.default)
        self.known = await self.store.all_records()
        metrics.public = {cid for cid, (_, access) in self.known.items() if access.public}
