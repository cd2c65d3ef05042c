"""Messages and their deliveries, the dead-letter store, recipients' preferences, and what the
alerts know of referrals, children, persons and protection statuses (issue 8).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=60), nullable=False),
        sa.Column("source_event_id", sa.UUID(), nullable=True),
        sa.Column("recipient_organisation", sa.String(length=20), nullable=False),
        sa.Column("recipient_agency", sa.String(length=30), nullable=False),
        sa.Column("recipient_role", sa.String(length=40), nullable=False),
        sa.Column("recipient_name", sa.String(length=200), nullable=True),
        sa.Column("sender_organisation", sa.String(length=20), nullable=False),
        sa.Column("sender_agency", sa.String(length=30), nullable=False),
        sa.Column("referral_id", sa.UUID(), nullable=True),
        sa.Column("contact_id", sa.UUID(), nullable=True),
        sa.Column("reference", sa.String(length=60), nullable=True),
        sa.Column("subject_ids", postgresql.ARRAY(sa.UUID()), nullable=False),
        sa.Column("person_id", sa.UUID(), nullable=True),
        sa.Column("disclosure", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("decision_id", sa.UUID(), nullable=True),
        sa.Column("decision", sa.String(length=20), nullable=True),
        sa.Column("decision_reasons", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("lawful_basis", sa.String(length=40), nullable=True),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("deliver_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledge_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("correlation_id", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_messages_dedupe_key")),
        schema="notifications",
    )
    op.create_index(
        op.f("ix_messages_contact_id"),
        "messages",
        ["contact_id"],
        unique=False,
        schema="notifications",
    )
    op.create_index(
        op.f("ix_messages_person_id"),
        "messages",
        ["person_id"],
        unique=False,
        schema="notifications",
    )
    op.create_index(
        "ix_messages_recipient",
        "messages",
        ["recipient_organisation", "created_at"],
        unique=False,
        schema="notifications",
    )
    op.create_index(
        "ix_messages_referral", "messages", ["referral_id"], unique=False, schema="notifications"
    )
    op.create_index(
        "ix_messages_sender",
        "messages",
        ["sender_organisation", "created_at"],
        unique=False,
        schema="notifications",
    )
    op.create_index(
        "ix_messages_status_due",
        "messages",
        ["status", "next_attempt_at"],
        unique=False,
        schema="notifications",
    )
    op.create_index(
        "ix_messages_subject_ids",
        "messages",
        ["subject_ids"],
        unique=False,
        schema="notifications",
        postgresql_using="gin",
    )
    op.create_table(
        "pending_alerts",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("contact_id", sa.UUID(), nullable=False),
        sa.Column("subject_id", sa.UUID(), nullable=False),
        sa.Column("source_event_id", sa.UUID(), nullable=False),
        sa.Column("facts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deliver_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.String(length=200), nullable=True),
        sa.Column("correlation_id", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_alerts")),
        sa.UniqueConstraint(
            "contact_id", "subject_id", name=op.f("uq_pending_alerts_contact_id_subject_id")
        ),
        schema="notifications",
    )
    op.create_index(
        "ix_pending_alerts_subject",
        "pending_alerts",
        ["subject_id", "status"],
        unique=False,
        schema="notifications",
    )
    op.create_table(
        "preferences",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("organisation_code", sa.String(length=20), nullable=False),
        sa.Column("role", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=60), nullable=False),
        sa.Column("channels", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preferences")),
        sa.UniqueConstraint(
            "organisation_code",
            "role",
            "kind",
            name=op.f("uq_preferences_organisation_code_role_kind"),
        ),
        schema="notifications",
    )
    op.create_table(
        "protection_statuses",
        sa.Column("contact_id", sa.UUID(), nullable=False),
        sa.Column("subject_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("change", sa.String(length=10), nullable=False),
        sa.Column("effective_date", sa.Date(), nullable=False),
        sa.Column("detail", sa.String(length=60), nullable=False),
        sa.Column("local_authority_code", sa.String(length=3), nullable=False),
        sa.Column("organisation_code", sa.String(length=20), nullable=False),
        sa.Column("allocated_worker", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "subject_id", name=op.f("pk_protection_statuses")),
        schema="notifications",
    )
    op.create_table(
        "referral_facts",
        sa.Column("referral_id", sa.UUID(), nullable=False),
        sa.Column("reference", sa.String(length=20), nullable=False),
        sa.Column("referrer_organisation", sa.String(length=20), nullable=False),
        sa.Column("referrer_agency", sa.String(length=30), nullable=False),
        sa.Column("referrer_name", sa.String(length=200), nullable=True),
        sa.Column("raised_via", sa.String(length=20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject_ids", postgresql.ARRAY(sa.UUID()), nullable=False),
        sa.Column("held_by", sa.String(length=200), nullable=True),
        sa.Column("decision", sa.String(length=60), nullable=True),
        sa.PrimaryKeyConstraint("referral_id", name=op.f("pk_referral_facts")),
        schema="notifications",
    )
    op.create_table(
        "subjects",
        sa.Column("subject_id", sa.UUID(), nullable=False),
        sa.Column("person_id", sa.UUID(), nullable=True),
        sa.Column("record_id", sa.UUID(), nullable=True),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_type", sa.String(length=60), nullable=True),
        sa.Column("source_id", sa.UUID(), nullable=True),
        sa.Column("organisation_code", sa.String(length=20), nullable=True),
        sa.Column("agency", sa.String(length=30), nullable=True),
        sa.Column("school_urn", sa.String(length=20), nullable=True),
        sa.Column("school_status", sa.String(length=30), nullable=True),
        sa.Column("upn", sa.String(length=20), nullable=True),
        sa.Column("nhs_number", sa.String(length=10), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subject_id", name=op.f("pk_subjects")),
        schema="notifications",
    )
    op.create_index(
        op.f("ix_subjects_nhs_number"),
        "subjects",
        ["nhs_number"],
        unique=False,
        schema="notifications",
    )
    op.create_index(
        op.f("ix_subjects_person_id"),
        "subjects",
        ["person_id"],
        unique=False,
        schema="notifications",
    )
    op.create_index(
        op.f("ix_subjects_record_id"),
        "subjects",
        ["record_id"],
        unique=False,
        schema="notifications",
    )
    op.create_index("ix_subjects_upn", "subjects", ["upn"], unique=False, schema="notifications")
    op.create_table(
        "deliveries",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column("endpoint_id", sa.String(length=80), nullable=True),
        sa.Column("webhook_id", sa.String(length=80), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["notifications.messages.id"],
            name=op.f("fk_deliveries_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "message_id",
            "channel",
            "address",
            name=op.f("uq_deliveries_message_id_channel_address"),
        ),
        schema="notifications",
    )
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["next_attempt_at"],
        unique=False,
        schema="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        op.f("ix_deliveries_message_id"),
        "deliveries",
        ["message_id"],
        unique=False,
        schema="notifications",
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("delivery_id", sa.UUID(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resent_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["notifications.deliveries.id"],
            name=op.f("fk_dead_letters_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        schema="notifications",
    )
    op.create_index(
        op.f("ix_dead_letters_delivery_id"),
        "dead_letters",
        ["delivery_id"],
        unique=False,
        schema="notifications",
    )
    op.create_index(
        op.f("ix_dead_letters_message_id"),
        "dead_letters",
        ["message_id"],
        unique=False,
        schema="notifications",
    )
    op.create_index(
        "ix_dead_letters_open",
        "dead_letters",
        ["failed_at"],
        unique=False,
        schema="notifications",
        postgresql_where=sa.text("resent_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("dead_letters", schema="notifications")
    op.drop_table("deliveries", schema="notifications")
    op.drop_table("subjects", schema="notifications")
    op.drop_table("referral_facts", schema="notifications")
    op.drop_table("protection_statuses", schema="notifications")
    op.drop_table("preferences", schema="notifications")
    op.drop_table("pending_alerts", schema="notifications")
    op.drop_table("messages", schema="notifications")
