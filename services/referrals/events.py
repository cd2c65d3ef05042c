"""Events the referrals service emits (see docs/events.md)."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from shared.events import Event, Topic


class ReportedChild(BaseModel):
    """A child as the referrer described them; linking resolves them to a person."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    subject_id: UUID
    given_names: str
    family_name: str
    date_of_birth: date | None = None


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
    children: list[ReportedChild]
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
