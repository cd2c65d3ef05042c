"""The timeline schema: the read model a MASH worker opens when a referral arrives.

Nothing here is a source of truth: every row is projected from the topics and the whole schema
can be rebuilt from them (``threadline timeline rebuild``). Entries belong to *subjects* (one
child or adult as one agency described them in one referral or contact), never directly to
persons: which person a subject is comes from the linking service and can change (a merge, an
unmerge, a review accepted), so re-projection is a change of the small ``records`` mapping, and
the entries never move. No column holds a wall-clock time of projection, so a rebuild equals the
incrementally built model row for row.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Date, DateTime, Identity, Index, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import service_metadata
from shared.plumbing import attach_plumbing

SCHEMA = "timeline"
#: The read-model tables, in the order a rebuild copies and compares them.
READ_MODEL = (
    "subjects",
    "records",
    "redirects",
    "referrals",
    "entries",
    "households",
    "household_members",
    "expired_sources",
)


class Base(DeclarativeBase):
    metadata = service_metadata(SCHEMA)


plumbing = attach_plumbing(Base.metadata)


class Subject(Base):
    """A child or adult as one referral or contact described them."""

    __tablename__ = "subjects"

    subject_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    role: Mapped[str] = mapped_column(String(10))  # child | adult
    given_names: Mapped[str | None] = mapped_column(String(200))
    family_name: Mapped[str] = mapped_column(String(200))
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    unborn_expected_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str] = mapped_column(String(20))
    school_urn: Mapped[str | None] = mapped_column(String(20))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Record(Base):
    """Which person a subject is now (linking's ``subject.linked``, merges and unmerges).

    ``as_of`` is the time of the event that set ``person_id``: the later event wins whatever
    order the linking topic's partitions deliver them in.
    """

    __tablename__ = "records"
    __table_args__ = (
        Index("ix_records_person", "person_id"),
        Index("ix_records_subject", "subject_id"),
    )

    record_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    subject_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Redirect(Base):
    """A person merged into another: reads of the merged id show the survivor's chronology."""

    __tablename__ = "redirects"

    merged_person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    survivor_person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    merge_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    active: Mapped[bool] = mapped_column(Boolean)
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Referral(Base):
    """A referral's current state: its RAG, decision and deadlines (lifecycle events)."""

    __tablename__ = "referrals"

    referral_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    reference: Mapped[str] = mapped_column(String(20))
    child_subject_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)))
    rag: Mapped[str | None] = mapped_column(String(10))
    decision: Mapped[str | None] = mapped_column(String(60))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # {"acknowledgement": {"due_at", "met_at", "met"}, "decision": ..., "feedback": ...}
    deadlines: Mapped[dict[str, Any]] = mapped_column(JSONB)


class Entry(Base):
    """One line of one subject's chronology."""

    __tablename__ = "entries"
    __table_args__ = (
        Index("ix_entries_subject_time", "subject_id", "occurred_at"),
        Index("ix_entries_source", "source_id"),
    )

    entry_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    subject_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(300))
    summary: Mapped[str] = mapped_column(Text)
    agency: Mapped[str] = mapped_column(String(30))
    organisation_code: Mapped[str] = mapped_column(String(40))
    who: Mapped[str | None] = mapped_column(String(300))
    contact: Mapped[str | None] = mapped_column(String(300))  # how to reach who
    source_type: Mapped[str] = mapped_column(String(20))  # referral | contact | consent
    source_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    source_reference: Mapped[str | None] = mapped_column(String(60))
    # Structured facts the pattern flags read (categories, hospital, DASH risk, decision ...).
    facts: Mapped[dict[str, Any]] = mapped_column(JSONB)


class Household(Base):
    __tablename__ = "households"

    household_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    relationships: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HouseholdMember(Base):
    __tablename__ = "household_members"
    __table_args__ = (Index("ix_household_members_person", "person_id"),)

    household_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    role: Mapped[str] = mapped_column(String(10))


class ExpiredSource(Base):
    """A referral past its retention period: its lines are removed and never projected again,
    whichever topic (referrals or consent) a replay reads first."""

    __tablename__ = "expired_sources"

    source_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    expired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AccessRecord(Base):
    """Who read whose chronology, when, and the ledger decision that allowed or refused it."""

    __tablename__ = "access_log"
    __table_args__ = (Index("ix_access_log_person", "person_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    principal: Mapped[str] = mapped_column(String(200))
    organisation_code: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(30))
    person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    outcome: Mapped[str] = mapped_column(String(20))
    decision_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    reason: Mapped[str | None] = mapped_column(Text)
