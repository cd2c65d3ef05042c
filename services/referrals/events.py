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
    address_lines: list[str] = []
    town: str | None = None
    postcode: str | None = None
    school_urn: str | None = None


class ReportedRelationship(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    child_subject_id: UUID
    relationship: str
    parental_responsibility: bool
    lives_with_child: bool


class ReportedFamilyMember(BaseModel):
    """An adult or other family member named in a referral's family section."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    subject_id: UUID
    given_names: str
    family_name: str
    other_names: list[str] = []
    date_of_birth: date | None = None
    sex: str = "not_known"
    nhs_number: str | None = None
    address_lines: list[str] = []
    town: str | None = None
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
    consent_parents_why_not_asked: str | None = None
    consent_child: str | None = None
    consent_child_competent: bool | None = None
    consent_child_why_not_asked: str | None = None
    referrer_name: str | None = None
    referrer_role: str | None = None
    # How the MASH and partner agencies reach the referrer (the timeline's "agencies involved").
    referrer_organisation_name: str | None = None
    referrer_email: str | None = None
    referrer_phone: str | None = None
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


class ReferralRated(
    Event, type="referral.rated", topic=Topic.REFERRALS, key="referral_id", producer="referrals"
):
    """The MASH gave the referral a RAG rating; the reason stays sealed."""

    referral_id: UUID
    reference: str
    rag: str
    rated_at: datetime
    rated_by: str


class ReferralDecided(
    Event, type="referral.decided", topic=Topic.REFERRALS, key="referral_id", producer="referrals"
):
    """The MASH decided the type of response; the feedback clock keeps running until feedback."""

    referral_id: UUID
    reference: str
    decision: str
    decided_at: datetime
    decided_by: str
    within_deadline: bool
    assessment_due_at: datetime | None = None


class ReferralFeedbackSent(
    Event,
    type="referral.feedback_sent",
    topic=Topic.REFERRALS,
    key="referral_id",
    producer="referrals",
):
    """Feedback on the referral was recorded for the referrer (the text stays sealed), after the
    consent service's decision point allowed the disclosure (``disclosure_decision_id``, its
    entry in the ledger; absent only on events from before feedback was decided)."""

    referral_id: UUID
    reference: str
    referrer_organisation_code: str
    feedback_id: int
    sent_at: datetime
    within_deadline: bool
    disclosure_decision_id: UUID | None = None


class ReferralAssessmentCompleted(
    Event,
    type="referral.assessment_completed",
    topic=Topic.REFERRALS,
    key="referral_id",
    producer="referrals",
):
    """The section 17 or section 47 assessment that the decision started is complete."""

    referral_id: UUID
    reference: str
    completed_at: datetime
    within_deadline: bool


class ReferralReopened(
    Event,
    type="referral.reopened",
    topic=Topic.REFERRALS,
    key="referral_id",
    producer="referrals",
):
    """A decided referral was reopened; new decision and feedback clocks have started."""

    referral_id: UUID
    reference: str
    reopened_at: datetime
    reopened_by: str
    decision_due_at: datetime
    feedback_due_at: datetime


class DeadlineMissed(Event):
    """Shared shape of the events a missed deadline raises (not registered itself)."""

    referral_id: UUID
    reference: str
    referrer_organisation_code: str
    raised_via: str
    due_at: datetime
    detected_at: datetime


class ReferralDecisionOverdue(
    DeadlineMissed,
    type="referral.decision_overdue",
    topic=Topic.REFERRALS,
    key="referral_id",
    producer="referrals",
):
    """No decision on the type of response by its deadline: the MASH manager must be told."""


class ReferralFeedbackOverdue(
    DeadlineMissed,
    type="referral.feedback_overdue",
    topic=Topic.REFERRALS,
    key="referral_id",
    producer="referrals",
):
    """The referrer has had no feedback by its deadline: escalate, and tell them they may chase."""


class ReferralAssessmentOverdue(
    DeadlineMissed,
    type="referral.assessment_overdue",
    topic=Topic.REFERRALS,
    key="referral_id",
    producer="referrals",
):
    """The assessment was not completed within its working days: the MASH manager must be told."""


class ReferralPhoneFollowUpDue(
    DeadlineMissed,
    type="referral.phone_follow_up_due",
    topic=Topic.REFERRALS,
    key="referral_id",
    producer="referrals",
):
    """A referral first made by telephone needs the referrer's written follow-up (48 hours)."""
