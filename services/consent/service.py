"""The consent service's use cases, as ledger commands run by the group-commit writer (or, for a
consumed event, in the message's own transaction). No commit here: the caller's scope owns it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.consent import decision
from services.consent.agreements import Agreement, Agreements, ConsentScope
from services.consent.events import ConsentRecorded, ConsentWithdrawn
from services.consent.ledger import Draft
from services.consent.models import CaseSubject, ConsentRecord, plumbing
from services.consent.writer import Batch
from services.referrals.events import ReferralReceived
from shared import outbox
from shared.auth import Principal
from shared.disclosures import DisclosureDecision, DisclosureRequest, Person
from shared.errors import Conflict, DomainError, NotFound
from shared.ids import uuid7

SERVICE = "consent"
CONSENT_RECORDED = "consent.recorded"
CONSENT_WITHDRAWN = "consent.withdrawn"
DISCLOSURE_DECIDED = "disclosure.decided"
RETENTION_EXPIRED = "retention.expired"
LEDGER_KINDS = (CONSENT_RECORDED, CONSENT_WITHDRAWN, DISCLOSURE_DECIDED, RETENTION_EXPIRED)


class InvalidRequest(DomainError):
    """422 naming the fields, in the same shape as a payload validation error."""

    status_code = 422
    title = "The request is not valid"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        fields = ", ".join(sorted({field for field, _ in problems}))
        super().__init__(
            f"Check these fields: {fields}",
            errors=[
                {"field": field, "message": message, "type": "value_error"}
                for field, message in problems
            ],
        )


def check_request(
    request: DisclosureRequest, agreements: Agreements, principal: Principal
) -> Agreement:
    """Everything that makes a request unanswerable (422), before it reaches the writer."""
    problems = request.problems()
    agreement = agreements.get(request.agreement_id)
    if agreement is None:
        problems.append(
            (
                "agreement_id",
                f"is not an information sharing agreement of this partnership "
                f"(known: {', '.join(sorted(agreements.by_id))})",
            )
        )
    override = request.override
    if override is not None and agreements.override_requires_manager_approval:
        if override.approved_by is None:
            problems.append(
                (
                    "override.approved_by",
                    "is required: the partnership's policy is that a manager approves every "
                    "override of a refusal of consent",
                )
            )
        elif override.approved_by.name.casefold() == request.decided_by.name.casefold():
            problems.append(
                ("override.approved_by", "must be someone other than the person deciding")
            )
    if (
        request.special_category
        and agreements.special_category_requires_manager_approval
        and request.approved_by is None
    ):
        problems.append(
            (
                "approved_by",
                "is required: the partnership's policy is that a manager approves every "
                "disclosure of special-category data",
            )
        )
    elif (
        request.approved_by is not None
        and request.approved_by.name.casefold() == request.decided_by.name.casefold()
    ):
        problems.append(("approved_by", "must be someone other than the person deciding"))
    if problems:
        raise InvalidRequest(problems)
    assert agreement is not None
    return agreement


@dataclass(frozen=True)
class Decide:
    """Decide one disclosure and record the decision in the ledger."""

    request: DisclosureRequest
    agreement: Agreement
    asked_by: Principal

    def subjects(self) -> Iterable[uuid.UUID]:
        return self.request.subject_ids

    async def execute(self, batch: Batch) -> DisclosureDecision:
        request = self.request
        consents = batch.held(request.subject_ids)
        if consents is None:
            consents = {s: await batch.consents_of(s) for s in request.subject_ids}
        verdict = decision.decide(request, self.agreement, consents, batch.now)
        payload: dict[str, Any] = {
            "requester": request.requester.model_dump(mode="json"),
            "recipient": request.recipient.model_dump(mode="json"),
            "asked_by_client": {
                "subject": self.asked_by.subject,
                "organisation_code": self.asked_by.organisation_code,
                "agency": self.asked_by.agency,
            },
            "data_categories": list(request.data_categories),
            "special_category": request.special_category,
            "requested_basis": request.lawful_basis.value,
            "article9_condition": _value(request.article9_condition),
            "schedule1_condition": _value(request.schedule1_condition),
            "paragraph18_reason": _value(request.paragraph18_reason),
            "consent_sought": request.consent.sought,
            "why_not_sought": request.consent.why_not_sought,
            # The subjects with a record of consent (given, refused, withdrawn, not sought),
            # each with its status; the rest are counted. Every subject is in the entry's
            # subject_ids, and a household's chronology read names hundreds of them, most
            # with no record: listing each made the entry ~93 KB and most of the decision's
            # time inside the chain lock.
            "consent_by_subject": [
                {
                    "subject_id": str(s.subject_id),
                    "status": s.status,
                    "consent_ids": [str(i) for i in s.consent_ids],
                    "competent_child": s.governed_by_competent_child,
                }
                for s in verdict.subjects
                if s.status != decision.NOT_RECORDED
            ],
            "subjects_without_consent_records": verdict.unrecorded
            + sum(s.status == decision.NOT_RECORDED for s in verdict.subjects),
            "necessity_and_proportionality": request.necessity_and_proportionality,
            "data_minimisation": request.data_minimisation,
            "agreement": {
                "id": self.agreement.id,
                "name": self.agreement.name,
                "transfer": self.agreement.transfer,
                "retention": self.agreement.retention,
            },
            "decided_by": request.decided_by.model_dump(mode="json"),
            "approved_by": None
            if request.approved_by is None
            else request.approved_by.model_dump(mode="json"),
            "override": None
            if request.override is None
            else request.override.model_dump(mode="json"),
            "consent_overridden": verdict.consent_overridden,
            "reasons": verdict.reasons,
            "withdrawals_applied": [str(i) for i in verdict.withdrawals_applied],
        }
        entry = batch.chain.add(
            Draft(
                kind=DISCLOSURE_DECIDED,
                subject_ids=request.subject_ids,
                payload=payload,
                from_agency=request.requester.agency,
                to_agency=request.recipient.agency,
                purpose=request.purpose,
                lawful_basis=_value(verdict.lawful_basis),
                outcome=verdict.outcome.value,
                consent_status=verdict.consent_status,
            )
        )
        return DisclosureDecision(
            decision_id=entry.entry_id,
            decision=verdict.outcome,
            lawful_basis=verdict.lawful_basis,
            article9_condition=request.article9_condition,
            schedule1_condition=request.schedule1_condition,
            consent_status=verdict.consent_status,
            consent_overridden=verdict.consent_overridden,
            reasons=verdict.reasons,
            agreement_id=self.agreement.id,
            withdrawals_applied=verdict.withdrawals_applied,
            ledger_sequence=entry.sequence,
            ledger_hash=entry.hash.hex(),
            decided_at=entry.recorded_at,
        )


def _value(member: Any) -> str | None:
    return None if member is None else str(member.value)


@dataclass(frozen=True)
class ConsentDetails:
    """A consent record as it arrives (from the API or from a referral)."""

    subject_id: uuid.UUID
    grantor_kind: str
    grantor_subject_id: uuid.UUID | None
    grantor_description: str | None
    child_competent: bool | None
    status: str
    data_categories: tuple[str, ...]
    recipients: tuple[str, ...]
    purposes: tuple[str, ...]
    obtained_how: str
    obtained_at: datetime
    obtained_by_name: str
    obtained_by_role: str
    obtained_by_organisation: str
    evidence_reference: str | None
    why_not_sought: str | None
    expires_at: datetime | None
    source: str
    source_id: str


async def _record(batch: Batch, details: ConsentDetails) -> ConsentRecord:
    record = ConsentRecord(
        id=uuid7(),
        recorded_at=batch.now,
        ledger_sequence=0,
        **{name: getattr(details, name) for name in ConsentDetails.__dataclass_fields__},
    )
    record.data_categories = list(details.data_categories)
    record.recipients = list(details.recipients)
    record.purposes = list(details.purposes)
    entry = batch.chain.add(
        Draft(
            kind=CONSENT_RECORDED,
            subject_ids=[details.subject_id],
            payload=record.as_entry(),
            consent_status=details.status,
        )
    )
    record.ledger_sequence = entry.sequence
    batch.session.add(record)
    batch.remember(record)
    await outbox.append(
        batch.session,
        plumbing,
        ConsentRecorded(
            consent_id=record.id,
            subject_id=record.subject_id,
            grantor_kind=record.grantor_kind,
            status=record.status,
            data_categories=list(record.data_categories),
            recipients=list(record.recipients),
            purposes=list(record.purposes),
            obtained_at=record.obtained_at,
            source=record.source,
            source_id=record.source_id,
            ledger_sequence=entry.sequence,
        ),
        service=SERVICE,
        now=batch.now,
    )
    return record


@dataclass(frozen=True)
class RecordConsents:
    """Enter consent records (each with its own ledger entry and ``consent.recorded``)."""

    consents: tuple[ConsentDetails, ...]

    def subjects(self) -> Iterable[uuid.UUID]:
        return [details.subject_id for details in self.consents]

    async def execute(self, batch: Batch) -> list[ConsentRecord]:
        return [await _record(batch, details) for details in self.consents]


@dataclass(frozen=True)
class Withdraw:
    """Withdraw a consent: the record says so, the ledger records it, ``consent.withdrawn``."""

    consent_id: uuid.UUID
    withdrawn_by: Person
    reason: str
    withdrawn_at: datetime | None
    asked_by: Principal

    def subjects(self) -> Iterable[uuid.UUID]:
        return ()

    async def execute(self, batch: Batch) -> ConsentRecord:
        record = await batch.session.get(ConsentRecord, self.consent_id, with_for_update=True)
        if record is None:
            raise NotFound(f"no consent record {self.consent_id}")
        if record.status == decision.WITHDRAWN:
            raise Conflict(f"consent {self.consent_id} was withdrawn already")
        if record.status != decision.GIVEN:
            raise Conflict(
                f"consent {self.consent_id} is {record.status}: only a given consent is withdrawn"
            )
        withdrawn_at = self.withdrawn_at or batch.now
        if withdrawn_at > batch.now:
            raise InvalidRequest([("withdrawn_at", "must not be in the future")])
        entry = batch.chain.add(
            Draft(
                kind=CONSENT_WITHDRAWN,
                subject_ids=[record.subject_id],
                payload={
                    "consent_id": str(record.id),
                    "subject_id": str(record.subject_id),
                    "grantor_kind": record.grantor_kind,
                    "grantor_subject_id": None
                    if record.grantor_subject_id is None
                    else str(record.grantor_subject_id),
                    "withdrawn_at": withdrawn_at,
                    "withdrawn_by": self.withdrawn_by.model_dump(mode="json"),
                    "reason": self.reason,
                    "recorded_by_client": {
                        "subject": self.asked_by.subject,
                        "organisation_code": self.asked_by.organisation_code,
                        "agency": self.asked_by.agency,
                    },
                    "previous_status": record.status,
                    "consent_recorded_at_sequence": record.ledger_sequence,
                },
                consent_status=decision.WITHDRAWN,
            )
        )
        record.status = decision.WITHDRAWN
        record.withdrawn_at = withdrawn_at
        record.withdrawn_by_name = self.withdrawn_by.name
        record.withdrawn_by_role = self.withdrawn_by.role
        record.withdrawal_reason = self.reason
        record.withdrawal_sequence = entry.sequence
        batch.remember(record)
        await outbox.append(
            batch.session,
            plumbing,
            ConsentWithdrawn(
                consent_id=record.id,
                subject_id=record.subject_id,
                withdrawn_at=withdrawn_at,
                withdrawn_by_role=self.withdrawn_by.role,
                data_categories=list(record.data_categories),
                recipients=list(record.recipients),
                purposes=list(record.purposes),
                ledger_sequence=entry.sequence,
            ),
            service=SERVICE,
            now=batch.now,
        )
        return record


REFERRAL_STATUS = {"agreed": decision.GIVEN, "refused": decision.REFUSED, "not_asked": "not_sought"}


def consents_from_referral(event: ReferralReceived, scope: ConsentScope) -> list[ConsentDetails]:
    """The referrer's consent information as consent records: for each child, the parents'
    answer (one record per person with parental responsibility named, or one for "the parents"
    when none is named) and the child's own where the referral gives it."""
    common: dict[str, Any] = {
        "data_categories": scope.data_categories,
        "recipients": scope.recipients,
        "purposes": scope.purposes,
        "obtained_how": f"recorded by the referrer on referral {event.reference} "
        f"(raised via {event.raised_via})",
        "obtained_at": event.received_at,
        "obtained_by_name": event.referrer_name or "the referrer",
        "obtained_by_role": event.referrer_role or "referrer",
        "obtained_by_organisation": f"{event.referrer_agency} {event.referrer_organisation_code}",
        "evidence_reference": f"referral:{event.reference}",
        "expires_at": None,
        "source": "referral",
        "source_id": str(event.referral_id),
    }
    parents_status = REFERRAL_STATUS.get(event.consent_parents, "not_sought")
    found: list[ConsentDetails] = []
    for child in event.children:
        with_pr = [
            (member, relation)
            for member in event.family_members
            for relation in member.relationships
            if relation.child_subject_id == child.subject_id and relation.parental_responsibility
        ]
        grantors: list[tuple[str, uuid.UUID | None, str | None]] = [
            (
                "person_with_parental_responsibility",
                member.subject_id,
                relation.relationship,
            )
            for member, relation in with_pr
        ] or [("parents", None, "the parents (not named on the referral)")]
        for kind, grantor_id, description in grantors:
            found.append(
                ConsentDetails(
                    subject_id=child.subject_id,
                    grantor_kind=kind,
                    grantor_subject_id=grantor_id,
                    grantor_description=description,
                    child_competent=None,
                    status=parents_status,
                    why_not_sought=event.consent_parents_why_not_asked
                    if parents_status == "not_sought"
                    else None,
                    **common,
                )
            )
        if event.consent_child is not None:
            child_status = REFERRAL_STATUS.get(event.consent_child, "not_sought")
            found.append(
                ConsentDetails(
                    subject_id=child.subject_id,
                    grantor_kind="child",
                    grantor_subject_id=child.subject_id,
                    grantor_description="the child",
                    child_competent=bool(event.consent_child_competent),
                    status=child_status,
                    why_not_sought=event.consent_child_why_not_asked
                    if child_status == "not_sought"
                    else None,
                    **common,
                )
            )
    return found


@dataclass(frozen=True)
class RecordReferral:
    """A referral's consent records and the case subjects whose retention this service tracks."""

    event: ReferralReceived
    scope: ConsentScope

    def subjects(self) -> Iterable[uuid.UUID]:
        return [child.subject_id for child in self.event.children]

    async def execute(self, batch: Batch) -> list[ConsentRecord]:
        event = self.event
        for child in event.children:
            batch.session.add(
                CaseSubject(
                    subject_id=child.subject_id,
                    referral_id=event.referral_id,
                    role="child",
                    received_at=event.received_at,
                    date_of_birth=child.date_of_birth,
                )
            )
        for member in event.family_members:
            batch.session.add(
                CaseSubject(
                    subject_id=member.subject_id,
                    referral_id=event.referral_id,
                    role="family_member",
                    received_at=event.received_at,
                    date_of_birth=member.date_of_birth,
                )
            )
        return [
            await _record(batch, details) for details in consents_from_referral(event, self.scope)
        ]
