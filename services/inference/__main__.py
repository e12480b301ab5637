"""``python -m inference``: serve channels until stopped (SIGINT/SIGTERM)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from inference.settings import InferenceSettings
from inference.worker import InferenceWorker
from playbach import service


async def main(redis: Redis, settings: InferenceSettings, stop: asyncio.Event,
               watch: service.RedisWatch) -> None:
    await InferenceWorker(redis, settings, watch).run(stop)


if __name__ == "__main__":
    service.run("inference", InferenceSettings, main)
