"""The notifications API: the MASH inbox; messages, their acknowledgement and the senders' and
the MASH's view of them; the dead-letter store with its re-send; recipients' preferences."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.delivery import WAKE_CHANNEL
from services.notifications.messages import KINDS
from services.notifications.models import DeadLetter, Delivery, Message
from services.notifications.repository import (
    SENT,
    InboxRepository,
    MessageRepository,
    shown_to_recipient,
)
from services.notifications.schemas import (
    AcknowledgementIn,
    Audience,
    DeadLetterOut,
    DeadLetterPage,
    DeliveryOut,
    DisclosureOut,
    InboxItemOut,
    InboxPage,
    ItemStatus,
    MessageOut,
    MessagePage,
    MessageStatus,
    Party,
    PreferenceIn,
    PreferenceOut,
    ResendIn,
)
from shared.auth import CurrentPrincipal, Principal, require_scope
from shared.errors import Conflict, DomainError, NotFound
from shared.ids import uuid7
from shared.schemas import Offset
from shared.service import ClockDep, SessionDep

router = APIRouter(prefix="/v1", tags=["inbox"])


@router.get(
    "/inbox",
    response_model=InboxPage,
    summary="The MASH inbox (or, for a referrer, its own items), soonest deadline first",
)
async def list_inbox(
    reader: Annotated[Principal, Depends(require_scope("mash:triage", "referrals:read"))],
    session: SessionDep,
    audience: Audience | None = None,
    status: ItemStatus | None = None,
    referral_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[Offset, Query()] = 0,
) -> InboxPage:
    organisation = None
    if not reader.has("mash:triage"):
        # A referrer sees only the items addressed to its own organisation.
        audience, organisation = Audience.REFERRER, reader.organisation_code
    items, total = await InboxRepository(session).list(
        organisation_code=organisation,
        audience=audience.value if audience else None,
        status=status.value if status else None,
        referral_id=referral_id,
        limit=limit,
        offset=offset,
    )
    return InboxPage(
        items=[InboxItemOut.model_validate(item, from_attributes=True) for item in items],
        total=total,
    )


# -- messages: every recipient's inbox, the senders' view, the MASH's view ----------------------

messages_router = APIRouter(prefix="/v1", tags=["messages"])
MASH_SCOPE = "mash:triage"
#: What a recipient sees: only messages that were (or are being) sent; never one whose
#: disclosure was refused or is still undecided.


class Invalid(DomainError):
    status_code = 422
    title = "The request is not valid"


def _may_read(reader: Principal, message: Message) -> bool:
    if reader.has(MASH_SCOPE) or message.sender_organisation == reader.organisation_code:
        return True
    return message.recipient_organisation == reader.organisation_code and shown_to_recipient(
        message
    )


def message_out(message: Message, deliveries: list[Delivery]) -> MessageOut:
    return MessageOut(
        id=message.id,
        kind=message.kind,
        title=message.title,
        body=message.body,
        status=MessageStatus(message.status),
        recipient=Party(
            organisation_code=message.recipient_organisation,
            agency=message.recipient_agency,
            role=message.recipient_role,
            name=message.recipient_name,
        ),
        sender=Party(
            organisation_code=message.sender_organisation,
            agency=message.sender_agency,
            role="sender",
        ),
        reference=message.reference,
        referral_id=message.referral_id,
        contact_id=message.contact_id,
        details={k: v for k, v in message.details.items() if k != "worker_email"},
        disclosure=(
            DisclosureOut(
                decision_id=message.decision_id,
                outcome=message.decision,
                lawful_basis=message.lawful_basis,
                reasons=list(message.decision_reasons or []),
            )
            if message.disclosure is not None
            else None
        ),
        deliver_by=message.deliver_by,
        acknowledge_by=message.acknowledge_by,
        acknowledged_at=message.acknowledged_at,
        acknowledged_by=message.acknowledged_by,
        escalated_at=message.escalated_at,
        created_at=message.created_at,
        delivered_at=message.delivered_at,
        failed_at=message.failed_at,
        last_error=message.last_error,
        deliveries=[
            DeliveryOut.model_validate(delivery, from_attributes=True) for delivery in deliveries
        ],
    )


async def _page(repository: MessageRepository, found: list[Message], total: int) -> MessagePage:
    deliveries = await repository.deliveries_of([message.id for message in found])
    by_message: dict[uuid.UUID, list[Delivery]] = {}
    for delivery in deliveries:
        by_message.setdefault(delivery.message_id, []).append(delivery)
    return MessagePage(
        items=[message_out(message, by_message.get(message.id, [])) for message in found],
        total=total,
    )


class Box(StrEnum):
    INBOX = "inbox"  # addressed to the caller's organisation
    SENT = "sent"  # sent on the caller's organisation's behalf


@messages_router.get(
    "/messages",
    response_model=MessagePage,
    summary="Messages addressed to, or sent on behalf of, your organisation (the MASH: all)",
)
async def list_messages(
    reader: CurrentPrincipal,
    session: SessionDep,
    box: Box | None = None,
    kind: Annotated[str | None, Query(pattern=r"^[a-z_.]{1,60}$")] = None,
    status: MessageStatus | None = None,
    unacknowledged: bool = False,
    referral_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[Offset, Query()] = 0,
) -> MessagePage:
    organisation = reader.organisation_code
    wanted = status.value if status else None
    if box is Box.INBOX and wanted is not None and wanted not in SENT:
        return MessagePage(items=[], total=0)  # a recipient never sees unsent messages
    repository = MessageRepository(session)
    found, total = await repository.page(
        reader=None if reader.has(MASH_SCOPE) and box is None else organisation,
        box=box.value if box else None,
        kind=kind,
        status=wanted,
        unacknowledged=unacknowledged,
        referral_id=referral_id,
        limit=limit,
        offset=offset,
    )
    return await _page(repository, found, total)


async def _readable(session: AsyncSession, reader: Principal, message_id: uuid.UUID) -> Message:
    message = await MessageRepository(session).get(message_id)
    if message is None or not _may_read(reader, message):
        raise NotFound(f"No message {message_id}")
    return message


@messages_router.get("/messages/{message_id}", response_model=MessageOut, summary="One message")
async def read_message(
    message_id: uuid.UUID, reader: CurrentPrincipal, session: SessionDep
) -> MessageOut:
    message = await _readable(session, reader, message_id)
    deliveries = await MessageRepository(session).deliveries_of([message.id])
    return message_out(message, deliveries)


@messages_router.post(
    "/messages/{message_id}/acknowledge",
    response_model=MessageOut,
    summary="Acknowledge a message addressed to your organisation (e.g. a DSL, an Encompass "
    "notification)",
)
async def acknowledge(
    message_id: uuid.UUID,
    body: AcknowledgementIn,
    reader: CurrentPrincipal,
    session: SessionDep,
    clock: ClockDep,
) -> MessageOut:
    message = await _readable(session, reader, message_id)
    if message.recipient_organisation != reader.organisation_code:
        raise NotFound(f"No message {message_id}")  # only its recipient acknowledges it
    repository = MessageRepository(session)
    if message.acknowledged_at is None:
        await repository.acknowledge(message.id, body.acknowledged_by, clock.now())
        await session.refresh(message)
    return message_out(message, await repository.deliveries_of([message.id]))


@messages_router.post(
    "/messages/{message_id}/retry",
    response_model=MessageOut,
    summary="Ask the decision point again for a message that failed there (the MASH, the sender)",
)
async def retry(
    message_id: uuid.UUID, reader: CurrentPrincipal, session: SessionDep, clock: ClockDep
) -> MessageOut:
    message = await _readable(session, reader, message_id)
    if not (reader.has(MASH_SCOPE) or message.sender_organisation == reader.organisation_code):
        raise NotFound(f"No message {message_id}")
    if message.status != "failed" or message.decision is not None:
        raise Conflict(
            "Only a message that failed at the decision point can be retried; a failed "
            "delivery is re-sent from the dead letters (POST /v1/dead-letters/{id}/resend)."
        )
    repository = MessageRepository(session)
    await repository.retry(message, clock.now())
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WAKE_CHANNEL})
    return message_out(message, await repository.deliveries_of([message.id]))


@messages_router.get(
    "/dead-letters",
    response_model=DeadLetterPage,
    summary="Deliveries that failed after their retries (the MASH: all; a sender: its own)",
)
async def list_dead_letters(
    reader: CurrentPrincipal,
    session: SessionDep,
    open_only: bool = True,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[Offset, Query()] = 0,
) -> DeadLetterPage:
    rows, total = await MessageRepository(session).dead_letters(
        visible_to=None if reader.has(MASH_SCOPE) else reader.organisation_code,
        open_only=open_only,
        limit=limit,
        offset=offset,
    )
    return DeadLetterPage(items=[_dead_letter_out(d, m) for d, m in rows], total=total)


def _dead_letter_out(dead: DeadLetter, message: Message) -> DeadLetterOut:
    return DeadLetterOut(
        id=dead.id,
        message_id=message.id,
        kind=message.kind,
        title=message.title,
        recipient=Party(
            organisation_code=message.recipient_organisation,
            agency=message.recipient_agency,
            role=message.recipient_role,
            name=message.recipient_name,
        ),
        sender=Party(
            organisation_code=message.sender_organisation,
            agency=message.sender_agency,
            role="sender",
        ),
        reference=message.reference,
        channel=dead.channel,
        address=dead.address,
        attempts=dead.attempts,
        last_error=dead.last_error,
        failed_at=dead.failed_at,
        resent_at=dead.resent_at,
        resent_by=dead.resent_by,
    )


@messages_router.post(
    "/dead-letters/{dead_letter_id}/resend",
    response_model=DeadLetterOut,
    summary="Send a failed delivery again, with a fresh set of attempts",
)
async def resend(
    dead_letter_id: uuid.UUID,
    body: ResendIn,
    reader: CurrentPrincipal,
    session: SessionDep,
    clock: ClockDep,
) -> DeadLetterOut:
    repository = MessageRepository(session)
    found = await repository.dead_letter(dead_letter_id)
    if found is None or not (
        reader.has(MASH_SCOPE) or found[1].sender_organisation == reader.organisation_code
    ):
        raise NotFound(f"No dead letter {dead_letter_id}")
    dead, message = found
    if dead.resent_at is not None:
        raise Conflict(
            f"This delivery was already re-sent at {dead.resent_at.isoformat()} by "
            f"{dead.resent_by}; a new failure would appear as a new dead letter."
        )
    await repository.resend(dead, message, body.resent_by, clock.now())
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WAKE_CHANNEL})
    return _dead_letter_out(dead, message)


# -- preferences: which channels a recipient wants for which kind of message -------------------

RolePath = Annotated[str, Path(pattern=r"^[a-z_]{1,40}$")]
KindPath = Annotated[str, Path(pattern=r"^(\*|[a-z_.]{1,60})$")]


@messages_router.get(
    "/preferences",
    response_model=list[PreferenceOut],
    summary="Your organisation's recipients' channel choices",
)
async def list_preferences(reader: CurrentPrincipal, session: SessionDep) -> list[PreferenceOut]:
    found = await MessageRepository(session).preferences(reader.organisation_code)
    return [PreferenceOut.model_validate(p, from_attributes=True) for p in found]


@messages_router.put(
    "/preferences/{role}/{kind}",
    response_model=PreferenceOut,
    summary="Choose the channels (besides the portal inbox) for a role and kind of message "
    "(kind * for every kind)",
)
async def set_preference(
    role: RolePath,
    kind: KindPath,
    body: PreferenceIn,
    reader: CurrentPrincipal,
    session: SessionDep,
    clock: ClockDep,
) -> PreferenceOut:
    if kind != "*" and kind not in KINDS:
        raise Invalid(
            f"kind must be * or one of {', '.join(KINDS)}",
            errors=[{"field": "kind", "message": "is not a kind of message", "type": "enum"}],
        )
    if len(set(body.channels)) != len(body.channels):
        raise Invalid(
            "channels must not name a channel twice",
            errors=[{"field": "channels", "message": "names a channel twice", "type": "value"}],
        )
    values = {
        "id": uuid7(),
        "organisation_code": reader.organisation_code,
        "role": role,
        "kind": kind,
        "channels": list(body.channels),
        "updated_at": clock.now(),
        "updated_by": body.updated_by,
    }
    repository = MessageRepository(session)
    await repository.set_preference(values)
    [saved] = [
        p for p in await repository.preferences(reader.organisation_code, role) if p.kind == kind
    ]
    return PreferenceOut.model_validate(saved, from_attributes=True)


@messages_router.delete(
    "/preferences/{role}/{kind}",
    status_code=204,
    summary="Forget a channel choice (every configured channel applies again)",
)
async def delete_preference(
    role: RolePath, kind: KindPath, reader: CurrentPrincipal, session: SessionDep
) -> Response:
    if not await MessageRepository(session).delete_preference(reader.organisation_code, role, kind):
        raise NotFound(f"No preference for {role} and {kind}")
    return Response(status_code=204)
