"""Contacts: the children they are about and their sealed narratives.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "referrals"
UUID = postgresql.UUID(as_uuid=True)
NAMES = postgresql.ARRAY(sa.String(200))


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("organisation_code", sa.String(20), nullable=False),
        sa.Column("agency", sa.String(30), nullable=False),
        sa.Column("client", sa.String(200), nullable=False),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True)),
        sa.Column("occurred_on", sa.Date, nullable=False),
        sa.Column("details", postgresql.JSONB, nullable=False),
        sa.UniqueConstraint(
            "organisation_code",
            "idempotency_key",
            name="uq_contacts_organisation_code_idempotency_key",
        ),
        schema=SCHEMA,
    )
    op.create_index("ix_contacts_received_at", "contacts", ["received_at"], schema=SCHEMA)
    op.create_index("ix_contacts_occurred_on", "contacts", ["occurred_on"], schema=SCHEMA)
    op.create_index(
        "ix_contacts_organisation_received",
        "contacts",
        ["organisation_code", "received_at"],
        schema=SCHEMA,
    )

    op.create_table(
        "contact_subjects",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "contact_id",
            UUID,
            sa.ForeignKey(f"{SCHEMA}.contacts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("given_names", sa.String(200)),
        sa.Column("family_name", sa.String(200), nullable=False),
        sa.Column("other_names", NAMES, nullable=False),
        sa.Column("date_of_birth", sa.Date),
        sa.Column("estimated_age_years", sa.Integer),
        sa.Column("unborn_expected_date", sa.Date),
        sa.Column("sex", sa.String(20), nullable=False),
        sa.Column("nhs_number", sa.String(10)),
        sa.Column("upn", sa.String(13)),
        sa.Column("address_lines", NAMES, nullable=False),
        sa.Column("town", sa.String(200)),
        sa.Column("postcode", sa.String(8)),
        sa.Column("school_urn", sa.String(6)),
        sa.Column("school_name", sa.String(200)),
        sa.Column("witnessed", sa.Boolean),
        sa.Column("injured", sa.Boolean),
        schema=SCHEMA,
    )
    for column in ("contact_id", "nhs_number", "upn"):
        op.create_index(
            f"ix_contact_subjects_{column}", "contact_subjects", [column], schema=SCHEMA
        )

    op.create_table(
        "contact_texts",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "contact_id",
            UUID,
            sa.ForeignKey(f"{SCHEMA}.contacts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("subject_id", UUID, nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_contact_texts_contact", "contact_texts", ["contact_id", "kind"], schema=SCHEMA
    )
    op.create_index("ix_contact_texts_subject_id", "contact_texts", ["subject_id"], schema=SCHEMA)


def downgrade() -> None:
    for table in ("contact_texts", "contact_subjects", "contacts"):
        op.drop_table(table, schema=SCHEMA)
