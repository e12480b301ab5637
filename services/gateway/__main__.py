"""``python -m gateway``: serve the API, the audio and the player (uvicorn).

Redis need not answer at start: the gateway serves ``/healthz`` at once, ``/readyz`` says 503
until Redis answers, and the channels come as soon as it does."""

from __future__ import annotations

import copy
import logging
import os
import re
import sys

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from gateway import workers
from gateway.app import create_app
from gateway.limits import timed_http
from gateway.settings import GatewaySettings
from playbach.settings import load

INBOUND_LIMIT = 4096  # bytes of one message from a player (it sends a few dozen)
_SECRET_QUERY = re.compile(r"((?:token|password)=)[^&\s\"]*", re.IGNORECASE)


class HideSecrets(logging.Filter):
    """Access-log lines never show a token or password from a query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(_SECRET_QUERY.sub(r"\1***", a) if isinstance(a, str) else a
                                for a in record.args)  # type: ignore[union-attr]
        record.msg = _SECRET_QUERY.sub(r"\1***", str(record.msg))
        return True


_POLLED = re.compile(r"^/(api/stats|api/train/jobs/[^/?]+|healthz|readyz|metrics)(\?|$)")


class QuietPolls(logging.Filter):
    """No access line for a successful poll (the control room asks for stats every 2 s and a
    training job every second, probes every few): the log keeps what someone did."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) == 5 and isinstance(args[2], str) and isinstance(args[4], int):
            return not (args[1] == "GET" and _POLLED.match(args[2]) and args[4] < 400)
        return True


def log_config() -> dict:
    """uvicorn's logging, with secrets hidden on every handler and polls not logged."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"secrets": {"()": HideSecrets}, "polls": {"()": QuietPolls}}
    for handler in config["handlers"].values():
        handler["filters"] = ["secrets"]
    config["handlers"]["access"]["filters"].append("polls")
    return config


GRACE_S = 3  # a stopping gateway's open requests may finish within this
BACKLOG = 4096  # a crowd connecting at once (the kernel caps it at somaxconn)


def server(settings: GatewaySettings) -> uvicorn.Server:
    proxies = settings.trusted_proxies.strip()
    return uvicorn.Server(uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port,
        http=timed_http(settings.header_timeout_s), log_level=settings.log_level.lower(),
        ws_per_message_deflate=False, ws_max_queue=16, ws_max_size=INBOUND_LIMIT,
        timeout_graceful_shutdown=GRACE_S, backlog=BACKLOG, log_config=log_config(),
        proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None))


def main() -> None:
    settings = load(GatewaySettings, "gateway")
    index = os.environ.get(workers.WORKER_ENV)
    if index is not None:  # one of several, started by the supervisor below
        workers.die_with_parent()
        if "replica_id" in settings.model_fields_set:  # named: each worker its own name
            settings = settings.model_copy(update={"replica_id": f"{settings.replica_id}-w"
                                                                 f"{index}"})
        sock = workers.listening_socket(settings.host, settings.port, BACKLOG)
        server(settings).run(sockets=[sock])
    elif settings.workers > 1:
        sys.exit(workers.Supervisor(settings.workers, GRACE_S).run())
    else:
        server(settings).run()


if __name__ == "__main__":
    main()
