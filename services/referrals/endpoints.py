"""The referrals HTTP API, versioned under /v1. Thin: authorise, parse, call the service, shape.

The scope dependency comes before the session, so a refused request never opens a transaction.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals import disclosure, intake, service
from services.referrals.models import Referral
from services.referrals.policy import DeadlinePolicy
from services.referrals.repository import ReferralRepository
from services.referrals.schemas import (
    AcknowledgementIn,
    ActionOut,
    AssessmentCompletionIn,
    ChildOut,
    ConsentIn,
    DeadlineOut,
    DecisionIn,
    FamilyMemberIn,
    FeedbackIn,
    FeedbackOut,
    RatingIn,
    ReferralCreate,
    ReferralOut,
    ReferralPage,
    ReferralSummary,
    ReopenIn,
)
from shared.auth import Principal, require_scope
from shared.calendar import WorkingDayCalendar
from shared.crypto import Vault
from shared.disclosures import Decide
from shared.errors import DomainError
from shared.schemas import IsoDateTime
from shared.service import ClockDep, RuntimeDep, ServiceRuntime, SessionDep

router = APIRouter(prefix="/v1", tags=["referrals"])
INTAKE = "referral-intake"


async def _calendar(request: Request) -> WorkingDayCalendar:
    calendar: WorkingDayCalendar = request.app.state.working_days
    return calendar


async def _policy(request: Request) -> DeadlinePolicy:
    policy: DeadlinePolicy = request.app.state.policy
    return policy


async def _vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


async def _decide(request: Request) -> Decide:
    decide: Decide = request.app.state.decide
    return decide


CalendarDep = Annotated[WorkingDayCalendar, Depends(_calendar)]
DecideDep = Annotated[Decide, Depends(_decide)]
VaultDep = Annotated[Vault, Depends(_vault)]
PolicyDep = Annotated[DeadlinePolicy, Depends(_policy)]
Submitter = Annotated[Principal, Depends(require_scope("referrals:write"))]
Reader = Annotated[Principal, Depends(require_scope("referrals:read", "mash:triage"))]
Triage = Annotated[Principal, Depends(require_scope("mash:triage"))]
#: Where a referral is; the list's ``status`` filter takes only these (anything else is 422).
ReferralStatus = Literal["received", "acknowledged", "decided", "assessment_completed", "reopened"]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        pattern=r"^[A-Za-z0-9._:-]{8,200}$",
        description="Send the same key when retrying a POST: the referral is created once.",
    ),
]

FeedbackIdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        pattern=r"^[A-Za-z0-9._:-]{8,200}$",
        description="Send the same key when retrying: the feedback is given (and sent) once.",
    ),
]


class BadCursor(DomainError):
    status_code = 422
    title = "The request is not valid"


def deadlines_out(referral: Referral) -> list[DeadlineOut]:
    return [
        DeadlineOut(
            kind=deadline.kind,
            started_at=deadline.started_at,
            due_at=deadline.due_at,
            status=deadline.status,
            met_at=deadline.met_at,
            missed_at=deadline.missed_at,
            cancelled_at=deadline.cancelled_at,
        )
        for deadline in referral.deadlines
    ]


async def referral_out(
    session: AsyncSession, vault: Vault, referral: Referral, viewer: Principal
) -> ReferralOut:
    """The referral as ``viewer`` may see it: the MASH sees its rating and full history."""
    texts = await service.open_texts(session, vault, referral)
    action_texts = await service.open_action_texts(session, vault, referral)
    mash = viewer.has(service.MASH_SCOPE)
    children_by_id = {child.id: child.position for child in referral.children}
    return ReferralOut(
        id=referral.id,
        reference=referral.reference,
        status=referral.status,
        received_at=referral.received_at,
        acknowledgement_due_at=referral.acknowledgement_due_at,
        acknowledged_at=referral.acknowledged_at,
        referrer_organisation_code=referral.referrer_organisation_code,
        referrer_agency=referral.referrer_agency,
        concern_categories=list(referral.concern_categories),
        what_happened=texts.what_happened,
        actions_taken=texts.actions_taken,
        immediate_risk=referral.immediate_risk,
        consent=ConsentIn.model_validate(
            {
                "parents": {
                    "status": referral.consent_parents,
                    "why_not_asked": referral.consent_parents_why_not_asked,
                },
                "child": None
                if referral.consent_child is None
                else {
                    "status": referral.consent_child,
                    "why_not_asked": referral.consent_child_why_not_asked,
                    "competent": bool(referral.consent_child_competent),
                },
            }
        ),
        children=[
            ChildOut(
                subject_id=child.id,
                given_names=child.given_names,
                family_name=child.family_name,
                other_names=list(child.other_names),
                date_of_birth=child.date_of_birth,
                estimated_age_years=child.estimated_age_years,
                unborn_expected_date=child.unborn_expected_date,
                sex=child.sex,
                nhs_number=child.nhs_number,
                upn=child.upn,
                postcode=child.postcode,
                school_urn=child.school_urn,
                school_name=child.school_name,
                own_words=texts.own_words.get(child.id),
            )
            for child in referral.children
        ],
        family_members=[
            FamilyMemberIn.model_validate(
                {
                    "given_names": member.given_names,
                    "family_name": member.family_name,
                    "other_names": list(member.other_names),
                    "date_of_birth": member.date_of_birth,
                    "sex": member.sex,
                    "nhs_number": member.nhs_number,
                    "address": {
                        "lines": list(member.address_lines),
                        "town": member.town,
                        "postcode": member.postcode,
                    }
                    if member.address_lines
                    else None,
                    "phone": member.phone,
                    "relationships": [
                        {
                            "child": children_by_id[relation.child_id],
                            "relationship": relation.relationship,
                            "parental_responsibility": relation.parental_responsibility,
                            "lives_with_child": relation.lives_with_child,
                        }
                        for relation in sorted(member.relationships, key=lambda r: r.child_position)
                    ],
                }
            )
            for member in referral.family_members
        ],
        rag=referral.rag if mash else None,
        decision=referral.decision,
        decided_at=referral.decided_at,
        assessment_completed_at=referral.assessment_completed_at,
        feedback=[
            FeedbackOut(
                id=action.id,
                given_at=action.at,
                given_by=action.by_name,
                message=action_texts.get(action.id),
                disclosure_decision_id=action.disclosure_decision_id,
            )
            for action in referral.actions
            if action.action == "feedback"
        ],
        deadlines=deadlines_out(referral),
        history=[
            ActionOut(
                id=action.id,
                action=action.action,
                at=action.at,
                by=action.by_name,
                by_organisation=action.by_organisation,
                value=action.value,
                text=action_texts.get(action.id),
            )
            for action in referral.actions
        ]
        if mash
        else None,
    )


@router.post(
    "/referrals",
    status_code=status.HTTP_201_CREATED,
    response_model=ReferralOut,
    summary="Raise a concern about one or more children",
    responses={
        200: {"description": "A retry with the same Idempotency-Key: the referral already made"},
        401: {"description": "No valid access token"},
        403: {"description": "The token lacks the referrals:write scope"},
        409: {"description": "The Idempotency-Key was used for a different referral"},
        422: {"description": "The body is not valid; `errors[].field` names each wrong field"},
    },
)
async def create_referral(
    referrer: Submitter,
    body: ReferralCreate,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Written by the referral intake's group commit (see services/referrals/intake.py)."""
    # The app's parts straight from its state rather than as five dependencies: FastAPI solves
    # each dependency on every request, and this is every agency's front door.
    state = request.app.state
    runtime: ServiceRuntime = state.runtime
    vault: Vault = state.vault
    request_fingerprint = service.fingerprint(body)
    plan = intake.plan_referral(
        body,
        referrer=referrer,
        now=runtime.clock.now(),
        calendar=state.working_days,
        vault=vault,
        policy=state.policy,
        idempotency_key=idempotency_key,
        request_fingerprint=request_fingerprint,
    )
    writer = runtime.group_commit(INTAKE, intake.write_batch, transaction=False)
    result = await writer.submit(plan)
    if result.created:
        return Response(
            plan.response.model_dump_json(),
            status_code=status.HTTP_201_CREATED,
            media_type="application/json",
            headers={"Location": f"/v1/referrals/{plan.referral_id}"},
        )
    if idempotency_key is None:
        raise RuntimeError("only a request with an Idempotency-Key can be a replay")
    async with runtime.database.transaction() as session:
        referral = await service.replayed_referral(
            session,
            organisation_code=referrer.organisation_code,
            idempotency_key=idempotency_key,
            request_fingerprint=request_fingerprint,
        )
        out = await referral_out(session, vault, referral, referrer)
    return Response(
        out.model_dump_json(),
        status_code=status.HTTP_200_OK,
        media_type="application/json",
        headers={"Location": f"/v1/referrals/{referral.id}"},
    )


def _encode_cursor(referral: Referral) -> str:
    raw = f"{referral.received_at.isoformat()}|{referral.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        received_at, referral_id = raw.split("|")
        return datetime.fromisoformat(received_at), uuid.UUID(referral_id)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadCursor("cursor is not one this API gave out", field="cursor") from error


@router.get(
    "/referrals", response_model=ReferralPage, summary="Referrals you may see, newest first"
)
async def list_referrals(
    reader: Reader,
    session: SessionDep,
    status_filter: Annotated[ReferralStatus | None, Query(alias="status")] = None,
    received_since: IsoDateTime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ReferralPage:
    """An agency sees its own organisation's referrals; the MASH sees all."""
    organisation = None if reader.has(service.MASH_SCOPE) else reader.organisation_code
    referrals = await ReferralRepository(session).page(
        organisation_code=organisation,
        status=status_filter,
        received_since=received_since,
        before=_decode_cursor(cursor) if cursor else None,
        limit=limit + 1,
    )
    page, more = referrals[:limit], len(referrals) > limit
    for referral in page:
        await service.record_access(session, reader, "list", str(referral.id), "allowed")
    return ReferralPage(
        items=[
            ReferralSummary(
                id=referral.id,
                reference=referral.reference,
                status=referral.status,
                received_at=referral.received_at,
                referrer_organisation_code=referral.referrer_organisation_code,
                concern_categories=list(referral.concern_categories),
                immediate_risk=referral.immediate_risk,
                children=len(referral.children),
                rag=referral.rag if reader.has(service.MASH_SCOPE) else None,
                decision=referral.decision,
                deadlines=deadlines_out(referral),
            )
            for referral in page
        ],
        next_cursor=_encode_cursor(page[-1]) if more and page else None,
    )


@router.get(
    "/referrals/{referral_id}",
    response_model=ReferralOut,
    summary="One referral (404 unless it is yours, or you are the MASH)",
)
async def read_referral(
    referral_id: uuid.UUID,
    reader: Reader,
    session: SessionDep,
    vault: VaultDep,
    runtime: RuntimeDep,
) -> ReferralOut:
    async with service.refusals_recorded(runtime.database, reader, "referral", str(referral_id)):
        referral = await service.read_referral(session, referral_id, reader)
    return await referral_out(session, vault, referral, reader)


async def _after_action(
    session: AsyncSession, vault: Vault, referral_id: uuid.UUID, triage: Principal
) -> ReferralOut:
    referral = await service.read_referral(session, referral_id, triage)
    return await referral_out(session, vault, referral, triage)


ACTION_RESPONSES: dict[int | str, dict[str, object]] = {
    403: {"description": "Only the MASH (scope mash:triage) acts on referrals"},
    404: {"description": "No such referral"},
    409: {"description": "Not possible in the referral's state (the detail says why)"},
}


@router.post(
    "/referrals/{referral_id}/acknowledge",
    response_model=ReferralOut,
    summary="Acknowledge (stops the acknowledgement clock)",
    responses=ACTION_RESPONSES,
)
async def acknowledge_referral(
    referral_id: uuid.UUID,
    body: AcknowledgementIn,
    triage: Triage,
    session: SessionDep,
    clock: ClockDep,
    vault: VaultDep,
) -> ReferralOut:
    actor = service.Actor(body.acknowledged_by, triage)
    await service.acknowledge(session, vault, referral_id, actor=actor, now=clock.now())
    return await _after_action(session, vault, referral_id, triage)


@router.post(
    "/referrals/{referral_id}/rating",
    response_model=ReferralOut,
    summary="Set the RAG rating, with the reason",
    responses=ACTION_RESPONSES,
)
async def rate_referral(
    referral_id: uuid.UUID,
    body: RatingIn,
    triage: Triage,
    session: SessionDep,
    clock: ClockDep,
    vault: VaultDep,
) -> ReferralOut:
    await service.rate(
        session,
        vault,
        referral_id,
        rag=body.rag.value,
        reason=body.reason,
        actor=service.Actor(body.rated_by, triage),
        now=clock.now(),
    )
    return await _after_action(session, vault, referral_id, triage)


@router.post(
    "/referrals/{referral_id}/decision",
    response_model=ReferralOut,
    summary="Decide the type of response (acknowledges too, if not yet acknowledged)",
    responses=ACTION_RESPONSES,
)
async def decide_referral(
    referral_id: uuid.UUID,
    body: DecisionIn,
    triage: Triage,
    session: SessionDep,
    clock: ClockDep,
    vault: VaultDep,
    policy: PolicyDep,
    calendar: CalendarDep,
) -> ReferralOut:
    await service.decide(
        session,
        vault,
        referral_id,
        decision=body.decision,
        reason=body.reason,
        actor=service.Actor(body.decided_by, triage),
        now=clock.now(),
        policy=policy,
        calendar=calendar,
    )
    return await _after_action(session, vault, referral_id, triage)


@router.post(
    "/referrals/{referral_id}/feedback",
    response_model=ReferralOut,
    summary="Record feedback to the referrer on what action is being taken",
    description=(
        "Feedback discloses what the MASH is doing to the referrer's organisation, so the "
        "consent service's decision point decides it first and records the decision in the "
        "ledger. A refusal is a 403 with the decision's reasons and its id, and nothing is "
        "stored; an `override` (basis, reason, a manager's approval) asks again. If the "
        "decision point cannot be asked, 503 and nothing is stored."
    ),
    responses={
        **ACTION_RESPONSES,
        403: {
            "description": "Only the MASH (scope mash:triage) acts on referrals; or the decision "
            "point decided not to share (the problem carries its reasons and decision_id)"
        },
        503: {"description": "The decision point could not be asked; nothing was stored"},
    },
)
async def give_feedback(
    referral_id: uuid.UUID,
    body: FeedbackIn,
    triage: Triage,
    runtime: RuntimeDep,
    session: SessionDep,
    clock: ClockDep,
    vault: VaultDep,
    decide: DecideDep,
    request: Request,
    idempotency_key: FeedbackIdempotencyKey = None,
) -> ReferralOut:
    # Asked before the referral is locked: a slow decision point holds no MASH worker's lock.
    async with runtime.database.transaction() as look:
        referrer = await service.feedback_recipient(look, referral_id, idempotency_key)
    decision_id = None
    if referrer is not None:  # None: a retry of feedback already given, nothing to decide
        decision = await disclosure.decide_feedback(
            decide,
            triage,
            referrer,
            given_by=body.given_by,
            agreement_id=request.app.state.settings.agreement_id,
            override=body.override,
        )
        decision_id = decision.decision_id
    await service.give_feedback(
        session,
        vault,
        referral_id,
        message=body.message,
        actor=service.Actor(body.given_by, triage),
        now=clock.now(),
        idempotency_key=idempotency_key,
        disclosure_decision_id=decision_id,
    )
    return await _after_action(session, vault, referral_id, triage)


@router.post(
    "/referrals/{referral_id}/assessment-completion",
    response_model=ReferralOut,
    summary="Record that the section 17 or section 47 assessment is complete",
    responses=ACTION_RESPONSES,
)
async def complete_assessment(
    referral_id: uuid.UUID,
    body: AssessmentCompletionIn,
    triage: Triage,
    session: SessionDep,
    clock: ClockDep,
    vault: VaultDep,
) -> ReferralOut:
    await service.complete_assessment(
        session,
        vault,
        referral_id,
        actor=service.Actor(body.completed_by, triage),
        now=clock.now(),
    )
    return await _after_action(session, vault, referral_id, triage)


@router.post(
    "/referrals/{referral_id}/reopening",
    response_model=ReferralOut,
    summary="Reopen a decided referral (new decision and feedback clocks start)",
    responses=ACTION_RESPONSES,
)
async def reopen_referral(
    referral_id: uuid.UUID,
    body: ReopenIn,
    triage: Triage,
    session: SessionDep,
    clock: ClockDep,
    vault: VaultDep,
    policy: PolicyDep,
    calendar: CalendarDep,
) -> ReferralOut:
    await service.reopen(
        session,
        vault,
        referral_id,
        reason=body.reason,
        actor=service.Actor(body.reopened_by, triage),
        now=clock.now(),
        policy=policy,
        calendar=calendar,
    )
    return await _after_action(session, vault, referral_id, triage)
