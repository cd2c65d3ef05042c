"""Events into chronology rows. No commit here: the consumer's message scope owns the transaction.

Every statement is written for one schema (``timeline`` when live, ``timeline_rebuild`` while
``threadline timeline rebuild`` replays the topics), and every write is idempotent and
independent of the order in which *different* topics deliver: entries are keyed by the event
and the subject, a subject's person is the one named by the latest linking event, a household is
its latest picture. So the live model and a rebuild end in the same rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.consent.events import ConsentWithdrawn, RetentionExpired
from services.linking.events import HouseholdUpdated, PersonsMerged, PersonsUnmerged, SubjectLinked
from services.referrals.contacts.events import (
    ChildProtectionPlanChanged,
    DomesticAbuseIncidentRecorded,
    LookedAfterStatusChanged,
    SchoolAttendanceConcernRecorded,
    UnscheduledCareAttendanceRecorded,
)
from services.referrals.events import (
    DeadlineMissed,
    ReferralAcknowledged,
    ReferralAckOverdue,
    ReferralAssessmentCompleted,
    ReferralAssessmentOverdue,
    ReferralDecided,
    ReferralDecisionOverdue,
    ReferralFeedbackOverdue,
    ReferralFeedbackSent,
    ReferralPhoneFollowUpDue,
    ReferralRated,
    ReferralReceived,
    ReferralReopened,
    ReportedChild,
)
from services.timeline import wording
from services.timeline.models import SCHEMA
from services.timeline.rows import EntryRow, SubjectRow
from shared.events.envelope import Envelope


class Statements:
    """The projection's SQL for one schema."""

    def __init__(self, schema: str) -> None:
        s = schema
        self.schema = schema
        self.subject = text(
            f"INSERT INTO {s}.subjects (subject_id, role, given_names, family_name, date_of_birth,"
            " unborn_expected_date, sex, school_urn, seen_at) VALUES (:subject_id, :role,"
            " :given_names, :family_name, :date_of_birth, :unborn_expected_date, :sex,"
            " :school_urn, :seen_at) ON CONFLICT (subject_id) DO NOTHING"
        )
        self.entry = text(
            f"INSERT INTO {s}.entries (entry_id, event_id, subject_id, occurred_at, kind, title,"
            " summary, agency, organisation_code, who, contact, source_type, source_id,"
            " source_reference, facts) VALUES (:entry_id, :event_id, :subject_id, :occurred_at,"
            " :kind, :title, :summary, :agency, :organisation_code, :who, :contact,"
            " :source_type, :source_id, :source_reference, CAST(:facts AS jsonb))"
            " ON CONFLICT (entry_id) DO NOTHING"
        )
        self.referral = text(
            f"INSERT INTO {s}.referrals (referral_id, reference, child_subject_ids, rag, decision,"
            " decided_at, deadlines) VALUES (:referral_id, :reference, :children, NULL, NULL,"
            " NULL, CAST(:deadlines AS jsonb)) ON CONFLICT (referral_id) DO NOTHING"
        )
        self.referral_children = text(
            f"SELECT child_subject_ids, reference FROM {s}.referrals WHERE referral_id = :id"
        )
        self.referral_update = text(
            f"UPDATE {s}.referrals AS r SET rag = COALESCE(:rag, r.rag),"
            " decision = CASE WHEN :reopened THEN NULL ELSE COALESCE(:decision, r.decision) END,"
            " decided_at = CASE WHEN :reopened THEN NULL"
            " ELSE COALESCE(:decided_at, r.decided_at) END,"
            # one level deep: what an event says of a deadline joins what is known of it
            " deadlines = r.deadlines || (SELECT COALESCE(jsonb_object_agg(d.key,"
            " COALESCE(r.deadlines -> d.key, '{}'::jsonb) || d.value), '{}'::jsonb)"
            " FROM jsonb_each(CAST(:deadlines AS jsonb)) AS d) WHERE r.referral_id = :id"
        )
        # The later linking event wins; a merge may name a record before its subject.linked.
        self.link = text(
            f"INSERT INTO {s}.records (record_id, subject_id, person_id, as_of) VALUES"
            " (:record_id, :subject_id, :person_id, :as_of) ON CONFLICT (record_id) DO UPDATE SET"
            f" subject_id = COALESCE({s}.records.subject_id, excluded.subject_id),"
            " person_id = CASE WHEN (excluded.as_of, excluded.person_id::text)"
            f" >= ({s}.records.as_of, {s}.records.person_id::text) THEN excluded.person_id"
            f" ELSE {s}.records.person_id END,"
            f" as_of = GREATEST({s}.records.as_of, excluded.as_of)"
        )
        self.move = text(
            f"INSERT INTO {s}.records (record_id, subject_id, person_id, as_of)"
            " SELECT r, NULL, :person_id, :as_of"
            " FROM unnest(CAST(:record_ids AS uuid[])) AS r"
            " ON CONFLICT (record_id) DO UPDATE SET"
            " person_id = CASE WHEN (excluded.as_of, excluded.person_id::text)"
            f" >= ({s}.records.as_of, {s}.records.person_id::text) THEN excluded.person_id"
            f" ELSE {s}.records.person_id END,"
            f" as_of = GREATEST({s}.records.as_of, excluded.as_of)"
        )
        self.redirect = text(
            f"INSERT INTO {s}.redirects (merged_person_id, survivor_person_id, merge_id, active,"
            " as_of) VALUES (:merged, :survivor, :merge_id, :active, :as_of)"
            " ON CONFLICT (merged_person_id) DO UPDATE SET"
            " survivor_person_id = excluded.survivor_person_id, merge_id = excluded.merge_id,"
            f" active = excluded.active, as_of = excluded.as_of WHERE {s}.redirects.as_of"
            " <= excluded.as_of"
        )
        self.household = text(
            f"INSERT INTO {s}.households (household_id, relationships, updated_at) VALUES"
            " (:id, CAST(:relationships AS jsonb), :updated_at) ON CONFLICT (household_id) DO"
            " UPDATE SET relationships = excluded.relationships, updated_at ="
            " excluded.updated_at"
        )
        self.household_clear = text(f"DELETE FROM {s}.household_members WHERE household_id = :id")
        self.household_member = text(
            f"INSERT INTO {s}.household_members (household_id, person_id, role) VALUES"
            " (:household_id, :person_id, :role) ON CONFLICT DO NOTHING"
        )
        self.expire_entries = text(
            f"DELETE FROM {s}.entries WHERE source_id = ANY(CAST(:ids AS uuid[]))"
        )
        self.expire_mark = text(
            f"INSERT INTO {s}.expired_sources (source_id, expired_at) SELECT i, :at"
            " FROM unnest(CAST(:ids AS uuid[])) AS i ON CONFLICT DO NOTHING"
        )
        self.expired = text(f"SELECT 1 FROM {s}.expired_sources WHERE source_id = :id")
        self.expire_referrals = text(
            f"DELETE FROM {s}.referrals WHERE referral_id = ANY(CAST(:ids AS uuid[]))"
        )


@cache
def statements(schema: str = SCHEMA) -> Statements:
    return Statements(schema)


class Projector:
    """Applies one event to the read model of one schema."""

    def __init__(self, schema: str = SCHEMA) -> None:
        self.sql = statements(schema)

    # -- writing ---------------------------------------------------------------------------

    async def _subjects(self, session: AsyncSession, rows: Sequence[SubjectRow]) -> None:
        if rows:
            await session.execute(self.sql.subject, [row.params() for row in rows])

    async def _entries(
        self, session: AsyncSession, event_id: uuid.UUID, rows: Sequence[EntryRow]
    ) -> None:
        if rows:
            await session.execute(self.sql.entry, [row.params(event_id) for row in rows])

    # -- referrals -------------------------------------------------------------------------

    async def referral_received(
        self, session: AsyncSession, event: ReferralReceived, envelope: Envelope
    ) -> None:
        subjects = [child_subject(child, event.received_at) for child in event.children]
        subjects += [
            SubjectRow(
                subject_id=member.subject_id,
                role="adult",
                given_names=member.given_names,
                family_name=member.family_name,
                date_of_birth=member.date_of_birth,
                sex=member.sex,
                seen_at=event.received_at,
            )
            for member in event.family_members
        ]
        await self._subjects(session, subjects)
        if (await session.execute(self.sql.expired, {"id": event.referral_id})).first():
            return  # past its retention period (a replay may read the expiry first)
        await session.execute(
            self.sql.referral,
            {
                "referral_id": event.referral_id,
                "reference": event.reference,
                "children": [child.subject_id for child in event.children],
                "deadlines": json.dumps(
                    {
                        "acknowledgement": {
                            "due_at": event.acknowledgement_due_at.isoformat(),
                            "met_at": None,
                            "met": None,
                        }
                    }
                ),
            },
        )
        await self._entries(session, envelope.id, wording.referral_entries(event))

    async def _lifecycle(
        self,
        session: AsyncSession,
        envelope: Envelope,
        referral_id: uuid.UUID,
        entry: wording.Lifecycle,
        *,
        rag: str | None = None,
        decision: str | None = None,
        decided_at: datetime | None = None,
        reopened: bool = False,
        deadlines: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        found = (
            await session.execute(self.sql.referral_children, {"id": referral_id})
        ).one_or_none()
        if found is None:
            return  # its referral.received expired (retention) or never reached this model
        children, reference = found
        await session.execute(
            self.sql.referral_update,
            {
                "id": referral_id,
                "rag": rag,
                "decision": decision,
                "decided_at": decided_at,
                "reopened": reopened,
                "deadlines": json.dumps(deadlines or {}, default=str),
            },
        )
        await self._entries(
            session,
            envelope.id,
            [entry.row(child, referral_id, reference) for child in children],
        )

    async def referral_acknowledged(
        self, session: AsyncSession, event: ReferralAcknowledged, envelope: Envelope
    ) -> None:
        await self._lifecycle(
            session,
            envelope,
            event.referral_id,
            wording.acknowledged(event),
            deadlines={"acknowledgement": _met(None, event.acknowledged_at, event.within_deadline)},
        )

    async def referral_rated(
        self, session: AsyncSession, event: ReferralRated, envelope: Envelope
    ) -> None:
        await self._lifecycle(
            session, envelope, event.referral_id, wording.rated(event), rag=event.rag
        )

    async def referral_decided(
        self, session: AsyncSession, event: ReferralDecided, envelope: Envelope
    ) -> None:
        deadlines = {"decision": _met(None, event.decided_at, event.within_deadline)}
        if event.assessment_due_at is not None:
            deadlines["assessment"] = _met(event.assessment_due_at, None, None)
        await self._lifecycle(
            session,
            envelope,
            event.referral_id,
            wording.decided(event),
            decision=event.decision,
            decided_at=event.decided_at,
            deadlines=deadlines,
        )

    async def feedback_sent(
        self, session: AsyncSession, event: ReferralFeedbackSent, envelope: Envelope
    ) -> None:
        await self._lifecycle(
            session,
            envelope,
            event.referral_id,
            wording.feedback(event),
            deadlines={"feedback": _met(None, event.sent_at, event.within_deadline)},
        )

    async def assessment_completed(
        self, session: AsyncSession, event: ReferralAssessmentCompleted, envelope: Envelope
    ) -> None:
        await self._lifecycle(
            session,
            envelope,
            event.referral_id,
            wording.assessment_completed(event),
            deadlines={"assessment": _met(None, event.completed_at, event.within_deadline)},
        )

    async def reopened(
        self, session: AsyncSession, event: ReferralReopened, envelope: Envelope
    ) -> None:
        await self._lifecycle(
            session,
            envelope,
            event.referral_id,
            wording.reopened(event),
            reopened=True,
            # new clocks: what was met or missed before belongs to the first decision
            deadlines={
                name: {"due_at": due.isoformat(), "met_at": None, "met": None, "missed_at": None}
                for name, due in (
                    ("decision", event.decision_due_at),
                    ("feedback", event.feedback_due_at),
                )
            },
        )

    async def deadline_missed(
        self, session: AsyncSession, event: DeadlineMissed | ReferralAckOverdue, envelope: Envelope
    ) -> None:
        name, entry = wording.missed(event)
        due_at = getattr(event, "due_at", None) or getattr(event, "acknowledgement_due_at", None)
        await self._lifecycle(
            session,
            envelope,
            event.referral_id,
            entry,
            deadlines={
                name: {**_met(due_at, None, False), "missed_at": event.detected_at.isoformat()}
            },
        )

    # -- contacts --------------------------------------------------------------------------

    async def contact(
        self,
        session: AsyncSession,
        event: DomesticAbuseIncidentRecorded
        | UnscheduledCareAttendanceRecorded
        | SchoolAttendanceConcernRecorded
        | ChildProtectionPlanChanged
        | LookedAfterStatusChanged,
        envelope: Envelope,
    ) -> None:
        subjects = [child_subject(child, event.received_at) for child in event.subjects]
        if isinstance(event, DomesticAbuseIncidentRecorded):
            subjects += [
                SubjectRow(
                    subject_id=adult_id,
                    role="adult",
                    given_names=adult.given_names,
                    family_name=adult.family_name,
                    date_of_birth=adult.date_of_birth,
                    seen_at=event.received_at,
                )
                for adult in event.adults
                if (adult_id := adult.subject_id) is not None
            ]
        await self._subjects(session, subjects)
        await self._entries(session, envelope.id, wording.contact_entries(event))

    # -- consent ---------------------------------------------------------------------------

    async def consent_withdrawn(
        self, session: AsyncSession, event: ConsentWithdrawn, envelope: Envelope
    ) -> None:
        await self._entries(session, envelope.id, [wording.consent_withdrawn(event)])

    async def retention_expired(
        self, session: AsyncSession, event: RetentionExpired, envelope: Envelope
    ) -> None:
        """Past their retention period, a referral's entries leave the chronology too."""
        if event.referral_ids:
            ids = list(event.referral_ids)
            await session.execute(self.sql.expire_mark, {"ids": ids, "at": event.expired_at})
            await session.execute(self.sql.expire_entries, {"ids": ids})
            await session.execute(self.sql.expire_referrals, {"ids": ids})

    # -- linking ---------------------------------------------------------------------------

    async def subject_linked(
        self, session: AsyncSession, event: SubjectLinked, envelope: Envelope
    ) -> None:
        await session.execute(
            self.sql.link,
            {
                "record_id": event.record_id,
                "subject_id": event.subject_id,
                "person_id": event.person_id,
                "as_of": event.linked_at,
            },
        )

    async def persons_merged(
        self, session: AsyncSession, event: PersonsMerged, envelope: Envelope
    ) -> None:
        await self._move(session, event.record_ids, event.survivor_person_id, event.merged_at)
        await session.execute(
            self.sql.redirect,
            {
                "merged": event.merged_person_id,
                "survivor": event.survivor_person_id,
                "merge_id": event.merge_id,
                "active": True,
                "as_of": event.merged_at,
            },
        )

    async def persons_unmerged(
        self, session: AsyncSession, event: PersonsUnmerged, envelope: Envelope
    ) -> None:
        await self._move(session, event.record_ids, event.restored_person_id, event.unmerged_at)
        await session.execute(
            self.sql.redirect,
            {
                "merged": event.restored_person_id,
                "survivor": event.survivor_person_id,
                "merge_id": event.merge_id,
                "active": False,
                "as_of": event.unmerged_at,
            },
        )

    async def _move(
        self,
        session: AsyncSession,
        record_ids: Iterable[uuid.UUID],
        person_id: uuid.UUID,
        at: datetime,
    ) -> None:
        ids = list(record_ids)
        if ids:
            await session.execute(
                self.sql.move, {"record_ids": ids, "person_id": person_id, "as_of": at}
            )

    async def household_updated(
        self, session: AsyncSession, event: HouseholdUpdated, envelope: Envelope
    ) -> None:
        relationships = [r.model_dump(mode="json") for r in event.relationships]
        # The latest picture wins. "Latest" is the order of the household's partition (linking
        # emits them in commit order, keyed by household), not ``updated_at``: that is the time
        # of the referral or contact that caused the change, and linking may apply those out of
        # order (they arrive on different partitions).
        await session.execute(
            self.sql.household,
            {
                "id": event.household_id,
                "relationships": json.dumps(relationships, sort_keys=True),
                "updated_at": event.updated_at,
            },
        )
        await session.execute(self.sql.household_clear, {"id": event.household_id})
        if event.members:
            await session.execute(
                self.sql.household_member,
                [
                    {"household_id": event.household_id, "person_id": m.person_id, "role": m.role}
                    for m in event.members
                ],
            )


def _met(due_at: datetime | None, met_at: datetime | None, met: bool | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if due_at is not None:
        out["due_at"] = due_at.isoformat()
    if met_at is not None:
        out["met_at"] = met_at.isoformat()
    if met is not None:
        out["met"] = met
    return out


def child_subject(child: ReportedChild, seen_at: datetime) -> SubjectRow:
    return SubjectRow(
        subject_id=child.subject_id,
        role="child",
        given_names=child.given_names,
        family_name=child.family_name,
        date_of_birth=child.date_of_birth,
        unborn_expected_date=child.unborn_expected_date,
        sex=child.sex,
        school_urn=child.school_urn,
        seen_at=seen_at,
    )


# The deadline each missed-deadline event is about.
MISSED = {
    ReferralAckOverdue: "acknowledgement",
    ReferralDecisionOverdue: "decision",
    ReferralFeedbackOverdue: "feedback",
    ReferralAssessmentOverdue: "assessment",
    ReferralPhoneFollowUpDue: "written_follow_up",
}
