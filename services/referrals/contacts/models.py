"""Contacts in the referrals schema, on the referrals metadata (one schema, one Alembic history).

A contact's structured facts are a JSONB document whose shape its ``type`` fixes; the children it
is about are rows like a referral's children, so they can be searched by NHS number or UPN; its
narrative is sealed once per child under that child's data key, like ``referral_texts``.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.referrals.models import SCHEMA, Base, SubjectColumns


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("organisation_code", "idempotency_key"),
        Index("ix_contacts_organisation_received", "organisation_code", "received_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    type: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    organisation_code: Mapped[str] = mapped_column(String(20))
    agency: Mapped[str] = mapped_column(String(30))
    client: Mapped[str] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    occurred_on: Mapped[date] = mapped_column(Date, index=True)  # its Europe/London date
    details: Mapped[dict[str, Any]] = mapped_column(JSONB)

    subjects: Mapped[list[ContactSubject]] = relationship(
        lazy="raise", order_by="ContactSubject.position"
    )
    texts: Mapped[list[ContactText]] = relationship(lazy="raise", order_by="ContactText.id")


class ContactSubject(SubjectColumns, Base):
    """A child the contact is about, with the identifying columns of ``referral_children``."""

    __tablename__ = "contact_subjects"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    contact_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.contacts.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]
    # Only for a child present at a police domestic-abuse incident.
    witnessed: Mapped[bool | None] = mapped_column(Boolean)
    injured: Mapped[bool | None] = mapped_column(Boolean)


class ContactText(Base):
    """A contact's narrative, sealed with one child's data key (one row per child)."""

    __tablename__ = "contact_texts"
    __table_args__ = (Index("ix_contact_texts_contact", "contact_id", "kind"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    contact_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.contacts.id", ondelete="CASCADE")
    )
    subject_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    kind: Mapped[str] = mapped_column(String(30))  # narrative | presenting_complaint
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    written_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
