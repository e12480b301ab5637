"""``python -m gateway``: serve the API, the audio and the player (uvicorn)."""

from __future__ import annotations

import sys

import uvicorn
from redis import Redis
from redis.exceptions import RedisError

from gateway.app import create_app
from gateway.settings import GatewaySettings
from playbach.settings import load


def main() -> None:
    settings = load(GatewaySettings, "gateway")
    try:  # fail at start with one line, not at the first request
        Redis.from_url(settings.redis_url, socket_connect_timeout=3).ping()
    except (RedisError, OSError) as exc:
        print(f"gateway: cannot reach Redis at {settings.redis_url}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level.lower(), ws_per_message_deflate=False,
                ws_max_queue=16, timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
