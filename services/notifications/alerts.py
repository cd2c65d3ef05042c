"""From events to messages: referrers kept in the loop, the MASH manager told of every missed
deadline, Operation Encompass, CP-IS and consent withdrawals. No commit here: the message (or
timer) scope owns the transaction, so a message and the event that caused it are applied once.

"Keep them in the loop — don't only contact when you want something from them" (Oxfordshire).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.consent.events import ConsentWithdrawn
from services.linking.events import PersonsMerged, PersonsUnmerged, SubjectLinked
from services.notifications import delivery, messages
from services.notifications.messages import Disclosure, Draft, Party
from services.notifications.models import PendingAlert, Subject, plumbing
from services.notifications.repository import AlertRepository, MessageRepository
from services.notifications.routing import Routing
from services.notifications.settings import NotificationsSettings
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
    ReferralDecided,
    ReferralFeedbackSent,
    ReferralReceived,
    ReportedChild,
)
from shared import timers
from shared.calendar import NoSchoolDayConfiguredError, SchoolDayCalendar
from shared.clock import Clock
from shared.events.envelope import Envelope
from shared.ids import uuid7
from shared.logging import get_logger
from shared.timers import DueTimer

log = get_logger(__name__)

LINK_WAIT_TIMER = "alert.link_wait"
REGISTRATION_TIMER = "encompass.registration"
MAX_SUBJECTS = 50  # the decision point's limit on one request


@dataclass(frozen=True)
class Setup:
    """What the handlers need besides the session: configuration and the clock."""

    routing: Routing
    school_days: SchoolDayCalendar
    settings: NotificationsSettings
    clock: Clock

    @property
    def education_safeguarding(self) -> Party:
        return Party(
            self.routing.partnership.education_safeguarding,
            "local_authority",
            "education_safeguarding",
        )

    @property
    def mash(self) -> Party:
        return Party(self.routing.partnership.mash, "mash", "mash_manager")

    def sender_mash(self) -> Party:
        return Party(self.routing.partnership.mash, "mash", "mash")

    async def post(self, session: AsyncSession, draft: Draft) -> uuid.UUID | None:
        """Queue the draft, saying in its details who it is from, by name, for the reader."""
        named = dataclasses.replace(
            draft,
            details={**draft.details, "from": self.routing.name_of(draft.sender.organisation)},
        )
        return await delivery.post(
            session,
            named,
            agreement_id=self.routing.partnership.agreement_id,
            now=self.clock.now(),
        )


# -- referrals ---------------------------------------------------------------------------------


def referral_fact_row(event: ReferralReceived) -> dict[str, Any]:
    """Who referred whom (a row of ``REFERRAL_FACT_COLUMNS``)."""
    return {
        "referral_id": event.referral_id,
        "reference": event.reference,
        "referrer_organisation": event.referrer_organisation_code,
        "referrer_agency": event.referrer_agency,
        "referrer_name": event.referrer_name,
        "raised_via": event.raised_via,
        "received_at": event.received_at,
        "subject_ids": [child.subject_id for child in event.children],
    }


def referral_subject_rows(event: ReferralReceived) -> list[dict[str, Any]]:
    """What each child's record in the referral says, their school included."""
    from_school = event.referrer_agency == "school"
    return [
        _subject_row(
            child,
            source_type="referral",
            source_id=event.referral_id,
            organisation=event.referrer_organisation_code,
            agency=event.referrer_agency,
            seen_at=event.received_at,
            school_urn=child.school_urn
            or (event.referrer_organisation_code if from_school else None),
        )
        for child in event.children
    ]


async def referral_received(
    setup: Setup, session: AsyncSession, event: ReferralReceived, envelope: Envelope
) -> None:
    """Remember who referred whom, and what each child's record says of their school."""
    repository = AlertRepository(session)
    await repository.remember_referrals([referral_fact_row(event)])
    await repository.remember_subjects(referral_subject_rows(event))


def _subject_row(
    child: ReportedChild,
    *,
    source_type: str,
    source_id: uuid.UUID,
    organisation: str,
    agency: str,
    seen_at: datetime,
    school_urn: str | None,
    school_status: str | None = None,
) -> dict[str, Any]:
    return {
        "subject_id": child.subject_id,
        "source_type": source_type,
        "source_id": source_id,
        "organisation_code": organisation,
        "agency": agency,
        "school_urn": school_urn,
        "school_status": school_status,
        "upn": child.upn,
        "nhs_number": child.nhs_number,
        "seen_at": seen_at,
    }


async def _referrer(
    setup: Setup, session: AsyncSession, referral_id: uuid.UUID, code: str
) -> Party:
    fact = await AlertRepository(session).referral(referral_id)
    agency = fact.referrer_agency if fact else _agency_of(setup.routing, code)
    return Party(code, agency, "referrer", fact.referrer_name if fact else None)


def _agency_of(routing: Routing, code: str) -> str:
    organisation = routing.organisation(code)
    return organisation.agency if organisation else "school"


async def _tell_referrer(
    setup: Setup,
    session: AsyncSession,
    envelope: Envelope,
    *,
    kind: str,
    referral_id: uuid.UUID,
    reference: str,
    referrer_code: str,
    title: str,
    body: str,
    **draft: Any,
) -> None:
    """A message from the MASH to whoever made the referral, once per event and kind."""
    await setup.post(
        session,
        Draft(
            kind=kind,
            dedupe_key=f"{envelope.id}:{kind}",
            recipient=await _referrer(setup, session, referral_id, referrer_code),
            sender=setup.sender_mash(),
            title=title,
            body=body,
            source_event_id=envelope.id,
            referral_id=referral_id,
            reference=reference,
            **draft,
        ),
    )


async def referral_acknowledged(
    setup: Setup, session: AsyncSession, event: ReferralAcknowledged, envelope: Envelope
) -> None:
    repository = AlertRepository(session)
    await repository.hold_referral(event.referral_id, held_by=event.acknowledged_by)
    fact = await repository.referral(event.referral_id)
    if fact is None:
        log.warning("alerts.unknown_referral", referral_id=str(event.referral_id))
        return
    title, body = messages.acknowledged(
        event.reference, event.acknowledged_at, setup.routing.partnership.mash_duty_telephone
    )
    await _tell_referrer(
        setup,
        session,
        envelope,
        kind=messages.REFERRAL_ACKNOWLEDGED,
        referral_id=event.referral_id,
        reference=event.reference,
        referrer_code=fact.referrer_organisation,
        title=title,
        body=body,
    )


REFERRAL_FEEDBACK_DISCLOSURE = Disclosure(
    purpose="referral_feedback",
    data_categories=("referral_outcome",),
    lawful_basis="public_task",
    why_consent_not_sought=(
        "Telling the professional who made a referral what was decided is part of the "
        "safeguarding process they started (Working Together 2023); it needs no fresh consent."
    ),
    necessity=(
        "The referrer needs to know the outcome to keep supporting the child and to follow up "
        "if nothing happens (Derby: 'if you do not receive feedback … follow this up')."
    ),
    minimisation=(
        "Only the type of response is sent; the MASH's reasons and the feedback text stay in "
        "Threadline, read by the referrer through its own access."
    ),
)


async def referral_decided(
    setup: Setup, session: AsyncSession, event: ReferralDecided, envelope: Envelope
) -> None:
    repository = AlertRepository(session)
    await repository.hold_referral(
        event.referral_id, held_by=event.decided_by, decision=event.decision
    )
    fact = await repository.referral(event.referral_id)
    if fact is None:
        log.warning("alerts.unknown_referral", referral_id=str(event.referral_id))
        return
    title, body = messages.decided(
        event.reference,
        event.decision,
        event.decided_at,
        setup.routing.partnership.mash_duty_telephone,
    )
    await _tell_referrer(
        setup,
        session,
        envelope,
        kind=messages.REFERRAL_DECIDED,
        referral_id=event.referral_id,
        reference=event.reference,
        referrer_code=fact.referrer_organisation,
        title=title,
        body=body,
        subject_ids=tuple(fact.subject_ids[:MAX_SUBJECTS]),
        disclosure=REFERRAL_FEEDBACK_DISCLOSURE,
        details={"decision": event.decision},
    )


async def feedback_sent(
    setup: Setup, session: AsyncSession, event: ReferralFeedbackSent, envelope: Envelope
) -> None:
    title, body = messages.feedback_ready(event.reference, event.sent_at, setup.settings.portal_url)
    await _tell_referrer(
        setup,
        session,
        envelope,
        kind=messages.REFERRAL_FEEDBACK,
        referral_id=event.referral_id,
        reference=event.reference,
        referrer_code=event.referrer_organisation_code,
        title=title,
        body=body,
    )


async def deadline_missed(
    setup: Setup,
    session: AsyncSession,
    envelope: Envelope,
    *,
    referral_id: uuid.UUID,
    reference: str,
    referrer_code: str,
    deadline: str,
    due: datetime,
) -> None:
    """Tell the MASH manager (every missed deadline, with who holds the referral), and the
    referrer what they were owed and how to chase it."""
    fact = await AlertRepository(session).referral(referral_id)
    referrer = setup.routing.name_of(referrer_code)
    title, body = messages.missed(
        reference, deadline, due, referrer, fact.held_by if fact else None
    )
    await setup.post(
        session,
        Draft(
            kind=messages.DEADLINE_MISSED,
            dedupe_key=f"{envelope.id}:{messages.DEADLINE_MISSED}",
            recipient=setup.mash,
            sender=setup.sender_mash(),
            title=title,
            body=body,
            source_event_id=envelope.id,
            referral_id=referral_id,
            reference=reference,
            details={
                "deadline": deadline,
                "due_at": due.isoformat(),
                "held_by": fact.held_by if fact else None,
            },
        ),
    )
    recipient = Party(
        referrer_code,
        fact.referrer_agency if fact else _agency_of(setup.routing, referrer_code),
        "referrer",
        fact.referrer_name if fact else None,
    )
    if deadline == "phone_follow_up":
        received = fact.received_at if fact else due - timedelta(hours=48)
        title, body = messages.phone_confirmation(reference, received)
        kind = messages.REFERRAL_PHONE_CONFIRMATION
    else:
        title, body = messages.overdue(
            reference, deadline, due, setup.routing.partnership.mash_duty_telephone
        )
        kind = messages.REFERRAL_OVERDUE
    await setup.post(
        session,
        Draft(
            kind=kind,
            dedupe_key=f"{envelope.id}:{kind}",
            recipient=recipient,
            sender=setup.sender_mash(),
            title=title,
            body=body,
            source_event_id=envelope.id,
            referral_id=referral_id,
            reference=reference,
            details={"deadline": deadline, "due_at": due.isoformat()},
        ),
    )


async def ack_overdue(
    setup: Setup, session: AsyncSession, event: ReferralAckOverdue, envelope: Envelope
) -> None:
    await deadline_missed(
        setup,
        session,
        envelope,
        referral_id=event.referral_id,
        reference=event.reference,
        referrer_code=event.referrer_organisation_code,
        deadline="acknowledgement",
        due=event.acknowledgement_due_at,
    )


def overdue_handler(deadline: str) -> Any:
    async def handle(
        setup: Setup, session: AsyncSession, event: DeadlineMissed, envelope: Envelope
    ) -> None:
        await deadline_missed(
            setup,
            session,
            envelope,
            referral_id=event.referral_id,
            reference=event.reference,
            referrer_code=event.referrer_organisation_code,
            deadline=deadline,
            due=event.due_at,
        )

    return handle


# -- who a child is, and where they go to school ---------------------------------------------------


async def subject_linked(
    setup: Setup, session: AsyncSession, event: SubjectLinked, envelope: Envelope
) -> None:
    if event.subject_id is None:
        return
    repository = AlertRepository(session)
    await repository.link(event.subject_id, event.person_id, event.record_id, event.linked_at)
    for alert in await repository.claim_pending(subject_id=event.subject_id):
        await resolve(setup, session, alert, linked=True)


async def persons_merged(
    setup: Setup, session: AsyncSession, event: PersonsMerged, envelope: Envelope
) -> None:
    await AlertRepository(session).move_records(event.record_ids, event.survivor_person_id)


async def persons_unmerged(
    setup: Setup, session: AsyncSession, event: PersonsUnmerged, envelope: Envelope
) -> None:
    await AlertRepository(session).move_records(event.record_ids, event.restored_person_id)


async def attendance_concern(
    setup: Setup, session: AsyncSession, event: SchoolAttendanceConcernRecorded, envelope: Envelope
) -> None:
    """A school's attendance concern says which school the child is on the roll of, or that
    they are missing education."""
    status = "not_in_school" if event.kind == "missing_education" else None
    await AlertRepository(session).remember_subjects(
        [
            _subject_row(
                child,
                source_type="contact",
                source_id=event.contact_id,
                organisation=event.contributor_organisation_code,
                agency=event.contributor_agency,
                seen_at=event.received_at,
                school_urn=event.school_urn if status is None else None,
                school_status=status,
            )
            for child in event.subjects
        ]
    )


async def _records(session: AsyncSession, subject: Subject | None) -> list[Subject]:
    """Every record of the person the subject is (newest first), or the subject's own."""
    if subject is not None and subject.person_id is not None:
        return await AlertRepository(session).records_of(subject.person_id)
    return [subject] if subject is not None else []


# -- Operation Encompass ---------------------------------------------------------------------------


ENCOMPASS_DISCLOSURE = Disclosure(
    purpose="operation_encompass",
    data_categories=("domestic_abuse_incident_notice",),
    lawful_basis="public_task",
    why_consent_not_sought=(
        "Operation Encompass: asking the family first could put the child or the adult victim "
        "at more risk, and the school must know before the next school day."
    ),
    necessity=(
        "The child's school needs to know before the next school day so that a trusted adult "
        "can support the child; without it the school may misread the child's behaviour."
    ),
    minimisation=(
        "Only the child's name and date of birth, when the incident happened, whether the "
        "child saw or heard it or was hurt, and whom to ask; no account of the incident, no "
        "adult's details, no risk grading."
    ),
)


async def domestic_abuse_incident(
    setup: Setup, session: AsyncSession, event: DomesticAbuseIncidentRecorded, envelope: Envelope
) -> None:
    repository = AlertRepository(session)
    await repository.remember_subjects(
        [
            _subject_row(
                child,
                source_type="contact",
                source_id=event.contact_id,
                organisation=event.contributor_organisation_code,
                agency=event.contributor_agency,
                seen_at=event.received_at,
                school_urn=child.school_urn,
            )
            for child in event.subjects
        ]
    )
    try:
        deliver_by = setup.school_days.next_school_day_start(event.received_at)
    except NoSchoolDayConfiguredError:
        deliver_by = None  # the term dates ran out: resolve at once, and say so in the logs
        log.error("encompass.no_school_day_configured", contact_id=str(event.contact_id))
    for child in event.subjects:
        if child.unborn_expected_date is not None:
            continue  # no school to tell yet; the MASH has the contact
        facts = {
            "given_names": child.given_names,
            "family_name": child.family_name,
            "date_of_birth": child.date_of_birth.isoformat() if child.date_of_birth else None,
            "witnessed": child.witnessed,
            "injured": child.injured,
            "occurred_at": event.occurred_at.isoformat(),
            "incident_reference": event.incident_reference,
            "police": event.contributor_organisation_code,
            "police_agency": event.contributor_agency,
        }
        await _hold_for_link(
            setup, session, "encompass", event.contact_id, child, facts, envelope, deliver_by
        )


async def _hold_for_link(
    setup: Setup,
    session: AsyncSession,
    kind: str,
    contact_id: uuid.UUID,
    child: ReportedChild,
    facts: dict[str, Any],
    envelope: Envelope,
    deliver_by: datetime | None,
) -> None:
    """Keep the alert until linking says who the child is (or resolve it now, if it has)."""
    repository = AlertRepository(session)
    now = setup.clock.now()
    alert_id = await repository.add_pending(
        {
            "id": uuid7(),
            "kind": kind,
            "contact_id": contact_id,
            "subject_id": child.subject_id,
            "source_event_id": envelope.id,
            "facts": facts,
            "status": "awaiting_link",
            "received_at": now,
            "deliver_by": deliver_by,
            "correlation_id": envelope.correlation_id,
        }
    )
    if alert_id is None:
        return
    subject = await repository.subject(child.subject_id)
    if subject is not None and subject.person_id is not None:
        for alert in await repository.claim_pending(alert_id=alert_id):
            await resolve(setup, session, alert, linked=True)
        return
    wait_until = now + timedelta(seconds=setup.settings.link_wait_seconds)
    if deliver_by is not None:
        # Never wait for linking past the point where the school could still be told in time.
        wait_until = max(now, min(wait_until, deliver_by - timedelta(minutes=15)))
    await timers.schedule(
        session,
        plumbing,
        kind=LINK_WAIT_TIMER,
        aggregate_id=str(alert_id),
        due_at=wait_until,
        payload={"alert_id": str(alert_id)},
    )


async def link_wait_over(
    setup: Setup, session: AsyncSession, timer: DueTimer, now: datetime
) -> None:
    """Linking did not answer in time: go on with what the record itself says."""
    alert_id = uuid.UUID(timer.payload["alert_id"])
    for alert in await AlertRepository(session).claim_pending(alert_id=alert_id):
        log.warning("alerts.resolved_without_link", alert_id=str(alert.id), kind=alert.kind)
        await resolve(setup, session, alert, linked=False)


async def resolve(
    setup: Setup, session: AsyncSession, alert: PendingAlert, *, linked: bool
) -> None:
    repository = AlertRepository(session)
    subject = await repository.subject(alert.subject_id)
    if linked:
        records = await _records(session, subject)
    else:
        records = [subject] if subject is not None else []
    if alert.kind == "encompass":
        resolution = await _resolve_encompass(setup, session, alert, records, subject)
    else:
        resolution = await _resolve_cpis(setup, session, alert, records, subject, linked=linked)
    alert.status = "resolved"
    alert.resolved_at = setup.clock.now()
    alert.resolution = resolution[:200]
    await timers.cancel(
        session, plumbing, kind=LINK_WAIT_TIMER, aggregate_id=str(alert.id), now=alert.resolved_at
    )


def _subject_ids(alert: PendingAlert, records: list[Subject]) -> tuple[uuid.UUID, ...]:
    ids = [alert.subject_id] + [r.subject_id for r in records if r.subject_id != alert.subject_id]
    return tuple(ids[:MAX_SUBJECTS])


def find_school(routing: Routing, records: list[Subject]) -> tuple[str | None, str]:
    """The child's school from the newest record that names one (or the configured pupil
    rolls); ``not_in_school`` when the newest word on it is that the child is out of school."""
    upns = [record.upn for record in records if record.upn]
    if routing.known_not_in_school(upns):
        return None, "not_in_school"
    for record in records:  # newest first
        if record.school_status == "not_in_school":
            return None, "not_in_school"
        if record.school_urn:
            return record.school_urn, "school"
    rolled = routing.school_on_roll(upns)
    if rolled is not None:
        return rolled, "pupil_roll"
    return None, "school_unknown"


async def _resolve_encompass(
    setup: Setup,
    session: AsyncSession,
    alert: PendingAlert,
    records: list[Subject],
    subject: Subject | None,
) -> str:
    facts = alert.facts
    routing = setup.routing
    deliver_by = alert.deliver_by or setup.clock.now()
    police = Party(facts["police"], facts.get("police_agency", "police"), "police")
    police_name = routing.name_of(facts["police"])
    school, found_by = find_school(routing, records)
    if school is not None:
        recipient = Party(school, _agency_of(routing, school), "dsl")
        title, body = messages.encompass_notice(
            facts, deliver_by, police_name, routing.telephone_of(facts["police"])
        )
        resolution = f"school {school} ({found_by})"
    else:
        recipient = Party(
            routing.partnership.education_safeguarding, "local_authority", "education_safeguarding"
        )
        title, body = messages.encompass_to_local_authority(
            facts, deliver_by, found_by, police_name
        )
        resolution = f"local authority: {found_by}"
    message_id = await setup.post(
        session,
        Draft(
            kind=messages.ENCOMPASS_NOTICE,
            dedupe_key=f"encompass:{alert.contact_id}:{alert.subject_id}",
            recipient=recipient,
            sender=police,
            title=title,
            body=body,
            source_event_id=alert.source_event_id,
            contact_id=alert.contact_id,
            reference=facts["incident_reference"],
            subject_ids=_subject_ids(alert, records),
            person_id=subject.person_id if subject else None,
            disclosure=ENCOMPASS_DISCLOSURE,
            details={
                "school_urn": school,
                "found_by": found_by,
                "witnessed": facts.get("witnessed"),
                "injured": facts.get("injured"),
                "occurred_at": facts["occurred_at"],
            },
            deliver_by=deliver_by,
            acknowledge_by=deliver_by,
        ),
    )
    if message_id is not None and school is not None:
        await timers.schedule(
            session,
            plumbing,
            kind=REGISTRATION_TIMER,
            aggregate_id=str(message_id),
            due_at=deliver_by,
            payload={"message_id": str(message_id)},
        )
    return resolution


async def registration_passed(
    setup: Setup, session: AsyncSession, timer: DueTimer, now: datetime
) -> None:
    """Registration has come and the DSL has not acknowledged: tell the education
    safeguarding team, who can call the school."""
    message_id = uuid.UUID(timer.payload["message_id"])
    repository = MessageRepository(session)
    message = await repository.get(message_id)
    if message is None or message.status == "refused" or message.acknowledged_at is not None:
        return
    escalated = await repository.mark_escalated(message_id, now)
    if escalated is None:
        return
    routing = setup.routing
    school = message.recipient_organisation
    title, body = messages.encompass_escalation(
        routing.name_of(school), routing.telephone_of(school), message.deliver_by or now, message_id
    )
    await setup.post(
        session,
        Draft(
            kind=messages.ENCOMPASS_ESCALATION,
            dedupe_key=f"escalation:{message_id}",
            recipient=Party(
                routing.partnership.education_safeguarding,
                "local_authority",
                "education_safeguarding",
            ),
            sender=Party(message.sender_organisation, message.sender_agency, "police"),
            title=title,
            body=body,
            contact_id=message.contact_id,
            reference=message.reference,
            details={"notification": str(message_id), "school_urn": school},
        ),
    )


# -- CP-IS: unscheduled care of a child with a plan, or looked after -------------------------------


async def protection_status(
    setup: Setup,
    session: AsyncSession,
    event: ChildProtectionPlanChanged | LookedAfterStatusChanged,
    envelope: Envelope,
) -> None:
    repository = AlertRepository(session)
    await repository.remember_subjects(
        [
            _subject_row(
                child,
                source_type="contact",
                source_id=event.contact_id,
                organisation=event.contributor_organisation_code,
                agency=event.contributor_agency,
                seen_at=event.received_at,
                school_urn=child.school_urn,
            )
            for child in event.subjects
        ]
    )
    if isinstance(event, ChildProtectionPlanChanged):
        kind, detail = "child_protection_plan", event.category
    else:
        kind, detail = "looked_after", event.legal_status
    worker = event.allocated_worker.model_dump() if event.allocated_worker else None
    for child in event.subjects:
        await repository.add_status(
            {
                "contact_id": event.contact_id,
                "subject_id": child.subject_id,
                "kind": kind,
                "change": event.change,
                "effective_date": event.effective_date,
                "detail": detail,
                "local_authority_code": event.local_authority_code,
                "organisation_code": event.contributor_organisation_code,
                "allocated_worker": worker,
                "received_at": event.received_at,
            }
        )


async def unscheduled_care(
    setup: Setup,
    session: AsyncSession,
    event: UnscheduledCareAttendanceRecorded,
    envelope: Envelope,
) -> None:
    await AlertRepository(session).remember_subjects(
        [
            _subject_row(
                child,
                source_type="contact",
                source_id=event.contact_id,
                organisation=event.contributor_organisation_code,
                agency=event.contributor_agency,
                seen_at=event.received_at,
                school_urn=child.school_urn,
            )
            for child in event.subjects
        ]
    )
    for child in event.subjects:
        facts = {
            "given_names": child.given_names,
            "family_name": child.family_name,
            "date_of_birth": child.date_of_birth.isoformat() if child.date_of_birth else None,
            "nhs_number": child.nhs_number,
            "attended_at": event.attended_at.isoformat(),
            "setting": event.setting,
            "hospital_site_code": event.hospital_site_code,
            "injury": event.injury,
            "safeguarding_concern": event.safeguarding_concern,
            "health": event.contributor_organisation_code,
            "health_agency": event.contributor_agency,
        }
        await _hold_for_link(setup, session, "cpis", event.contact_id, child, facts, envelope, None)


CPIS_ALERT_DISCLOSURE = Disclosure(
    purpose="child_protection_information_sharing",
    data_categories=("unscheduled_care_attendance",),
    lawful_basis="public_task",
    special_category=True,
    article9_condition="health_social_care",
    schedule1_condition="part1_para2_health_social_care",
    why_consent_not_sought=(
        "CP-IS: the child's social worker must know of an unscheduled care attendance of a "
        "child on a plan or looked after; asking first could delay protection."
    ),
    necessity=(
        "Repeated or unexplained attendances are a known sign of harm (e.g. 'mobile families "
        "taking children to different A&E departments'); the social worker needs each one."
    ),
    minimisation=(
        "Only the child, when and where they attended, whether for an injury, and whether the "
        "clinicians were concerned; no presenting complaint or clinical detail."
    ),
)

CPIS_ANSWER_DISCLOSURE = Disclosure(
    purpose="child_protection_information_sharing",
    data_categories=("child_protection_status",),
    lawful_basis="public_task",
    why_consent_not_sought=(
        "CP-IS: the clinician treating the child needs to know at once that a plan exists and "
        "whom to call; asking first could delay protection."
    ),
    necessity="The clinician must be able to talk to the child's social worker about this visit.",
    minimisation=(
        "Only that a plan exists or the child is looked after, since when, and whom to call; "
        "not the plan's category or its contents."
    ),
)


def active_statuses(statuses: list[Any]) -> dict[str, Any]:
    """Per kind, the latest change if it started something (statuses in date order)."""
    latest: dict[str, Any] = {}
    for status in statuses:
        latest[status.kind] = status
    return {kind: status for kind, status in latest.items() if status.change == "started"}


async def _resolve_cpis(
    setup: Setup,
    session: AsyncSession,
    alert: PendingAlert,
    records: list[Subject],
    subject: Subject | None,
    *,
    linked: bool,
) -> str:
    repository = AlertRepository(session)
    facts = alert.facts
    subject_ids = {record.subject_id for record in records} | {alert.subject_id}
    if not linked and facts.get("nhs_number"):
        # Without linking, the NHS number (what CP-IS itself matches on) finds the child.
        same = await repository.subjects_with_nhs_number(facts["nhs_number"])
        subject_ids |= {record.subject_id for record in same}
    active = active_statuses(await repository.statuses_of(sorted(subject_ids)))
    if not active:
        return "no active plan or looked-after status"
    routing = setup.routing
    holder_status = max(active.values(), key=lambda s: (s.effective_date, s.received_at))
    holder = holder_status.organisation_code
    worker = holder_status.allocated_worker
    kinds = sorted(active)
    health = Party(facts["health"], facts.get("health_agency", "health"), "clinician")
    social_care = Party(
        holder, "local_authority", "social_worker", worker.get("name") if worker else None
    )
    hospital = routing.name_of(facts["health"])
    all_ids = tuple(sorted(subject_ids, key=lambda s: s != alert.subject_id))[:MAX_SUBJECTS]
    title, body = messages.cpis_alert(facts, kinds, hospital, routing.telephone_of(facts["health"]))
    await setup.post(
        session,
        Draft(
            kind=messages.CPIS_ALERT,
            dedupe_key=f"cpis:{alert.contact_id}:{alert.subject_id}:alert",
            recipient=social_care,
            sender=Party(facts["health"], facts.get("health_agency", "health"), "health"),
            title=title,
            body=body,
            source_event_id=alert.source_event_id,
            contact_id=alert.contact_id,
            subject_ids=all_ids,
            person_id=subject.person_id if subject else None,
            disclosure=CPIS_ALERT_DISCLOSURE,
            details={
                "statuses": kinds,
                "attended_at": facts["attended_at"],
                "hospital_site_code": facts["hospital_site_code"],
                **({"worker_email": worker["email"]} if worker and worker.get("email") else {}),
            },
            acknowledge_by=setup.clock.now() + timedelta(hours=24),
        ),
    )
    whom = messages.whom_to_call(
        worker,
        routing.name_of(holder),
        routing.telephone_of(holder),
        routing.partnership.out_of_hours_telephone,
    )
    title, body = messages.cpis_answer(facts, kinds, holder_status.effective_date, whom)
    await setup.post(
        session,
        Draft(
            kind=messages.CPIS_ANSWER,
            dedupe_key=f"cpis:{alert.contact_id}:{alert.subject_id}:answer",
            recipient=health,
            sender=Party(holder, "local_authority", "local_authority"),
            title=title,
            body=body,
            source_event_id=alert.source_event_id,
            contact_id=alert.contact_id,
            subject_ids=all_ids,
            person_id=subject.person_id if subject else None,
            disclosure=CPIS_ANSWER_DISCLOSURE,
            details={"statuses": kinds, "since": holder_status.effective_date.isoformat()},
        ),
    )
    return f"{', '.join(kinds)} held by {holder}"


# -- consent withdrawals ------------------------------------------------------------


WITHDRAWAL_DISCLOSURE = Disclosure(
    purpose="consent_withdrawal_notice",
    data_categories=("consent_withdrawal",),
    lawful_basis="legal_obligation",
    why_consent_not_sought=(
        "UK GDPR Article 19: a controller must tell each recipient of personal data when "
        "processing that relied on consent must stop; this is that notice."
    ),
    necessity="Recipients must not go on relying on a consent that has been withdrawn.",
    minimisation=(
        "Only that consent was withdrawn, when, and which earlier notifications it concerns; "
        "no reason for the withdrawal and nothing new about the child."
    ),
)


async def consent_withdrawn(
    setup: Setup, session: AsyncSession, event: ConsentWithdrawn, envelope: Envelope
) -> None:
    """Everyone Threadline told about the person (under a disclosure decision) hears that
    consent was withdrawn, once per recipient, with the notifications it concerns."""
    repository = AlertRepository(session)
    subject = await repository.subject(event.subject_id)
    records = await _records(session, subject)
    subject_ids = sorted({event.subject_id} | {record.subject_id for record in records})
    earlier = await MessageRepository(session).disclosed_about(subject_ids)
    by_recipient: dict[tuple[str, str, str], list[Any]] = {}
    for message in earlier:
        key = (message.recipient_organisation, message.recipient_agency, message.recipient_role)
        by_recipient.setdefault(key, []).append(message)
    for (organisation, agency, role), told in by_recipient.items():
        title, body = messages.consent_withdrawn(
            event.withdrawn_at,
            [(m.id, m.title, m.created_at) for m in told],
            setup.routing.partnership.mash_duty_telephone,
        )
        await setup.post(
            session,
            Draft(
                kind=messages.CONSENT_WITHDRAWN,
                dedupe_key=f"withdrawn:{event.consent_id}:{organisation}:{role}",
                recipient=Party(organisation, agency, role),
                sender=setup.sender_mash(),
                title=title,
                body=body,
                source_event_id=envelope.id,
                subject_ids=(event.subject_id,),
                person_id=subject.person_id if subject else None,
                disclosure=WITHDRAWAL_DISCLOSURE,
                details={
                    "consent_id": str(event.consent_id),
                    "notifications": [str(m.id) for m in told],
                },
            ),
        )
