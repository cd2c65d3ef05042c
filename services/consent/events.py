"""Events the consent service emits (see docs/events.md).

They carry ledger metadata (who, what, which basis, where in the ledger), never case narratives.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from shared.events import Event, Topic


class ConsentRecorded(
    Event, type="consent.recorded", topic=Topic.CONSENT, key="subject_id", producer="consent"
):
    """A consent, refusal or record that consent was not sought was entered in the ledger."""

    consent_id: UUID
    subject_id: UUID
    grantor_kind: str
    status: str
    data_categories: list[str]
    recipients: list[str]
    purposes: list[str]
    obtained_at: datetime
    source: str
    source_id: str
    ledger_sequence: int


class ConsentWithdrawn(
    Event, type="consent.withdrawn", topic=Topic.CONSENT, key="subject_id", producer="consent"
):
    """A consent was withdrawn: every later decision about the subject honours it."""

    consent_id: UUID
    subject_id: UUID
    withdrawn_at: datetime
    withdrawn_by_role: str
    data_categories: list[str]
    recipients: list[str]
    purposes: list[str]
    ledger_sequence: int


class RetentionExpired(
    Event, type="retention.expired", topic=Topic.CONSENT, key="subject_id", producer="consent"
):
    """A subject's records of one type passed their retention period: the service holding them
    destroys them (case narratives: the child's data key is destroyed, crypto-shredding)."""

    subject_id: UUID
    record_type: str
    referral_ids: list[UUID]
    last_referral_at: datetime
    expired_at: datetime
    policy: str
    ledger_sequence: int
