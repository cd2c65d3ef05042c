from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ConsentSettings(ServiceSettings):
    service_name: ClassVar[str] = "consent"
    default_port: ClassVar[int] = 8102
    model_config = SettingsConfigDict(env_prefix="THREADLINE_CONSENT_", extra="ignore")

    # Relative paths are from the working directory (the repository locally, /app in the image).
    # The partnership's information sharing agreements and consent scope (TOML).
    agreements_file: str = "config/consent/agreements.toml"
    # How long each type of record is kept (TOML).
    retention_file: str = "config/consent/retention.toml"
    # Signed checkpoints of the ledger head: a directory outside the database (in production,
    # storage the database's administrators cannot rewrite), and the Ed25519 key that signs them.
    checkpoint_dir: str = "var/consent/checkpoints"
    checkpoint_key_file: str = "var/consent/checkpoint-signing-key.pem"
    checkpoint_interval_seconds: float = Field(default=300.0, gt=0)
    retention_interval_seconds: float = Field(default=86_400.0, gt=0)
    # Group commit: the most decisions one ledger transaction takes.
    ledger_batch_max: int = Field(default=500, ge=1, le=5000)
    # The role the service's connections assume (INSERT and SELECT only on the ledger).
    database_role: str | None = "threadline_consent_writer"

    @model_validator(mode="after")
    def _production_key(self) -> Self:
        if self.environment == "production" and not Path(self.checkpoint_key_file).exists():
            raise ValueError(
                "not safe for production: THREADLINE_CONSENT_CHECKPOINT_KEY_FILE must name an "
                "existing Ed25519 key (a key is generated only in development and tests)"
            )
        return self
