"""MASH actions (their history), the deadlines of the partnership policy, and how each ended.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "referrals"
UUID = postgresql.UUID(as_uuid=True)
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("referrals", sa.Column("rated_at", WHEN), schema=SCHEMA)
    op.add_column("referrals", sa.Column("decided_by", sa.String(200)), schema=SCHEMA)
    op.add_column("referrals", sa.Column("assessment_completed_at", WHEN), schema=SCHEMA)
    op.create_table(
        "referral_actions",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "referral_id",
            UUID,
            sa.ForeignKey(f"{SCHEMA}.referrals.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("by_name", sa.String(200), nullable=False),
        sa.Column("by_client", sa.String(200), nullable=False),
        sa.Column("by_organisation", sa.String(20), nullable=False),
        sa.Column("value", sa.String(40)),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_referral_actions_referral_id", "referral_actions", ["referral_id"], schema=SCHEMA
    )
    op.add_column(
        "referral_texts",
        sa.Column(
            "action_id",
            sa.BigInteger,
            sa.ForeignKey(f"{SCHEMA}.referral_actions.id", ondelete="CASCADE"),
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "referral_deadlines",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "referral_id",
            UUID,
            sa.ForeignKey(f"{SCHEMA}.referrals.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("due_at", WHEN, nullable=False),
        sa.Column("met_at", WHEN),
        sa.Column("missed_at", WHEN),
        sa.Column("cancelled_at", WHEN),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_referral_deadlines_referral",
        "referral_deadlines",
        ["referral_id", "kind"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("referral_deadlines", schema=SCHEMA)
    op.drop_column("referral_texts", "action_id", schema=SCHEMA)
    op.drop_table("referral_actions", schema=SCHEMA)
    for column in ("assessment_completed_at", "decided_by", "rated_at"):
        op.drop_column("referrals", column, schema=SCHEMA)
