"""The notifications schema: items in the MASH inbox."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Index, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import UUID
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
