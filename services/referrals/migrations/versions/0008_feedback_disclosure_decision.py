"""Feedback to a referrer is a disclosure: the consent service's decision that allowed it is kept
with the feedback (its id in the ledger), so an auditor can go from one to the other.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "referrals"


def upgrade() -> None:
    op.add_column(
        "referral_actions",
        sa.Column("disclosure_decision_id", UUID(as_uuid=True)),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("referral_actions", "disclosure_decision_id", schema=SCHEMA)
