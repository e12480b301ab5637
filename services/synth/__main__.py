"""``python -m synth``: render channels until stopped (SIGINT/SIGTERM)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from playbach import service
from synth.settings import SynthSettings
from synth.worker import SynthWorker


async def main(redis: Redis, settings: SynthSettings, stop: asyncio.Event,
               watch: service.RedisWatch) -> None:
    await SynthWorker(redis, settings, watch).run(stop)


if __name__ == "__main__":
    service.run("synth", SynthSettings, main)
