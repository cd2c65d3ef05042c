"""The notifications schema: the MASH inbox, messages and their deliveries, and what the
alerts need to know about referrals, children and their statuses."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import service_metadata
from shared.plumbing import attach_plumbing

SCHEMA = "notifications"


class Base(DeclarativeBase):
    metadata = service_metadata(SCHEMA)


plumbing = attach_plumbing(Base.metadata)


class InboxItem(Base):
    """Something a MASH worker (or manager) must act on, raised by an event."""

    __tablename__ = "inbox_items"
    __table_args__ = (
        Index("ix_inbox_items_audience_status", "audience", "status", "created_at"),
        Index("ix_inbox_items_organisation", "organisation_code", "status"),
        # One event may address several audiences (the manager and the referrer), once each.
        UniqueConstraint("source_event_id", "audience"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    source_event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[str] = mapped_column(String(40))  # new_referral | acknowledgement_overdue
    audience: Mapped[str] = mapped_column(String(30))  # mash_worker | mash_manager | referrer
    # For audience "referrer": the organisation whose inbox it is.
    organisation_code: Mapped[str | None] = mapped_column(String(20))
    referral_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    referral_reference: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20))  # open | done
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    correlation_id: Mapped[str] = mapped_column(String(100))


# -- delivery: messages, their deliveries by channel, the dead-letter store, preferences ------


class Message(Base):
    """One thing Threadline owes one recipient (an organisation, and a role or person in it).

    Every message is in the recipient's portal inbox; e-mail and webhook deliveries carry it out
    of Threadline. ``dedupe_key`` makes a redelivered event or a re-fired timer a no-op.
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("dedupe_key"),
        Index("ix_messages_recipient", "recipient_organisation", "created_at"),
        Index("ix_messages_sender", "sender_organisation", "created_at"),
        Index("ix_messages_status_due", "status", "next_attempt_at"),
        Index("ix_messages_subject_ids", "subject_ids", postgresql_using="gin"),
        Index("ix_messages_referral", "referral_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(60))
    source_event_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    recipient_organisation: Mapped[str] = mapped_column(String(20))
    recipient_agency: Mapped[str] = mapped_column(String(30))
    recipient_role: Mapped[str] = mapped_column(String(40))
    recipient_name: Mapped[str | None] = mapped_column(String(200))
    sender_organisation: Mapped[str] = mapped_column(String(20))
    sender_agency: Mapped[str] = mapped_column(String(30))
    referral_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    contact_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    reference: Mapped[str | None] = mapped_column(String(60))
    # The consent service's subjects (referral and contact subject ids) the message is about.
    subject_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)))
    person_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    # None (SQL NULL): no personal data leaves its controller, so no disclosure is decided.
    disclosure: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    decision_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    decision: Mapped[str | None] = mapped_column(String(20))  # share | do_not_share
    decision_reasons: Mapped[list[str] | None] = mapped_column(JSONB(none_as_null=True))
    lawful_basis: Mapped[str | None] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # awaiting_decision | refused | sending | delivered | failed
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    deliver_by: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledge_by: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    escalated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    correlation_id: Mapped[str] = mapped_column(String(100))


class Delivery(Base):
    """A message on its way to one mailbox or webhook endpoint, retried until it arrives or
    its attempts run out (then ``failed``, with a row in ``dead_letters``)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("message_id", "channel", "address"),
        Index(
            "ix_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.messages.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(20))  # email | webhook
    address: Mapped[str] = mapped_column(String(500))  # a mailbox, or an endpoint's URL
    endpoint_id: Mapped[str | None] = mapped_column(String(80))
    # The Standard Webhooks id: the same on every attempt, so the receiver applies it once.
    webhook_id: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(20))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeadLetter(Base):
    """A delivery whose retries ran out, kept until someone re-sends it."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        Index("ix_dead_letters_open", "failed_at", postgresql_where=text("resent_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.deliveries.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(500))
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resent_by: Mapped[str | None] = mapped_column(String(200))


class Preference(Base):
    """A recipient's choice of channels for a kind of message (``*``: every kind)."""

    __tablename__ = "preferences"
    __table_args__ = (UniqueConstraint("organisation_code", "role", "kind"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    organisation_code: Mapped[str] = mapped_column(String(20))
    role: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(60))
    channels: Mapped[list[str]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(200))


# -- what the alerts need to know: referrals, subjects and their persons, statuses -----------


class ReferralFact(Base):
    """What the notifications need of a referral: who made it, about whom, who holds it."""

    __tablename__ = "referral_facts"

    referral_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    reference: Mapped[str] = mapped_column(String(20))
    referrer_organisation: Mapped[str] = mapped_column(String(20))
    referrer_agency: Mapped[str] = mapped_column(String(30))
    referrer_name: Mapped[str | None] = mapped_column(String(200))
    raised_via: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    subject_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)))
    held_by: Mapped[str | None] = mapped_column(String(200))
    decision: Mapped[str | None] = mapped_column(String(60))


class Subject(Base):
    """A child named by a referral or contact: what identifies them and their school, and,
    once linking has resolved the record, the person they are."""

    __tablename__ = "subjects"
    __table_args__ = (Index("ix_subjects_upn", "upn"),)

    subject_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    person_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    record_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    linked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    source_type: Mapped[str | None] = mapped_column(String(60))
    source_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    organisation_code: Mapped[str | None] = mapped_column(String(20))
    agency: Mapped[str | None] = mapped_column(String(30))
    # The school the record names (a child's school, or the school that made the record).
    school_urn: Mapped[str | None] = mapped_column(String(20))
    # not_in_school when the record says the child is missing education
    school_status: Mapped[str | None] = mapped_column(String(30))
    upn: Mapped[str | None] = mapped_column(String(20))
    nhs_number: Mapped[str | None] = mapped_column(String(10), index=True)
    seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProtectionStatus(Base):
    """A child-protection plan or looked-after status starting or ending (for CP-IS)."""

    __tablename__ = "protection_statuses"

    contact_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    subject_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(String(30))  # child_protection_plan | looked_after
    change: Mapped[str] = mapped_column(String(10))  # started | ended
    effective_date: Mapped[date] = mapped_column(Date)
    detail: Mapped[str] = mapped_column(String(60))  # the plan's category, or the legal status
    local_authority_code: Mapped[str] = mapped_column(String(3))
    organisation_code: Mapped[str] = mapped_column(String(20))
    allocated_worker: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PendingAlert(Base):
    """An Operation Encompass notice or a CP-IS check waiting for linking to say who the child
    is; a timer resolves it without the link if linking is late."""

    __tablename__ = "pending_alerts"
    __table_args__ = (
        UniqueConstraint("contact_id", "subject_id"),
        Index("ix_pending_alerts_subject", "subject_id", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # encompass | cpis
    contact_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    subject_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    source_event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    facts: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20))  # awaiting_link | resolved
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deliver_by: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolution: Mapped[str | None] = mapped_column(String(200))
    correlation_id: Mapped[str] = mapped_column(String(100))
