"""Synth settings (environment or `.env`), validated at start."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, field_validator

from playbach.settings import ServiceSettings

FLUID_R3 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


class SynthSettings(ServiceSettings):
    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    soundfont: Path = Field(FLUID_R3, description="a General MIDI SoundFont (.sf2)")
    sample_rate: int = Field(44100, ge=8000, le=96000)
    chunk_frames: int = Field(2048, ge=256, le=16384, description="frames per audio chunk")
    lead_seconds: float = Field(0.5, gt=0, le=5, description="audio rendered ahead of time")
    gain: float = Field(0.5, gt=0, le=5, description="FluidSynth master gain")
    lease_ms: int = Field(1500, ge=200, le=60_000)
    tick_ms: int = Field(20, ge=5, le=1000)
    idle_ms: int = Field(5000, ge=500)
    audio_maxlen: int = Field(2800, ge=50, description="chunks kept per channel (2800: 130 s)")

    @field_validator("soundfont")
    @classmethod
    def _exists(cls, path: Path) -> Path:
        if not path.expanduser().is_file():
            raise ValueError(f"no SoundFont at {path} (Debian: apt-get install fluid-soundfont-gm)")
        return path.expanduser()
