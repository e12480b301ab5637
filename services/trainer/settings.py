"""The trainer's settings (environment or `.env`); command-line flags override them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from playbach.settings import REPO, ServiceSettings
from playbach.settings import WorkerSettings as ReplicaSettings
from trainer.corpus import Limits


class TrainerSettings(ServiceSettings):
    cache_dir: Path = Path.home() / ".cache" / "playbach"  # parsed corpora, by file contents
    runs_dir: Path = REPO / "runs"  # checkpoints, history.csv, TensorBoard logs
    # Per corpus file (see trainer.corpus.Limits); a file over a limit is skipped and named.
    max_file_mb: float = Field(Limits.max_file_mb, gt=0, allow_inf_nan=False)
    max_parse_seconds: float = Field(Limits.max_parse_seconds, gt=0, allow_inf_nan=False)
    max_notes: int = Field(Limits.max_notes, gt=0)

    def limits(self, **given: float | None) -> Limits:
        """The per-file limits: these settings, each overridden by a value ``given`` (a
        command-line flag) that is not None."""
        return Limits(**{f: getattr(self, f) if given.get(f) is None else given[f]
                         for f in ("max_file_mb", "max_parse_seconds", "max_notes")})


class WorkerSettings(TrainerSettings, ReplicaSettings):
    """``python -m trainer worker``: the trainer's settings, and a replica's (REDIS_URL checked
    at start, REPLICA_ID, HEALTH_PORT). A restarted worker with the same REPLICA_ID fails
    what it ran at once; others wait for its beat to stop."""

    poll_s: float = Field(1.0, ge=0.1, le=60, description="how often an idle worker looks "
                                                          "for a queued job")
    cancel_grace_s: float = Field(20.0, ge=1, le=600, description="a cancelled job that has "
                                                                   "not stopped by then is killed")
