"""UI settings (environment or `.env`), validated at start."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from playbach.settings import CONFIG


class UiSettings(BaseSettings):
    model_config = CONFIG

    gateway_url: str = Field("http://127.0.0.1:8000", pattern=r"^https?://",
                             description="the gateway, as this server reaches it")
    public_gateway_url: str = Field("", description="the gateway, as visitors' browsers reach "
                                                    "it (default: GATEWAY_URL)")
    request_timeout: float = Field(5.0, gt=0, le=60)
    stats_every: float = Field(2.0, ge=0.5, le=60, description="seconds between stats refreshes")

    @model_validator(mode="after")
    def _public_default(self) -> UiSettings:
        if not self.public_gateway_url:
            object.__setattr__(self, "public_gateway_url", self.gateway_url)
        object.__setattr__(self, "gateway_url", self.gateway_url.rstrip("/"))
        object.__setattr__(self, "public_gateway_url", self.public_gateway_url.rstrip("/"))
        return self
