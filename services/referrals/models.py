"""The referrals schema: referrals and the children they name, as reported."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Date, DateTime, ForeignKey, Index, Sequence, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import service_metadata
from shared.plumbing import attach_plumbing

SCHEMA = "referrals"


class Base(DeclarativeBase):
    metadata = service_metadata(SCHEMA)


plumbing = attach_plumbing(Base.metadata)


class Referral(Base):
    __tablename__ = "referrals"
    __table_args__ = (
        UniqueConstraint("referrer_organisation_code", "idempotency_key"),
        Index("ix_referrals_received_at", "received_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    reference: Mapped[str] = mapped_column(String(20), unique=True)
    status: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    referrer_agency: Mapped[str] = mapped_column(String(30))
    referrer_organisation_code: Mapped[str] = mapped_column(String(20))
    referrer_organisation_name: Mapped[str] = mapped_column(String(200))
    referrer_name: Mapped[str] = mapped_column(String(200))
    referrer_role: Mapped[str] = mapped_column(String(200))
    referrer_email: Mapped[str | None] = mapped_column(String(254))
    referrer_phone: Mapped[str | None] = mapped_column(String(40))
    raised_via: Mapped[str] = mapped_column(String(20))
    concern_categories: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    concern_summary: Mapped[str] = mapped_column(Text)
    acknowledgement_due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_fingerprint: Mapped[str] = mapped_column(String(64))

    children: Mapped[list[ReferralChild]] = relationship(
        back_populates="referral", lazy="raise", order_by="ReferralChild.position"
    )


class ReferralChild(Base):
    __tablename__ = "referral_children"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    referral_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.referrals.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]
    given_names: Mapped[str] = mapped_column(String(200))
    family_name: Mapped[str] = mapped_column(String(200))
    date_of_birth: Mapped[date | None] = mapped_column(Date)

    referral: Mapped[Referral] = relationship(back_populates="children", lazy="raise")


referral_number = Sequence("referral_number_seq", metadata=Base.metadata)
