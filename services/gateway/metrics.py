"""Prometheus metrics of this gateway process (``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LISTENERS = Gauge("playbach_listeners", "WebSocket and WAV listeners in this process",
                  ["channel"])
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
