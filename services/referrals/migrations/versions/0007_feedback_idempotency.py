"""A MASH action can carry the Idempotency-Key of its request, so that a retried feedback POST
(the API died after committing, the client sent it again) is recorded once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "referrals"


def upgrade() -> None:
    op.add_column("referral_actions", sa.Column("idempotency_key", sa.String(200)), schema=SCHEMA)
    op.create_index(
        "uq_referral_actions_idempotency",
        "referral_actions",
        ["referral_id", "idempotency_key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_referral_actions_idempotency", "referral_actions", schema=SCHEMA)
    op.drop_column("referral_actions", "idempotency_key", schema=SCHEMA)
