"""Inbox items for referrers (audience "referrer", owned by an organisation).

One event may now raise an item for each of several audiences (a missed feedback deadline
escalates to the MASH manager and tells the referrer they may chase), so an item is unique per
(source event, audience) instead of per source event.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notifications"


def upgrade() -> None:
    op.drop_constraint(
        "uq_inbox_items_source_event_id", "inbox_items", type_="unique", schema=SCHEMA
    )
    op.create_unique_constraint(
        "uq_inbox_items_source_event_id_audience",
        "inbox_items",
        ["source_event_id", "audience"],
        schema=SCHEMA,
    )
    op.add_column("inbox_items", sa.Column("organisation_code", sa.String(20)), schema=SCHEMA)
    op.create_index(
        "ix_inbox_items_organisation",
        "inbox_items",
        ["organisation_code", "status"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_constraint(
        "uq_inbox_items_source_event_id_audience", "inbox_items", type_="unique", schema=SCHEMA
    )
    op.create_unique_constraint(
        "uq_inbox_items_source_event_id", "inbox_items", ["source_event_id"], schema=SCHEMA
    )
    op.drop_index("ix_inbox_items_organisation", "inbox_items", schema=SCHEMA)
    op.drop_column("inbox_items", "organisation_code", schema=SCHEMA)
