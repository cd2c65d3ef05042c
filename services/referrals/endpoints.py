"""The referrals HTTP API, versioned under /v1. Thin: parse, call the service, shape the reply."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, status

from services.referrals import service
from services.referrals.models import Referral
from services.referrals.schemas import AcknowledgementIn, ChildOut, ReferralCreate, ReferralOut
from services.referrals.settings import ReferralsSettings
from shared.calendar import WorkingDayCalendar
from shared.service import ClockDep, SessionDep

router = APIRouter(prefix="/v1", tags=["referrals"])


def _calendar(request: Request) -> WorkingDayCalendar:
    calendar: WorkingDayCalendar = request.app.state.working_days
    return calendar


def _settings(request: Request) -> ReferralsSettings:
    settings: ReferralsSettings = request.app.state.settings
    return settings


CalendarDep = Annotated[WorkingDayCalendar, Depends(_calendar)]
SettingsDep = Annotated[ReferralsSettings, Depends(_settings)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        pattern=r"^[A-Za-z0-9._:-]{8,200}$",
        description="Send the same key when retrying a POST: the referral is created once.",
    ),
]


def referral_out(referral: Referral) -> ReferralOut:
    return ReferralOut(
        id=referral.id,
        reference=referral.reference,
        status=referral.status,
        received_at=referral.received_at,
        acknowledgement_due_at=referral.acknowledgement_due_at,
        acknowledged_at=referral.acknowledged_at,
        referrer_organisation_code=referral.referrer_organisation_code,
        concern_categories=list(referral.concern_categories),
        children=[
            ChildOut(
                subject_id=child.id,
                given_names=child.given_names,
                family_name=child.family_name,
                date_of_birth=child.date_of_birth,
            )
            for child in referral.children
        ],
    )


@router.post(
    "/referrals",
    status_code=status.HTTP_201_CREATED,
    response_model=ReferralOut,
    summary="Raise a concern about one or more children",
    responses={
        200: {"description": "A retry with the same Idempotency-Key: the referral already made"},
        422: {"description": "The body is not valid; `errors[].field` names each wrong field"},
    },
)
async def create_referral(
    body: ReferralCreate,
    session: SessionDep,
    clock: ClockDep,
    calendar: CalendarDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ReferralOut:
    referral, created = await service.receive_referral(
        session,
        body,
        now=clock.now(),
        calendar=calendar,
        acknowledgement_working_days=settings.acknowledgement_working_days,
        idempotency_key=idempotency_key,
    )
    response.headers["Location"] = f"/v1/referrals/{referral.id}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return referral_out(referral)


@router.get("/referrals/{referral_id}", response_model=ReferralOut, summary="One referral")
async def read_referral(referral_id: uuid.UUID, session: SessionDep) -> ReferralOut:
    return referral_out(await service.get_referral(session, referral_id))


@router.post(
    "/referrals/{referral_id}/acknowledge",
    response_model=ReferralOut,
    summary="Acknowledge a referral (stops the acknowledgement clock)",
)
async def acknowledge_referral(
    referral_id: uuid.UUID, body: AcknowledgementIn, session: SessionDep, clock: ClockDep
) -> ReferralOut:
    referral = await service.acknowledge(
        session, referral_id, acknowledged_by=body.acknowledged_by, now=clock.now()
    )
    return referral_out(await service.get_referral(session, referral.id))
