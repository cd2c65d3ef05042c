from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    service_name: ClassVar[str] = "notifications"
    default_port: ClassVar[int] = 8103
    model_config = SettingsConfigDict(env_prefix="THREADLINE_NOTIFICATIONS_", extra="ignore")
