"""A hash index on person_records.id, for the resolve's candidate rows (read by id, hundreds
at a time): 10.8 µs a candidate row against 12.3 through the primary key's B-tree, measured on
1,000,000 records held (bench/linking.py's resolves, 23 November 2026).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "linking"


def upgrade() -> None:
    op.create_index(
        "ix_person_records_id_hash",
        "person_records",
        ["id"],
        schema=SCHEMA,
        postgresql_using="hash",
    )


def downgrade() -> None:
    op.drop_index("ix_person_records_id_hash", table_name="person_records", schema=SCHEMA)
