"""Request and response bodies of the consent API (the decision point's are in
``shared/disclosures.py``, shared with the client other services use)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.disclosures import Person, Slug
from shared.schemas import RequestModel

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=5, max_length=4000)]


class Strict(RequestModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ConsentCreate(Strict):
    """A consent, refusal, or record that consent was not sought, obtained outside a referral."""

    subject_id: UUID
    grantor_kind: Literal["child", "person_with_parental_responsibility", "parents"]
    grantor_subject_id: UUID | None = None
    grantor_description: Text | None = None
    child_competent: bool | None = Field(
        default=None, description="Required when the grantor is the child"
    )
    status: Literal["given", "refused", "not_sought"]
    data_categories: list[Slug | Literal["*"]] = Field(min_length=1, max_length=30)
    recipients: list[Slug | Literal["*"]] = Field(min_length=1, max_length=30)
    purposes: list[Slug | Literal["*"]] = Field(min_length=1, max_length=30)
    obtained_how: Text
    obtained_at: datetime
    obtained_by: Person
    evidence_reference: Text | None = None
    why_not_sought: Reason | None = None
    expires_at: datetime | None = None


class WithdrawalIn(Strict):
    withdrawn_by: Person
    reason: Reason
    withdrawn_at: datetime | None = None


class ConsentOut(BaseModel):
    id: UUID
    subject_id: UUID
    grantor_kind: str
    grantor_subject_id: UUID | None
    grantor_description: str | None
    child_competent: bool | None
    status: str
    data_categories: list[str]
    recipients: list[str]
    purposes: list[str]
    obtained_how: str
    obtained_at: datetime
    obtained_by_name: str
    obtained_by_role: str
    obtained_by_organisation: str
    evidence_reference: str | None
    why_not_sought: str | None
    expires_at: datetime | None
    source: str
    source_id: str
    recorded_at: datetime
    ledger_sequence: int
    withdrawn_at: datetime | None
    withdrawn_by_name: str | None
    withdrawn_by_role: str | None
    withdrawal_reason: str | None
    withdrawal_sequence: int | None

    model_config = ConfigDict(from_attributes=True)


class LedgerEntryOut(BaseModel):
    """One ledger entry as the DPO sees it: metadata only (the ledger holds no narrative)."""

    sequence: int
    entry_id: UUID
    kind: str
    recorded_at: datetime
    subject_ids: list[UUID]
    from_agency: str | None
    to_agency: str | None
    purpose: str | None
    lawful_basis: str | None
    outcome: str | None
    consent_status: str | None
    payload: dict[str, Any]
    hash: str
    prev_hash: str


class LedgerPage(BaseModel):
    items: list[LedgerEntryOut]
    next_after_sequence: int | None = Field(
        description="Pass as after_sequence for the next page; null on the last page"
    )
    next_before_sequence: int | None = Field(
        default=None,
        description="With newest_first: pass as before_sequence for the next (older) page; "
        "null on the last page",
    )


class WithdrawalOut(BaseModel):
    withdrawal: LedgerEntryOut
    later_decisions_changed: list[LedgerEntryOut] = Field(
        description="Later decisions whose consent status was 'withdrawn' because of it"
    )


class CheckpointStatus(BaseModel):
    sequence: int
    hash: str
    signed_at: str
    signature_valid: bool
    matches_ledger: bool | None
    problem: str | None


class IntegrityOut(BaseModel):
    intact: bool
    scope: Literal["full", "since_last_checkpoint"]
    entries_checked: int
    head_sequence: int
    head_hash: str
    first_broken_sequence: int | None
    problem: str | None
    checkpoints: list[CheckpointStatus]
    checked_at: datetime
    seconds: float


class VerificationOut(BaseModel):
    """A verification made through the API, as it was recorded."""

    model_config = ConfigDict(from_attributes=True)

    verified_at: datetime
    verified_by: str
    scope: Literal["full", "since_last_checkpoint"]
    intact: bool
    entries_checked: int
    head_sequence: int
    first_broken_sequence: int | None
    problem: str | None
    checkpoints_checked: int
    seconds: float


class RetentionRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ran_at: datetime
    policy: str
    narratives_expired: int
    access_records_purged: int


class RetentionRunsOut(BaseModel):
    policy: str = Field(description="The retention policy in force now")
    runs: list[RetentionRunOut] = Field(description="The latest runs, newest first")


class SubjectExport(BaseModel):
    """Everything the consent service holds about one person (UK GDPR Article 15)."""

    subject_id: UUID
    exported_at: datetime
    consent_records: list[ConsentOut]
    ledger_entries: list[LedgerEntryOut]
    case_subject_of: list[dict[str, Any]]
    retention_actions: list[dict[str, Any]]
    note: str
