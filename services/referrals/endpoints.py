"""The referrals HTTP API, versioned under /v1. Thin: authorise, parse, call the service, shape.

The scope dependency comes before the session, so a refused request never opens a transaction.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals import service
from services.referrals.models import Referral
from services.referrals.repository import ReferralRepository
from services.referrals.schemas import (
    AcknowledgementIn,
    ChildOut,
    ConsentIn,
    FamilyMemberIn,
    ReferralCreate,
    ReferralOut,
    ReferralPage,
    ReferralSummary,
)
from services.referrals.settings import ReferralsSettings
from shared.auth import Principal, require_scope
from shared.calendar import WorkingDayCalendar
from shared.crypto import Vault
from shared.errors import DomainError, NotFound
from shared.service import ClockDep, RuntimeDep, SessionDep

router = APIRouter(prefix="/v1", tags=["referrals"])


def _calendar(request: Request) -> WorkingDayCalendar:
    calendar: WorkingDayCalendar = request.app.state.working_days
    return calendar


def _settings(request: Request) -> ReferralsSettings:
    settings: ReferralsSettings = request.app.state.settings
    return settings


def _vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


CalendarDep = Annotated[WorkingDayCalendar, Depends(_calendar)]
SettingsDep = Annotated[ReferralsSettings, Depends(_settings)]
VaultDep = Annotated[Vault, Depends(_vault)]
Submitter = Annotated[Principal, Depends(require_scope("referrals:write"))]
Reader = Annotated[Principal, Depends(require_scope("referrals:read", "mash:triage"))]
Triage = Annotated[Principal, Depends(require_scope("mash:triage"))]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        pattern=r"^[A-Za-z0-9._:-]{8,200}$",
        description="Send the same key when retrying a POST: the referral is created once.",
    ),
]


class BadCursor(DomainError):
    status_code = 422
    title = "The request is not valid"


async def referral_out(session: AsyncSession, vault: Vault, referral: Referral) -> ReferralOut:
    texts = await service.open_texts(session, vault, referral)
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
        rag=referral.rag,
        decision=referral.decision,
        feedback=[],
        deadlines=[],
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
    session: SessionDep,
    clock: ClockDep,
    calendar: CalendarDep,
    settings: SettingsDep,
    vault: VaultDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ReferralOut:
    referral, created = await service.receive_referral(
        session,
        body,
        referrer=referrer,
        now=clock.now(),
        calendar=calendar,
        vault=vault,
        acknowledgement_working_days=settings.acknowledgement_working_days,
        idempotency_key=idempotency_key,
    )
    response.headers["Location"] = f"/v1/referrals/{referral.id}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return await referral_out(session, vault, referral)


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
    status_filter: Annotated[str | None, Query(alias="status", max_length=20)] = None,
    received_since: datetime | None = None,
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
                rag=referral.rag,
                decision=referral.decision,
                deadlines=[],
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
    try:
        referral = await service.read_referral(session, referral_id, reader)
    except NotFound:
        async with runtime.database.transaction() as audit:
            await service.record_access(audit, reader, "read", str(referral_id), "refused")
        raise
    return await referral_out(session, vault, referral)


@router.post(
    "/referrals/{referral_id}/acknowledge",
    response_model=ReferralOut,
    summary="Acknowledge a referral (MASH; stops the acknowledgement clock)",
)
async def acknowledge_referral(
    referral_id: uuid.UUID,
    body: AcknowledgementIn,
    triage: Triage,
    session: SessionDep,
    clock: ClockDep,
    vault: VaultDep,
) -> ReferralOut:
    await service.acknowledge(
        session, referral_id, acknowledged_by=body.acknowledged_by, now=clock.now()
    )
    referral = await service.read_referral(session, referral_id, triage)
    return await referral_out(session, vault, referral)
