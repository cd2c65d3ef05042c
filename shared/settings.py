"""Settings common to every service; each service subclasses with its own env prefix.

Common values (database, Kafka) are read from ``THREADLINE_*`` and may be overridden per service
with ``THREADLINE_<SERVICE>_*``, so one environment file can drive every process.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]

DEV_DATABASE_URL = "postgresql+asyncpg://threadline@127.0.0.1:54320/threadline"
DEV_KAFKA = "127.0.0.1:19092"


def _common(name: str) -> Any:
    """A field that the service-specific variable overrides and the common one supplies."""
    return AliasChoices(name, f"threadline_{name}")


class ServiceSettings(BaseSettings):
    """What every Threadline service process needs to run."""

    service_name: ClassVar[str] = "service"
    default_port: ClassVar[int] = 8100

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    environment: Environment = Field(default="development", validation_alias=_common("environment"))
    database_url: str = Field(default=DEV_DATABASE_URL, validation_alias=_common("database_url"))
    kafka_bootstrap_servers: str = Field(
        default=DEV_KAFKA, validation_alias=_common("kafka_bootstrap_servers")
    )
    host: str = Field(default="127.0.0.1", validation_alias=_common("host"))
    port: int = 0
    log_level: str = Field(default="INFO", validation_alias=_common("log_level"))
    log_json: bool = Field(default=True, validation_alias=_common("log_json"))

    # Outbox relay
    relay_enabled: bool = True
    relay_batch_size: int = 200
    relay_lease_seconds: float = 30.0
    relay_poll_seconds: float = 2.0

    # Consumers
    consumers_enabled: bool = True
    consumer_max_attempts: int = 5
    consumer_backoff_seconds: float = 0.2
    consumer_backoff_max_seconds: float = 5.0

    # Timers
    timers_enabled: bool = True
    timers_poll_seconds: float = 1.0
    timers_batch_size: int = 100

    # Calendars (working days and school days)
    calendar_file: str | None = Field(default=None, validation_alias=_common("calendar_file"))

    @model_validator(mode="after")
    def _defaults_and_production_guard(self) -> ServiceSettings:
        if self.port == 0:
            self.port = self.default_port
        if self.environment == "production":
            if self.database_url == DEV_DATABASE_URL:
                raise ValueError("THREADLINE_DATABASE_URL must be set in production")
            if self.kafka_bootstrap_servers == DEV_KAFKA:
                raise ValueError("THREADLINE_KAFKA_BOOTSTRAP_SERVERS must be set in production")
        return self

    @property
    def db_schema(self) -> str:
        return self.service_name

    @property
    def consumer_group(self) -> str:
        return f"threadline.{self.service_name}"
