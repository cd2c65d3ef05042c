from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import DisclosingSettings


class TimelineSettings(DisclosingSettings):
    service_name: ClassVar[str] = "timeline"
    default_port: ClassVar[int] = 8106
    model_config = SettingsConfigDict(env_prefix="THREADLINE_TIMELINE_", extra="ignore")

    # The decision point and the platform client: see DisclosingSettings (shared/settings.py).
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
