from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ConsentSettings(ServiceSettings):
    service_name: ClassVar[str] = "consent"
    default_port: ClassVar[int] = 8102
    model_config = SettingsConfigDict(env_prefix="THREADLINE_CONSENT_", extra="ignore")
