"""The consent ledger: hash-chained entries that the service can append to and never change,
consent records, case subjects for retention, and the DPO's access log.

The service's connections assume the NOLOGIN role ``threadline_consent_writer``: it may SELECT and
INSERT ledger rows and nothing else on that table; a trigger refuses UPDATE, DELETE and TRUNCATE
of the ledger to every role (only a superuser who disables triggers can get past it, and the
chain and the signed checkpoints then show what changed).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "consent"
WRITER = "threadline_consent_writer"


def upgrade() -> None:
    op.create_table(
        "access_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("principal", sa.String(length=200), nullable=False),
        sa.Column("organisation_code", sa.String(length=40), nullable=False),
        sa.Column("agency", sa.String(length=30), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("subject_id", sa.UUID(), nullable=True),
        sa.Column("query", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_log")),
        schema="consent",
    )
    op.create_index(
        "ix_access_log_subject_id", "access_log", ["subject_id"], unique=False, schema="consent"
    )
    op.create_table(
        "case_subjects",
        sa.Column("subject_id", sa.UUID(), nullable=False),
        sa.Column("referral_id", sa.UUID(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("subject_id", "referral_id", name=op.f("pk_case_subjects")),
        schema="consent",
    )
    op.create_table(
        "consent_records",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("subject_id", sa.UUID(), nullable=False),
        sa.Column("grantor_kind", sa.String(length=40), nullable=False),
        sa.Column("grantor_subject_id", sa.UUID(), nullable=True),
        sa.Column("grantor_description", sa.String(length=200), nullable=True),
        sa.Column("child_competent", sa.Boolean(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("data_categories", postgresql.ARRAY(sa.String(length=80)), nullable=False),
        sa.Column("recipients", postgresql.ARRAY(sa.String(length=80)), nullable=False),
        sa.Column("purposes", postgresql.ARRAY(sa.String(length=80)), nullable=False),
        sa.Column("obtained_how", sa.String(length=200), nullable=False),
        sa.Column("obtained_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("obtained_by_name", sa.String(length=200), nullable=False),
        sa.Column("obtained_by_role", sa.String(length=200), nullable=False),
        sa.Column("obtained_by_organisation", sa.String(length=200), nullable=False),
        sa.Column("evidence_reference", sa.String(length=200), nullable=True),
        sa.Column("why_not_sought", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("source_id", sa.String(length=200), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_sequence", sa.BigInteger(), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_by_name", sa.String(length=200), nullable=True),
        sa.Column("withdrawn_by_role", sa.String(length=200), nullable=True),
        sa.Column("withdrawal_reason", sa.Text(), nullable=True),
        sa.Column("withdrawal_sequence", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_records")),
        schema="consent",
    )
    op.create_index(
        "ix_consent_records_grantor_subject_id",
        "consent_records",
        ["grantor_subject_id"],
        unique=False,
        schema="consent",
    )
    op.create_index(
        "ix_consent_records_source",
        "consent_records",
        ["source", "source_id"],
        unique=False,
        schema="consent",
    )
    op.create_index(
        "ix_consent_records_subject_id",
        "consent_records",
        ["subject_id"],
        unique=False,
        schema="consent",
    )
    op.create_table(
        "ledger",
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject_ids", postgresql.ARRAY(sa.UUID()), nullable=False),
        sa.Column("from_agency", sa.String(length=80), nullable=True),
        sa.Column("to_agency", sa.String(length=80), nullable=True),
        sa.Column("purpose", sa.String(length=80), nullable=True),
        sa.Column("lawful_basis", sa.String(length=40), nullable=True),
        sa.Column("outcome", sa.String(length=40), nullable=True),
        sa.Column("consent_status", sa.String(length=20), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_ledger")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_ledger_entry_id")),
        schema="consent",
    )
    op.create_index(
        "ix_ledger_kind_recorded_at",
        "ledger",
        ["kind", "recorded_at"],
        unique=False,
        schema="consent",
    )
    op.create_index(
        "ix_ledger_subject_ids",
        "ledger",
        ["subject_ids"],
        unique=False,
        schema="consent",
        postgresql_using="gin",
    )
    op.create_table(
        "retention_actions",
        sa.Column("subject_id", sa.UUID(), nullable=False),
        sa.Column("record_type", sa.String(length=40), nullable=False),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_sequence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject_id", "record_type", name=op.f("pk_retention_actions")),
        schema="consent",
    )
    _append_only_ledger()
    _writer_role()  # last: its grants cover every table made above
    _first_timers()


def downgrade() -> None:
    op.execute(
        f"DELETE FROM \"{SCHEMA}\".timers WHERE kind IN ('ledger.checkpoint', 'retention.sweep')"
    )
    op.execute(f'DROP TRIGGER IF EXISTS ledger_append_only ON "{SCHEMA}".ledger')
    op.execute(f'DROP TRIGGER IF EXISTS ledger_no_truncate ON "{SCHEMA}".ledger')
    op.execute(f'DROP FUNCTION IF EXISTS "{SCHEMA}".ledger_refuse_change()')
    op.execute(f'DROP FUNCTION IF EXISTS "{SCHEMA}".ledger_lock_head()')
    op.drop_table("retention_actions", schema="consent")
    op.drop_index(
        "ix_ledger_subject_ids", table_name="ledger", schema="consent", postgresql_using="gin"
    )
    op.drop_index("ix_ledger_kind_recorded_at", table_name="ledger", schema="consent")
    op.drop_table("ledger", schema="consent")
    op.drop_index("ix_consent_records_subject_id", table_name="consent_records", schema="consent")
    op.drop_index("ix_consent_records_source", table_name="consent_records", schema="consent")
    op.drop_index(
        "ix_consent_records_grantor_subject_id", table_name="consent_records", schema="consent"
    )
    op.drop_table("consent_records", schema="consent")
    op.drop_table("case_subjects", schema="consent")
    op.drop_index("ix_access_log_subject_id", table_name="access_log", schema="consent")
    op.drop_table("access_log", schema="consent")


def _append_only_ledger() -> None:
    """A trigger that refuses any change to a ledger row, whoever asks."""
    op.execute(
        f"""
        CREATE FUNCTION "{SCHEMA}".ledger_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'the consent ledger is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
        END $$;
        """
    )
    # The chain lock and the head in one round trip. VOLATILE: its SELECT takes a snapshot after
    # the lock is held, so it sees every append committed before.
    op.execute(
        f"""
        CREATE FUNCTION "{SCHEMA}".ledger_lock_head(OUT head_sequence bigint, OUT head_hash bytea)
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
          PERFORM pg_advisory_xact_lock(hashtext('threadline.consent.ledger'));
          SELECT sequence, hash INTO head_sequence, head_hash
            FROM "{SCHEMA}".ledger ORDER BY sequence DESC LIMIT 1;
          IF head_sequence IS NULL THEN
            head_sequence := 0;
            head_hash := decode(repeat('00', 32), 'hex');
          END IF;
        END $$;
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON "{SCHEMA}".ledger
        FOR EACH ROW EXECUTE FUNCTION "{SCHEMA}".ledger_refuse_change()
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON "{SCHEMA}".ledger
        FOR EACH STATEMENT EXECUTE FUNCTION "{SCHEMA}".ledger_refuse_change()
        """
    )


def _writer_role() -> None:
    """The role the service runs as: everything on its own tables but only INSERT and SELECT
    on the ledger. Roles are cluster-wide, so another database may have made it already."""
    op.execute(
        text(
            f"""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{WRITER}') THEN
                CREATE ROLE {WRITER} NOLOGIN;
              END IF;
            END $$;
            """
        )
    )
    # The login user that migrates (and, in development, serves) may assume the role.
    op.execute(f"GRANT {WRITER} TO CURRENT_USER")
    op.execute(f'GRANT USAGE ON SCHEMA "{SCHEMA}" TO {WRITER}')
    op.execute(
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{SCHEMA}" TO {WRITER}'
    )
    op.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{SCHEMA}" TO {WRITER}')
    op.execute(f'REVOKE ALL ON "{SCHEMA}".ledger FROM PUBLIC')
    op.execute(f'REVOKE UPDATE, DELETE, TRUNCATE ON "{SCHEMA}".ledger FROM {WRITER}')
    op.execute(f'GRANT SELECT, INSERT ON "{SCHEMA}".ledger TO {WRITER}')


def _first_timers() -> None:
    """The periodic jobs reschedule themselves when they fire; these are their first runs."""
    for kind in ("ledger.checkpoint", "retention.sweep"):
        op.execute(
            f"""
            INSERT INTO "{SCHEMA}".timers (id, kind, aggregate_id, due_at)
            VALUES (gen_random_uuid(), '{kind}', '{kind}', now())
            """
        )
