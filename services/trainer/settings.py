"""The trainer's settings (environment or `.env`); command-line flags override them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from playbach.settings import REPO, ServiceSettings
from trainer.corpus import Limits


class TrainerSettings(ServiceSettings):
    cache_dir: Path = Path.home() / ".cache" / "playbach"  # parsed corpora, by file contents
    runs_dir: Path = REPO / "runs"  # checkpoints, history.csv, TensorBoard logs
    # Per corpus file (see trainer.corpus.Limits); a file over a limit is skipped and named.
    max_file_mb: float = Field(Limits.max_file_mb, gt=0, allow_inf_nan=False)
    max_parse_seconds: float = Field(Limits.max_parse_seconds, gt=0, allow_inf_nan=False)
    max_notes: int = Field(Limits.max_notes, gt=0)
