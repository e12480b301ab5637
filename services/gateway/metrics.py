"""Prometheus metrics of the gateway (``/metrics``): of this process, or of every worker
summed when several share the port (prometheus_client's multiprocess mode, which the
supervisor turns on: gateway/workers.py).

``/metrics`` is public, so a private channel's id never appears in a label: its figures
are counted under ``(private)``, which no channel id can be (``api.CHANNEL_PATTERN``)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as shared

PRIVATE = "(private)"
public: set[str] = set()  # the public channels, as the keeper last read them


def shown(cid: str) -> str:
    """A channel's label: its id if it is public, else PRIVATE."""
    return cid if cid in public else PRIVATE


# "livesum": summed over the live workers in multiprocess mode
LISTENERS = Gauge("playbach_listeners", "listeners (any stream), summed over the workers",
                  ["channel"], multiprocess_mode="livesum")


def count_listeners(counts: dict[str, int]) -> None:
    """Set the listener gauge from this process's counts per channel (the keeper, each
    second), private channels summed under PRIVATE; labels no longer heard go."""
    totals: dict[str, int] = {}
    for cid, count in counts.items():
        totals[shown(cid)] = totals.get(shown(cid), 0) + count
    for (label,) in [k for k in LISTENERS._metrics if k[0] not in totals]:
        LISTENERS.remove(label)
    for label, count in totals.items():
        LISTENERS.labels(label).set(count)


def exposition() -> tuple[bytes, str]:
    """What /metrics answers: this process's metrics, or every worker's summed."""
    if shared_dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        shared.MultiProcessCollector(registry, path=shared_dir)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


CHUNKS_FANNED = Counter("playbach_chunks_fanned_total", "audio chunks read from Redis")
FRAMES_SENT = Counter("playbach_frames_sent_total", "frames sent to listeners")
FRAMES_DROPPED = Counter("playbach_frames_dropped_total",
                         "frames dropped because a listener's queue was full")
SLOW_CLIENTS_CUT = Counter("playbach_slow_clients_cut_total",
                           "listeners disconnected for falling too far behind")
UNDERRUNS = Counter("playbach_player_underruns_total", "underruns reported by players",
                    ["channel"])
REQUESTS = Histogram("playbach_http_request_seconds", "HTTP requests", ["route", "status"])
LOGIN_FAILURES = Counter("playbach_login_failures_total", "failed logins")
ENCODE_SECONDS = Counter("playbach_encode_cpu_seconds_total",
                         "CPU spent encoding compressed streams (once per channel)", ["format"])
ENCODERS = Gauge("playbach_encoders", "compressed-stream encoders running", ["format"],
                 multiprocess_mode="livesum")
