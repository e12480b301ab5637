"""The trainer's settings (environment or `.env`); command-line flags override them."""

from __future__ import annotations

from pathlib import Path

from playbach.settings import REPO, ServiceSettings


class TrainerSettings(ServiceSettings):
    cache_dir: Path = Path.home() / ".cache" / "playbach"  # parsed corpora, by file contents
    runs_dir: Path = REPO / "runs"  # checkpoints, history.csv, TensorBoard logs
