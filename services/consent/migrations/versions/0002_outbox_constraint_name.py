"""Name the outbox's unique constraint by the services' naming convention.

The first revision created it with PostgreSQL's default name; the models (and alembic's
comparison of them with the database) expect ``uq_outbox_event_id``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations import name_outbox_constraint

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    name_outbox_constraint(op.get_bind(), "consent")


def downgrade() -> None:
    pass  # the name is cosmetic; keeping it on the way down is harmless
