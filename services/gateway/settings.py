"""Gateway settings (environment or `.env`), validated at start."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from playbach.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Credentials: from the environment or a secret file, never from the repository.
    admin_user: str = "admin"
    admin_password: SecretStr | None = None
    admin_password_file: Path | None = None
    token_secret: SecretStr = Field(default_factory=lambda: SecretStr(secrets.token_hex(32)),
                                    description="signs tokens; set it when running replicas")
    token_ttl_s: int = Field(12 * 3600, ge=60)
    public_listening: bool = True  # False: listening needs a token too
    allowed_origins: list[str] = Field(default_factory=list,
                                       description='WebSocket origins besides our own; ["*"]: any')
    default_channel: str | None = "radio"  # created at start if missing
    client_queue: int = Field(48, ge=4, le=10_000, description="frames queued per listener")
    max_drops: int = Field(200, ge=1, description="frames a listener may lose before it is cut")
    backlog_seconds: float = Field(0.6, ge=0, le=10, description="audio a joining listener gets")

    @field_validator("admin_password_file")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        if path is not None and not path.expanduser().is_file():
            raise ValueError(f"no such file: {path}")
        return path

    @model_validator(mode="after")
    def _password_from_file(self) -> GatewaySettings:
        # Empty means unset (compose passes `${ADMIN_PASSWORD:-}`): never an empty password
        # that logs anyone in, never an empty key that signs tokens anyone can forge.
        if self.admin_password is not None and not self.admin_password.get_secret_value():
            object.__setattr__(self, "admin_password", None)
        if not self.token_secret.get_secret_value():
            object.__setattr__(self, "token_secret", SecretStr(secrets.token_hex(32)))
        if self.admin_password is None and self.admin_password_file is not None:
            text = self.admin_password_file.expanduser().read_text().strip()
            object.__setattr__(self, "admin_password", SecretStr(text))
        return self
