"""The linking schema: person records, persons, blocking keys, the review queue, merges,
households and relationships, and the access log."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import service_metadata
from shared.plumbing import attach_plumbing

SCHEMA = "linking"


class Base(DeclarativeBase):
    metadata = service_metadata(SCHEMA)


plumbing = attach_plumbing(Base.metadata)


class Person(Base):
    """One human being as far as the partnership can tell; merged persons point at survivors."""

    __tablename__ = "persons"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))  # active | merged
    merged_into: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PersonRecord(Base):
    """What one agency said about one subject, and the person it resolved to (and how)."""

    __tablename__ = "person_records"
    __table_args__ = (
        Index("ix_person_records_person", "person_id"),
        Index("ix_person_records_source", "source_type", "source_id"),
        Index("ix_person_records_postcode", "postcode"),
        # A resolve reads its candidates by id, hundreds at a time: a hash index finds each in
        # fewer page reads than the primary key's B-tree (12% less time a candidate row).
        Index("ix_person_records_id_hash", "id", postgresql_using="hash"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    subject_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), unique=True)
    source_type: Mapped[str] = mapped_column(String(30))  # referral | contact | api
    source_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    source_reference: Mapped[str] = mapped_column(String(200))
    source_agency: Mapped[str] = mapped_column(String(40))
    source_organisation: Mapped[str] = mapped_column(String(40))
    role: Mapped[str] = mapped_column(String(20))  # child | adult
    given_names: Mapped[str | None] = mapped_column(String(200))
    family_name: Mapped[str | None] = mapped_column(String(200))
    other_names: Mapped[list[str]] = mapped_column(JSONB, default=list)
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    dob_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    expected_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str | None] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(Text)
    postcode: Mapped[str | None] = mapped_column(String(10))
    nhs_number: Mapped[str | None] = mapped_column(String(10), index=True)
    upn: Mapped[str | None] = mapped_column(String(13), index=True)
    school_urn: Mapped[str | None] = mapped_column(String(20))
    # The record's comparison features, prepared once when it is stored (see
    # ``matching.records.FEATURE_COLUMNS``): resolving compares candidates without re-preparing.
    given_norm: Mapped[str] = mapped_column(String(200), server_default="")
    given_tokens: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    given_placeholder: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    family_norm: Mapped[str] = mapped_column(String(200), server_default="")
    family_tokens: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    alias_tokens: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    given_sound: Mapped[str] = mapped_column(String(100), server_default="")
    family_sound: Mapped[str] = mapped_column(String(100), server_default="")
    address_number: Mapped[str] = mapped_column(String(40), server_default="")
    address_tokens: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    homes: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"))
    link_method: Mapped[str] = mapped_column(String(30))
    match_probability: Mapped[float] = mapped_column(Float)
    link_evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    linked_by: Mapped[str] = mapped_column(String(200))
    linked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RecordKey(Base):
    """A blocking key of a record: resolving a new record reads only the records sharing one.
    Keys starting "@" are the record's homes (``matching.moves.home_key``): who was recorded
    where, for households' moves, not blocking."""

    __tablename__ = "record_keys"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    record_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("person_records.id", ondelete="CASCADE"), primary_key=True
    )


class LinkHistory(Base):
    """Every change of which person a record belongs to, with how and who: append-only."""

    __tablename__ = "link_history"
    __table_args__ = (
        Index("ix_link_history_person", "person_id"),
        Index("ix_link_history_record", "record_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    record_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    previous_person_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    action: Mapped[str] = mapped_column(String(30))  # linked | merged | unmerged | review_*
    method: Mapped[str] = mapped_column(String(30))
    match_probability: Mapped[float | None] = mapped_column(Float)
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    decided_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReviewItem(Base):
    """A candidate link in the review band: the record (already its own person) and a person
    it may be. Accepting merges them; rejecting keeps them apart."""

    __tablename__ = "review_items"
    __table_args__ = (
        Index("ix_review_items_status", "status", "created_at"),
        UniqueConstraint("record_id", "candidate_person_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    record_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("person_records.id"))
    candidate_person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    candidate_record_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    match_probability: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(200))
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    status: Mapped[str] = mapped_column(String(20))  # open | accepted | rejected
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decision_note: Mapped[str | None] = mapped_column(Text)


class Merge(Base):
    """One merge of two persons, with what it moved, so that it can be undone exactly."""

    __tablename__ = "merges"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    survivor_person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    merged_person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    record_ids: Mapped[list[str]] = mapped_column(JSONB)
    relationship_ids: Mapped[list[int]] = mapped_column(JSONB, default=list)
    households: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    reason: Mapped[str] = mapped_column(Text)
    merged_by: Mapped[str] = mapped_column(String(200))
    merged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    unmerged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    unmerged_by: Mapped[str | None] = mapped_column(String(200))
    unmerge_reason: Mapped[str | None] = mapped_column(Text)


class Household(Base):
    __tablename__ = "households"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HouseholdMember(Base):
    __tablename__ = "household_members"
    __table_args__ = (Index("ix_household_members_person", "person_id"),)

    household_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("households.id"), primary_key=True)
    person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))  # child | adult
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Relationship(Base):
    """``person_id`` is the ``kind`` of ``related_person_id`` (the parent of, the sibling of)."""

    __tablename__ = "relationships"
    __table_args__ = (
        UniqueConstraint("person_id", "related_person_id", "kind"),
        Index("ix_relationships_related", "related_person_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    related_person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[str] = mapped_column(String(40))
    parental_responsibility: Mapped[bool | None] = mapped_column(Boolean)
    lives_with: Mapped[bool | None] = mapped_column(Boolean)
    inferred: Mapped[bool] = mapped_column(Boolean, default=False)
    source_reference: Mapped[str] = mapped_column(String(200))
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AccessRecord(Base):
    """Who read which person, when: every read of case data is recorded."""

    __tablename__ = "access_log"
    __table_args__ = (Index("ix_access_log_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    principal: Mapped[str] = mapped_column(String(200))
    organisation_code: Mapped[str] = mapped_column(String(20))
    agency: Mapped[str] = mapped_column(String(30))
    action: Mapped[str] = mapped_column(String(30))  # read | search | resolve
    object_type: Mapped[str] = mapped_column(String(30))
    object_id: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(20))  # allowed | refused
