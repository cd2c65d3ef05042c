"""The referrals schema: referrals, the children and family members they name, their sealed
narratives, and who read what.

Narratives (what happened, what was done, the child's own words) are never stored in plain text:
``referral_texts`` holds each one sealed with the data key of each child it concerns, so that
destroying one child's key erases that child's copy and leaves a sibling's readable.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Sequence,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.crypto import attach_data_keys
from shared.db import service_metadata
from shared.plumbing import attach_plumbing

SCHEMA = "referrals"


class Base(DeclarativeBase):
    metadata = service_metadata(SCHEMA)


plumbing = attach_plumbing(Base.metadata)
data_keys = attach_data_keys(Base.metadata)
referral_number = Sequence("referral_number_seq", metadata=Base.metadata)


class Referral(Base):
    __tablename__ = "referrals"
    __table_args__ = (
        UniqueConstraint("referrer_organisation_code", "idempotency_key"),
        Index("ix_referrals_received_at", "received_at"),
        Index("ix_referrals_referrer_received", "referrer_organisation_code", "received_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    reference: Mapped[str] = mapped_column(String(20), unique=True)
    status: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    referrer_agency: Mapped[str] = mapped_column(String(30))
    referrer_organisation_code: Mapped[str] = mapped_column(String(20))
    referrer_organisation_name: Mapped[str] = mapped_column(String(200))
    referrer_client: Mapped[str] = mapped_column(String(200))
    referrer_name: Mapped[str] = mapped_column(String(200))
    referrer_role: Mapped[str] = mapped_column(String(200))
    referrer_email: Mapped[str | None] = mapped_column(String(254))
    referrer_phone: Mapped[str | None] = mapped_column(String(40))
    raised_via: Mapped[str] = mapped_column(String(20))
    concern_categories: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    immediate_risk: Mapped[bool] = mapped_column(Boolean)
    consent_parents: Mapped[str] = mapped_column(String(20))
    consent_parents_why_not_asked: Mapped[str | None] = mapped_column(String(2000))
    consent_child: Mapped[str | None] = mapped_column(String(20))
    consent_child_competent: Mapped[bool | None] = mapped_column(Boolean)
    consent_child_why_not_asked: Mapped[str | None] = mapped_column(String(2000))
    acknowledgement_due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    rag: Mapped[str | None] = mapped_column(String(10))
    rated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decision: Mapped[str | None] = mapped_column(String(40))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    assessment_completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_fingerprint: Mapped[str] = mapped_column(String(64))

    children: Mapped[list[ReferralChild]] = relationship(
        back_populates="referral", lazy="raise", order_by="ReferralChild.position"
    )
    family_members: Mapped[list[FamilyMember]] = relationship(
        lazy="raise", order_by="FamilyMember.position"
    )
    texts: Mapped[list[ReferralText]] = relationship(lazy="raise", order_by="ReferralText.id")
    # Clocks started together (acknowledgement and decision) are ordered by kind: a stable order.
    deadlines: Mapped[list[ReferralDeadline]] = relationship(
        lazy="raise", order_by="[ReferralDeadline.started_at, ReferralDeadline.kind]"
    )
    actions: Mapped[list[ReferralAction]] = relationship(lazy="raise", order_by="ReferralAction.id")


class SubjectColumns:
    """A child's identifying details as an agency reported them (see ``SubjectIn.columns``)."""

    given_names: Mapped[str | None] = mapped_column(String(200))
    family_name: Mapped[str] = mapped_column(String(200))
    other_names: Mapped[list[str]] = mapped_column(ARRAY(String(200)))
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    estimated_age_years: Mapped[int | None] = mapped_column(Integer)
    unborn_expected_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str] = mapped_column(String(20))
    nhs_number: Mapped[str | None] = mapped_column(String(10), index=True)
    upn: Mapped[str | None] = mapped_column(String(13), index=True)
    address_lines: Mapped[list[str]] = mapped_column(ARRAY(String(200)))
    town: Mapped[str | None] = mapped_column(String(200))
    postcode: Mapped[str | None] = mapped_column(String(8))
    school_urn: Mapped[str | None] = mapped_column(String(6))
    school_name: Mapped[str | None] = mapped_column(String(200))


class ReferralChild(SubjectColumns, Base):
    __tablename__ = "referral_children"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    referral_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.referrals.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]

    referral: Mapped[Referral] = relationship(back_populates="children", lazy="raise")


class FamilyMember(Base):
    __tablename__ = "family_members"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    referral_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.referrals.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]
    given_names: Mapped[str] = mapped_column(String(200))
    family_name: Mapped[str] = mapped_column(String(200))
    other_names: Mapped[list[str]] = mapped_column(ARRAY(String(200)))
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str] = mapped_column(String(20))
    nhs_number: Mapped[str | None] = mapped_column(String(10))
    address_lines: Mapped[list[str]] = mapped_column(ARRAY(String(200)))
    town: Mapped[str | None] = mapped_column(String(200))
    postcode: Mapped[str | None] = mapped_column(String(8))
    phone: Mapped[str | None] = mapped_column(String(40))

    relationships: Mapped[list[FamilyRelationship]] = relationship(lazy="raise")


class FamilyRelationship(Base):
    __tablename__ = "family_relationships"

    family_member_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.family_members.id", ondelete="CASCADE"), primary_key=True
    )
    child_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.referral_children.id", ondelete="CASCADE"), primary_key=True
    )
    child_position: Mapped[int]
    relationship: Mapped[str] = mapped_column(String(30))
    parental_responsibility: Mapped[bool] = mapped_column(Boolean)
    lives_with_child: Mapped[bool] = mapped_column(Boolean)


class ReferralText(Base):
    """A narrative, sealed with one child's data key (one row per child it concerns)."""

    __tablename__ = "referral_texts"
    __table_args__ = (Index("ix_referral_texts_referral", "referral_id", "kind"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    referral_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.referrals.id", ondelete="CASCADE")
    )
    subject_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    kind: Mapped[str] = mapped_column(String(30))  # what_happened | actions_taken | own_words | …
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    written_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The MASH action whose reason or feedback this is (None for the referral's own texts).
    action_id: Mapped[int | None] = mapped_column(
        ForeignKey(f"{SCHEMA}.referral_actions.id", ondelete="CASCADE")
    )


class ReferralAction(Base):
    """One thing the MASH did to a referral: the history the referrer and auditors can follow."""

    __tablename__ = "referral_actions"
    __table_args__ = (
        # A retried feedback POST (same Idempotency-Key) is recorded once.
        Index(
            "uq_referral_actions_idempotency",
            "referral_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    referral_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.referrals.id", ondelete="CASCADE"), index=True
    )
    action: Mapped[str] = mapped_column(String(30))  # acknowledged | rated | decided | …
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    by_name: Mapped[str] = mapped_column(String(200))
    by_client: Mapped[str] = mapped_column(String(200))
    by_organisation: Mapped[str] = mapped_column(String(20))
    value: Mapped[str | None] = mapped_column(String(40))  # the RAG, the decision, …
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # Feedback only: the consent service's decision (ledger) that allowed the disclosure.
    disclosure_decision_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class ReferralDeadline(Base):
    """A clock on a referral, and how it ended: met, missed (and escalated) or cancelled."""

    __tablename__ = "referral_deadlines"
    __table_args__ = (Index("ix_referral_deadlines_referral", "referral_id", "kind"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    referral_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.referrals.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(30))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    met_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    missed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @property
    def status(self) -> str:
        if self.met_at is not None:
            return "met" if self.met_at <= self.due_at else "met_late"
        if self.cancelled_at is not None:
            return "cancelled"
        if self.missed_at is not None:
            return "missed"
        return "pending"


class AccessRecord(Base):
    """Who read which case record, when: every read of case data is recorded."""

    __tablename__ = "access_log"
    __table_args__ = (Index("ix_access_log_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    principal: Mapped[str] = mapped_column(String(200))
    organisation_code: Mapped[str] = mapped_column(String(20))
    agency: Mapped[str] = mapped_column(String(30))
    action: Mapped[str] = mapped_column(String(30))  # read | list
    object_type: Mapped[str] = mapped_column(String(30))
    object_id: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(20))  # allowed | refused
