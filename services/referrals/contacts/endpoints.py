"""The contacts HTTP API, versioned under /v1. Thin: authorise, parse, call the service, shape.

The scope dependency comes before the session, so a refused request never opens a transaction.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from services.referrals.contacts import service
from services.referrals.contacts.models import Contact
from services.referrals.contacts.schemas import ContactCreate, ContactOut, ContactType
from services.referrals.service import refusals_recorded
from shared.auth import Principal, require_scope
from shared.crypto import Vault
from shared.service import ClockDep, RuntimeDep, SessionDep

router = APIRouter(prefix="/v1", tags=["contacts"])


async def _vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


VaultDep = Annotated[Vault, Depends(_vault)]
Contributor = Annotated[Principal, Depends(require_scope("contacts:write"))]
Reader = Annotated[Principal, Depends(require_scope("contacts:write", service.MASH_SCOPE))]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        pattern=r"^[A-Za-z0-9._:-]{8,200}$",
        description="Send the same key when retrying a POST: the contact is recorded once.",
    ),
]


async def contact_out(session: AsyncSession, vault: Vault, contact: Contact) -> ContactOut:
    contact_type = ContactType(contact.type)
    present = contact_type is ContactType.POLICE_DOMESTIC_ABUSE_INCIDENT
    subjects: list[dict[str, Any]] = [
        {
            "subject_id": subject.id,
            "given_names": subject.given_names,
            "family_name": subject.family_name,
            "other_names": list(subject.other_names),
            "date_of_birth": subject.date_of_birth,
            "estimated_age_years": subject.estimated_age_years,
            "unborn_expected_date": subject.unborn_expected_date,
            "sex": subject.sex,
            "nhs_number": subject.nhs_number,
            "upn": subject.upn,
            "postcode": subject.postcode,
            "school_urn": subject.school_urn,
            "school_name": subject.school_name,
            **({"witnessed": subject.witnessed, "injured": subject.injured} if present else {}),
        }
        for subject in contact.subjects
    ]
    texts = await service.open_texts(session, vault, contact)
    return ContactOut.model_validate(
        {
            **contact.details,
            "id": contact.id,
            "type": contact.type,
            "received_at": contact.received_at,
            "organisation_code": contact.organisation_code,
            "agency": contact.agency,
            "subjects": subjects,
            **{kind: texts.get(kind) for kind in service.SEALED[contact_type]},
        }
    )


@router.post(
    "/contacts",
    status_code=status.HTTP_201_CREATED,
    response_model=ContactOut,
    summary="Record a contact for a child's chronology (not itself a referral)",
    responses={
        200: {"description": "A retry with the same Idempotency-Key: the contact already made"},
        401: {"description": "No valid access token"},
        403: {"description": "The token lacks the contacts:write scope"},
        409: {"description": "The Idempotency-Key was used for a different contact"},
        422: {"description": "The body is not valid; `errors[].field` names each wrong field"},
    },
)
async def record_contact(
    contributor: Contributor,
    body: ContactCreate,
    session: SessionDep,
    clock: ClockDep,
    vault: VaultDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ContactOut:
    contact, created = await service.receive_contact(
        session,
        body.root,
        contributor=contributor,
        now=clock.now(),
        vault=vault,
        idempotency_key=idempotency_key,
    )
    response.headers["Location"] = f"/v1/contacts/{contact.id}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return await contact_out(session, vault, contact)


@router.get(
    "/contacts/{contact_id}",
    response_model=ContactOut,
    summary="One contact (404 unless your organisation recorded it, or you are the MASH)",
)
async def read_contact(
    contact_id: uuid.UUID,
    reader: Reader,
    session: SessionDep,
    vault: VaultDep,
    runtime: RuntimeDep,
) -> ContactOut:
    async with refusals_recorded(runtime.database, reader, "contact", str(contact_id)):
        contact = await service.read_contact(session, contact_id, reader)
    return await contact_out(session, vault, contact)
