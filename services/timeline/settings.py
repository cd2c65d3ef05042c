from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class TimelineSettings(ServiceSettings):
    service_name: ClassVar[str] = "timeline"
    default_port: ClassVar[int] = 8106
    model_config = SettingsConfigDict(env_prefix="THREADLINE_TIMELINE_", extra="ignore")

    # The consent service's decision point, asked before every read (access is a disclosure);
    # THREADLINE_CONSENT_URL, which the local stack and compose set, is read too.
    consent_url: str = Field(
        default="http://127.0.0.1:8102",
        validation_alias=AliasChoices(
            "THREADLINE_TIMELINE_CONSENT_URL", "THREADLINE_CONSENT_URL", "consent_url"
        ),
    )
    # The platform client the timeline uses to ask it: client credentials at the identity
    # provider's token endpoint (by default THREADLINE_IDENTITY_URL's) …
    identity_url: str = Field(
        default="http://127.0.0.1:8100",
        validation_alias=AliasChoices(
            "THREADLINE_TIMELINE_IDENTITY_URL", "THREADLINE_IDENTITY_URL", "identity_url"
        ),
    )
    token_url: str = ""
    # … as the development provider's platform client unless configured.
    client_id: str = "threadline-platform"
    client_secret: str = "dev-secret-threadline-platform"  # noqa: S105 (development)
    # The information sharing agreement a MASH read relies on, and its purpose.
    agreement_id: str = "demo-mash-isa-2026"
    purpose: str = "mash_triage"
    # Pattern flags (see docs/timeline.md); each window is in days.
    flag_repeat_contacts: int = Field(default=3, ge=2)
    flag_repeat_contacts_days: int = Field(default=365, ge=1)
    flag_unscheduled_care: int = Field(default=2, ge=2)
    flag_unscheduled_care_days: int = Field(default=183, ge=1)
    flag_domestic_abuse: int = Field(default=1, ge=1)
    flag_missing: int = Field(default=2, ge=2)
    flag_missing_days: int = Field(default=365, ge=1)
    flag_nfa_rereferral_days: int = Field(default=92, ge=1)

    @model_validator(mode="after")
    def _token_url(self) -> TimelineSettings:
        self.token_url = self.token_url or f"{self.identity_url.rstrip('/')}/oauth2/token"
        return self
