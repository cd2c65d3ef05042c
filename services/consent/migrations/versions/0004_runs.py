"""The retention job's runs and the ledger's verifications, so the DPO can see when each last
happened and what it found. Both are appended, never changed: the service's role may only
SELECT and INSERT them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "consent"
WRITER = "threadline_consent_writer"


def upgrade() -> None:
    op.create_table(
        "retention_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("narratives_expired", sa.BigInteger(), nullable=False),
        sa.Column("access_records_purged", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_runs")),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_retention_runs_ran_at", "retention_runs", ["ran_at"], unique=False, schema=SCHEMA
    )
    op.create_table(
        "ledger_verifications",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_by", sa.String(length=200), nullable=False),
        sa.Column("scope", sa.String(length=30), nullable=False),
        sa.Column("intact", sa.Boolean(), nullable=False),
        sa.Column("entries_checked", sa.BigInteger(), nullable=False),
        sa.Column("head_sequence", sa.BigInteger(), nullable=False),
        sa.Column("first_broken_sequence", sa.BigInteger(), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("checkpoints_checked", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_verifications")),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_ledger_verifications_verified_at",
        "ledger_verifications",
        ["verified_at"],
        unique=False,
        schema=SCHEMA,
    )
    for table in ("retention_runs", "ledger_verifications"):
        op.execute(f'REVOKE ALL ON "{SCHEMA}".{table} FROM PUBLIC')
        op.execute(f'GRANT SELECT, INSERT ON "{SCHEMA}".{table} TO {WRITER}')
    op.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{SCHEMA}" TO {WRITER}')


def downgrade() -> None:
    op.drop_table("ledger_verifications", schema=SCHEMA)
    op.drop_table("retention_runs", schema=SCHEMA)
