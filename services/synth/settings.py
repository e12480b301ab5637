"""Synth settings (environment or `.env`), validated at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from playbach.schemas import LEAD_S
from playbach.settings import AudioSettings, ModelReaderSettings, WorkerSettings

FLUID_R3 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
GET_ONE = "(Debian: apt-get install fluid-soundfont-gm)"


class SynthSettings(ModelReaderSettings, WorkerSettings, AudioSettings):
    soundfont: Path = Field(FLUID_R3, description="a General MIDI SoundFont (.sf2)")
    lead_seconds: float = Field(LEAD_S, ge=1, le=10,
                                description="audio rendered ahead of the clock: it covers a "
                                            "takeover (about LEASE_MS), changes do not wait "
                                            "for it")
    gain: float = Field(0.5, gt=0, le=5, description="FluidSynth master gain (its headroom: "
                                                      "FluidSynth clips hard)")
    loudness_db: float = Field(14.0, ge=0, le=24,
                               description="gain after FluidSynth, in dB, up to a web "
                                           "radio's level; peaks above -3 dBFS are rounded off "
                                           "by a soft limiter, never clipped")
    tick_ms: int = Field(20, ge=5, le=1000, description="how often owned channels are served")
    audio_maxlen: int = Field(2800, ge=50, description="chunks kept per channel (2800: 130 s)")

    @field_validator("soundfont")
    @classmethod
    def _is_soundfont(cls, path: Path) -> Path:
        # Otherwise FluidSynth fails later, with a traceback; every .sf2 (and .sf3) is a RIFF
        # file of form "sfbk", so 12 bytes tell.
        path = path.expanduser()
        if not path.is_file():
            raise ValueError(f"no SoundFont at {path} {GET_ONE}")
        try:
            with path.open("rb") as file:
                head = file.read(12)
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
            raise ValueError(f"not a SoundFont (.sf2) file (no RIFF sfbk header) {GET_ONE}")
        return path
