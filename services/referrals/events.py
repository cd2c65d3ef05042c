"""Events the referrals service emits (see docs/events.md).

Events carry what other services need to link and route (names, dates of birth, identifiers,
relationships, categories, deadlines), never the narrative: what happened and the child's own
words stay sealed in the referrals service.
"""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from shared.events import Event, Topic


class ReportedChild(BaseModel):
    """A child as the referrer described them; linking resolves them to a person."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    subject_id: UUID
    given_names: str | None
    family_name: str
    other_names: list[str] = []
    date_of_birth: date | None = None
    estimated_age_years: int | None = None
    unborn_expected_date: date | None = None
    sex: str = "not_known"
    nhs_number: str | None = None
    upn: str | None = None
    postcode: str | None = None
    school_urn: str | None = None


class ReportedRelationship(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    child_subject_id: UUID
    relationship: str
    parental_responsibility: bool
    lives_with_child: bool


class ReportedFamilyMember(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    subject_id: UUID
    given_names: str
    family_name: str
    other_names: list[str] = []
    date_of_birth: date | None = None
    sex: str = "not_known"
    postcode: str | None = None
    relationships: list[ReportedRelationship]


class ReferralReceived(
    Event, type="referral.received", topic=Topic.REFERRALS, key="referral_id", producer="referrals"
):
    """A referral was accepted from an agency; the acknowledgement clock has started."""

    referral_id: UUID
    reference: str
    received_at: datetime
    referrer_agency: str
    referrer_organisation_code: str
    raised_via: str
    concern_categories: list[str]
    immediate_risk: bool = False
    consent_parents: str = "not_asked"
    consent_child: str | None = None
    children: list[ReportedChild]
    family_members: list[ReportedFamilyMember] = []
    acknowledgement_due_at: datetime


class ReferralAcknowledged(
    Event,
    type="referral.acknowledged",
    topic=Topic.REFERRALS,
    key="referral_id",
    producer="referrals",
):
    """The MASH acknowledged the referral; the acknowledgement clock is stopped."""

    referral_id: UUID
    reference: str
    acknowledged_at: datetime
    acknowledged_by: str
    within_deadline: bool


class ReferralAckOverdue(
    Event,
    type="referral.ack_overdue",
    topic=Topic.REFERRALS,
    key="referral_id",
    producer="referrals",
):
    """Nobody acknowledged the referral by its deadline; the MASH manager must be told."""

    referral_id: UUID
    reference: str
    referrer_organisation_code: str
    acknowledgement_due_at: datetime
    detected_at: datetime
