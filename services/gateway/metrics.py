"""Prometheus metrics of this gateway process (``/metrics``).

``/metrics`` is public, so a private channel's id never appears in a label: its figures
are counted under ``(private)``, which no channel id can be (``api.CHANNEL_PATTERN``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PRIVATE = "(private)"
public: set[str] = set()  # the public channels, as the keeper last read them


def shown(cid: str) -> str:
    """A channel's label: its id if it is public, else PRIVATE."""
    return cid if cid in public else PRIVATE


class Listeners(Collector):
    """``playbach_listeners``, counted when scraped from this process's hubs."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("playbach_listeners", "listeners in this process (any "
                                   "stream)", labels=["channel"])
        totals: dict[str, int] = {}
        for cid, count in self.counts().items():
            totals[shown(cid)] = totals.get(shown(cid), 0) + count
        for label, count in sorted(totals.items()):
            family.add_metric([label], count)
        yield family

    def register(self) -> None:
        REGISTRY.register(self)

    def unregister(self) -> None:
        REGISTRY.unregister(self)

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
ENCODERS = Gauge("playbach_encoders", "compressed-stream encoders running", ["format"])
