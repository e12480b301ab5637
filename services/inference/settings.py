"""Inference settings (environment or `.env`), validated at start."""

from __future__ import annotations

import os
import socket

from pydantic import Field

from playbach.settings import ServiceSettings


class InferenceSettings(ServiceSettings):
    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_ms: int = Field(1500, ge=200, le=60_000, description="channel lease; takeover time")
    tick_ms: int = Field(50, ge=5, le=1000, description="how often owned channels are served")
    lead_seconds: float = Field(1.0, gt=0, le=10, description="notes kept ahead of the synth")
    idle_ms: int = Field(5000, ge=500, description="a channel nobody hears this long is paused")
    notes_maxlen: int = Field(2000, ge=100, description="notes kept per channel stream")
    model_cache: int = Field(8, ge=1, le=64, description="loaded models kept in memory")
