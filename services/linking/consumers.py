"""Which events the linking service handles: every subject of a referral or a contact becomes a
person record, resolved to a person; a referral's family section becomes relationships and a
household. The consumer runner's inbox makes each event apply once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.linking import service
from services.linking.matching.model import LinkageModel
from services.linking.matching.records import PersonRecord as RecordData
from services.linking.settings import LinkingSettings
from services.referrals.contacts.events import (
    ChildProtectionPlanChanged,
    ContactRecorded,
    DomesticAbuseIncidentRecorded,
    LookedAfterStatusChanged,
    SchoolAttendanceConcernRecorded,
    UnscheduledCareAttendanceRecorded,
)
from services.referrals.events import ReferralReceived, ReportedChild
from shared.consumer import HandlerRegistry
from shared.events.envelope import Envelope

# The referral's words for a relationship, in the linking service's types.
RELATIONSHIP_KINDS = {
    "mother": "parent",
    "father": "parent",
    "non_resident_parent": "non_resident_parent",
    "step_parent": "step_parent",
    "partner_of_parent": "partner_of_parent",
    "sibling": "sibling",
    "half_sibling": "half_sibling",
    "grandparent": "grandparent",
}


def relationship_kind(reported: str, lives_with_child: bool) -> str:
    """Anything the referral could not type is a household member if they live with the child."""
    return RELATIONSHIP_KINDS.get(
        reported, "household_member" if lives_with_child else "other_relative"
    )


class Engine:
    """The model and limits the handlers use; set by the app from its settings."""

    model: LinkageModel | None = None
    max_candidates: int = 400

    @classmethod
    def configure(cls, settings: LinkingSettings) -> None:
        cls.model = service.load_model(
            settings.model_path, settings.link_threshold, settings.review_threshold
        )
        cls.max_candidates = settings.max_candidates

    @classmethod
    def current(cls) -> LinkageModel:
        if cls.model is None:
            cls.configure(LinkingSettings())
        assert cls.model is not None
        return cls.model


def address_text(lines: Sequence[str]) -> str | None:
    """An event's address lines as the one free-text address a person record holds."""
    return ", ".join(line for line in lines if line) or None


def child_data(child: ReportedChild, received: service.Source, envelope: Envelope) -> RecordData:
    estimated = service.estimated_birth(child.estimated_age_years, envelope.time)
    return RecordData(
        record_id=str(child.subject_id),
        source=received.agency,
        given_names=child.given_names,
        family_name=child.family_name,
        other_names=tuple(child.other_names),
        date_of_birth=child.date_of_birth or estimated,
        dob_estimated=child.date_of_birth is None and estimated is not None,
        expected_date=child.unborn_expected_date if child.date_of_birth is None else None,
        sex=child.sex,
        address=address_text(child.address_lines),
        postcode=child.postcode,
        nhs_number=child.nhs_number,
        upn=child.upn,
    )


async def _children(
    session: AsyncSession,
    children: Sequence[ReportedChild],
    source: service.Source,
    envelope: Envelope,
) -> dict[uuid.UUID, uuid.UUID]:
    """Each child's subject id → person id."""
    found = {}
    for child in children:
        record = await service.record_subject(
            session,
            Engine.current(),
            child_data(child, source, envelope),
            subject_id=child.subject_id,
            role="child",
            source=source,
            school_urn=child.school_urn,
            now=envelope.time,
            max_candidates=Engine.max_candidates,
        )
        found[child.subject_id] = record.person_id
    return found


async def referral_received(
    session: AsyncSession, event: ReferralReceived, envelope: Envelope
) -> None:
    source = service.Source(
        source_type="referral",
        source_id=event.referral_id,
        reference=f"referral {event.reference}",
        agency=event.referrer_agency,
        organisation=event.referrer_organisation_code,
    )
    children = await _children(session, event.children, source, envelope)
    reported: list[service.ReportedLink] = []
    co_resident: list[uuid.UUID] = []
    for member in event.family_members:
        record = await service.record_subject(
            session,
            Engine.current(),
            RecordData(
                record_id=str(member.subject_id),
                source=source.agency,
                given_names=member.given_names,
                family_name=member.family_name,
                other_names=tuple(member.other_names),
                date_of_birth=member.date_of_birth,
                sex=member.sex,
                address=address_text(member.address_lines),
                postcode=member.postcode,
                nhs_number=member.nhs_number,
            ),
            subject_id=member.subject_id,
            role="adult",
            source=source,
            school_urn=None,
            now=envelope.time,
            max_candidates=Engine.max_candidates,
        )
        for relationship in member.relationships:
            child = children.get(relationship.child_subject_id)
            if child is None:
                continue  # a relationship to a child not in this referral: nothing to join
            reported.append(
                service.ReportedLink(
                    person=record.person_id,
                    child=child,
                    kind=relationship_kind(
                        relationship.relationship, relationship.lives_with_child
                    ),
                    parental_responsibility=relationship.parental_responsibility,
                    lives_with=relationship.lives_with_child,
                )
            )
            if relationship.lives_with_child:
                co_resident.append(record.person_id)
    await service.apply_family(
        session,
        children=list(dict.fromkeys(children.values())),
        reported=reported,
        co_resident=co_resident,
        source_reference=source.reference,
        now=envelope.time,
    )


def _contact_source(event: ContactRecorded, kind: str) -> service.Source:
    return service.Source(
        source_type="contact",
        source_id=event.contact_id,
        reference=f"contact {kind} {event.contact_id}",
        agency=event.contributor_agency,
        organisation=event.contributor_organisation_code,
    )


async def domestic_abuse_incident(
    session: AsyncSession, event: DomesticAbuseIncidentRecorded, envelope: Envelope
) -> None:
    source = _contact_source(event, "domestic_abuse_incident")
    children = await _children(session, event.subjects, source, envelope)
    homes = {
        home
        for child in event.subjects
        if (home := service.home(child.postcode, child.address_lines))
    }
    co_resident: list[uuid.UUID] = []
    for index, adult in enumerate(event.adults):
        # The contacts service assigns each adult a subject id; an event recorded before it
        # did stands for the adult by the contact and position (what the migration backfilled).
        subject = adult.subject_id or uuid.uuid5(event.contact_id, f"adult:{index}")
        record = await service.record_subject(
            session,
            Engine.current(),
            RecordData(
                record_id=str(subject),
                source=source.agency,
                given_names=adult.given_names,
                family_name=adult.family_name,
                date_of_birth=adult.date_of_birth,
                sex=adult.sex,
                address=address_text(adult.address_lines),
                postcode=adult.postcode,
            ),
            subject_id=subject,
            role="adult",
            source=source,
            school_urn=None,
            now=envelope.time,
            max_candidates=Engine.max_candidates,
        )
        if service.home(adult.postcode, adult.address_lines) in homes:
            co_resident.append(record.person_id)
    if co_resident:
        # Adults the police recorded at a present child's home live with the children: they
        # join the children's household (no relationship is typed; the police do not say).
        await service.join_household(
            session,
            children=list(dict.fromkeys(children.values())),
            adults=co_resident,
            now=envelope.time,
        )


async def unscheduled_care(
    session: AsyncSession, event: UnscheduledCareAttendanceRecorded, envelope: Envelope
) -> None:
    await _children(session, event.subjects, _contact_source(event, "unscheduled_care"), envelope)


async def attendance_concern(
    session: AsyncSession, event: SchoolAttendanceConcernRecorded, envelope: Envelope
) -> None:
    await _children(session, event.subjects, _contact_source(event, "school_attendance"), envelope)


async def protection_plan(
    session: AsyncSession, event: ChildProtectionPlanChanged, envelope: Envelope
) -> None:
    await _children(
        session, event.subjects, _contact_source(event, "child_protection_plan"), envelope
    )


async def looked_after(
    session: AsyncSession, event: LookedAfterStatusChanged, envelope: Envelope
) -> None:
    await _children(session, event.subjects, _contact_source(event, "looked_after"), envelope)


registry = HandlerRegistry()
registry.on(ReferralReceived)(referral_received)
registry.on(DomesticAbuseIncidentRecorded)(domestic_abuse_incident)
registry.on(UnscheduledCareAttendanceRecorded)(unscheduled_care)
registry.on(SchoolAttendanceConcernRecorded)(attendance_concern)
registry.on(ChildProtectionPlanChanged)(protection_plan)
registry.on(LookedAfterStatusChanged)(looked_after)
