"""Inference settings (environment or `.env`), validated at start."""

from __future__ import annotations

from pydantic import Field

from playbach.schemas import DEFAULT_MODEL, ModelName
from playbach.settings import ModelReaderSettings, WorkerSettings


class InferenceSettings(ModelReaderSettings, WorkerSettings):
    default_model: ModelName = Field(DEFAULT_MODEL,
                                     description="played when a channel's model fails")
    lead_seconds: float = Field(1.0, gt=0, le=10, description="notes kept ahead of the synth")
    notes_maxlen: int = Field(2000, ge=100, description="notes kept per channel stream")
    tick_ms: int = Field(20, ge=5, le=1000, description="how often owned channels are served "
                                                       "(a change waits for the next tick)")
    model_cache: int = Field(8, ge=1, le=64, description="loaded models kept in memory")
