from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ReferralsSettings(ServiceSettings):
    service_name: ClassVar[str] = "referrals"
    default_port: ClassVar[int] = 8101
    model_config = SettingsConfigDict(env_prefix="THREADLINE_REFERRALS_", extra="ignore")

    # Working Together to Safeguard Children 2023: acknowledge within one working day.
    acknowledgement_working_days: int = 1
