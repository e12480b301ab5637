"""Ownership of channels by lease: ``SET key owner NX PX ttl``, renewed while alive.

A replica that dies stops renewing; its lease runs out and another replica takes the channel.
Renew and release are atomic compare-and-set scripts, so a replica never extends or deletes a
lease that has already passed to someone else."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from playbach import streams

# Renew ours; re-claim a lease that vanished (Redis restarted empty, or it lapsed while we were
# cut off and nobody took it): the owner keeps its channel and its state, so music continues.
_RENEW = "local v = redis.call('get', KEYS[1]) " \
         "if v == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end " \
         "if not v then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end " \
         "return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
           "return redis.call('del', KEYS[1]) else return 0 end"


class Leases:
    def __init__(self, redis: Redis, role: str, owner: str, ttl_ms: int) -> None:
        self.redis, self.role, self.owner, self.ttl_ms = redis, role, owner, ttl_ms
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, cid: str) -> bool:
        key = streams.lease(self.role, cid)
        return bool(await self.redis.set(key, self.owner, nx=True, px=self.ttl_ms))

    async def renew(self, cid: str) -> bool:
        """False when the lease is no longer ours (expired and taken): stop working on it."""
        key = streams.lease(self.role, cid)
        return bool(await self._renew(keys=[key], args=[self.owner, self.ttl_ms]))

    async def release(self, cid: str) -> None:
        await self._release(keys=[streams.lease(self.role, cid)], args=[self.owner])

    async def holder(self, cid: str) -> str | None:
        value = await self.redis.get(streams.lease(self.role, cid))
        return value.decode() if isinstance(value, bytes) else value


async def active_channels(redis: Redis, idle_ms: int) -> set[str]:
    """Channels that exist and that someone listened to within ``idle_ms``: only these cost CPU."""
    since = int(time.time() * 1000) - idle_ms
    active = await redis.zrangebyscore(streams.ACTIVE, since, "+inf")
    existing = await redis.smembers(streams.CHANNELS)
    return {c.decode() for c in active} & {c.decode() for c in existing}


async def still_active(redis: Redis, cids: list[str]) -> None:
    """Mark channels listened to now unless already marked: after Redis lost its data, an
    owner vouches for its channels until the gateways beat again (a silent one goes idle
    ``idle_ms`` later, as any other)."""
    if cids:
        now = int(time.time() * 1000)
        await redis.zadd(streams.ACTIVE, dict.fromkeys(cids, now), nx=True)


class Ownership:
    """The channels one replica owns: renewed each tick, dropped when idle or lost, taken when
    free, up to a fair share (active channels / live replicas of the role, rounded up) so that
    replicas split the work. ``reconcile`` says which were lost and which were gained."""

    def __init__(self, leases: Leases, idle_ms: int) -> None:
        self.leases, self.idle_ms = leases, idle_ms
        self.owned: set[str] = set()

    async def share(self, active: int) -> int:
        """Announce this replica; the most channels it should own."""
        redis, key = self.leases.redis, streams.replicas(self.leases.role)
        now = int(time.time() * 1000)
        await redis.zadd(key, {self.leases.owner: now})
        await redis.zremrangebyscore(key, "-inf", now - self.leases.ttl_ms)
        alive = max(1, await redis.zcard(key))
        return -(-active // alive)

    async def reconcile(self, acquire: bool = True) -> tuple[list[str], list[str]]:
        """Renew what we own, drop what is idle or lost; with ``acquire``, take free channels
        (held back for a moment after Redis lost its data, so owners re-claim theirs first)."""
        active = await active_channels(self.leases.redis, self.idle_ms)
        share = await self.share(len(active))
        lost, gained = [], []
        for cid in sorted(self.owned):
            if cid not in active:
                await self.leases.release(cid)
                lost.append(cid)
            elif not await self.leases.renew(cid):
                lost.append(cid)
        self.owned -= set(lost)
        for cid in sorted(active - self.owned):
            if not acquire or len(self.owned) >= share:
                break
            if await self.leases.acquire(cid):
                self.owned.add(cid)
                gained.append(cid)
        return lost, gained

    async def drop(self, cid: str) -> None:
        self.owned.discard(cid)
        await self.leases.release(cid)

    async def release_all(self) -> None:
        for cid in list(self.owned):
            await self.drop(cid)
        await self.leases.redis.zrem(streams.replicas(self.leases.role), self.leases.owner)
