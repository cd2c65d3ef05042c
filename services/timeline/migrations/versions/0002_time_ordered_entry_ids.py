"""Entry ids in the time-ordered form (``services/timeline/rows.entry_id``).

An entry's id was the UUIDv5 of its event and subject; it is now that hash's last 76 bits under
the event id's first 48 (for a UUIDv7 event id, its milliseconds) and version 8, so new entries
are inserted at the right-hand edge of the primary key. The new id is computed from the old one
and the event id alone, so the model keeps the ids a rebuild gives and stays equal to it.
Ids already in the new form (version 8) are left as they are, so the migration can run again.

Downgrade leaves the ids as they are: the old ones cannot be worked out from the new without
the hash, and a rebuild under the old code gives them back.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The new id from the old (``entry_id``) and the event id, in SQL: 12 hex digits of the event
#: id, the version 8, then the old id's last 19 hex digits (its variant bits among them).
NEW_ID_SQL = (
    "(left(replace(event_id::text, '-', ''), 12) || '8'"
    " || right(replace(entry_id::text, '-', ''), 19))::uuid"
)


def upgrade() -> None:
    op.execute(
        f"UPDATE timeline.entries SET entry_id = {NEW_ID_SQL}"
        " WHERE substr(replace(entry_id::text, '-', ''), 13, 1) = '5'"
    )


def downgrade() -> None:
    pass
