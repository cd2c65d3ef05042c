"""What linking asked for: a family member's NHS number, and a subject id for each adult at a
police domestic-abuse incident.

Adults' subject ids live in the contact's stored facts (``details -> adults[i] -> subject_id``).
Contacts recorded before this revision get ``uuid5(contact id, "adult:<position>")``: the id the
linking service already gave those adults, so their person records keep their subject.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "referrals"


def upgrade() -> None:
    op.add_column("family_members", sa.Column("nhs_number", sa.String(10)), schema=SCHEMA)
    backfill_adult_subject_ids(op.get_bind())


def backfill_adult_subject_ids(bind: sa.Connection) -> int:
    """Give each adult of each stored contact a subject id where it has none; returns how many
    contacts changed."""
    rows = bind.execute(
        sa.text(
            f"SELECT id, details FROM {SCHEMA}.contacts "
            "WHERE jsonb_path_exists(details, '$.adults[*] ? (!exists(@.subject_id))')"
        )
    ).all()
    for contact_id, details in rows:
        adults = details["adults"]
        for position, adult in enumerate(adults):
            adult.setdefault("subject_id", str(uuid.uuid5(contact_id, f"adult:{position}")))
        bind.execute(
            sa.text(
                f"UPDATE {SCHEMA}.contacts SET details = jsonb_set(details, '{{adults}}', "
                "CAST(:adults AS jsonb)) WHERE id = :id"
            ),
            {"adults": json.dumps(adults), "id": contact_id},
        )
    return len(rows)


def downgrade() -> None:
    op.drop_column("family_members", "nhs_number", schema=SCHEMA)
