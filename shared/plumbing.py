"""The tables every service keeps in its own schema: outbox, inbox and timers.

They are defined once here and attached to each service's metadata, so the relay, the consumer
runner and the timer scheduler work the same way in every service.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID


@dataclass(frozen=True)
class Plumbing:
    schema: str
    outbox: Table
    inbox: Table
    timers: Table

    @property
    def notify_channel(self) -> str:
        """The LISTEN/NOTIFY channel that wakes this schema's relay."""
        return f"{self.schema}_outbox"


def attach_plumbing(metadata: MetaData) -> Plumbing:
    """Define outbox, inbox and timers on ``metadata`` (whose schema names the service)."""
    schema = metadata.schema
    if not schema:
        raise ValueError("plumbing tables need a schema-bound MetaData")
    outbox = Table(
        "outbox",
        metadata,
        # seq orders the relay's work; it is never used as a high-water mark, because rows
        # commit out of order and "seq > last seen" would skip the late ones.
        Column("seq", BigInteger, Identity(always=True), primary_key=True),
        Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("topic", String(200), nullable=False),
        Column("partition_key", String(200), nullable=False),
        Column("event_type", String(200), nullable=False),
        Column("attributes", JSONB, nullable=False),
        Column("data", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
        Column("lease_owner", String(100)),
        Column("lease_until", DateTime(timezone=True)),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text),
        Column("published_at", DateTime(timezone=True)),
        Index(
            "ix_outbox_unpublished",
            "seq",
            postgresql_where=text("published_at IS NULL"),
        ),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(200), primary_key=True),
        Column("event_id", UUID(as_uuid=True), primary_key=True),
        Column("event_type", String(200), nullable=False),
        Column("topic", String(200), nullable=False),
        Column("partition", Integer, nullable=False),
        Column("kafka_offset", BigInteger, nullable=False),
        Column("outcome", String(20), nullable=False),  # applied | dead_lettered
        Column("error", Text),
        Column(
            "processed_at", DateTime(timezone=True), nullable=False, server_default=text("now()")
        ),
    )
    timers = Table(
        "timers",
        metadata,
        Column("id", UUID(as_uuid=True), primary_key=True),
        Column("kind", String(100), nullable=False),
        Column("aggregate_id", String(200), nullable=False),
        Column("due_at", DateTime(timezone=True), nullable=False),
        Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
        Column("fired_at", DateTime(timezone=True)),
        Column("cancelled_at", DateTime(timezone=True)),
        Column("correlation_id", String(100)),
        Index(
            "ix_timers_pending_due",
            "due_at",
            postgresql_where=text("fired_at IS NULL AND cancelled_at IS NULL"),
        ),
        Index("ix_timers_aggregate", "kind", "aggregate_id"),
    )
    return Plumbing(schema=schema, outbox=outbox, inbox=inbox, timers=timers)
