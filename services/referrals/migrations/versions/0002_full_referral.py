"""The full referral: family members, sealed narratives, data keys, the access log.

Revision 0001 kept the concern summary in plain text. This revision drops that column: only
development and demo data ever lived there, and a narrative must never be stored unencrypted.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.crypto import create_data_key_table

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "referrals"
UUID = postgresql.UUID(as_uuid=True)
NAMES = postgresql.ARRAY(sa.String(200))


def upgrade() -> None:
    create_data_key_table(op.get_bind(), SCHEMA)
    op.drop_column("referrals", "concern_summary", schema=SCHEMA)
    for column in (
        sa.Column("referrer_client", sa.String(200), nullable=False, server_default="unknown"),
        sa.Column("immediate_risk", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("consent_parents", sa.String(20), nullable=False, server_default="not_asked"),
        sa.Column("consent_parents_why_not_asked", sa.String(2000)),
        sa.Column("consent_child", sa.String(20)),
        sa.Column("consent_child_competent", sa.Boolean),
        sa.Column("consent_child_why_not_asked", sa.String(2000)),
        sa.Column("rag", sa.String(10)),
        sa.Column("decision", sa.String(40)),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
    ):
        op.add_column("referrals", column, schema=SCHEMA)
    for name in ("referrer_client", "immediate_risk", "consent_parents"):
        op.alter_column("referrals", name, server_default=None, schema=SCHEMA)
    op.create_index(
        "ix_referrals_referrer_received",
        "referrals",
        ["referrer_organisation_code", "received_at"],
        schema=SCHEMA,
    )

    op.alter_column("referral_children", "given_names", nullable=True, schema=SCHEMA)
    for column in (
        sa.Column("other_names", NAMES, nullable=False, server_default="{}"),
        sa.Column("estimated_age_years", sa.Integer),
        sa.Column("unborn_expected_date", sa.Date),
        sa.Column("sex", sa.String(20), nullable=False, server_default="not_known"),
        sa.Column("nhs_number", sa.String(10)),
        sa.Column("upn", sa.String(13)),
        sa.Column("address_lines", NAMES, nullable=False, server_default="{}"),
        sa.Column("town", sa.String(200)),
        sa.Column("postcode", sa.String(8)),
        sa.Column("school_urn", sa.String(6)),
        sa.Column("school_name", sa.String(200)),
    ):
        op.add_column("referral_children", column, schema=SCHEMA)
    for name in ("other_names", "sex", "address_lines"):
        op.alter_column("referral_children", name, server_default=None, schema=SCHEMA)
    op.create_index(
        "ix_referral_children_nhs_number", "referral_children", ["nhs_number"], schema=SCHEMA
    )
    op.create_index("ix_referral_children_upn", "referral_children", ["upn"], schema=SCHEMA)

    op.create_table(
        "family_members",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "referral_id",
            UUID,
            sa.ForeignKey(f"{SCHEMA}.referrals.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("given_names", sa.String(200), nullable=False),
        sa.Column("family_name", sa.String(200), nullable=False),
        sa.Column("other_names", NAMES, nullable=False),
        sa.Column("date_of_birth", sa.Date),
        sa.Column("sex", sa.String(20), nullable=False),
        sa.Column("address_lines", NAMES, nullable=False),
        sa.Column("town", sa.String(200)),
        sa.Column("postcode", sa.String(8)),
        sa.Column("phone", sa.String(40)),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_family_members_referral_id", "family_members", ["referral_id"], schema=SCHEMA
    )
    op.create_table(
        "family_relationships",
        sa.Column(
            "family_member_id",
            UUID,
            sa.ForeignKey(f"{SCHEMA}.family_members.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "child_id",
            UUID,
            sa.ForeignKey(f"{SCHEMA}.referral_children.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("child_position", sa.Integer, nullable=False),
        sa.Column("relationship", sa.String(30), nullable=False),
        sa.Column("parental_responsibility", sa.Boolean, nullable=False),
        sa.Column("lives_with_child", sa.Boolean, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "referral_texts",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "referral_id",
            UUID,
            sa.ForeignKey(f"{SCHEMA}.referrals.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("subject_id", UUID, nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_referral_texts_referral", "referral_texts", ["referral_id", "kind"], schema=SCHEMA
    )
    op.create_index("ix_referral_texts_subject_id", "referral_texts", ["subject_id"], schema=SCHEMA)
    op.create_table(
        "access_log",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
        ),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("organisation_code", sa.String(20), nullable=False),
        sa.Column("agency", sa.String(30), nullable=False),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("object_type", sa.String(30), nullable=False),
        sa.Column("object_id", sa.String(100), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_access_log_object", "access_log", ["object_type", "object_id"], schema=SCHEMA
    )


def downgrade() -> None:
    # Going back would mean a column for plain-text narratives again: refused on purpose.
    raise RuntimeError("revision 0002 is irreversible: narratives are never stored in plain text")
