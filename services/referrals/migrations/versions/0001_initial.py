"""Referrals, the children they name, and the plumbing tables.

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

SCHEMA = "referrals"


def upgrade() -> None:
    create_plumbing_tables(op.get_bind(), SCHEMA)
    op.execute(sa.schema.CreateSequence(sa.Sequence("referral_number_seq", schema=SCHEMA)))
    op.create_table(
        "referrals",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("reference", sa.String(20), nullable=False, unique=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("referrer_agency", sa.String(30), nullable=False),
        sa.Column("referrer_organisation_code", sa.String(20), nullable=False),
        sa.Column("referrer_organisation_name", sa.String(200), nullable=False),
        sa.Column("referrer_name", sa.String(200), nullable=False),
        sa.Column("referrer_role", sa.String(200), nullable=False),
        sa.Column("referrer_email", sa.String(254)),
        sa.Column("referrer_phone", sa.String(40)),
        sa.Column("raised_via", sa.String(20), nullable=False),
        sa.Column("concern_categories", postgresql.ARRAY(sa.String(40)), nullable=False),
        sa.Column("concern_summary", sa.Text, nullable=False),
        sa.Column("acknowledgement_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
        sa.Column("acknowledged_by", sa.String(200)),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("request_fingerprint", sa.String(64), nullable=False),
        sa.UniqueConstraint(
            "referrer_organisation_code",
            "idempotency_key",
            name="uq_referrals_referrer_organisation_code_idempotency_key",
        ),
        schema=SCHEMA,
    )
    op.create_index("ix_referrals_received_at", "referrals", ["received_at"], schema=SCHEMA)
    op.create_table(
        "referral_children",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "referral_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{SCHEMA}.referrals.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("given_names", sa.String(200), nullable=False),
        sa.Column("family_name", sa.String(200), nullable=False),
        sa.Column("date_of_birth", sa.Date),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_referral_children_referral_id", "referral_children", ["referral_id"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("referral_children", schema=SCHEMA)
    op.drop_table("referrals", schema=SCHEMA)
    op.execute(sa.schema.DropSequence(sa.Sequence("referral_number_seq", schema=SCHEMA)))
    for table in ("timers", "inbox", "outbox"):
        op.drop_table(table, schema=SCHEMA)
