"""The consent schema: the hash-chained ledger, consent records, the case subjects whose
retention the service tracks, who read what, and the runs of the retention job and of
verifications.

The ledger is the record of every consent, withdrawal, disclosure decision and retention action.
Its rows are never updated or deleted: the service's database role may only INSERT and SELECT
them, and a trigger refuses UPDATE, DELETE and TRUNCATE for everyone else (migration 0003).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Identity,
    Index,
    LargeBinary,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import service_metadata
from shared.plumbing import attach_plumbing

SCHEMA = "consent"
#: The role the service's connections assume: INSERT and SELECT on the ledger, nothing more.
WRITER_ROLE = "threadline_consent_writer"


class Base(DeclarativeBase):
    metadata = service_metadata(SCHEMA)


plumbing = attach_plumbing(Base.metadata)

ledger = Table(
    "ledger",
    Base.metadata,
    # Assigned by the appender as head + 1 under the chain lock: dense, so a gap is a deletion.
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("entry_id", UUID(as_uuid=True), nullable=False, unique=True),
    # consent.recorded | consent.withdrawn | disclosure.decided | retention.expired
    Column("kind", String(40), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("subject_ids", ARRAY(UUID(as_uuid=True)), nullable=False),
    # Columns the DPO filters on; all of them are inside the hash.
    Column("from_agency", String(80)),
    Column("to_agency", String(80)),
    Column("purpose", String(80)),
    Column("lawful_basis", String(40)),
    Column("outcome", String(40)),
    Column("consent_status", String(20)),
    Column("payload", JSONB, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    Index("ix_ledger_subject_ids", "subject_ids", postgresql_using="gin"),
    Index("ix_ledger_kind_recorded_at", "kind", "recorded_at"),
)


class ConsentRecord(Base):
    """One person's consent (or refusal) about one subject, with what it covers.

    Mutable only to record a withdrawal; the ledger holds each state as it was recorded.
    """

    __tablename__ = "consent_records"
    __table_args__ = (
        Index("ix_consent_records_subject_id", "subject_id"),
        Index("ix_consent_records_grantor_subject_id", "grantor_subject_id"),
        Index("ix_consent_records_source", "source", "source_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    subject_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    # child | person_with_parental_responsibility | parents (not named individually)
    grantor_kind: Mapped[str] = mapped_column(String(40))
    grantor_subject_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    grantor_description: Mapped[str | None] = mapped_column(String(200))
    child_competent: Mapped[bool | None] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(20))  # given | refused | withdrawn | not_sought
    data_categories: Mapped[list[str]] = mapped_column(ARRAY(String(80)))
    recipients: Mapped[list[str]] = mapped_column(ARRAY(String(80)))
    purposes: Mapped[list[str]] = mapped_column(ARRAY(String(80)))
    obtained_how: Mapped[str] = mapped_column(String(200))
    obtained_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    obtained_by_name: Mapped[str] = mapped_column(String(200))
    obtained_by_role: Mapped[str] = mapped_column(String(200))
    obtained_by_organisation: Mapped[str] = mapped_column(String(200))
    evidence_reference: Mapped[str | None] = mapped_column(String(200))
    why_not_sought: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(40))  # referral | api
    source_id: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ledger_sequence: Mapped[int] = mapped_column(BigInteger)
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawn_by_name: Mapped[str | None] = mapped_column(String(200))
    withdrawn_by_role: Mapped[str | None] = mapped_column(String(200))
    withdrawal_reason: Mapped[str | None] = mapped_column(Text)
    withdrawal_sequence: Mapped[int | None] = mapped_column(BigInteger)

    def as_entry(self) -> dict[str, Any]:
        """The record as the ledger and the DPO see it (all metadata, no narrative)."""
        return {
            "consent_id": str(self.id),
            "subject_id": str(self.subject_id),
            "grantor_kind": self.grantor_kind,
            "grantor_subject_id": None
            if self.grantor_subject_id is None
            else str(self.grantor_subject_id),
            "grantor_description": self.grantor_description,
            "child_competent": self.child_competent,
            "status": self.status,
            "data_categories": list(self.data_categories),
            "recipients": list(self.recipients),
            "purposes": list(self.purposes),
            "obtained_how": self.obtained_how,
            "obtained_at": self.obtained_at,
            "obtained_by": {
                "name": self.obtained_by_name,
                "role": self.obtained_by_role,
                "organisation": self.obtained_by_organisation,
            },
            "evidence_reference": self.evidence_reference,
            "why_not_sought": self.why_not_sought,
            "expires_at": self.expires_at,
            "source": self.source,
            "source_id": self.source_id,
        }


class CaseSubject(Base):
    """A subject of a referral, as the retention policy needs it: when, and their birth date."""

    __tablename__ = "case_subjects"

    subject_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    referral_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))  # child | family_member
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    date_of_birth: Mapped[date | None] = mapped_column(Date)


class RetentionAction(Base):
    """What the retention job did to one subject's records of one type (done once)."""

    __tablename__ = "retention_actions"

    subject_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    record_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    expired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ledger_sequence: Mapped[int] = mapped_column(BigInteger)


class AccessRecord(Base):
    """Who read which ledger data, when: every DPO read is recorded."""

    __tablename__ = "access_log"
    __table_args__ = (Index("ix_access_log_subject_id", "subject_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    principal: Mapped[str] = mapped_column(String(200))
    organisation_code: Mapped[str] = mapped_column(String(40))
    agency: Mapped[str] = mapped_column(String(30))
    action: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    query: Mapped[dict[str, Any]] = mapped_column(JSONB)


class RetentionRun(Base):
    """One run of the retention job: when, under which policy, and what it did. Appended by the
    job in its own transaction, so a run that failed left no row."""

    __tablename__ = "retention_runs"
    __table_args__ = (Index("ix_retention_runs_ran_at", "ran_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    ran_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    policy: Mapped[str] = mapped_column(Text)
    narratives_expired: Mapped[int] = mapped_column(BigInteger)
    access_records_purged: Mapped[int] = mapped_column(BigInteger)


class LedgerVerification(Base):
    """One verification of the ledger through the API, and what it found: the DPO's evidence
    that the ledger was checked, and when last."""

    __tablename__ = "ledger_verifications"
    __table_args__ = (Index("ix_ledger_verifications_verified_at", "verified_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    verified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    verified_by: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(30))  # full | since_last_checkpoint
    intact: Mapped[bool] = mapped_column(Boolean)
    entries_checked: Mapped[int] = mapped_column(BigInteger)
    head_sequence: Mapped[int] = mapped_column(BigInteger)
    first_broken_sequence: Mapped[int | None] = mapped_column(BigInteger)
    problem: Mapped[str | None] = mapped_column(Text)
    checkpoints_checked: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[float] = mapped_column(Float)
