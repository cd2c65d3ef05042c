from __future__ import annotations

from typing import ClassVar, Self

from pydantic import model_validator
from pydantic_settings import SettingsConfigDict

from shared.crypto import DEV_KEYRING, refuse_dev_keyring_in_production
from shared.settings import DisclosingSettings


class ReferralsSettings(DisclosingSettings):
    service_name: ClassVar[str] = "referrals"
    default_port: ClassVar[int] = 8101
    model_config = SettingsConfigDict(env_prefix="THREADLINE_REFERRALS_", extra="ignore")

    # The partnership's deadlines (config/policy/default.toml); built-in defaults when unset.
    policy_file: str | None = None
    # Master keys that wrap each child's data key: "id:base64,id:base64", current first.
    master_keys: str = DEV_KEYRING
    # Feedback to a referrer is a disclosure decided by the consent service (DisclosingSettings:
    # where the decision point is, and the platform client that asks it), under this agreement.
    agreement_id: str = "demo-mash-isa-2026"

    @model_validator(mode="after")
    def _no_development_keys_in_production(self) -> Self:
        refuse_dev_keyring_in_production(self.environment, self.master_keys)
        return self
