"""The agency API's request and response bodies (never the ORM models)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class AgencyKind(StrEnum):
    SCHOOL = "school"
    HEALTH = "health"
    POLICE = "police"
    LOCAL_AUTHORITY = "local_authority"
    OTHER = "other"


class RaisedVia(StrEnum):
    PHONE = "phone"
    ONLINE = "online"
    PORTAL = "portal"


class ConcernCategory(StrEnum):
    NEGLECT = "neglect"
    PHYSICAL_ABUSE = "physical_abuse"
    EMOTIONAL_ABUSE = "emotional_abuse"
    SEXUAL_ABUSE = "sexual_abuse"
    CHILD_SEXUAL_EXPLOITATION = "child_sexual_exploitation"
    CHILD_CRIMINAL_EXPLOITATION = "child_criminal_exploitation"
    DOMESTIC_ABUSE = "domestic_abuse"
    PARENTAL_MENTAL_HEALTH = "parental_mental_health"
    SUBSTANCE_MISUSE = "substance_misuse"
    MISSING = "missing"
    ONLINE_HARM = "online_harm"
    SELF_HARM = "self_harm"
    FGM = "fgm"
    RADICALISATION = "radicalisation"
    OTHER = "other"


class Strict(BaseModel):
    """Unknown fields are refused (422 naming them), so a misspelt field is never silently lost."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ReferrerIn(Strict):
    agency: AgencyKind
    organisation_code: Annotated[
        str, StringConstraints(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9-]+$")
    ] = Field(description="School URN, NHS ODS code, police force code or LA code")
    organisation_name: Text200
    name: Text200
    role: Text200
    email: (
        Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
        | None
    ) = None
    phone: (
        Annotated[str, StringConstraints(max_length=40, pattern=r"^[0-9 +()-]{6,40}$")] | None
    ) = None
    raised_via: RaisedVia


class ChildIn(Strict):
    given_names: Text200
    family_name: Text200
    date_of_birth: date | None = None

    @field_validator("date_of_birth")
    @classmethod
    def _not_in_future(cls, value: date | None) -> date | None:
        if value is not None and value > date.today():
            raise ValueError(
                "a date of birth cannot be in the future (record an unborn child separately)"
            )
        return value


class ConcernIn(Strict):
    categories: list[ConcernCategory] = Field(min_length=1, max_length=15)
    summary: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20000)
    ]


class ReferralCreate(Strict):
    referrer: ReferrerIn
    children: list[ChildIn] = Field(min_length=1, max_length=20)
    concern: ConcernIn


class ChildOut(BaseModel):
    subject_id: UUID
    given_names: str
    family_name: str
    date_of_birth: date | None


class ReferralOut(BaseModel):
    id: UUID
    reference: str
    status: str
    received_at: datetime
    acknowledgement_due_at: datetime
    acknowledged_at: datetime | None
    referrer_organisation_code: str
    concern_categories: list[str]
    children: list[ChildOut]


class AcknowledgementIn(Strict):
    acknowledged_by: Text200
