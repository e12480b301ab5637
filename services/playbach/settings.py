"""Settings shared by every service: read from the environment (and `.env`), validated at start.

A bad value stops the service with one clear line (see :func:`load`), never a traceback."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError
from redis.connection import parse_url

from playbach.schemas import CHUNK_FRAMES, SAMPLE_RATE

REPO = Path(__file__).resolve().parents[2]
# What a compose tool leaves when it does not interpolate (podman-compose 1.0.3 did so with
# `${VAR:-}`): taken literally, `${ADMIN_PASSWORD:-}` would be a password anyone can read.
UNEXPANDED = re.compile(r"\$\{[^}]*\}")
SECRET_WORDS = ("password", "secret", "token")  # a name with one of these holds a secret
SECRET_NAMES = re.compile(rf"({'|'.join(SECRET_WORDS)})$", re.IGNORECASE)
# A Redis Cluster is named by its own scheme: redis-py needs a different client for it, and
# telling it by asking the server would need the server up before a client is built.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def cluster_seed(url: str) -> str | None:
    """For a URL naming a Redis Cluster (``redis+cluster://host:port``, any node of it), the
    plain URL of that node; None for a single Redis."""
    scheme, sep, rest = url.partition("://")
    return f"{CLUSTER_SCHEMES[scheme]}://{rest}" if sep and scheme in CLUSTER_SCHEMES else None


REDIS_FORMS = ("redis://host[:port][/db], rediss://host[:port][/db], unix:///path/to/socket, "
               "or redis+cluster://host:port (any node of a Redis Cluster)")


# An empty value means unset (compose passes `${VAR:-}`; .env.example leaves some empty).
# Every settings class of every service has this config, mixins included: a base class's
# config overrides another's in a subclass, so a mixin left at pydantic's defaults took
# empty values literally (REPLICA_ID= named a gateway "").
CONFIG = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True)


class ServiceSettings(BaseSettings):
    """REDIS_URL, MODELS_DIR and LOG_LEVEL, which every service understands."""

    model_config = CONFIG

    redis_url: str = "redis://127.0.0.1:6379/0"
    models_dir: Path = REPO / "models"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("*", mode="before")
    @classmethod
    def _interpolated(cls, value: object) -> object:
        found = UNEXPANDED.search(value) if isinstance(value, str) else None
        if found:
            raise ValueError(f"an unexpanded {found.group()}: the tool that started this "
                             "service did not substitute it; set the value itself, or use "
                             "docker compose or podman-compose >= 1.1")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _expand_home(cls, value: object) -> object:
        return value.expanduser() if isinstance(value, Path) else value


class LiveSettings(ServiceSettings):
    """The live services (gateway, inference, synth): REDIS_URL must be one Redis can use.

    Checked here, not on the first connect, so a typo is one line at start rather than a
    traceback or an endless retry. Only the form is checked; nothing connects. The trainer
    never talks to Redis, so it does not get this check."""

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        seed = cluster_seed(value)
        url, cluster = seed or value, seed is not None
        scheme = url.partition("://")[0] if "://" in url else ""
        if scheme not in ("redis", "rediss", "unix"):  # redis-py's own test, case and all
            raise ValueError(f"not a Redis URL; expected {REDIS_FORMS}")
        try:
            parts = urlsplit(url)
            parse_url(url)  # redis-py's own parser: the port, the query (?db=, ?timeout=...)
        except ValueError as exc:
            raise ValueError(f"{exc}; expected {REDIS_FORMS}") from None
        if scheme == "unix":
            if not parts.path or parts.path == "/":
                raise ValueError(f"no socket path; expected {REDIS_FORMS}")
            return value
        if not parts.hostname:
            raise ValueError(f"no host; expected {REDIS_FORMS}")
        db = parts.path.strip("/")
        if db and not db.isdigit():  # redis-py would quietly use db 0
            raise ValueError(f"database {db!r} is not a number; expected {REDIS_FORMS}")
        if cluster and db not in ("", "0"):
            raise ValueError(f"a Redis Cluster has only database 0, not {db}; "
                             f"expected {REDIS_FORMS}")
        return value


class AudioSettings(BaseSettings):
    """The audio format, one setting for every service that makes or sends audio: the synth
    renders at it, and the gateway announces it (hello message, WAV header) so the player
    follows it."""

    model_config = CONFIG

    sample_rate: int = Field(SAMPLE_RATE, ge=8000, le=96000, description="samples per second")
    chunk_frames: int = Field(CHUNK_FRAMES, ge=256, le=16384, description="frames per chunk")


class ModelReaderSettings(LiveSettings):
    """The live services never create MODELS_DIR: a missing one is a deployment mistake, told
    at start. (The synth reads no model, but shares the deployment's settings: a wrong path
    there is the same mistake. The trainer creates the folder, so it is not checked there.)"""

    @field_validator("models_dir")
    @classmethod
    def _models_dir(cls, path: Path) -> Path:
        path = path.expanduser()
        if not path.exists():
            raise ValueError("no such directory (it holds the trained models, e.g. ./models)")
        if not path.is_dir():
            raise ValueError("not a directory (it holds the trained models, e.g. ./models)")
        if not os.access(path, os.R_OK | os.X_OK):
            raise ValueError("directory not readable by this user")
        return path


def redacted(url: str) -> str:
    """A Redis URL fit for a log line: its password (Kubernetes puts one in) as ***."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return url
    return url.replace(f":{password}@", ":***@") if password else url


S = TypeVar("S", bound=BaseSettings)


def describe(exc: ValidationError) -> str:
    """One line naming every bad variable and what it accepts."""
    parts = []
    for err in exc.errors():
        name = "_".join(str(p) for p in err["loc"]).upper() or "settings"
        shown = err.get("input")
        if SECRET_NAMES.search(name):
            shown = "<hidden>"  # a secret stays out of logs, even a wrong one
        elif name == "REDIS_URL" and isinstance(shown, str):
            shown = redacted(shown)
        if err["loc"]:
            parts.append(f"{name}={shown!r}: {err['msg']}")
        else:  # a whole-model check: its input is every value, secrets included
            parts.append(f"{name}: {err['msg']}")
    return one_line("; ".join(parts))


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def load(cls: type[S], service: str) -> S:
    """Instantiate settings or exit(2) with one line saying which variable is wrong and why."""
    try:
        settings = cls()
    except ValidationError as exc:
        problem = describe(exc)
    except SettingsError as exc:  # a source could not decode a value (e.g. JSON for a list)
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        problem = one_line(f"{exc}{cause}")
    except (ValueError, OSError) as exc:  # e.g. an unreadable .env or secret file
        problem = one_line(f"{type(exc).__name__}: {exc}")
    else:
        level = getattr(settings, "log_level", "INFO")
        logging.basicConfig(level=level, format=f"%(asctime)s {service} %(levelname)s %(message)s")
        return settings
    print(f"{service}: bad setting: {problem}", file=sys.stderr)
    raise SystemExit(2)


class WorkerSettings(LiveSettings):
    """What inference and synth replicas share: who they are, leases, their loop, probes."""

    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_ms: int = Field(1500, ge=200, le=60_000, description="channel lease; takeover time")
    tick_ms: int = Field(50, ge=5, le=1000, description="how often owned channels are served")
    idle_ms: int = Field(5000, ge=500, description="a channel nobody hears this long is paused")
    health_host: str = Field("0.0.0.0", description="where /healthz and /readyz listen")
    health_port: int | None = Field(None, ge=1, le=65535,
                                    description="port of /healthz and /readyz; unset: none")
