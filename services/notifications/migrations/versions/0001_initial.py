"""The MASH inbox and the plumbing tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.migrations import create_plumbing_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notifications"


def upgrade() -> None:
    create_plumbing_tables(op.get_bind(), SCHEMA)
    op.create_table(
        "inbox_items",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("source_event_id", postgresql.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("audience", sa.String(30), nullable=False),
        sa.Column("referral_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("referral_reference", sa.String(20), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("correlation_id", sa.String(100), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_inbox_items_audience_status",
        "inbox_items",
        ["audience", "status", "created_at"],
        schema=SCHEMA,
    )
    op.create_index("ix_inbox_items_referral_id", "inbox_items", ["referral_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("inbox_items", schema=SCHEMA)
    for table in ("timers", "inbox", "outbox"):
        op.drop_table(table, schema=SCHEMA)
