"""The plumbing tables of the consent service.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations import create_plumbing_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "consent"


def upgrade() -> None:
    create_plumbing_tables(op.get_bind(), SCHEMA)


def downgrade() -> None:
    for table in ("timers", "inbox", "outbox"):
        op.drop_table(table, schema=SCHEMA)
