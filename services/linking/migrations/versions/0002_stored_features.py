"""Each person record's comparison features as columns (normal forms, tokens, phonetic keys,
address parts, homes), so that resolving prepares nothing; and every record's keys again, with
the blocking of this revision (the name-sound key in either order) and its homes ("@" keys).

The backfill prepares each stored record with the matching code of this revision. A later
change to what ``prepare`` or ``blocking`` derives needs a migration that refreshes them again
(``repository.refresh_features``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "linking"
TEXTS = postgresql.ARRAY(sa.Text())


def upgrade() -> None:
    for name, kind, default in (
        ("given_norm", sa.String(200), sa.text("''")),
        ("given_tokens", TEXTS, sa.text("'{}'")),
        ("given_placeholder", sa.Boolean(), sa.text("false")),
        ("family_norm", sa.String(200), sa.text("''")),
        ("family_tokens", TEXTS, sa.text("'{}'")),
        ("alias_tokens", TEXTS, sa.text("'{}'")),
        ("given_sound", sa.String(100), sa.text("''")),
        ("family_sound", sa.String(100), sa.text("''")),
        ("address_number", sa.String(40), sa.text("''")),
        ("address_tokens", TEXTS, sa.text("'{}'")),
        ("homes", TEXTS, sa.text("'{}'")),
    ):
        op.add_column(
            "person_records",
            sa.Column(name, kind, server_default=default, nullable=False),
            schema=SCHEMA,
        )
    from services.linking.repository import refresh_features

    refresh_features(op.get_bind())


def downgrade() -> None:
    for name in (
        "given_norm",
        "given_tokens",
        "given_placeholder",
        "family_norm",
        "family_tokens",
        "alias_tokens",
        "given_sound",
        "family_sound",
        "address_number",
        "address_tokens",
        "homes",
    ):
        op.drop_column("person_records", name, schema=SCHEMA)
