"""The projection on a real PostgreSQL: merges and unmerges re-project exactly, whatever order
the linking topic's partitions deliver in; households are labelled; retention removes a
referral's lines; and the whole model rebuilt from the topics equals the incrementally built one.
Every event travels through the real broker to the running service."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text

from services.consent.events import RetentionExpired
from services.linking.events import (
    HouseholdMember,
    HouseholdUpdated,
    PersonsMerged,
    PersonsUnmerged,
    RelationshipOut,
    SubjectLinked,
)
from services.referrals.contacts.events import UnscheduledCareAttendanceRecorded
from services.referrals.events import (
    ReferralAcknowledged,
    ReferralDecided,
    ReferralRated,
    ReferralReceived,
    ReferralReopened,
    ReportedChild,
)
from services.timeline import reads
from services.timeline.app import create_app as create_timeline
from services.timeline.consumers import registry
from services.timeline.models import READ_MODEL
from services.timeline.projection import Projector
from services.timeline.rebuild import (
    CONSUMER,
    compare,
    prepare_schema,
    rebuild,
    topic_partitions,
)
from shared.context import TraceContext
from shared.db import Database
from shared.events.envelope import envelope_for, to_kafka
from shared.kafka import make_producer
from tests.support.apps import serving, timeline_settings

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def child(name: str, family: str, **extra: Any) -> ReportedChild:
    return ReportedChild(
        subject_id=uuid.uuid4(),
        given_names=name,
        family_name=family,
        date_of_birth=date(2017, 1, 9),
        sex="female",
        **extra,
    )


def referral(subject: ReportedChild, at: datetime) -> ReferralReceived:
    return ReferralReceived(
        referral_id=uuid.uuid4(),
        reference=f"R{uuid.uuid4().hex[:6]}",
        received_at=at,
        referrer_agency="school",
        referrer_organisation_code="100001",
        raised_via="portal",
        concern_categories=["neglect"],
        children=[subject],
        acknowledgement_due_at=at + timedelta(days=1),
    )


def attendance(
    subject: ReportedChild, at: datetime, site: str
) -> UnscheduledCareAttendanceRecorded:
    return UnscheduledCareAttendanceRecorded(
        contact_id=uuid.uuid4(),
        received_at=at,
        contributor_agency="health",
        contributor_organisation_code="RDEMO",
        attended_at=at,
        setting="emergency_department",
        hospital_site_code=site,
        injury=True,
        safeguarding_concern=False,
        subjects=[subject],
    )


def linked(subject: ReportedChild, record: uuid.UUID, person: uuid.UUID, at: datetime) -> Any:
    return SubjectLinked(
        record_id=record,
        subject_id=subject.subject_id,
        person_id=person,
        method="probabilistic",
        match_probability=0.97,
        source_type="referral",
        linked_at=at,
        decided_by="linking",
    )


@pytest.fixture
async def projected(
    database_url: str, bootstrap: str, database: Database
) -> AsyncIterator[Callable[[Any], Awaitable[None]]]:
    """Publish an event to its topic, as its producer would, and wait until the running timeline
    service has applied it (its inbox holds the id)."""
    app = create_timeline(timeline_settings(database_url, bootstrap), configure_logs=False)
    producer = make_producer(bootstrap, client_id="timeline-projection-test")
    await producer.start()
    async with serving(app):

        async def publish(event: Any) -> None:
            envelope = envelope_for(
                event, service="test", trace=TraceContext("timeline-test"), now=T0
            )
            record = to_kafka(envelope)
            await producer.send_and_wait(
                event.topic, record.value, key=record.key, headers=record.headers
            )
            deadline = time.monotonic() + 30
            while True:
                async with database.transaction() as session:
                    done = (
                        await session.execute(
                            text("SELECT 1 FROM timeline.inbox WHERE event_id = :id"),
                            {"id": envelope.id},
                        )
                    ).first()
                if done:
                    return
                assert time.monotonic() < deadline, f"{event.event_type} was not applied"
                await asyncio.sleep(0.1)

        yield publish
    await producer.stop()


async def _chronology(database: Database, person: uuid.UUID, household: bool = False) -> Any:
    async with database.transaction() as session:
        scope = await reads.scope(session, person, include_household=household)
        assert scope is not None
        # The read without merges takes a shorter way to the same answer as the general one.
        assert scope == await reads._scope_with_merges(session, person)
        ids = scope.canonical_ids(household)
        rows = await reads.entry_rows(session, ids, reads.Filters())
        entries = reads.entries_out(rows, scope, household=household)
        # The household read has the database give each event once; the same entries come out.
        once = await reads.entry_rows(session, ids, reads.Filters(), one_per_event=household)
        assert reads.entries_out(once, scope, household=household) == entries
        return scope, entries


async def test_a_merge_shows_both_histories_as_one_and_an_unmerge_separates_them(
    database: Database, projected: Any
) -> None:
    family = f"Merge{uuid.uuid4().hex[:6]}"
    amy, amie = child("Amy", family), child("Amie", family)
    first, second = uuid.uuid4(), uuid.uuid4()  # the two persons linking first made
    record_a, record_b = uuid.uuid4(), uuid.uuid4()
    await projected(referral(amy, T0))
    await projected(attendance(amie, T0 + timedelta(days=40), "RTG01"))
    await projected(linked(amy, record_a, first, T0))
    await projected(linked(amie, record_b, second, T0 + timedelta(days=40)))

    _, own = await _chronology(database, first)
    assert [e["kind"] for e in own] == ["referral"]
    _, other = await _chronology(database, second)
    assert [e["kind"] for e in other] == ["unscheduled_care"]

    merge = uuid.uuid4()
    merged_at = T0 + timedelta(days=41)
    await projected(
        PersonsMerged(
            merge_id=merge,
            survivor_person_id=first,
            merged_person_id=second,
            record_ids=[record_b],
            reason="same child: NHS number found",
            merged_by="mash.worker",
            merged_at=merged_at,
        ),
    )
    _, both = await _chronology(database, first)
    assert [e["kind"] for e in both] == ["referral", "unscheduled_care"]
    assert {e["person_id"] for e in both} == {first}
    # reading the merged id shows the survivor's chronology, and says so
    redirected, through = await _chronology(database, second)
    assert redirected.person.person_id == first and redirected.person.merged_into == first
    assert [e["entry_id"] for e in through] == [e["entry_id"] for e in both]

    # A late, older subject.linked (another partition) does not undo the merge.
    await projected(linked(amie, record_b, second, T0 + timedelta(days=40)))
    _, still = await _chronology(database, first)
    assert len(still) == 2

    await projected(
        PersonsUnmerged(
            merge_id=merge,
            survivor_person_id=first,
            restored_person_id=second,
            record_ids=[record_b],
            reason="twins, not one child",
            unmerged_by="mash.manager",
            unmerged_at=merged_at + timedelta(hours=2),
        ),
    )
    _, apart = await _chronology(database, first)
    assert [e["kind"] for e in apart] == ["referral"]
    restored, again = await _chronology(database, second)
    assert restored.person.merged_into is None
    assert [e["kind"] for e in again] == ["unscheduled_care"]


async def test_household_entries_are_labelled_and_retention_removes_a_referrals_lines(
    database: Database, projected: Any
) -> None:
    family = f"House{uuid.uuid4().hex[:6]}"
    ella, finn = child("Ella", family), child("Finn", family)
    ella_person, finn_person, mum = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    finns = referral(finn, T0)
    await projected(referral(ella, T0 + timedelta(days=3)))
    await projected(finns)
    await projected(linked(ella, uuid.uuid4(), ella_person, T0))
    await projected(linked(finn, uuid.uuid4(), finn_person, T0))
    household = uuid.uuid4()
    picture = HouseholdUpdated(
        household_id=household,
        members=[
            HouseholdMember(person_id=ella_person, role="child"),
            HouseholdMember(person_id=finn_person, role="child"),
            HouseholdMember(person_id=mum, role="adult"),
        ],
        relationships=[
            RelationshipOut(person_id=mum, related_person_id=ella_person, kind="parent"),
            RelationshipOut(person_id=mum, related_person_id=finn_person, kind="parent"),
            RelationshipOut(
                person_id=ella_person, related_person_id=finn_person, kind="sibling", inferred=True
            ),
        ],
        updated_at=T0,
    )
    await projected(picture)

    scope, entries = await _chronology(database, ella_person, household=True)
    assert [(e["whose"].split()[0], e["relationship"]) for e in entries] == [
        ("Finn", "sibling"),
        ("Ella", "this person"),
    ]
    assert {m.relationship for m in scope.members} == {"sibling", "parent"}

    await projected(
        RetentionExpired(
            subject_id=finn.subject_id,
            record_type="referral_narrative",
            referral_ids=[finns.referral_id],
            last_referral_at=T0,
            expired_at=T0 + timedelta(days=3000),
            policy="test",
            ledger_sequence=1,
        ),
    )
    _, after = await _chronology(database, ella_person, household=True)
    assert [e["whose"].split()[0] for e in after] == ["Ella"]


async def test_an_event_naming_two_children_is_shown_once_in_the_household_view(
    database: Database, projected: Any
) -> None:
    family = f"Both{uuid.uuid4().hex[:6]}"
    ella, finn, finn_again = child("Ella", family), child("Finn", family), child("Finn", family)
    ella_person, finn_person = uuid.uuid4(), uuid.uuid4()
    await projected(referral(ella, T0).model_copy(update={"children": [ella, finn]}))
    await projected(referral(finn_again, T0 + timedelta(days=9)))
    await projected(linked(ella, uuid.uuid4(), ella_person, T0))
    await projected(linked(finn, uuid.uuid4(), finn_person, T0))
    await projected(linked(finn_again, uuid.uuid4(), finn_person, T0))
    await projected(
        HouseholdUpdated(
            household_id=uuid.uuid4(),
            members=[
                HouseholdMember(person_id=ella_person, role="child"),
                HouseholdMember(person_id=finn_person, role="child"),
            ],
            relationships=[
                RelationshipOut(
                    person_id=ella_person,
                    related_person_id=finn_person,
                    kind="sibling",
                    inferred=True,
                )
            ],
            updated_at=T0,
        )
    )

    # Finn's view: the joint referral once, naming him first, then his own later one
    _, entries = await _chronology(database, finn_person, household=True)
    assert [(e["whose"].split()[0], len(e["people"])) for e in entries] == [
        ("Finn", 2),
        ("Finn", 1),
    ]
    joint = entries[0]
    assert [p["relationship"] for p in joint["people"]] == ["this person", "sibling"]
    assert joint["person_id"] == finn_person
    # his own chronology holds his entry of the joint referral, not Ella's
    _, own = await _chronology(database, finn_person)
    assert [e["people"][0]["person_id"] for e in own] == [finn_person, finn_person]
    async with database.transaction() as session:
        scope = await reads.scope(session, finn_person, include_household=True)
        assert scope is not None
        once = await reads.entry_rows(
            session, scope.canonical_ids(True), reads.Filters(), one_per_event=True
        )
        assert [len(row["person_ids"]) for row in once] == [2, 1]
        with pytest.raises(ValueError, match="one_per_event"):
            reads.lines_of(once, scope)


async def _caught_up(bootstrap: str) -> bool:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        partitions = await topic_partitions(bootstrap, registry.topics())
        assert partitions
        end = await consumer.end_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(CONSUMER)
        return all(
            end[tp] == 0 or (tp in committed and committed[tp].offset >= end[tp])
            for tp in partitions
        )
    finally:
        await consumer.stop()
        await admin.close()


async def test_the_model_rebuilt_from_the_topics_equals_the_incremental_one(
    database_url: str, bootstrap: str, database: Database
) -> None:
    """Everything the suite has published so far (referrals, contacts, links, households,
    consent) is projected by the live consumer, then replayed into ``timeline_rebuild``."""
    app = create_timeline(timeline_settings(database_url, bootstrap), configure_logs=False)
    async with serving(app):
        deadline = time.monotonic() + 120
        while not await _caught_up(bootstrap):
            assert time.monotonic() < deadline, "the live consumer did not catch up"
            await asyncio.sleep(0.5)
    report = await rebuild(database_url, bootstrap)
    assert report.events_applied > 0
    assert report.rows["entries"] > 0 and report.rows["records"] > 0
    assert report.differences == {table: 0 for table in report.rows}, report.differences
    async with database.transaction() as session:
        live = (await session.execute(text("SELECT count(*) FROM timeline.entries"))).scalar()
    assert live == report.rows["entries"]

    # With the service stopped, the rebuilt model can replace the live one.
    swapped = await rebuild(database_url, bootstrap, do_swap=True)
    assert swapped.swapped and swapped.differences == report.differences


async def test_a_batch_has_the_effect_of_its_events_one_by_one(database: Database) -> None:
    """The consumer applies a fetched batch at once; a replay may cut it differently. Whatever
    the cut, the rows are those of applying each event in turn."""
    family = f"Batch{uuid.uuid4().hex[:6]}"
    kit, kat = child("Kit", family), child("Kat", family, unborn_expected_date=date(2027, 1, 9))
    first, second, record = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    kits, kats = referral(kit, T0), referral(kat, T0 + timedelta(days=1))
    at = T0 + timedelta(days=2)
    ack = ReferralAcknowledged(
        referral_id=kits.referral_id,
        reference=kits.reference,
        acknowledged_at=at,
        acknowledged_by="Ali",
        within_deadline=True,
    )
    decided = ReferralDecided(
        referral_id=kits.referral_id,
        reference=kits.reference,
        decision="no_further_action",
        decided_at=at,
        decided_by="Ali",
        within_deadline=False,
    )
    reopened = ReferralReopened(
        referral_id=kits.referral_id,
        reference=kits.reference,
        reopened_at=at + timedelta(days=1),
        reopened_by="Sam",
        decision_due_at=at + timedelta(days=2),
        feedback_due_at=at + timedelta(days=5),
    )
    rated = ReferralRated(
        referral_id=kits.referral_id,
        reference=kits.reference,
        rag="red",
        rated_at=at,
        rated_by="Sam",
    )
    expiry = RetentionExpired(
        subject_id=kat.subject_id,
        record_type="referral_narrative",
        referral_ids=[kats.referral_id],
        last_referral_at=T0,
        expired_at=at,
        policy="test",
        ledger_sequence=1,
    )
    merge = PersonsMerged(
        merge_id=uuid.uuid4(),
        survivor_person_id=first,
        merged_person_id=second,
        record_ids=[record],
        reason="same child",
        merged_by="m",
        merged_at=at,
    )
    unmerge = PersonsUnmerged(
        merge_id=merge.merge_id,
        survivor_person_id=first,
        restored_person_id=second,
        record_ids=[record],
        reason="twins",
        unmerged_by="m",
        unmerged_at=at + timedelta(hours=1),
    )
    household = uuid.uuid4()
    pictures = [
        HouseholdUpdated(
            household_id=household,
            members=[HouseholdMember(person_id=p, role="child") for p in members],
            relationships=[],
            updated_at=T0,
        )
        for members in ([first], [first, second])
    ]
    events: list[Any] = [
        expiry,  # before the referral it expires (another topic, read first)
        kits,
        ack,
        linked(kit, record, second, T0),
        merge,
        rated,
        decided,
        kats,
        reopened,
        unmerge,
        linked(kit, record, first, T0 - timedelta(days=1)),  # late and older
        *pictures,
        attendance(kit, at, "RTG01"),
    ]
    envelopes = [
        envelope_for(e, service="test", trace=TraceContext("batch-test"), now=T0) for e in events
    ]
    one_by_one, together = "timeline_test_sequential", "timeline_test_batch"
    await prepare_schema(database, one_by_one)
    await prepare_schema(database, together)
    try:
        sequential = Projector(one_by_one)
        for event, env in zip(events, envelopes, strict=True):
            async with database.transaction() as session:
                await sequential.handle(session, event, env)
        batched = Projector(together)
        async with database.transaction() as session:
            await batched.apply_batch(session, list(zip(events, envelopes, strict=True)))
        assert await compare(database, together, against=one_by_one) == {
            table: 0 for table in READ_MODEL
        }
        async with database.transaction() as session:
            state = (
                await session.execute(
                    text(
                        f"SELECT rag, decision, deadlines FROM {together}.referrals"
                        " WHERE referral_id = :r"
                    ),
                    {"r": kits.referral_id},
                )
            ).one()
            kat_rows = (
                await session.execute(
                    text(f"SELECT count(*) FROM {together}.entries WHERE source_id = :r"),
                    {"r": kats.referral_id},
                )
            ).scalar_one()
            person = (
                await session.execute(
                    text(f"SELECT person_id FROM {together}.records WHERE record_id = :r"),
                    {"r": record},
                )
            ).scalar_one()
        assert state.rag == "red" and state.decision is None  # reopened after the decision
        assert state.deadlines["acknowledgement"]["met"] is True
        assert state.deadlines["decision"]["met"] is None  # a new clock
        assert kat_rows == 0  # expired, though the expiry was read first
        assert person == second  # the unmerge is the latest word on the record
    finally:
        async with database.transaction() as session:
            for schema in (one_by_one, together):
                await session.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
