"""Gateway settings (environment or `.env`), validated at start."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from gateway.credentials import weakness
from playbach.settings import AudioSettings, ModelReaderSettings
from playbach.training import MAX_FILE_MB

SECRET_MIN = 32
PLACEHOLDERS = {"change-me", "changeme", "password", "admin", "secret"}
ORIGIN_FORMS = 'scheme://host[:port] (e.g. https://a.example), or * for any'


class GatewaySettings(ModelReaderSettings, AudioSettings):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="gateway processes sharing the port "
                                                     "(SO_REUSEPORT); one dies, the others "
                                                     "serve its listeners")
    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Credentials: from the environment or a secret file, never from the repository.
    admin_user: str = "admin"
    admin_password: SecretStr | None = None
    admin_password_file: Path | None = None
    # Unset: made once in Redis and shared by every replica (gateway/credentials.py).
    token_secret: SecretStr | None = Field(None, description="signs tokens; unset: made in Redis")
    token_ttl_s: int = Field(12 * 3600, ge=60)
    public_listening: bool = True  # False: listening needs a token too
    # NoDecode: the raw text reaches _split_origins, so a plain or comma-separated value works
    # as well as JSON (pydantic-settings would otherwise demand JSON, and fail with a traceback).
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description='WebSocket origins besides our own, as a JSON list or '
                                          'separated by commas; "*": any')
    default_channel: str | None = "radio"  # created at start if missing
    # Each channel costs CPU while heard and ~12 MB of Redis (its last 130 s of audio).
    max_channels: int = Field(100, ge=1, le=100_000, description="channels that may exist")
    max_channels_per_user: int = Field(20, ge=1, le=100_000,
                                       description="channels one user (or guest) may make")
    guest_sessions_per_hour: int = Field(10, ge=0, le=100_000,
                                         description="guest sessions one address may start "
                                                     "an hour")
    client_queue: int = Field(48, ge=4, le=10_000, description="frames queued per listener")
    max_drops: int = Field(200, ge=1, description="frames a listener may lose before it is cut")
    backlog_seconds: float = Field(0.6, ge=0, le=10, description="audio a joining listener gets")
    resume_seconds: float = Field(5.0, ge=0, le=60,
                                  description="audio held for a player that reconnects (its "
                                              "gateway died) to resume where it was")
    send_timeout_s: float = Field(5.0, gt=0, le=60,
                                  description="a listener that takes no frame this long is cut")
    # Training uploads (the Train page): refused whole past these, before anything is stored.
    upload_max_files: int = Field(100, ge=1, le=10_000, description="MIDI files per upload, "
                                                                     "counting a zip's")
    upload_max_mb: float = Field(20.0, gt=0, le=1000, description="an upload's total size (MB), "
                                                                  "a zip's contents unpacked")
    upload_file_mb: float = Field(MAX_FILE_MB, gt=0, le=100, description="one MIDI file (MB); "
                                                                          "larger ones are skipped")
    # Bounds on what one request may make the gateway hold (gateway/limits.py).
    json_body_kib: int = Field(64, ge=1, le=10_000, description="a JSON request body (KiB)")
    header_timeout_s: float = Field(10.0, gt=0, le=300,
                                    description="a request's headers must be in by then")
    body_timeout_s: float = Field(20.0, gt=0, le=600,
                                  description="a request body may pause this long")
    # Only these peers may say who the client is (X-Forwarded-For): anyone else could forge a
    # fresh address per request and slip past the login limit. Empty: trust no one.
    trusted_proxies: str = Field("", description="proxy addresses or networks, comma-separated")

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if not isinstance(value, str):
            return value  # given as a list (in code, or JSON already decoded)
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list ({exc.msg}); or separate origins by commas"
                                 ) from None
        return [part.strip() for part in text.split(",") if part.strip()]

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        # Compared verbatim with the browser's Origin header, so anything else never matches.
        cleaned = []
        for origin in origins:
            origin = origin.strip().rstrip("/")  # browsers send no trailing slash
            if origin != "*":
                parts = urlsplit(origin)
                if not parts.scheme or not parts.netloc or parts.path or parts.query:
                    raise ValueError(f"{origin!r} is not an origin; expected {ORIGIN_FORMS}")
            cleaned.append(origin)
        return cleaned

    @field_validator("admin_password_file")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        if path is not None and not path.expanduser().is_file():
            raise ValueError(f"no such file: {path}")
        if path is not None:  # read here too, so a bad file is reported under its variable
            try:
                path.expanduser().read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read {path}: {exc}") from None
        return path

    @field_validator("token_secret")
    @classmethod
    def _long(cls, value: SecretStr | None) -> SecretStr | None:
        # A short key is guessed, and an example's placeholder is known to everyone.
        text = value.get_secret_value() if value is not None else ""
        if text and (len(text) < SECRET_MIN or text.lower() in PLACEHOLDERS):
            raise ValueError(f"too easy to guess: at least {SECRET_MIN} characters, not an "
                             "example's placeholder; or leave it unset to have one made")
        return value

    @field_validator("admin_password")
    @classmethod
    def _strong(cls, value: SecretStr | None, info) -> SecretStr | None:
        text = value.get_secret_value() if value is not None else ""
        why = weakness(text, info.data.get("admin_user", "admin")) if text else None
        if why:
            raise ValueError(f"too easy to guess: {why}; choose another, or leave it unset to "
                             "have one generated")
        return value

    @model_validator(mode="after")
    def _password_from_file(self) -> GatewaySettings:
        # Empty means unset (compose passes `${ADMIN_PASSWORD:-}`): never an empty password
        # that logs anyone in, never an empty key that signs tokens anyone can forge.
        if self.admin_password is not None and not self.admin_password.get_secret_value():
            object.__setattr__(self, "admin_password", None)
        if self.token_secret is not None and not self.token_secret.get_secret_value():
            object.__setattr__(self, "token_secret", None)
        if self.admin_password is None and self.admin_password_file is not None:
            text = self.admin_password_file.expanduser().read_text().strip()
            if why := weakness(text, self.admin_user):
                raise ValueError(f"the password in ADMIN_PASSWORD_FILE is too easy to guess: "
                                 f"{why}; choose another")
            object.__setattr__(self, "admin_password", SecretStr(text))
        return self
