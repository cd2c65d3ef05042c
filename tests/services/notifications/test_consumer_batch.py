"""A fetched batch of events applied at once (``registry.batch``: new referrals written one
executemany per table) has exactly the effect of the same events applied one by one."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from services.notifications import routing
from services.notifications.alerts import Setup
from services.notifications.app import DEFAULT_CALENDAR
from services.notifications.consumers import build_registry
from services.referrals.events import (
    ReferralAcknowledged,
    ReferralFeedbackOverdue,
    ReferralReceived,
    ReportedChild,
)
from shared import context
from shared.calendar import load_calendars
from shared.clock import ManualClock
from shared.context import TraceContext
from shared.db import Database
from shared.events.envelope import Envelope, envelope_for
from tests.support.apps import notifications_settings

T0 = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)


def _received(n: int, *, school: bool) -> ReferralReceived:
    return ReferralReceived(
        referral_id=uuid.uuid4(),
        reference=f"TL-BATCH-{n}",  # the same in both runs: texts name it
        received_at=T0 + timedelta(minutes=n),
        referrer_agency="school" if school else "health",
        referrer_organisation_code="100001" if school else "RDEMO",
        referrer_name=f"Referrer {n}",
        raised_via="phone" if n % 2 else "portal",
        concern_categories=["neglect", "domestic_abuse"],
        children=[
            ReportedChild(
                subject_id=uuid.uuid4(),
                given_names=name,
                family_name="Batcher",
                date_of_birth=date(2016 + k, 4, 2),
                upn=None,
                school_urn="100002" if k else None,
            )
            for k, name in enumerate(("Ada", "Bo"))
        ],
        acknowledgement_due_at=T0 + timedelta(days=1),
    )


def _story() -> list[Any]:
    """Referrals, one acknowledged and one overdue in the same fetch as their receipt, and
    further referrals after each (so runs of referrals are split by other events)."""
    first, second, third, fourth = (_received(n, school=n != 2) for n in range(4))
    return [
        first,
        second,
        ReferralAcknowledged(
            referral_id=first.referral_id,
            reference=first.reference,
            acknowledged_at=T0 + timedelta(hours=1),
            acknowledged_by="mash.worker",
            within_deadline=True,
        ),
        third,
        ReferralFeedbackOverdue(
            referral_id=second.referral_id,
            reference=second.reference,
            referrer_organisation_code=second.referrer_organisation_code,
            raised_via=second.raised_via,
            due_at=T0 + timedelta(days=3),
            detected_at=T0 + timedelta(days=3, minutes=1),
        ),
        fourth,
    ]


async def _state(database: Database, referrals: list[ReferralReceived]) -> list[Any]:
    """What the events left, in the order of the story, with generated ids left out."""
    ids = [r.referral_id for r in referrals]
    subjects = [c.subject_id for r in referrals for c in r.children]
    queries = {
        "items": "SELECT referral_id, kind, audience, organisation_code, title, body, due_at,"
        " status, resolved_at, created_at FROM notifications.inbox_items"
        " WHERE referral_id = ANY(:ids) ORDER BY referral_id, kind, audience",
        "facts": "SELECT referral_id, reference, referrer_organisation, referrer_agency,"
        " referrer_name, raised_via, received_at, subject_ids, held_by, decision"
        " FROM notifications.referral_facts WHERE referral_id = ANY(:ids)",
        "subjects": "SELECT subject_id, person_id, source_type, source_id, organisation_code,"
        " agency, school_urn, school_status, upn, nhs_number, seen_at"
        " FROM notifications.subjects WHERE subject_id = ANY(:subjects)",
        "messages": "SELECT referral_id, kind, recipient_organisation, recipient_role, title,"
        " body, status, correlation_id FROM notifications.messages"
        " WHERE referral_id = ANY(:ids) ORDER BY referral_id, kind, recipient_role",
    }
    found: list[Any] = []
    async with database.transaction() as session:
        for name, sql in queries.items():
            rows = (await session.execute(text(sql), {"ids": ids, "subjects": subjects})).all()
            found.append((name, rows))
    order = {referral_id: n for n, referral_id in enumerate(ids)}
    order |= {s: n for n, s in enumerate(subjects)}

    def plain(value: Any) -> Any:
        if isinstance(value, list):
            return [plain(v) for v in value]
        return order.get(value, value) if isinstance(value, uuid.UUID) else value

    normalised = []
    for name, rows in found:
        normalised.append(
            (
                name,
                sorted((tuple(plain(v) for v in row) for row in rows), key=repr),
            )
        )
    return normalised


async def test_a_batch_has_the_effect_of_its_events_one_by_one(
    database: Database, database_url: str, bootstrap: str
) -> None:
    settings = notifications_settings(database_url, bootstrap)
    _, school_days = load_calendars(Path(DEFAULT_CALENDAR))
    setup = Setup(
        routing=routing.load(Path(settings.routing_file)),
        school_days=school_days,
        settings=settings,
        clock=ManualClock(T0 + timedelta(days=3, minutes=2)),
    )
    registry = build_registry(setup)
    assert registry.batch is not None

    def envelopes(events: list[Any]) -> list[tuple[Any, Envelope]]:
        # Each event its own correlation id, which the messages it causes must carry.
        return [
            (e, envelope_for(e, service="referrals", trace=TraceContext(f"story-{n}"), now=T0))
            for n, e in enumerate(events)
        ]

    one_by_one = _story()
    for event, envelope in envelopes(one_by_one):  # as the consumer applies one record
        with context.bound(envelope.trace()):
            async with database.transaction() as session:
                await registry.handlers[envelope.type](session, event, envelope)
    together = _story()
    async with database.transaction() as session:  # as the consumer applies a fetch
        await registry.batch(session, envelopes(together))

    def received(events: list[Any]) -> list[ReferralReceived]:
        return [e for e in events if isinstance(e, ReferralReceived)]

    sequential = await _state(database, received(one_by_one))
    batched = await _state(database, received(together))
    counts = {name: len(rows) for name, rows in batched}
    # Four new-referral items, and the overdue feedback's item for the MASH manager and the
    # referrer's "you may chase"; four referrals; eight children; the acknowledgement to the
    # first referrer and the overdue notices (manager and referrer).
    assert counts == {"items": 6, "facts": 4, "subjects": 8, "messages": 3}
    items = dict(batched)["items"]
    resolved = [row for row in items if row[0] == 0 and row[1] == "new_referral"]
    assert resolved[0][7] == "done"  # the acknowledgement saw the item its fetch had written
    assert batched == sequential
