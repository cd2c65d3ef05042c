"""The chain lock, the head and the consent records of a batch's subjects in one round trip.

A group commit holds the chain lock from the moment it is granted until its COMMIT, and every
round trip in between is time in which no other writer can append. Reading the subjects' consent
records inside the same function as the lock (a statement of its own, so with a snapshot taken
after the lock is held: it sees every consent and withdrawal committed before) takes one round
trip out of that window.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "consent"


def upgrade() -> None:
    # The first row is the head (consent columns null); then one row per consent record.
    # VOLATILE plpgsql in READ COMMITTED: each statement takes its own snapshot, after the lock.
    op.execute(
        f"""
        CREATE FUNCTION "{SCHEMA}".ledger_lock_head_consents(subjects uuid[])
        RETURNS TABLE (
          head_sequence bigint, head_hash bytea,
          id uuid, subject_id uuid, grantor_kind varchar, child_competent boolean,
          status varchar, data_categories varchar[], recipients varchar[], purposes varchar[],
          obtained_at timestamptz, expires_at timestamptz, withdrawn_at timestamptz
        )
        LANGUAGE plpgsql VOLATILE AS $$
        #variable_conflict use_column
        DECLARE
          last_sequence bigint;
          last_hash bytea;
        BEGIN
          PERFORM pg_advisory_xact_lock(hashtext('threadline.consent.ledger'));
          SELECT l.sequence, l.hash INTO last_sequence, last_hash
            FROM "{SCHEMA}".ledger l ORDER BY l.sequence DESC LIMIT 1;
          IF last_sequence IS NULL THEN
            last_sequence := 0;
            last_hash := decode(repeat('00', 32), 'hex');
          END IF;
          RETURN QUERY SELECT last_sequence, last_hash, NULL::uuid, NULL::uuid, NULL::varchar,
            NULL::boolean, NULL::varchar, NULL::varchar[], NULL::varchar[], NULL::varchar[],
            NULL::timestamptz, NULL::timestamptz, NULL::timestamptz;
          RETURN QUERY SELECT NULL::bigint, NULL::bytea, r.id, r.subject_id,
            r.grantor_kind::varchar, r.child_competent, r.status::varchar,
            r.data_categories::varchar[], r.recipients::varchar[], r.purposes::varchar[],
            r.obtained_at, r.expires_at, r.withdrawn_at
            FROM "{SCHEMA}".consent_records r WHERE r.subject_id = ANY(subjects);
        END $$;
        """
    )


def downgrade() -> None:
    op.execute(f'DROP FUNCTION IF EXISTS "{SCHEMA}".ledger_lock_head_consents(uuid[])')
