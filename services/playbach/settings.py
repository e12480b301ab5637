"""Settings shared by every service: read from the environment (and `.env`), validated at start.

A bad value stops the service with one clear line (see :func:`load`), never a traceback."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO = Path(__file__).resolve().parents[2]


class ServiceSettings(BaseSettings):
    """REDIS_URL, MODELS_DIR and LOG_LEVEL, which every service understands."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    models_dir: Path = REPO / "models"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("*", mode="after")
    @classmethod
    def _expand_home(cls, value: object) -> object:
        return value.expanduser() if isinstance(value, Path) else value


S = TypeVar("S", bound=BaseSettings)


def describe(exc: ValidationError) -> str:
    """One line naming every bad variable and what it accepts."""
    parts = []
    for err in exc.errors():
        name = "_".join(str(p) for p in err["loc"]).upper() or "settings"
        parts.append(f"{name}={err.get('input')!r}: {err['msg']}")
    return "; ".join(parts)


def load(cls: type[S], service: str) -> S:
    """Instantiate settings or exit(2) with one line saying which variable is wrong and why."""
    try:
        settings = cls()
    except ValidationError as exc:
        print(f"{service}: bad setting: {describe(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    level = getattr(settings, "log_level", "INFO")
    logging.basicConfig(level=level, format=f"%(asctime)s {service} %(levelname)s %(message)s")
    return settings
