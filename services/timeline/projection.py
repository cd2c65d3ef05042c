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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
        # The referral's state after a batch (its row was read in the same transaction).
        self.referral = text(
            f"INSERT INTO {s}.referrals (referral_id, reference, child_subject_ids, rag, decision,"
            " decided_at, deadlines) VALUES (:referral_id, :reference, :children, :rag,"
            " :decision, :decided_at, CAST(:deadlines AS jsonb)) ON CONFLICT (referral_id) DO"
            " UPDATE SET rag = excluded.rag, decision = excluded.decision, decided_at ="
            " excluded.decided_at, deadlines = excluded.deadlines"
        )
        self.referral_states = text(
            f"SELECT referral_id, reference, child_subject_ids, rag, decision, decided_at,"
            f" deadlines FROM {s}.referrals WHERE referral_id = ANY(CAST(:ids AS uuid[]))"
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
        self.household_clear = text(
            f"DELETE FROM {s}.household_members WHERE household_id = ANY(CAST(:ids AS uuid[]))"
        )
        self.household_member = text(
            f"INSERT INTO {s}.household_members (household_id, person_id, role) VALUES"
            " (:household_id, :person_id, :role) ON CONFLICT DO NOTHING"
        )
        self.expire_entries = text(
            f"DELETE FROM {s}.entries WHERE source_id = ANY(CAST(:ids AS uuid[]))"
        )
        self.expire_mark = text(
            f"INSERT INTO {s}.expired_sources (source_id, expired_at) VALUES (:id, :at)"
            " ON CONFLICT DO NOTHING"
        )
        self.expired = text(
            f"SELECT source_id FROM {s}.expired_sources WHERE source_id = ANY(CAST(:ids AS uuid[]))"
        )
        self.expire_referrals = text(
            f"DELETE FROM {s}.referrals WHERE referral_id = ANY(CAST(:ids AS uuid[]))"
        )


@cache
def statements(schema: str = SCHEMA) -> Statements:
    return Statements(schema)


@dataclass
class _Step:
    """One lifecycle event of a referral, applied in order when the batch is written."""

    referral_id: uuid.UUID
    event_id: uuid.UUID
    entry: wording.Lifecycle
    rag: str | None = None
    decision: str | None = None
    decided_at: datetime | None = None
    reopened: bool = False
    deadlines: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Batch:
    """What a batch of events does to each table, reduced so that each table is written once.

    The reductions are the per-row rules the statements apply against what the table holds, so
    a batch has the effect of its events one by one, in order (the rebuild test checks it).
    """

    subjects: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)  # first wins
    entries: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)  # first wins
    new_referrals: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)  # first wins
    steps: list[_Step] = field(default_factory=list)  # in order
    expired: dict[uuid.UUID, datetime] = field(default_factory=dict)
    records: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)  # reduced
    redirects: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)  # reduced
    households: dict[uuid.UUID, HouseholdUpdated] = field(default_factory=dict)  # last wins

    def add_subjects(self, rows: Sequence[SubjectRow]) -> None:
        for row in rows:
            self.subjects.setdefault(row.subject_id, row.params())

    def add_entries(self, event_id: uuid.UUID, rows: Sequence[EntryRow]) -> None:
        for row in rows:
            params = row.params(event_id)
            self.entries.setdefault(params["entry_id"], params)

    def record(
        self, record_id: uuid.UUID, subject_id: uuid.UUID | None, person: uuid.UUID, at: datetime
    ) -> None:
        """The records rule: the first subject named stays; the person of the latest event
        (ties: the greater person id) wins."""
        held = self.records.get(record_id)
        if held is None:
            self.records[record_id] = {
                "record_id": record_id,
                "subject_id": subject_id,
                "person_id": person,
                "as_of": at,
            }
            return
        if held["subject_id"] is None:
            held["subject_id"] = subject_id
        if (at, str(person)) >= (held["as_of"], str(held["person_id"])):
            held["person_id"] = person
        held["as_of"] = max(held["as_of"], at)

    def redirect(self, params: dict[str, Any]) -> None:
        held = self.redirects.get(params["merged"])
        if held is None or held["as_of"] <= params["as_of"]:
            self.redirects[params["merged"]] = params


class Projector:
    """Applies events to the read model of one schema, a batch at a time."""

    def __init__(self, schema: str = SCHEMA) -> None:
        self.sql = statements(schema)
        self._collect: dict[type, Callable[[_Batch, Any, Envelope], None]] = {
            ReferralReceived: self._referral_received,
            ReferralAcknowledged: self._acknowledged,
            ReferralRated: self._rated,
            ReferralDecided: self._decided,
            ReferralFeedbackSent: self._feedback,
            ReferralAssessmentCompleted: self._assessment_completed,
            ReferralReopened: self._reopened,
            ReferralAckOverdue: self._missed,
            ReferralDecisionOverdue: self._missed,
            ReferralFeedbackOverdue: self._missed,
            ReferralAssessmentOverdue: self._missed,
            ReferralPhoneFollowUpDue: self._missed,
            DomesticAbuseIncidentRecorded: self._contact,
            UnscheduledCareAttendanceRecorded: self._contact,
            SchoolAttendanceConcernRecorded: self._contact,
            ChildProtectionPlanChanged: self._contact,
            LookedAfterStatusChanged: self._contact,
            ConsentWithdrawn: self._consent_withdrawn,
            RetentionExpired: self._retention_expired,
            SubjectLinked: self._subject_linked,
            PersonsMerged: self._persons_merged,
            PersonsUnmerged: self._persons_unmerged,
            HouseholdUpdated: self._household_updated,
        }

    @property
    def event_types(self) -> list[type]:
        return list(self._collect)

    async def handle(self, session: AsyncSession, event: Any, envelope: Envelope) -> None:
        """One event (the consumer's single-record path): a batch of one."""
        await self.apply_batch(session, [(event, envelope)])

    async def apply_batch(self, session: AsyncSession, items: list[tuple[Any, Envelope]]) -> None:
        batch = _Batch()
        for event, envelope in items:
            self._collect[type(event)](batch, event, envelope)
        await self._write(session, batch)

    # -- collecting ------------------------------------------------------------------------

    def _referral_received(
        self, batch: _Batch, event: ReferralReceived, envelope: Envelope
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
        batch.add_subjects(subjects)
        batch.new_referrals.setdefault(
            event.referral_id,
            {
                "referral_id": event.referral_id,
                "reference": event.reference,
                "children": [child.subject_id for child in event.children],
                "rag": None,
                "decision": None,
                "decided_at": None,
                "deadlines": {
                    "acknowledgement": {
                        "due_at": event.acknowledgement_due_at.isoformat(),
                        "met_at": None,
                        "met": None,
                    }
                },
            },
        )
        batch.add_entries(envelope.id, wording.referral_entries(event))

    def _acknowledged(self, batch: _Batch, event: ReferralAcknowledged, envelope: Envelope) -> None:
        batch.steps.append(
            _Step(
                event.referral_id,
                envelope.id,
                wording.acknowledged(event),
                deadlines={
                    "acknowledgement": _met(None, event.acknowledged_at, event.within_deadline)
                },
            )
        )

    def _rated(self, batch: _Batch, event: ReferralRated, envelope: Envelope) -> None:
        batch.steps.append(
            _Step(event.referral_id, envelope.id, wording.rated(event), rag=event.rag)
        )

    def _decided(self, batch: _Batch, event: ReferralDecided, envelope: Envelope) -> None:
        deadlines = {"decision": _met(None, event.decided_at, event.within_deadline)}
        if event.assessment_due_at is not None:
            deadlines["assessment"] = _met(event.assessment_due_at, None, None)
        batch.steps.append(
            _Step(
                event.referral_id,
                envelope.id,
                wording.decided(event),
                decision=event.decision,
                decided_at=event.decided_at,
                deadlines=deadlines,
            )
        )

    def _feedback(self, batch: _Batch, event: ReferralFeedbackSent, envelope: Envelope) -> None:
        batch.steps.append(
            _Step(
                event.referral_id,
                envelope.id,
                wording.feedback(event),
                deadlines={"feedback": _met(None, event.sent_at, event.within_deadline)},
            )
        )

    def _assessment_completed(
        self, batch: _Batch, event: ReferralAssessmentCompleted, envelope: Envelope
    ) -> None:
        batch.steps.append(
            _Step(
                event.referral_id,
                envelope.id,
                wording.assessment_completed(event),
                deadlines={"assessment": _met(None, event.completed_at, event.within_deadline)},
            )
        )

    def _reopened(self, batch: _Batch, event: ReferralReopened, envelope: Envelope) -> None:
        # new clocks: what was met or missed before belongs to the first decision
        batch.steps.append(
            _Step(
                event.referral_id,
                envelope.id,
                wording.reopened(event),
                reopened=True,
                deadlines={
                    name: {
                        "due_at": due.isoformat(),
                        "met_at": None,
                        "met": None,
                        "missed_at": None,
                    }
                    for name, due in (
                        ("decision", event.decision_due_at),
                        ("feedback", event.feedback_due_at),
                    )
                },
            )
        )

    def _missed(
        self, batch: _Batch, event: DeadlineMissed | ReferralAckOverdue, envelope: Envelope
    ) -> None:
        name, entry = wording.missed(event)
        due_at = getattr(event, "due_at", None) or getattr(event, "acknowledgement_due_at", None)
        batch.steps.append(
            _Step(
                event.referral_id,
                envelope.id,
                entry,
                deadlines={
                    name: {**_met(due_at, None, False), "missed_at": event.detected_at.isoformat()}
                },
            )
        )

    def _contact(
        self,
        batch: _Batch,
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
                    subject_id=adult.subject_id,
                    role="adult",
                    given_names=adult.given_names,
                    family_name=adult.family_name,
                    date_of_birth=adult.date_of_birth,
                    seen_at=event.received_at,
                )
                for adult in event.adults
                if adult.subject_id is not None
            ]
        batch.add_subjects(subjects)
        batch.add_entries(envelope.id, wording.contact_entries(event))

    def _consent_withdrawn(
        self, batch: _Batch, event: ConsentWithdrawn, envelope: Envelope
    ) -> None:
        batch.add_entries(envelope.id, [wording.consent_withdrawn(event)])

    def _retention_expired(
        self, batch: _Batch, event: RetentionExpired, envelope: Envelope
    ) -> None:
        """Past their retention period, a referral's entries leave the chronology too."""
        for referral_id in event.referral_ids:
            batch.expired.setdefault(referral_id, event.expired_at)

    def _subject_linked(self, batch: _Batch, event: SubjectLinked, envelope: Envelope) -> None:
        batch.record(event.record_id, event.subject_id, event.person_id, event.linked_at)

    def _persons_merged(self, batch: _Batch, event: PersonsMerged, envelope: Envelope) -> None:
        for record_id in event.record_ids:
            batch.record(record_id, None, event.survivor_person_id, event.merged_at)
        batch.redirect(
            {
                "merged": event.merged_person_id,
                "survivor": event.survivor_person_id,
                "merge_id": event.merge_id,
                "active": True,
                "as_of": event.merged_at,
            }
        )

    def _persons_unmerged(self, batch: _Batch, event: PersonsUnmerged, envelope: Envelope) -> None:
        for record_id in event.record_ids:
            batch.record(record_id, None, event.restored_person_id, event.unmerged_at)
        batch.redirect(
            {
                "merged": event.restored_person_id,
                "survivor": event.survivor_person_id,
                "merge_id": event.merge_id,
                "active": False,
                "as_of": event.unmerged_at,
            }
        )

    def _household_updated(
        self, batch: _Batch, event: HouseholdUpdated, envelope: Envelope
    ) -> None:
        # The latest picture wins. "Latest" is the order of the household's partition (linking
        # emits them in commit order, keyed by household), not ``updated_at``: that is the time
        # of the referral or contact that caused the change, and linking may apply those out of
        # order (they arrive on different partitions).
        batch.households.pop(event.household_id, None)
        batch.households[event.household_id] = event

    # -- writing ---------------------------------------------------------------------------

    async def _write(self, session: AsyncSession, batch: _Batch) -> None:
        sql = self.sql
        if batch.subjects:
            await session.execute(sql.subject, list(batch.subjects.values()))
        expired = set(batch.expired)
        referrals = await self._referrals(session, batch, expired)
        entries = [e for e in batch.entries.values() if e["source_id"] not in expired]
        if entries:
            await session.execute(sql.entry, entries)
        if referrals:
            await session.execute(
                sql.referral,
                [
                    {**state, "deadlines": json.dumps(state["deadlines"], default=str)}
                    for state in referrals.values()
                ],
            )
        if batch.expired:
            ids = list(batch.expired)
            await session.execute(
                sql.expire_mark, [{"id": i, "at": at} for i, at in batch.expired.items()]
            )
            await session.execute(sql.expire_entries, {"ids": ids})
            await session.execute(sql.expire_referrals, {"ids": ids})
        if batch.records:
            await session.execute(sql.link, list(batch.records.values()))
        if batch.redirects:
            await session.execute(sql.redirect, list(batch.redirects.values()))
        if batch.households:
            await session.execute(
                sql.household,
                [
                    {
                        "id": h.household_id,
                        "relationships": json.dumps(
                            [r.model_dump(mode="json") for r in h.relationships], sort_keys=True
                        ),
                        "updated_at": h.updated_at,
                    }
                    for h in batch.households.values()
                ],
            )
            await session.execute(sql.household_clear, {"ids": list(batch.households)})
            members = [
                {"household_id": h.household_id, "person_id": m.person_id, "role": m.role}
                for h in batch.households.values()
                for m in h.members
            ]
            if members:
                await session.execute(sql.household_member, members)

    async def _referrals(
        self, session: AsyncSession, batch: _Batch, expired: set[uuid.UUID]
    ) -> dict[uuid.UUID, dict[str, Any]]:
        """Each referral the batch touched, in the state its events leave it; the lifecycle
        entries they add go into ``batch.entries`` (for each child of the referral)."""
        touched = list(dict.fromkeys([*batch.new_referrals, *(s.referral_id for s in batch.steps)]))
        if not touched:
            return {}
        held: dict[uuid.UUID, dict[str, Any]] = {}
        for row in (await session.execute(self.sql.referral_states, {"ids": touched})).all():
            deadlines = row.deadlines
            held[row.referral_id] = {
                "referral_id": row.referral_id,
                "reference": row.reference,
                "children": list(row.child_subject_ids),
                "rag": row.rag,
                "decision": row.decision,
                "decided_at": row.decided_at,
                "deadlines": json.loads(deadlines) if isinstance(deadlines, str) else deadlines,
            }
        expired |= set((await session.execute(self.sql.expired, {"ids": touched})).scalars().all())
        changed: dict[uuid.UUID, dict[str, Any]] = {}
        for referral_id, initial in batch.new_referrals.items():
            if referral_id not in held and referral_id not in expired:
                held[referral_id] = initial  # a duplicate of one held changes nothing
                changed[referral_id] = initial
        for step in batch.steps:
            state = held.get(step.referral_id)
            if state is None or step.referral_id in expired:
                continue  # its referral expired, or never reached this model
            if step.rag is not None:
                state["rag"] = step.rag
            if step.reopened:
                state["decision"], state["decided_at"] = None, None
            else:
                state["decision"] = step.decision or state["decision"]
                state["decided_at"] = step.decided_at or state["decided_at"]
            deadlines = dict(state["deadlines"])
            for name, known in step.deadlines.items():
                deadlines[name] = {**deadlines.get(name, {}), **known}
            state["deadlines"] = deadlines
            changed[step.referral_id] = state
            batch.add_entries(
                step.event_id,
                [
                    step.entry.row(child, step.referral_id, state["reference"])
                    for child in state["children"]
                ],
            )
        return changed


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
