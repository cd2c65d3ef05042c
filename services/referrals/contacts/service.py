"""Contact use cases. No HTTP here and no commit: the caller's scope owns the transaction."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals import service as referral_service
from services.referrals.contacts.events import (
    AllocatedWorker,
    ChildProtectionPlanChanged,
    ContactRecorded,
    DomesticAbuseIncidentRecorded,
    LookedAfterStatusChanged,
    ReportedAdult,
    ReportedChildPresent,
    SchoolAttendanceConcernRecorded,
    UnscheduledCareAttendanceRecorded,
)
from services.referrals.contacts.models import Contact, ContactSubject, ContactText
from services.referrals.contacts.repository import ContactRepository
from services.referrals.contacts.schemas import AllocatedWorker as AllocatedWorkerIn
from services.referrals.contacts.schemas import (
    ChildPresentIn,
    ChildProtectionPlanIn,
    ContactIn,
    ContactType,
    DomesticAbuseIncidentIn,
    LookedAfterStatusIn,
    SchoolAttendanceConcernIn,
    UnscheduledCareAttendanceIn,
)
from services.referrals.events import ReportedChild
from services.referrals.models import plumbing
from services.referrals.service import IdempotencyMismatch, fingerprint
from shared import outbox
from shared.auth import Principal
from shared.calendar import local_date
from shared.crypto import KeyDestroyed, Vault
from shared.errors import NotFound
from shared.ids import uuid7

SERVICE = "referrals"
MASH_SCOPE = "mash:triage"
#: The free text of each type: sealed under each child's key, never stored plain nor announced.
SEALED: dict[ContactType, tuple[str, ...]] = {
    ContactType.POLICE_DOMESTIC_ABUSE_INCIDENT: ("narrative",),
    ContactType.UNSCHEDULED_CARE_ATTENDANCE: ("presenting_complaint",),
    ContactType.SCHOOL_ATTENDANCE_CONCERN: ("narrative",),
    ContactType.CHILD_PROTECTION_PLAN: (),
    ContactType.LOOKED_AFTER_STATUS: (),
}


def text_context(contact_id: uuid.UUID, kind: str) -> str:
    """What a sealed text is bound to: it opens only as this kind of text of this contact."""
    return f"referrals.contact_texts:{contact_id}:{kind}"


def occurred(request: ContactIn) -> tuple[datetime | None, date]:
    """When the contact happened: the instant where one is known, and its Europe/London date."""
    match request:
        case DomesticAbuseIncidentIn():
            return request.occurred_at, local_date(request.occurred_at)
        case UnscheduledCareAttendanceIn():
            return request.attended_at, local_date(request.attended_at)
        case SchoolAttendanceConcernIn():
            return None, request.period_start
        case ChildProtectionPlanIn() | LookedAfterStatusIn():
            return None, request.effective_date


def details(request: ContactIn) -> dict[str, Any]:
    """The structured facts stored with the contact: the request without its type, children and
    sealed text; each adult at an incident is given a subject id, as each child is."""
    facts = request.model_dump(mode="json", exclude={"type", "subjects", *SEALED[request.type]})
    for adult in facts.get("adults", []):
        adult["subject_id"] = str(uuid7())
    return facts


def sealed_texts(request: ContactIn) -> dict[str, str]:
    """The request's free text by kind (empty when its type has none or none was given)."""
    texts: dict[str, str | None] = {kind: getattr(request, kind) for kind in SEALED[request.type]}
    return {kind: text for kind, text in texts.items() if text is not None}


async def receive_contact(
    session: AsyncSession,
    request: ContactIn,
    *,
    contributor: Principal,
    now: datetime,
    vault: Vault,
    idempotency_key: str | None,
) -> tuple[Contact, bool]:
    """Store a contact, seal its narrative and announce it with its type's event.

    Returns the contact and whether it was created now (False: an idempotent replay).
    """
    repository = ContactRepository(session)
    request_fingerprint = fingerprint(request)
    if idempotency_key is not None:
        existing = await repository.by_idempotency_key(
            contributor.organisation_code, idempotency_key
        )
        if existing is not None:
            return _replay(existing, request_fingerprint), False

    contact_id = uuid7()
    occurred_at, occurred_on = occurred(request)
    contact = Contact(
        id=contact_id,
        type=request.type.value,
        received_at=now,
        organisation_code=contributor.organisation_code,
        agency=contributor.agency,
        client=contributor.subject,
        idempotency_key=idempotency_key,
        fingerprint=request_fingerprint,
        occurred_at=occurred_at,
        occurred_on=occurred_on,
        details=details(request),
    )
    subjects = [
        ContactSubject(
            id=uuid7(),
            contact_id=contact_id,
            position=position,
            **child.columns(),
            witnessed=child.witnessed if isinstance(child, ChildPresentIn) else None,
            injured=child.injured if isinstance(child, ChildPresentIn) else None,
        )
        for position, child in enumerate(request.subjects)
    ]
    try:
        async with session.begin_nested():
            await repository.add(contact, subjects)
    except IntegrityError:
        # A concurrent request with the same idempotency key won the race.
        if idempotency_key is None:
            raise
        existing = await repository.by_idempotency_key(
            contributor.organisation_code, idempotency_key
        )
        if existing is None:
            raise
        return _replay(existing, request_fingerprint), False

    await repository.add_texts(
        [
            ContactText(
                contact_id=contact_id,
                subject_id=subject.id,
                kind=kind,
                sealed=await vault.seal(
                    session, subject.id, plaintext, context=text_context(contact_id, kind)
                ),
                written_at=now,
            )
            for kind, plaintext in sealed_texts(request).items()
            for subject in subjects
        ]
    )
    await outbox.append(
        session, plumbing, recorded_event(contact, subjects, request), service=SERVICE, now=now
    )
    loaded = await repository.get(contact_id)
    assert loaded is not None
    return loaded, True


def _replay(existing: Contact, request_fingerprint: str) -> Contact:
    if existing.fingerprint != request_fingerprint:
        raise IdempotencyMismatch(
            "This Idempotency-Key was already used for a different contact; "
            "use a new key for a new contact.",
            contact_id=str(existing.id),
        )
    return existing


def _reported(subject: ContactSubject) -> ReportedChild:
    return ReportedChild(
        subject_id=subject.id,
        given_names=subject.given_names,
        family_name=subject.family_name,
        other_names=subject.other_names,
        date_of_birth=subject.date_of_birth,
        estimated_age_years=subject.estimated_age_years,
        unborn_expected_date=subject.unborn_expected_date,
        sex=subject.sex,
        nhs_number=subject.nhs_number,
        upn=subject.upn,
        address_lines=list(subject.address_lines),
        town=subject.town,
        postcode=subject.postcode,
        school_urn=subject.school_urn,
    )


def recorded_event(
    contact: Contact, subjects: list[ContactSubject], request: ContactIn
) -> ContactRecorded:
    """The event of the contact's type: its structured facts and its children, no narrative."""
    common = {
        "contact_id": contact.id,
        "received_at": contact.received_at,
        "contributor_agency": contact.agency,
        "contributor_organisation_code": contact.organisation_code,
    }
    reported = [_reported(subject) for subject in subjects]
    match request:
        case DomesticAbuseIncidentIn():
            return DomesticAbuseIncidentRecorded(
                **common,
                occurred_at=request.occurred_at,
                incident_reference=request.incident_reference,
                risk_level=request.risk_level.value,
                force_code=request.force_code,
                police_station=request.police_station,
                officer_name=request.officer.name,
                officer_collar_number=request.officer.collar_number,
                subjects=[
                    ReportedChildPresent(
                        **child.model_dump(),
                        witnessed=bool(row.witnessed),
                        injured=bool(row.injured),
                    )
                    for child, row in zip(reported, subjects, strict=True)
                ],
                adults=[
                    ReportedAdult(
                        subject_id=stored["subject_id"],
                        given_names=adult.given_names,
                        family_name=adult.family_name,
                        date_of_birth=adult.date_of_birth,
                        sex=adult.sex.value,
                        role=adult.role.value,
                        address_lines=list(adult.address.lines) if adult.address else [],
                        town=adult.address.town if adult.address else None,
                        postcode=adult.address.postcode if adult.address else None,
                    )
                    for adult, stored in zip(request.adults, contact.details["adults"], strict=True)
                ],
            )
        case UnscheduledCareAttendanceIn():
            return UnscheduledCareAttendanceRecorded(
                **common,
                attended_at=request.attended_at,
                setting=request.setting.value,
                hospital_site_code=request.hospital_site_code,
                injury=request.injury,
                accompanied_by=request.accompanied_by,
                safeguarding_concern=request.safeguarding_concern,
                subjects=reported,
            )
        case SchoolAttendanceConcernIn():
            return SchoolAttendanceConcernRecorded(
                **common,
                kind=request.kind.value,
                period_start=request.period_start,
                period_end=request.period_end,
                attendance_percentage=request.attendance_percentage,
                school_urn=request.school_urn,
                subjects=reported,
            )
        case ChildProtectionPlanIn():
            return ChildProtectionPlanChanged(
                **common,
                change=request.change.value,
                effective_date=request.effective_date,
                category=request.category.value,
                local_authority_code=request.local_authority_code,
                allocated_worker=_worker(request.allocated_worker),
                subjects=reported,
            )
        case LookedAfterStatusIn():
            return LookedAfterStatusChanged(
                **common,
                change=request.change.value,
                effective_date=request.effective_date,
                legal_status=request.legal_status.value,
                placement_type=request.placement_type.value if request.placement_type else None,
                local_authority_code=request.local_authority_code,
                allocated_worker=_worker(request.allocated_worker),
                subjects=reported,
            )


def _worker(worker: AllocatedWorkerIn | None) -> AllocatedWorker | None:
    return AllocatedWorker.model_validate(worker.model_dump()) if worker else None


# -- reading, with per-object authorisation -------------------------------------------------


def may_read(principal: Principal, contact: Contact) -> bool:
    """The MASH reads every contact; an agency reads only its own organisation's."""
    if principal.has(MASH_SCOPE):
        return True
    return principal.organisation_code == contact.organisation_code


async def record_access(
    session: AsyncSession, principal: Principal, action: str, object_id: str, outcome: str
) -> None:
    """Record a read in the referrals access log, as a read of a contact."""
    await referral_service.record_access(
        session, principal, action, object_id, outcome, object_type="contact"
    )


async def read_contact(
    session: AsyncSession, contact_id: uuid.UUID, principal: Principal
) -> Contact:
    """The contact if this principal may see it; otherwise 404, as if it did not exist.

    The caller records a refusal in a transaction of its own: this one rolls back with the 404.
    """
    contact = await ContactRepository(session).get(contact_id)
    if contact is None or not may_read(principal, contact):
        raise NotFound(f"No contact {contact_id}")
    await record_access(session, principal, "read", str(contact_id), "allowed")
    return contact


async def open_texts(session: AsyncSession, vault: Vault, contact: Contact) -> dict[str, str]:
    """The contact's narrative by kind, from the first child's copy that still opens."""
    opened: dict[str, str] = {}
    for row in contact.texts:
        if row.kind in opened:
            continue
        try:
            opened[row.kind] = await vault.open(
                session, row.subject_id, row.sealed, context=text_context(contact.id, row.kind)
            )
        except KeyDestroyed:
            continue  # this child's copy was erased; another child's copy may remain
    return opened
